"""Study planning: how many districts the next survey needs.

Two routes that answer the same question:

- **Analytic.** The minimum detectable effect size (MDES) of a two-level
  design in which districts (level 2) carry the support model and teachers
  (level 1) answer (Bloom 1995, 2006; Dong and Maynard 2013, PowerUp!'s
  cluster random assignment design ``CRA2_2``)::

      MDES = M_df * sqrt(rho (1 - R2_2) / (P (1 - P) J)
                         + (1 - rho) (1 - R2_1) / (P (1 - P) J n))

  with ``M_df = t_{1 - alpha/2, df} + t_{power, df}``, ``J`` districts, ``n``
  teachers per district, intraclass correlation ``rho``, the shares of the
  district and teacher variance explained by covariates ``R2_2`` and
  ``R2_1``, and ``P`` the share of districts with the model. With six models,
  the comparison of model k with the reference uses ``1 / J_k + 1 / J_ref`` in
  place of ``1 / (P (1 - P) J)``, and ``df = J - strata - (models - 1) - g``
  (PSUs minus strata minus the coefficients of the district-level terms, as
  the design-based analysis; PowerUp!'s ``J - g - 2`` for two groups and one
  stratum). Effects are in SD units of the outcome; for a binary outcome with
  base rate ``p0`` one SD is ``sqrt(p0 (1 - p0))``, so
  ``MDES_pp = 100 * MDES * sqrt(p0 (1 - p0))``.
- **Simulation.** :func:`simulate_power` draws whole studies with the
  project's simulator, writes their raw exports, cleans them with the
  project's cleaner and fits M1 on the survey design, and counts how often
  each AME is significant: parallel over replications with joblib processes
  (default) or on a Dask cluster (``backend="dask"``), with a progress bar.

Examples
--------
>>> round(mdes(n_clusters=20, cluster_size=15, icc=0.17), 3)   # PowerUp! CRA2_2
0.629
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize, stats

SUMMARY_COLUMNS = ["support_model", "power", "mc_std_error", "mean_estimate_pp",
                   "true_ame_pp", "bias_pp", "coverage", "replications"]


# ---------------------------------------------------------------------------
# Analytic
# ---------------------------------------------------------------------------
def multiplier(df, *, alpha: float = 0.05, power: float = 0.80, two_tailed: bool = True):
    """``t_{1 - alpha/2, df} + t_{power, df}`` (one-tailed: ``t_{1 - alpha, df}``).

    Examples
    --------
    >>> round(float(multiplier(1e9)), 3)          # 1.96 + 0.84 for large df
    2.802
    """
    a = alpha / 2 if two_tailed else alpha
    return stats.t.ppf(1 - a, df) + stats.t.ppf(power, df)


def _variance_per_cluster(cluster_size, icc, r2_cluster, r2_individual):
    return icc * (1 - r2_cluster) + (1 - icc) * (1 - r2_individual) / cluster_size


def mdes(*, n_clusters, cluster_size, icc, r2_cluster: float = 0.0,
         r2_individual: float = 0.0, treated_share: float = 0.5, covariates: int = 0,
         groups: int = 2, strata: int = 1, alpha: float = 0.05, power: float = 0.80,
         two_tailed: bool = True, df=None):
    """Minimum detectable effect size (SD units) of a two-level cluster design.

    Parameters
    ----------
    n_clusters : int or array
        J, the number of districts in the comparison.
    cluster_size : float
        n, teachers per district (harmonic or simple mean).
    icc : float
        rho, share of the outcome variance between districts.
    r2_cluster, r2_individual : float
        Shares of the district and teacher variance explained by covariates.
    treated_share : float
        P, share of the J districts with the model (vs the reference).
    covariates : int
        g, number of district-level covariates.
    groups, strata : int
        Number of compared groups and of fixed strata (blocks); they set the
        degrees of freedom ``J - strata - (groups - 1) - g`` unless ``df``
        is given.

    Examples
    --------
    PowerUp! (``PowerUpR::mdes.cra2r2(rho2=.17, n=15, J=20)``: MDES 0.629, df 18) and
    an individually randomised design (``mdes.ira1r1(n=250)``: 0.356, df 248):

    >>> round(mdes(n_clusters=20, cluster_size=15, icc=0.17), 3)
    0.629
    >>> round(mdes(n_clusters=250, cluster_size=1, icc=0.0), 3)
    0.356
    """
    J = np.asarray(n_clusters, dtype=float)
    if df is None:
        df = J - strata - (groups - 1) - covariates
    se = np.sqrt(_variance_per_cluster(cluster_size, icc, r2_cluster, r2_individual)
                 / (treated_share * (1 - treated_share) * J))
    out = multiplier(df, alpha=alpha, power=power, two_tailed=two_tailed) * se
    return float(out) if np.ndim(out) == 0 else out


def power_for_effect(effect, *, standard_error, df, alpha: float = 0.05,
                     two_tailed: bool = True):
    """Power to detect ``effect`` (same units as ``standard_error``): the noncentral-t
    rejection probability, as PowerUp!.

    Examples
    --------
    >>> se = mdes(n_clusters=20, cluster_size=15, icc=0.17) / float(multiplier(18))
    >>> round(float(power_for_effect(0.629, standard_error=se, df=18)), 2)
    0.8
    """
    ncp = np.asarray(effect, dtype=float) / standard_error
    if two_tailed:
        q = stats.t.ppf(1 - alpha / 2, df)
        return stats.nct.sf(q, df, ncp) + stats.nct.cdf(-q, df, ncp)
    return stats.nct.sf(stats.t.ppf(1 - alpha, df), df, ncp)


def required_clusters(target, *, cluster_size, icc, r2_cluster: float = 0.0,
                      r2_individual: float = 0.0, treated_share: float = 0.5,
                      covariates: int = 0, groups: int = 2, strata: int = 1,
                      alpha: float = 0.05, power: float = 0.80, two_tailed: bool = True
                      ) -> int:
    """Smallest number of districts J whose MDES is at most ``target`` (SD units).

    Examples
    --------
    >>> required_clusters(0.63, cluster_size=15, icc=0.17)   # PowerUpR mrss.cra2r2: 20
    20
    """
    kw = dict(cluster_size=cluster_size, icc=icc, r2_cluster=r2_cluster,
              r2_individual=r2_individual, treated_share=treated_share, covariates=covariates,
              groups=groups, strata=strata, alpha=alpha, power=power, two_tailed=two_tailed)
    lo = strata + groups + covariates + 1
    if mdes(n_clusters=lo, **kw) <= target:
        return int(lo)
    hi = lo * 2
    while mdes(n_clusters=hi, **kw) > target:
        hi *= 2
    j = optimize.brentq(lambda x: mdes(n_clusters=x, **kw) - target, lo, hi, xtol=1e-9)
    return int(np.ceil(j - 1e-9))


def sd_of_binary(base_rate: float) -> float:
    """One SD of a 0/1 outcome with the given rate."""
    return float(np.sqrt(base_rate * (1 - base_rate)))


def allocation_table(*, n_districts: int, allocation: dict[str, float], reference: str,
                     cluster_size: float, icc: float, r2_cluster: float = 0.0,
                     r2_individual: float = 0.0, covariates: int = 0, strata: int = 1,
                     base_rate: float = 0.5, effects_pp=(5.0, 10.0), alpha: float = 0.05,
                     power: float = 0.80) -> pd.DataFrame:
    """MDES and power of each model's comparison with the reference for a total of
    ``n_districts`` districts allocated across the models by ``allocation`` (shares).

    Returns
    -------
    DataFrame
        ``support_model, n_districts_model, n_districts_reference, df, mdes_sd,
        mdes_pp`` and ``power_<e>pp`` for each effect in ``effects_pp``.

    Examples
    --------
    >>> t = allocation_table(n_districts=300, allocation={"a": 0.5, "b": 0.5}, reference="a",
    ...                      cluster_size=15, icc=0.17)
    >>> round(float(t["mdes_sd"].iloc[0]), 3) == round(mdes(n_clusters=300, cluster_size=15,
    ...                                                     icc=0.17), 3)
    True
    """
    shares = pd.Series(allocation, dtype=float)
    shares = shares / shares.sum()
    groups = len(shares)
    df = n_districts - strata - (groups - 1) - covariates
    var1 = _variance_per_cluster(cluster_size, icc, r2_cluster, r2_individual)
    sd = sd_of_binary(base_rate)
    rows = []
    for model, share in shares.items():
        if model == reference:
            continue
        jk, jr = share * n_districts, shares[reference] * n_districts
        se = float(np.sqrt(var1 * (1 / jk + 1 / jr)))
        row = {"support_model": model, "n_districts_model": jk, "n_districts_reference": jr,
               "df": df, "mdes_sd": float(multiplier(df, alpha=alpha, power=power)) * se}
        row["mdes_pp"] = 100 * row["mdes_sd"] * sd
        for e in effects_pp:
            row[f"power_{e:g}pp"] = float(power_for_effect(e / 100 / sd, standard_error=se,
                                                           df=df, alpha=alpha))
        rows.append(row)
    return pd.DataFrame(rows)


def required_districts(target_pp: float, *, allocation: dict[str, float], reference: str,
                       cluster_size: float, icc: float, r2_cluster: float = 0.0,
                       r2_individual: float = 0.0, covariates: int = 0, strata: int = 1,
                       base_rate: float = 0.5, alpha: float = 0.05, power: float = 0.80
                       ) -> pd.DataFrame:
    """Total districts needed (with this allocation) for each model's MDES against the
    reference to be at most ``target_pp`` percentage points.

    Examples
    --------
    >>> required_districts(10, allocation={"a": 0.5, "b": 0.5}, reference="a", cluster_size=15,
    ...                    icc=0.17)["n_districts"].item() == required_clusters(
    ...     0.2, cluster_size=15, icc=0.17)
    True
    """
    shares = pd.Series(allocation, dtype=float)
    shares = shares / shares.sum()
    kw = dict(cluster_size=cluster_size, icc=icc, r2_cluster=r2_cluster,
              r2_individual=r2_individual, covariates=covariates, strata=strata,
              base_rate=base_rate, alpha=alpha, power=power, effects_pp=())
    target = target_pp
    rows = []
    for model in shares.index:
        if model == reference:
            continue

        def gap(j, model=model):
            t = allocation_table(n_districts=j, allocation=dict(shares), reference=reference,
                                 **kw)
            return float(t.set_index("support_model").loc[model, "mdes_pp"]) - target

        lo = strata + len(shares) + covariates + 1
        hi = lo * 2
        while gap(hi) > 0:
            hi *= 2
        j = lo if gap(lo) <= 0 else optimize.brentq(gap, lo, hi, xtol=1e-9)
        rows.append({"support_model": model, "target_mdes_pp": target_pp,
                     "n_districts": int(np.ceil(j - 1e-9)),
                     "n_teachers": int(np.ceil(np.ceil(j - 1e-9) * cluster_size))})
    return pd.DataFrame(rows)


def _anova_icc(y: np.ndarray, groups: np.ndarray) -> tuple[float, float, np.ndarray]:
    """One-way ANOVA ICC, the within-group mean square, and the group sizes."""
    codes, _ = pd.factorize(groups)
    k = codes.max() + 1
    n_j = np.bincount(codes, minlength=k).astype(float)
    N = n_j.sum()
    means = np.bincount(codes, weights=y, minlength=k) / n_j
    grand = y.mean()
    msb = np.sum(n_j * (means - grand) ** 2) / (k - 1)
    msw = np.sum((y - means[codes]) ** 2) / (N - k)
    n0 = (N - np.sum(n_j ** 2) / N) / (k - 1)
    sb = max((msb - msw) / n0, 0.0)
    return float(sb / (sb + msw)), float(msw), n_j


def design_parameters(teachers: pd.DataFrame, *, outcome: str = "non_substitutive"
                      ) -> dict:
    """Planning parameters estimated from a processed study (the bundled one by default).

    ``icc``: one-way ANOVA intraclass correlation of the outcome across districts;
    ``r2_cluster``: share of the between-district variance explained by M1's
    district covariates (from district means, less their within-district
    sampling variance); ``r2_individual``: share of the within-district variance
    explained by the teacher covariates; ``cluster_size``: mean analysed teachers
    per district; ``allocation``: share of districts per model; ``base_rate``:
    the weighted rate in the reference model.
    """
    from analysis.stats.models import model_data
    from analysis.study.codebook import load_codebook

    cb = load_codebook()
    data = model_data(teachers)
    cols = [outcome, "support_model", "frl_pct", "enrollment", "locale", "tech_spend_pp",
            "students_per_device", "years_teaching", "grade_band", "subject"]
    data = data.dropna(subset=cols).reset_index(drop=True)
    y = data[outcome].to_numpy(dtype=float)
    icc, msw, n_j = _anova_icc(y, data["district_id"].to_numpy())
    dist = data.groupby("district_id", sort=True)
    means = dist[outcome].mean().to_numpy()
    first = dist.first()
    Xd = np.column_stack([np.ones(len(first)), first["frl_pct"], np.log(first["enrollment"]),
                          first["tech_spend_pp"] / 100, first["students_per_device"]]
                         + [(first["locale"].astype(object) == lv).to_numpy(float)
                            for lv in load_codebook().scale_values("locale")[1:]])
    resid = means - Xd @ np.linalg.lstsq(Xd, means, rcond=None)[0]
    noise = msw * np.mean(1 / n_j)
    tau = np.var(means, ddof=1) - noise
    tau_res = np.sum(resid ** 2) / (len(means) - Xd.shape[1]) - noise
    r2_cluster = float(np.clip(1 - tau_res / tau, 0, 0.99)) if tau > 0 else 0.0
    codes = pd.factorize(data["district_id"])[0]
    Xt = np.column_stack([data["years_teaching"].to_numpy(float)]
                         + [(data[c].astype(object) == lv).to_numpy(float)
                            for c in ("grade_band", "subject")
                            for lv in data[c].cat.categories[1:]])

    def centre(a):
        a = np.asarray(a, dtype=float)
        sums = np.array([np.bincount(codes, weights=a[:, j]) for j in range(a.shape[1])]).T \
            if a.ndim == 2 else np.bincount(codes, weights=a)
        cnt = np.bincount(codes).astype(float)
        return a - (sums / (cnt[:, None] if a.ndim == 2 else cnt))[codes]

    yc, Xc = centre(y), centre(Xt)
    fitted = Xc @ np.linalg.lstsq(Xc, yc, rcond=None)[0]
    r2_individual = float(np.clip(np.sum(fitted ** 2) / np.sum(yc ** 2), 0, 0.99))
    districts = data.drop_duplicates("district_id")
    counts = districts["support_model"].astype(object).value_counts()
    codes_ = cb.support_model_codes()
    ref = cb.reference_model
    inref = data["support_model"].astype(object) == ref
    w = data["weight"].to_numpy(float)
    base = float(np.sum(w[inref] * y[inref]) / np.sum(w[inref]))
    return {"outcome": outcome, "n_districts": int(len(districts)),
            "n_teachers": int(len(data)), "cluster_size": float(np.mean(n_j)),
            "icc": icc, "r2_cluster": r2_cluster, "r2_individual": r2_individual,
            "district_covariates": 5, "strata": int(data["stratum"].nunique()),
            "base_rate": base, "reference": ref,
            "allocation": {c: float(counts.get(c, 0) / len(districts)) for c in codes_}}


def power_results(teachers: pd.DataFrame, *, effects_pp=(5.0, 10.0), target_pp: float = 10.0
                  ) -> dict:
    """The ``power`` entry of ``results.json``: the analytic MDES and power of each model's
    comparison for the bundled design, and the districts needed for a ``target_pp`` MDES."""
    p = design_parameters(teachers)
    kw = dict(allocation=p["allocation"], reference=p["reference"],
              cluster_size=p["cluster_size"], icc=p["icc"], r2_cluster=p["r2_cluster"],
              r2_individual=p["r2_individual"], covariates=p["district_covariates"],
              strata=p["strata"], base_rate=p["base_rate"])
    table = allocation_table(n_districts=p["n_districts"], effects_pp=effects_pp, **kw)
    need = required_districts(target_pp, **kw)
    return {"method": "analytic two-level MDES (Bloom 2006; Dong and Maynard 2013, CRA2_2) "
                      "with the bundled design's parameters; alpha 0.05 two-sided, power 0.80",
            "parameters": p, "mdes": table.to_dict(orient="records"),
            "required_districts": need.to_dict(orient="records")}


# ---------------------------------------------------------------------------
# Simulation
# ---------------------------------------------------------------------------
def simulate_replication(seed: int, *, scenario: str = "default", n_districts=None,
                         teacher_respondents=None, overrides: dict | None = None,
                         alpha: float = 0.05) -> pd.DataFrame:
    """One replication: simulate a study, write its raw exports to a temporary folder,
    clean them and fit M1 on the survey design.

    Returns
    -------
    DataFrame
        One row per support model: ``seed, support_model, estimate, std_error,
        p_value, ci_low, ci_high, true_ame, significant, covers`` (probability scale).
    """
    from threadpoolctl import threadpool_limits

    from analysis.data.clean import clean_study
    from analysis.stats.robustness import m1_ames
    from analysis.study.simulate import simulate_study, write_raw

    with threadpool_limits(1):
        study = simulate_study(scenario, seed=int(seed), n_districts=n_districts,
                               teacher_respondents=teacher_respondents, overrides=overrides)
        with tempfile.TemporaryDirectory(prefix="power-") as tmp:
            write_raw(study, Path(tmp))
            teachers = clean_study(Path(tmp)).teachers
        ame = m1_ames(teachers)
    truth = pd.Series(study.truth["ame_pp"]) / 100
    ame["true_ame"] = ame["support_model"].map(truth)
    ame["significant"] = ame["p_value"] < alpha
    ame["covers"] = (ame["ci_low"] <= ame["true_ame"]) & (ame["true_ame"] <= ame["ci_high"])
    ame.insert(0, "seed", int(seed))
    return ame[["seed", "support_model", "estimate", "std_error", "p_value", "ci_low",
                "ci_high", "true_ame", "significant", "covers"]]


def replication_seeds(seed: int, replications: int) -> list[int]:
    """Independent integer seeds for the replications (NumPy ``SeedSequence``).

    Examples
    --------
    >>> replication_seeds(1, 3) == replication_seeds(1, 3)
    True
    """
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(replications)]


def simulate_power(replications: int = 200, *, scenario: str = "default", seed: int = 1,
                   n_districts=None, teacher_respondents=None, overrides: dict | None = None,
                   workers: int | None = None, backend: str = "loky", client=None,
                   alpha: float = 0.05, progress: bool = True) -> tuple[pd.DataFrame,
                                                                        pd.DataFrame]:
    """Simulation-based power of M1's AMEs: the share of replications in which each
    support model's AME is significant at ``alpha``.

    Parameters
    ----------
    replications : int
        Number of simulated studies.
    scenario, seed, n_districts, teacher_respondents, overrides
        The simulator's scenario and sizes (``None``: the scenario's, i.e. the
        bundled study's size).
    workers : int, optional
        Parallel processes (default: all cores). ``1`` runs in this process.
    backend : {"loky", "dask"}
        ``"loky"``: joblib processes. ``"dask"``: the same replication function
        on a ``dask.distributed`` cluster: ``client`` if given, else a local
        cluster of ``workers`` single-threaded worker processes.

    Returns
    -------
    (DataFrame, DataFrame)
        The summary per model (``SUMMARY_COLUMNS``; ``attrs["runtime_s"]``) and
        the table of every replication (:func:`simulate_replication`).
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    seeds = replication_seeds(seed, replications)
    kw = dict(scenario=scenario, n_districts=n_districts,
              teacher_respondents=teacher_respondents, overrides=overrides, alpha=alpha)
    workers = workers or os.cpu_count() or 1
    bar = tqdm(total=replications, desc="power", unit="study", disable=not progress)
    parts = []
    if backend == "loky":
        from joblib import Parallel, delayed

        run = Parallel(n_jobs=workers, backend="loky", return_as="generator_unordered")
        for part in run(delayed(simulate_replication)(s, **kw) for s in seeds):
            parts.append(part)
            bar.update()
    elif backend == "dask":
        from dask.distributed import as_completed

        from analysis.stats.parallel import dask_client

        with dask_client(client, workers) as dc:
            futures = dc.map(simulate_replication, seeds, pure=False, **kw)
            for fut in as_completed(futures):
                parts.append(fut.result())
                bar.update()
    else:
        raise ValueError("backend must be 'loky' or 'dask'")
    bar.close()
    reps = pd.concat(parts, ignore_index=True).sort_values(["seed", "support_model"],
                                                           ignore_index=True)
    summary = summarise_power(reps)
    summary.attrs["runtime_s"] = time.perf_counter() - start
    return summary, reps


def summarise_power(reps: pd.DataFrame) -> pd.DataFrame:
    """Power (with its Monte Carlo SE), mean estimate, truth, bias and CI coverage per model.

    Examples
    --------
    >>> reps = pd.DataFrame({"seed": [1, 2], "support_model": "coaching", "estimate": [0.1, 0.2],
    ...                      "true_ame": 0.15, "significant": [True, False],
    ...                      "covers": [True, True]})
    >>> summarise_power(reps)[["power", "coverage"]].iloc[0].tolist()
    [0.5, 1.0]
    """
    g = reps.groupby("support_model", sort=False)
    out = pd.DataFrame({
        "power": g["significant"].mean(),
        "mean_estimate_pp": 100 * g["estimate"].mean(),
        "true_ame_pp": 100 * g["true_ame"].mean(),
        "coverage": g["covers"].mean(),
        "replications": g.size(),
    }).reset_index()
    out["mc_std_error"] = np.sqrt(out["power"] * (1 - out["power"]) / out["replications"])
    out["bias_pp"] = out["mean_estimate_pp"] - out["true_ame_pp"]
    return out[SUMMARY_COLUMNS]

"""Scale reliability: Cronbach's alpha and McDonald's omega, with confidence intervals.

- :func:`cronbach_alpha`: ``k / (k - 1) (1 - tr(C) / 1'C1)`` from the item
  covariance matrix C (listwise, or pairwise as R's ``psych::alpha`` default),
  with Feldt's F-based CI (Feldt, Woodruff and Salih 1987; R's
  ``psych::alpha.ci``) or a percentile bootstrap.
- :func:`mcdonald_omega`: omega from a one-factor model fitted by maximum
  likelihood, ``(sum lambda)^2 / ((sum lambda)^2 + sum psi)``; unstandardised
  (the reliability of the mean of the raw items, the scale score the project
  uses) or standardised (of the mean of z-scored items). The fit is R's
  ``factanal``: the ML discrepancy concentrated on the uniquenesses of the
  correlation matrix, uniquenesses bounded below by 0.005 (Heywood cases), here
  minimised by a projected Newton method that runs on a stack of matrices at
  once, so the bootstrap (percentile CI, seeded) is vectorised.
- :func:`scale_reliability`: both statistics for several scales, as one tidy
  table with a flag for alpha below .70; :func:`study_reliability` for the
  study's four scales, items and reverse-coding from the codebook.

Bootstrap resamples are drawn as multinomial counts over the distinct
response patterns (Likert data have few), which is the same distribution as
resampling rows and needs no loop over rows or replicates.

Examples
--------
>>> import numpy as np, pandas as pd
>>> from analysis.stats.reliability import cronbach_alpha, mcdonald_omega
>>> rng = np.random.default_rng(0)
>>> trait = rng.normal(size=500)
>>> df = pd.DataFrame({f"q{i}": trait + rng.normal(size=500) for i in range(1, 5)})
>>> res = cronbach_alpha(df, items=["q1", "q2", "q3", "q4"])
>>> round(float(res["alpha"].iloc[0]), 1)       # 4 r / (1 + 3 r) with r = 0.5 is 0.8
0.8
>>> om = mcdonald_omega(df, items=["q1", "q2", "q3", "q4"], n_boot=200, seed=1)
>>> bool(om["ci_low"].iloc[0] < om["omega"].iloc[0] < om["ci_high"].iloc[0])
True
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

#: factanal's lower bound on the uniquenesses (of the correlation matrix).
UNIQUENESS_LOWER = 0.005
ALPHA_FLAG = 0.70
RELIABILITY_COLUMNS = ["scale", "n_items", "n", "alpha", "alpha_ci_low", "alpha_ci_high",
                       "omega", "omega_ci_low", "omega_ci_high", "flag"]
#: The study's multi-item scales (codebook constructs) and the table they live in.
STUDY_SCALES = {"it_control": "districts", "vision": "districts",
                "support_quality": "teachers", "self_efficacy": "teachers"}


# ---------------------------------------------------------------------------
# Items
# ---------------------------------------------------------------------------
def _item_matrix(data: pd.DataFrame, items, reverse, points) -> np.ndarray:
    missing = [c for c in items if c not in data.columns]
    if missing:
        raise KeyError(f"items not in the data: {missing}")
    if len(items) < 2:
        raise ValueError("a scale needs at least two items")
    X = data[list(items)].to_numpy(dtype=float, copy=True)
    rev = np.isin(np.asarray(items), np.asarray(list(reverse), dtype=object))
    X[:, rev] = points + 1 - X[:, rev]
    return X


def _covariance(X: np.ndarray, nan_policy: str) -> tuple[np.ndarray, int]:
    """Item covariance matrix and the n behind it (listwise: complete rows; pairwise:
    rows with any item answered, as psych's Feldt CI counts them)."""
    if nan_policy == "listwise":
        X = X[~np.isnan(X).any(axis=1)]
        if len(X) < 3:
            raise ValueError("fewer than three complete rows")
        return np.cov(X, rowvar=False), len(X)
    if nan_policy != "pairwise":
        raise ValueError("nan_policy must be 'listwise' or 'pairwise'")
    C = pd.DataFrame(X).cov().to_numpy()          # pairwise complete, n - 1 denominators
    return C, int((~np.isnan(X)).any(axis=1).sum())


def _alpha(C: np.ndarray) -> np.ndarray:
    """Cronbach's alpha of (..., k, k) covariance matrices."""
    k = C.shape[-1]
    return k / (k - 1) * (1 - np.trace(C, axis1=-2, axis2=-1) / C.sum(axis=(-2, -1)))


def feldt_ci(alpha: float, n: int, k: int, *, level: float = 0.95) -> tuple[float, float]:
    """Feldt's CI for alpha: 1 - (1 - alpha) F quantiles on (n - 1, (n - 1)(k - 1)) df.

    Examples
    --------
    >>> [round(v, 3) for v in feldt_ci(0.591719, 15, 10)]    # pingouin's example
    [0.195, 0.84]
    """
    df1, df2 = n - 1, (n - 1) * (k - 1)
    tail = (1 - level) / 2
    return (float(1 - (1 - alpha) * stats.f.isf(tail, df1, df2)),
            float(1 - (1 - alpha) * stats.f.isf(1 - tail, df1, df2)))


# ---------------------------------------------------------------------------
# One-factor maximum likelihood (factanal), on stacks of correlation matrices
# ---------------------------------------------------------------------------
def _top_factor(R, psi):
    """Largest eigenpair of Psi^-1/2 R Psi^-1/2, all eigenvalues, and the loadings."""
    sc = 1 / np.sqrt(psi)
    vals, vecs = np.linalg.eigh(R * sc[..., :, None] * sc[..., None, :])
    top = vals[..., -1]
    load = np.sqrt(psi) * vecs[..., -1] * np.sqrt(np.maximum(top - 1, 0))[..., None]
    return vals, load


def _objective(R, psi):
    """factanal's FAfn: sum over the non-factor eigenvalues of (e - log e - 1)."""
    vals, _ = _top_factor(R, psi)
    rest = vals[..., :-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sum(rest - np.log(rest) - 1, axis=-1)


def _gradient(R, psi):
    """factanal's FAgr: diag(Lambda Lambda' + Psi - R) / psi^2."""
    _, load = _top_factor(R, psi)
    return (load ** 2 + psi - np.diagonal(R, axis1=-2, axis2=-1)) / psi ** 2


def _newton_step(R, psi, lower):
    """Projected Newton step on the uniquenesses (Hessian by central differences of the
    analytic gradient; bound coordinates held; gradient step where not a descent)."""
    p = R.shape[-1]
    eye = np.eye(p)
    g = _gradient(R, psi)
    h = 1e-6 * psi
    H = np.stack([(_gradient(R, psi + h[:, [i]] * eye[i]) -
                   _gradient(R, psi - h[:, [i]] * eye[i])) / (2 * h[:, [i]])
                  for i in range(p)], axis=-1)
    H = 0.5 * (H + np.swapaxes(H, -1, -2))
    free = ~(((psi <= lower) & (g > 0)) | ((psi >= 1) & (g < 0)))
    Hf = np.where(free[:, :, None] & free[:, None, :], H, eye)
    gf = np.where(free, g, 0.0)
    step = -np.linalg.solve(Hf, gf[..., None])[..., 0]
    descent = (step * gf).sum(axis=-1) < 0
    return np.where(descent[:, None], step, -gf * psi ** 2)


def one_factor_ml(R: np.ndarray, *, lower: float = UNIQUENESS_LOWER, tol: float = 1e-12,
                  max_iter: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Maximum likelihood one-factor model of correlation matrices (R's ``factanal``).

    Parameters
    ----------
    R : array (..., p, p)
        Correlation matrices (a stack is fitted at once).
    lower : float
        Lower bound of the uniquenesses (factanal's 0.005).

    Returns
    -------
    loadings, uniquenesses : arrays (..., p)
        Standardised loadings (signed so that their sum is positive) and
        uniquenesses.

    Examples
    --------
    >>> R = np.full((3, 3), 0.36) + np.diag([0.64] * 3)     # loadings 0.6
    >>> load, psi = one_factor_ml(R)
    >>> np.round(load, 6).tolist(), np.round(psi, 6).tolist()
    ([0.6, 0.6, 0.6], [0.64, 0.64, 0.64])
    """
    R = np.asarray(R, dtype=float)
    single = R.ndim == 2
    R = R[None] if single else R.reshape(-1, *R.shape[-2:])
    p = R.shape[-1]
    ok = np.isfinite(R).all(axis=(-2, -1))
    R = np.where(ok[:, None, None], R, np.eye(p))
    eig = np.linalg.eigvalsh(R)
    ok &= eig[:, 0] > 1e-10 * eig[:, -1]              # singular (e.g. bootstrap) matrices
    R = np.where(ok[:, None, None], R, np.eye(p))
    psi = np.clip((1 - 0.5 / p) / np.diagonal(np.linalg.inv(R), axis1=-2, axis2=-1),
                  lower, 1.0)                                    # factanal's start
    f = _objective(R, psi)
    active = np.arange(len(R))                 # matrices not yet converged
    for _ in range(max_iter):
        Ra, pa, fa = R[active], psi[active], f[active]
        step = _newton_step(Ra, pa, lower)
        t = np.ones(len(active))
        new, f_new = pa, fa
        todo = np.arange(len(active))          # step halving where the objective rose
        for _ in range(40):
            trial = np.clip(pa[todo] + t[todo, None] * step[todo], lower, 1.0)
            f_trial = _objective(Ra[todo], trial)
            ok_ = f_trial <= fa[todo] + 1e-12 * (1 + np.abs(fa[todo]))
            new = new.copy()
            f_new = f_new.copy()
            new[todo[ok_]], f_new[todo[ok_]] = trial[ok_], f_trial[ok_]
            todo = todo[~ok_]
            if not len(todo):
                break
            t[todo] /= 2
        moved = np.abs(new - pa).max(axis=-1)
        psi[active], f[active] = new, f_new
        active = active[moved >= tol]
        if not len(active):
            break
    _, load = _top_factor(R, psi)
    load = load * np.where(load.sum(axis=-1) < 0, -1.0, 1.0)[:, None]
    load[~ok], psi[~ok] = np.nan, np.nan
    return (load[0], psi[0]) if single else (load, psi)


def _omega(C: np.ndarray, *, standardized: bool) -> np.ndarray:
    """Omega of (..., p, p) covariance matrices from the one-factor ML fit."""
    sd = np.sqrt(np.diagonal(C, axis1=-2, axis2=-1))
    R = C / (sd[..., :, None] * sd[..., None, :])
    load, psi = one_factor_ml(R)
    if not standardized:
        load, psi = load * sd, psi * sd ** 2
    common = load.sum(axis=-1) ** 2
    return common / (common + psi.sum(axis=-1))


# ---------------------------------------------------------------------------
# Bootstrap (multinomial counts over response patterns)
# ---------------------------------------------------------------------------
def _bootstrap_covariances(X: np.ndarray, n_boot: int, seed, *, chunk_cells: int = 2_000_000):
    """Covariance matrices (n_boot, p, p) of row-bootstrap resamples of complete data X."""
    rng = np.random.default_rng(seed)
    patterns, counts = np.unique(X, axis=0, return_counts=True)
    n, p = X.shape
    outer = (patterns[:, :, None] * patterns[:, None, :]).reshape(len(patterns), p * p)
    probs = counts / n
    covs = np.empty((n_boot, p, p))
    step = max(1, chunk_cells // len(patterns))
    for start in range(0, n_boot, step):                 # chunks bound the memory only
        m = min(step, n_boot - start)
        draws = rng.multinomial(n, probs, size=m).astype(float)     # (m, patterns)
        mean = draws @ patterns / n
        second = (draws @ outer).reshape(m, p, p)
        covs[start:start + m] = (second - n * mean[:, :, None] * mean[:, None, :]) / (n - 1)
    return covs


def _percentile_ci(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2
    lo, hi = np.nanquantile(values, [tail, 1 - tail])
    return float(lo), float(hi)


# ---------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------
def cronbach_alpha(data: pd.DataFrame, *, items: list[str], reverse=(), points: int = 5,
                   ci: float = 0.95, method: str = "feldt", n_boot: int = 1000,
                   seed: int | None = None, nan_policy: str = "listwise") -> pd.DataFrame:
    """Cronbach's alpha of ``items`` with a confidence interval.

    Parameters
    ----------
    data : DataFrame
    items : list of str
        Item columns (numeric).
    reverse : list of str
        Items to reverse-code as ``points + 1 - x`` first.
    points : int
        Number of response options of the items (for reverse-coding).
    ci : float
        Confidence level.
    method : {"feldt", "bootstrap"}
        Feldt's F-based interval (R's ``psych::alpha.ci``), or a percentile
        bootstrap of rows (``n_boot`` resamples, ``seed``; listwise only).
    nan_policy : {"listwise", "pairwise"}
        ``listwise``: complete rows only (the scale score is missing unless every
        item is answered). ``pairwise``: pairwise-complete covariances, as
        ``psych::alpha``'s default; Feldt's n is then the number of rows.

    Returns
    -------
    DataFrame
        One row: ``n_items, n, alpha, ci_low, ci_high``.

    Examples
    --------
    >>> df = pd.DataFrame({"a": [1, 2, 3, 4, 5, 2], "b": [2, 2, 3, 5, 5, 1],
    ...                    "c": [1, 3, 3, 4, 4, 2]})
    >>> cronbach_alpha(df, items=["a", "b", "c"]).round(4).to_dict("records")   # R: psych
    [{'n_items': 3, 'n': 6, 'alpha': 0.9434, 'ci_low': 0.7601, 'ci_high': 0.9914}]
    """
    X = _item_matrix(data, items, reverse, points)
    C, n = _covariance(X, nan_policy)
    alpha = float(_alpha(C))
    k = len(items)
    if method == "feldt":
        lo, hi = feldt_ci(alpha, n, k, level=ci)
    elif method == "bootstrap":
        if nan_policy != "listwise":
            raise ValueError("the bootstrap CI is for listwise deletion")
        covs = _bootstrap_covariances(X[~np.isnan(X).any(axis=1)], n_boot, seed)
        lo, hi = _percentile_ci(_alpha(covs), ci)
    else:
        raise ValueError("method must be 'feldt' or 'bootstrap'")
    return pd.DataFrame({"n_items": [k], "n": [n], "alpha": [alpha], "ci_low": [lo],
                         "ci_high": [hi]})


def mcdonald_omega(data: pd.DataFrame, *, items: list[str], reverse=(), points: int = 5,
                   ci: float = 0.95, n_boot: int = 1000, seed: int | None = None,
                   standardized: bool = False) -> pd.DataFrame:
    """McDonald's omega from a one-factor maximum likelihood model, with a percentile
    bootstrap CI (listwise deletion).

    ``standardized=False`` (default): ``(sum lambda_i)^2 / ((sum lambda_i)^2 + sum
    theta_i)`` with the loadings and unique variances of the covariance matrix,
    the reliability of the mean of the raw items. ``standardized=True``: the same
    with the standardised solution (items z-scored).

    Returns
    -------
    DataFrame
        One row: ``n_items, n, omega, ci_low, ci_high``.

    Examples
    --------
    >>> df = pd.DataFrame({"a": [1, 2, 3, 4, 5, 2], "b": [2, 2, 3, 5, 5, 1],
    ...                    "c": [1, 3, 3, 4, 4, 2]})
    >>> round(float(mcdonald_omega(df, items=["a", "b", "c"], n_boot=50, seed=0)["omega"]
    ...             .iloc[0]), 4)
    0.9535
    """
    X = _item_matrix(data, items, reverse, points)
    X = X[~np.isnan(X).any(axis=1)]
    C, n = _covariance(X, "listwise")
    omega = float(_omega(C, standardized=standardized))
    covs = _bootstrap_covariances(X, n_boot, seed)
    lo, hi = _percentile_ci(_omega(covs, standardized=standardized), ci)
    return pd.DataFrame({"n_items": [len(items)], "n": [n], "omega": [omega], "ci_low": [lo],
                         "ci_high": [hi]})


def one_factor_loadings(data: pd.DataFrame, *, items: list[str], reverse=(),
                        points: int = 5) -> pd.DataFrame:
    """Standardised one-factor ML loadings and uniquenesses of ``items`` (complete rows),
    as R's ``factanal(factors = 1)``.

    Returns
    -------
    DataFrame
        ``item, loading, uniqueness``.
    """
    X = _item_matrix(data, items, reverse, points)
    C, _ = _covariance(X, "listwise")
    sd = np.sqrt(np.diag(C))
    load, psi = one_factor_ml(C / np.outer(sd, sd))
    return pd.DataFrame({"item": list(items), "loading": load, "uniqueness": psi})


def scale_reliability(data: pd.DataFrame, *, scales: dict[str, list[str]], reverse=(),
                      points: int = 5, ci: float = 0.95, n_boot: int = 1000,
                      seed: int | None = None, threshold: float = ALPHA_FLAG) -> pd.DataFrame:
    """Alpha (Feldt CI) and omega (bootstrap CI) of several scales, one row each.

    Parameters
    ----------
    scales : dict
        Scale name -> its item columns.
    reverse : list of str
        Reverse-coded items (any scale).
    threshold : float
        ``flag`` is True where alpha is below it (.70 by default).

    Returns
    -------
    DataFrame
        ``scale, n_items, n, alpha, alpha_ci_low, alpha_ci_high, omega, omega_ci_low,
        omega_ci_high, flag`` (listwise deletion within each scale).

    Examples
    --------
    >>> rng = np.random.default_rng(3)
    >>> t = rng.normal(size=300)
    >>> df = pd.DataFrame({f"x{i}": np.round(3 + t + rng.normal(size=300)) for i in range(4)})
    >>> df["x3"] = 6 - df["x3"]
    >>> out = scale_reliability(df, scales={"x": ["x0", "x1", "x2", "x3"]}, reverse=["x3"],
    ...                         n_boot=100, seed=0)
    >>> out["flag"].tolist()
    [False]
    """
    rows = []
    for name, items in scales.items():
        a = cronbach_alpha(data, items=items, reverse=reverse, points=points, ci=ci)
        o = mcdonald_omega(data, items=items, reverse=reverse, points=points, ci=ci,
                           n_boot=n_boot, seed=seed)
        rows.append({"scale": name, "n_items": len(items), "n": int(a["n"].iloc[0]),
                     "alpha": a["alpha"].iloc[0], "alpha_ci_low": a["ci_low"].iloc[0],
                     "alpha_ci_high": a["ci_high"].iloc[0], "omega": o["omega"].iloc[0],
                     "omega_ci_low": o["ci_low"].iloc[0], "omega_ci_high": o["ci_high"].iloc[0],
                     "flag": bool(a["alpha"].iloc[0] < threshold)})
    return pd.DataFrame(rows, columns=RELIABILITY_COLUMNS)


def study_reliability(teachers: pd.DataFrame, districts: pd.DataFrame, *,
                      n_boot: int = 1000, seed: int | None = None) -> pd.DataFrame:
    """Reliability of the study's four scales (codebook constructs): ``it_control`` and
    ``vision`` over districts, ``support_quality`` and ``self_efficacy`` over teachers,
    reverse-coding the codebook's reverse items (D10_2). Unweighted.

    Returns
    -------
    DataFrame
        As :func:`scale_reliability`, scales in the order above.
    """
    from analysis.config import SEED
    from analysis.study.codebook import load_codebook

    cb = load_codebook()
    reverse = cb.reverse_items()
    seed = SEED if seed is None else seed
    tables = {"teachers": teachers, "districts": districts}
    out = []
    for name, table in STUDY_SCALES.items():
        items = [c.variable for c in cb.construct_items(name)]
        out.append(scale_reliability(tables[table], scales={name: items}, reverse=reverse,
                                     n_boot=n_boot, seed=seed))
    return pd.concat(out, ignore_index=True)

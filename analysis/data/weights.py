"""Survey weights: district base weights, nonresponse adjustment, teacher weights.

The design (instrument section 4): a stratified sample of districts, all
schools of a sampled district, all teachers invited.

- district base weight = 1 / selection_prob;
- district nonresponse adjustment within weighting classes (the stratum):
  sum of base weights of sampled districts / sum over responding districts;
- teacher weight = district weight x n_teachers / responding teachers in the school.

Examples
--------
>>> import pandas as pd
>>> frame = pd.DataFrame({"district_id": ["1", "2", "3"], "stratum": ["a", "a", "a"],
...                       "sampled": [1, 1, 0], "selection_prob": [0.5, 0.5, 0.5]})
>>> district_weights(frame, responding=["1"])["district_weight"].tolist()
[4.0]
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def district_weights(frame: pd.DataFrame, *, responding, district: str = "district_id",
                     stratum: str = "stratum", sampled: str = "sampled",
                     selection_prob: str = "selection_prob",
                     weighting_class: str | None = None) -> pd.DataFrame:
    """Base and nonresponse-adjusted weights of the responding districts.

    Parameters
    ----------
    frame : DataFrame
        The district frame (every population district).
    responding : iterable
        IDs of the districts that responded.
    weighting_class : str, optional
        Column of the nonresponse weighting classes; the stratum by default.

    Returns
    -------
    DataFrame
        One row per responding district: ``district_id``, ``stratum``,
        ``base_weight``, ``nonresponse_adjustment``, ``district_weight``.
    """
    weighting_class = weighting_class or stratum
    s = frame.loc[frame[sampled] == 1, [district, stratum, weighting_class, selection_prob]]
    s = s.loc[:, ~s.columns.duplicated()].copy()
    s["base_weight"] = 1.0 / s[selection_prob].astype(float)
    s["responded"] = s[district].isin(set(responding))
    sums = s.groupby(weighting_class)["base_weight"].sum()
    resp_sums = s.loc[s["responded"]].groupby(weighting_class)["base_weight"].sum()
    factor = (sums / resp_sums).rename("nonresponse_adjustment")
    out = s.loc[s["responded"]].join(factor, on=weighting_class)
    out["district_weight"] = out["base_weight"] * out["nonresponse_adjustment"]
    return out[[district, stratum, "base_weight", "nonresponse_adjustment",
                "district_weight"]].reset_index(drop=True)


def teacher_weights(teachers: pd.DataFrame, *, district_weight: str = "district_weight",
                    school: str = "school_id", n_teachers: str = "n_teachers") -> pd.Series:
    """Teacher weight: district weight x teachers in the school / responding teachers there.

    Examples
    --------
    >>> t = pd.DataFrame({"school_id": ["s", "s"], "district_weight": [2.0, 2.0],
    ...                   "n_teachers": [10, 10]})
    >>> teacher_weights(t).tolist()
    [10.0, 10.0]
    """
    responding = teachers.groupby(school)[school].transform("size")
    return (teachers[district_weight] * teachers[n_teachers] / responding).rename("weight")


class WeightingError(ValueError):
    """Weights that cannot be adjusted as asked (empty cells, no convergence)."""


def _as_array(data: pd.DataFrame, weights) -> np.ndarray:
    return (data[weights].to_numpy(dtype=float) if isinstance(weights, str)
            else np.asarray(weights, dtype=float))


def poststratify_weights(data: pd.DataFrame, *, weights, by: str, population) -> np.ndarray:
    """Weights scaled so that their total in each cell of ``by`` equals the population count.

    Parameters
    ----------
    weights : str or array
        Column name or the weights themselves.
    population : dict or Series
        Population count of each level of ``by``.

    Examples
    --------
    >>> df = pd.DataFrame({"g": ["a", "a", "b"], "w": [1.0, 3.0, 2.0]})
    >>> poststratify_weights(df, weights="w", by="g", population={"a": 8, "b": 1}).tolist()
    [2.0, 6.0, 1.0]
    """
    w = _as_array(data, weights)
    pop = pd.Series(population, dtype=float)
    cells = data[by]
    current = pd.Series(w).groupby(cells.to_numpy()).sum()
    missing_pop = sorted(set(current.index) - set(pop.index), key=str)
    if missing_pop:
        raise WeightingError(f"post-stratification: no population count for {by}="
                             f"{missing_pop[0]!r}")
    empty = sorted(set(pop.index[pop > 0]) - set(current.index[current > 0]), key=str)
    if empty:
        raise WeightingError(f"post-stratification: the sample has no one in {by}="
                             f"{empty[0]!r}; collapse cells first")
    factor = (pop / current).reindex(cells.to_numpy()).to_numpy()
    return w * factor


def rake_weights(data: pd.DataFrame, *, weights, margins: dict, max_iter: int = 100,
                 tol: float = 1e-10) -> tuple[np.ndarray, pd.DataFrame]:
    """Rake (iterative proportional fitting) the weights to several population margins.

    Parameters
    ----------
    margins : dict
        ``{column: {level: population count}}``; every margin must have the same
        total.
    max_iter, tol : convergence control: stop when the largest relative gap
        between a weighted margin and its target is below ``tol``.

    Returns
    -------
    (ndarray, DataFrame)
        The raked weights, and the convergence diagnostics: one row per sweep
        with ``iteration`` and ``max_relative_error``.

    Raises
    ------
    WeightingError
        When it does not converge within ``max_iter`` sweeps.

    Examples
    --------
    >>> df = pd.DataFrame({"a": ["x", "x", "y", "y"], "b": ["u", "v", "u", "v"]})
    >>> w, diag = rake_weights(df, weights=np.ones(4), margins={"a": {"x": 3, "y": 1},
    ...                                                        "b": {"u": 2, "v": 2}})
    >>> [round(v, 6) for v in w.tolist()]
    [1.5, 1.5, 0.5, 0.5]
    """
    w = _as_array(data, weights).copy()
    coded = []
    for col, target in margins.items():
        target = pd.Series(target, dtype=float)
        codes = pd.Categorical(data[col], categories=target.index).codes
        if (codes < 0).any():
            raise WeightingError(f"raking: {col} has values without a population margin")
        coded.append((col, codes, target.to_numpy()))
    history = []
    for it in range(1, max_iter + 1):
        for _, codes, target in coded:
            current = np.bincount(codes, weights=w, minlength=len(target))
            if (current[target > 0] == 0).any():
                raise WeightingError("raking: a margin cell with a population count has no "
                                     "sample; collapse cells first")
            w = w * (target / np.where(current == 0, 1, current))[codes]
        err = max(np.max(np.abs(np.bincount(codes, weights=w, minlength=len(target)) - target)
                         / np.maximum(target, 1e-300)) for _, codes, target in coded)
        history.append({"iteration": it, "max_relative_error": float(err)})
        if err < tol:
            return w, pd.DataFrame(history)
    raise WeightingError(f"raking did not converge in {max_iter} sweeps (largest relative "
                         f"margin error {err:.3g}); check the margins or collapse cells")


def trim_weights(weights, *, upper: float | None = None, lower: float | None = None,
                 max_iter: int = 50) -> np.ndarray:
    """Trim weights to [lower, upper] and spread the trimmed amount over the others.

    The total is preserved; trimming repeats until no weight is outside the
    bounds (redistribution can push others over the cap).

    Examples
    --------
    >>> trim_weights(np.array([1.0, 1.0, 10.0]), upper=5.0).tolist()
    [3.5, 3.5, 5.0]
    """
    w = np.asarray(weights, dtype=float).copy()
    total = w.sum()
    hi = np.inf if upper is None else upper
    lo = -np.inf if lower is None else lower
    for _ in range(max_iter):
        fixed = (w >= hi) | (w <= lo)
        w = np.clip(w, lo, hi)
        free = ~fixed
        gap = total - w.sum()
        if abs(gap) <= 1e-9 * total or not free.any():
            break
        w[free] = w[free] * (1 + gap / w[free].sum())
    if ((w > hi * (1 + 1e-9)) | (w < lo * (1 - 1e-9))).any():
        raise WeightingError("trimming did not settle: the bounds cannot hold the total")
    return w


def weights_report(data: pd.DataFrame, *, weights: str, by: str | None = None) -> pd.DataFrame:
    """Summary of a weight: sum, mean, min, max, CV, Kish effective n and design effect.

    The Kish effective sample size is (sum w)^2 / sum w^2; the design effect
    due to weighting is n / n_eff = 1 + CV^2 (CV with the population SD).

    Examples
    --------
    >>> df = pd.DataFrame({"w": [1.0, 1.0, 2.0, 4.0]})
    >>> r = weights_report(df, weights="w")
    >>> round(float(r["kish_n_eff"].iloc[0]), 4), round(float(r["deff_weighting"].iloc[0]), 4)
    (2.9091, 1.375)
    """
    groups = [("all", data)] if by is None else list(data.groupby(by, observed=True))
    rows = []
    for key, part in groups:
        w = part[weights].to_numpy(dtype=float)
        n = len(w)
        neff = w.sum() ** 2 / np.sum(w ** 2)
        rows.append({(by or "group"): key, "n": n, "sum": w.sum(), "mean": w.mean(),
                     "min": w.min(), "max": w.max(), "cv": w.std() / w.mean(),
                     "kish_n_eff": neff, "deff_weighting": n / neff})
    return pd.DataFrame(rows)

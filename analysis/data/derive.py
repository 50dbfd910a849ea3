"""Derived variables: teacher outcomes and district scale scores and ratios.

Examples
--------
>>> import pandas as pd
>>> from analysis.data.derive import samr_outcomes
>>> t = pd.DataFrame({"samr_self": ["S", "M"]})
>>> samr_outcomes(t, samr_self="samr_self")[["non_substitutive", "transformative"]].values.tolist()
[[0.0, 0.0], [1.0, 1.0]]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.study.codebook import Codebook, load_codebook


def samr_outcomes(data: pd.DataFrame, *, samr_self: str = "samr_self",
                  cb: Codebook | None = None) -> pd.DataFrame:
    """Per-teacher outcomes from T7 and the T6 items.

    Parameters
    ----------
    data : DataFrame
        Teacher rows with ``samr_self`` as level codes (S, A, M, R) and the T6
        items (``samr_freq_1`` ... ``samr_freq_8``) as 0-4 frequencies, where present.
    samr_self : str
        Column holding the T7 level code.

    Returns
    -------
    DataFrame
        ``samr_level`` (ordered S < A < M < R), ``non_substitutive`` (level >= A),
        ``transformative`` (level >= M), ``nonsub_share`` (share of T6 frequency
        mass on A, M and R items; missing when every item is Never or any is
        missing) and ``samr_index`` (frequency-weighted mean SAMR level, 1-4).
    """
    cb = cb or load_codebook()
    levels = cb.samr_levels
    level = pd.Categorical(data[samr_self], categories=levels, ordered=True)
    codes = pd.Series(level.codes, index=data.index).astype(float).replace(-1, np.nan)
    out = pd.DataFrame(index=data.index)
    out["samr_level"] = level
    out["non_substitutive"] = (codes >= levels.index("A")).astype(float).where(codes.notna())
    out["transformative"] = (codes >= levels.index("M")).astype(float).where(codes.notna())
    items = cb.samr_items()
    if all(col in data for col in items):
        freq = data[list(items)].astype(float).to_numpy()
        tag = np.array([cb.samr_numeric[items[c]] for c in items], dtype=float)
        total = freq.sum(axis=1)
        complete = ~np.isnan(freq).any(axis=1) & (total > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = (freq * (tag > 1)).sum(axis=1) / total
            index = (freq * tag).sum(axis=1) / total
        out["nonsub_share"] = np.where(complete, share, np.nan)
        out["samr_index"] = np.where(complete, index, np.nan)
    return out


def scale_score(data: pd.DataFrame, *, items: list[str], reverse: list[str] = (),
                points: int = 5) -> pd.Series:
    """Mean of Likert items after reverse-coding, missing unless every item is answered.

    Examples
    --------
    >>> df = pd.DataFrame({"a": [5, 1], "b": [1, 5]})
    >>> scale_score(df, items=["a", "b"], reverse=["b"]).tolist()
    [5.0, 1.0]
    """
    values = data[list(items)].astype(float).copy()
    for col in reverse:
        values[col] = points + 1 - values[col]
    return values.mean(axis=1, skipna=False)


def district_derived(districts: pd.DataFrame, cb: Codebook | None = None) -> pd.DataFrame:
    """``campuses_per_director``, ``coach_coverage`` and the scale scores of each district."""
    cb = cb or load_codebook()
    out = pd.DataFrame(index=districts.index)
    fte = districts["director_fte"].astype(float)
    out["campuses_per_director"] = (districts["n_campuses"] / fte).where(fte > 0)
    out["coach_coverage"] = districts["coach_fte"] / districts["n_campuses"]
    reverse = set(cb.reverse_items())
    for construct in ("it_control", "vision"):
        items = [c.variable for c in cb.construct_items(construct)]
        out[construct] = scale_score(districts, items=items,
                                     reverse=[i for i in items if i in reverse])
    return out


def derived_support_model(districts: pd.DataFrame, *, components: str = "support_components",
                          cb: Codebook | None = None) -> pd.Series:
    """The support model implied by D2 and the FTE counts.

    The highest-graded model whose D2 component the district reports (with
    its FTE above zero where the codebook names one: campus coaches need
    coach FTE, a director needs director FTE); the lowest-graded model when
    it reports none.
    """
    cb = cb or load_codebook()
    codes = cb.support_model_codes()          # grade order: lowest first
    derived = pd.Series(codes[0], index=districts.index, dtype=object)
    for comp in sorted(cb.support_components(), key=lambda c: codes.index(c["implies"])):
        has = districts[components].map(lambda cs, code=comp["code"]: code in cs)
        if comp.get("fte"):
            has &= districts[comp["fte"]] > 0
        derived[has] = comp["implies"]
    return derived

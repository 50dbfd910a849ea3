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

"""Survey design and design-based (Taylor-linearised) variance.

The variance of an estimator is computed from its influence values (one row
per observation, one column per estimate): the values are totalled within
primary sampling units, centred within strata and combined with the
finite-population correction, as R's ``survey::svyrecvar`` does for a
one-stage design:

    V = sum_h (1 - f_h) n_h / (n_h - 1) sum_i (z_hi - zbar_h)(z_hi - zbar_h)'

with z_hi the PSU totals, n_h the number of PSUs in stratum h and
f_h = n_h / N_h.

Examples
--------
>>> import numpy as np
>>> from analysis.stats.design import SurveyDesign
>>> import pandas as pd
>>> df = pd.DataFrame({"y": [1.0, 2, 3, 4], "w": [1.0, 1, 1, 1], "psu": [1, 2, 3, 4],
...                    "h": [1, 1, 1, 1]})
>>> d = SurveyDesign(df, weights="w", strata="h", psu="psu")
>>> round(float(d.mean("y")["std_error"].iloc[0]), 6)   # SD / sqrt(n) of 1..4
0.645497
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

LONELY_PSU_POLICIES = ("fail", "certainty", "adjust", "average", "remove")


class DesignError(ValueError):
    """A survey design that cannot give a variance (e.g. a stratum with one PSU)."""


@dataclass
class SurveyDesign:
    """A one-stage stratified cluster design (PSUs with replacement or with an FPC).

    Parameters
    ----------
    data : DataFrame
        One row per observation.
    weights : str
        Column of sampling weights.
    strata : str, optional
        Column of strata; one stratum when omitted.
    psu : str, optional
        Column of primary sampling units; each row its own PSU when omitted.
    fpc : str, optional
        Column with the finite-population correction of the first stage.
    fpc_type : {"count", "fraction"}
        ``"count"``: the column holds the number of PSUs in the population
        stratum, N_h (R's convention when values are > 1). ``"fraction"``: it
        holds the sampling fraction n_h / N_h. Never guessed silently: values
        that do not fit the declared type raise an error.
    lonely_psu : str
        What to do with a stratum that has a single PSU: ``"fail"`` (default),
        ``"certainty"`` (contributes nothing), ``"remove"`` (same as
        certainty), ``"adjust"`` (centre at the grand mean) or ``"average"``
        (the average variance contribution of the other strata), like R's
        ``options(survey.lonely.psu)``.
    """

    data: pd.DataFrame
    weights: str
    strata: str | None = None
    psu: str | None = None
    fpc: str | None = None
    fpc_type: str = "count"
    lonely_psu: str = "fail"

    def __post_init__(self):
        if self.lonely_psu not in LONELY_PSU_POLICIES:
            raise ValueError(f"lonely_psu must be one of {LONELY_PSU_POLICIES}")
        n = len(self.data)
        self.w = self.data[self.weights].to_numpy(dtype=float)
        strata = (self.data[self.strata] if self.strata else pd.Series(np.zeros(n)))
        self._stratum_codes, self.stratum_labels = pd.factorize(strata, sort=True)
        psu = self.data[self.psu] if self.psu else pd.Series(np.arange(n))
        key = pd.MultiIndex.from_arrays([self._stratum_codes, np.asarray(psu)])
        self._psu_codes, psu_index = pd.factorize(key, sort=True)
        self.n_psu = len(psu_index)
        self._psu_stratum = np.asarray(psu_index.get_level_values(0))
        self.n_strata = len(self.stratum_labels)
        self.psu_per_stratum = np.bincount(self._psu_stratum, minlength=self.n_strata)
        self._fpc_factor = self._finite_population_correction()

    def _finite_population_correction(self) -> np.ndarray:
        """(1 - f_h) per stratum."""
        if not self.fpc:
            return np.ones(self.n_strata)
        values = pd.Series(self.data[self.fpc].to_numpy(dtype=float))
        per = values.groupby(self._stratum_codes).agg(["min", "max"])
        if (per["min"] != per["max"]).any():
            raise DesignError(f"the fpc column {self.fpc!r} varies within a stratum")
        v = per["min"].to_numpy()
        n_h = self.psu_per_stratum
        if self.fpc_type == "count":
            if (v < n_h).any():
                raise DesignError(
                    f"fpc column {self.fpc!r} was declared as population counts, but in some "
                    "stratum it is smaller than the number of sampled PSUs; if it holds "
                    "sampling fractions, say fpc_type='fraction'")
            return 1.0 - n_h / v
        if self.fpc_type == "fraction":
            if ((v <= 0) | (v > 1)).any():
                raise DesignError(f"fpc column {self.fpc!r} was declared as sampling fractions "
                                  "but has values outside (0, 1]")
            return 1.0 - v
        raise ValueError("fpc_type must be 'count' or 'fraction'")

    @property
    def degrees_of_freedom(self) -> int:
        """Design degrees of freedom: PSUs minus strata."""
        return int(self.n_psu - self.n_strata)

    def domain_degrees_of_freedom(self, mask: np.ndarray) -> int:
        """Design df of a domain: PSUs with a row in the domain minus such strata.

        This is what R's ``degf`` gives for a subset of a design (e.g. the
        complete cases of a model).
        """
        mask = np.asarray(mask, dtype=bool)
        psus = np.unique(self._psu_codes[mask])
        strata = np.unique(self._psu_stratum[psus])
        return int(len(psus) - len(strata))

    def variance(self, influence: np.ndarray) -> np.ndarray:
        """Taylor-linearised variance matrix of estimates with the given influence values.

        Parameters
        ----------
        influence : array, shape (n,) or (n, k)
            Influence values (linearised scores) of each observation; rows
            outside the analysed domain are zero.
        """
        z = np.asarray(influence, dtype=float)
        if z.ndim == 1:
            z = z[:, None]
        z.shape[1]
        totals = group_sums(self._psu_codes, z, self.n_psu)
        n_h = self.psu_per_stratum
        sums = group_sums(self._psu_stratum, totals, self.n_strata)
        means = sums / n_h[:, None]
        lonely = n_h == 1
        if lonely.any() and self.lonely_psu == "fail":
            label = self.stratum_labels[np.flatnonzero(lonely)[0]]
            raise DesignError(
                f"stratum {label!r} has only one PSU, so its variance cannot be estimated; "
                "choose lonely_psu='certainty', 'adjust', 'average' or 'remove'")
        if self.lonely_psu == "adjust":
            grand = totals.mean(axis=0)
            means[lonely] = grand
        centred = totals - means[self._psu_stratum]
        scale = np.where(n_h > 1, n_h / np.maximum(n_h - 1, 1), 1.0) * self._fpc_factor
        if self.lonely_psu in ("certainty", "remove", "average"):
            scale = np.where(lonely, 0.0, scale)
        weighted = centred * np.sqrt(scale[self._psu_stratum])[:, None]
        v = weighted.T @ weighted
        if self.lonely_psu == "average" and lonely.any():
            v = v * self.n_strata / (self.n_strata - lonely.sum())
        return v

    # -- simple estimators -------------------------------------------------
    def mean(self, column: str, *, level: float = 0.95) -> pd.DataFrame:
        """Weighted mean with design-based SE and t-based CI (design df).

        Returns
        -------
        DataFrame
            ``term, estimate, std_error, ci_low, ci_high, n``.
        """
        y = self.data[column].to_numpy(dtype=float)
        ok = ~np.isnan(y)
        w = np.where(ok, self.w, 0.0)
        total_w = w.sum()
        est = np.sum(w * np.where(ok, y, 0.0)) / total_w
        infl = w * (np.where(ok, y, 0.0) - est) / total_w
        se = float(np.sqrt(self.variance(infl)[0, 0]))
        return _tidy_row(column, est, se, self.degrees_of_freedom, level, int(ok.sum()))

    def total(self, column: str, *, level: float = 0.95) -> pd.DataFrame:
        """Weighted total with design-based SE."""
        y = self.data[column].to_numpy(dtype=float)
        ok = ~np.isnan(y)
        contrib = np.where(ok, self.w * y, 0.0)
        se = float(np.sqrt(self.variance(contrib)[0, 0]))
        return _tidy_row(column, contrib.sum(), se, self.degrees_of_freedom, level, int(ok.sum()))


def group_sums(codes: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """Column sums of ``values`` (n, k) within groups coded 0..n_groups-1."""
    return np.column_stack([np.bincount(codes, weights=values[:, j], minlength=n_groups)
                            for j in range(values.shape[1])])


def _tidy_row(term, est, se, df, level, n) -> pd.DataFrame:
    q = stats.t.ppf(0.5 + level / 2, df)
    return pd.DataFrame({"term": [term], "estimate": [float(est)], "std_error": [se],
                         "ci_low": [float(est - q * se)], "ci_high": [float(est + q * se)],
                         "n": [n]})

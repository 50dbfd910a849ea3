"""Design-based regression models and average marginal effects.

``fit_svyglm`` fits a generalised linear model by iteratively reweighted
least squares exactly as R's ``glm.fit`` does (same starting values, the same
deviance convergence rule) and computes the Taylor-linearised variance of the
coefficients as R's ``survey::svyglm`` does: the influence values
``x_i w_i r_i A^{-1}`` (working weights and the unscaled covariance from the
last IRLS iteration), totalled within PSUs, centred within strata, with the
finite-population correction. Inference is t-based on the residual design
degrees of freedom (PSUs - strata - coefficients + 1), as ``summary.svyglm``.

Examples
--------
>>> import numpy as np, pandas as pd
>>> from analysis.stats.design import SurveyDesign
>>> from analysis.stats.models import fit_svyglm
>>> rng = np.random.default_rng(0)
>>> df = pd.DataFrame({"x": rng.normal(size=400), "psu": np.repeat(np.arange(40), 10),
...                    "w": rng.uniform(1, 3, 400)})
>>> df["y"] = (rng.uniform(size=400) < 1 / (1 + np.exp(-df["x"]))).astype(float)
>>> fit = fit_svyglm("y ~ x", design=SurveyDesign(df, weights="w", psu="psu"))
>>> fit.tidy()["term"].tolist()
['Intercept', 'x']
>>> bool(fit.tidy()["ci_low"].iloc[1] > 0)
True
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import patsy
from scipy import linalg, special, stats

from analysis.stats.design import SurveyDesign

TIDY_COLUMNS = ["term", "estimate", "std_error", "statistic", "df", "p_value", "ci_low",
                "ci_high", "n"]


# ---------------------------------------------------------------------------
# Families (the parts of R's family objects that glm.fit uses)
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    name: str
    linkinv: callable
    mu_eta: callable
    variance: callable
    dev_resids: callable
    mustart: callable
    link: callable


def _binomial_dev(y, mu, w):
    # xlogy(x, v) = x log(v), 0 where x == 0 (R's y_log_y)
    a = special.xlogy(y, y / mu)
    a += special.xlogy(1 - y, (1 - y) / (1 - mu))
    a *= w
    a *= 2
    return a


def _logistic_mu_eta(eta):
    e = np.exp(-np.abs(eta))
    e /= (1 + e) ** 2
    return np.maximum(e, _EPS, out=e)


_EPS = np.finfo(float).eps
BINOMIAL = Family(
    name="quasibinomial",
    linkinv=lambda eta: np.clip(special.expit(eta), _EPS, 1 - _EPS),
    mu_eta=_logistic_mu_eta,
    variance=lambda mu: mu * (1 - mu),
    dev_resids=_binomial_dev,
    mustart=lambda y, w: (w * y + 0.5) / (w + 1),
    link=special.logit,
)
GAUSSIAN = Family(
    name="gaussian",
    linkinv=lambda eta: eta,
    mu_eta=lambda eta: np.ones_like(eta),
    variance=lambda mu: np.ones_like(mu),
    dev_resids=lambda y, mu, w: w * (y - mu) ** 2,
    mustart=lambda y, w: y.astype(float),
    link=lambda mu: mu,
)
FAMILIES = {"quasibinomial": BINOMIAL, "binomial": BINOMIAL, "gaussian": GAUSSIAN}


@dataclass
class IRLSResult:
    coef: np.ndarray
    eta: np.ndarray
    mu: np.ndarray
    working_weights: np.ndarray      # from the last iteration (as R's glm$weights)
    working_residuals: np.ndarray    # (y - mu) / mu.eta(eta) at the final fit
    cov_unscaled: np.ndarray         # (X' W X)^-1 from the last iteration
    iterations: int
    converged: bool
    deviance: float


def irls(X: np.ndarray, y: np.ndarray, prior_weights: np.ndarray, family: Family, *,
         maxit: int = 25, epsilon: float = 1e-8) -> IRLSResult:
    """Iteratively reweighted least squares, step for step as R's ``glm.fit``."""
    mu = family.mustart(y, prior_weights)
    eta = family.link(mu)
    dev_old = float(np.sum(family.dev_resids(y, mu, prior_weights)))
    converged = False
    buffer = np.empty_like(X, dtype=float)          # W X, reused by every iteration
    for it in range(1, maxit + 1):  # noqa: B007 (the count is returned)
        mu_eta = family.mu_eta(eta)
        z = eta + (y - mu) / mu_eta
        w = np.sqrt(prior_weights * mu_eta ** 2 / family.variance(mu))
        coef, factor = _weighted_least_squares(X, z, w, out=buffer)
        eta = X @ coef
        mu = family.linkinv(eta)
        dev = float(np.sum(family.dev_resids(y, mu, prior_weights)))
        if abs(dev - dev_old) / (abs(dev) + 0.1) < epsilon:
            converged = True
            break
        dev_old = dev
    cov_unscaled = linalg.cho_solve(factor, np.eye(X.shape[1]))
    return IRLSResult(coef=coef, eta=eta, mu=mu, working_weights=w ** 2,
                      working_residuals=(y - mu) / family.mu_eta(eta),
                      cov_unscaled=cov_unscaled, iterations=it, converged=converged,
                      deviance=dev)


def _weighted_least_squares(X: np.ndarray, z: np.ndarray, w: np.ndarray, *, out=None):
    """Coefficients of the weighted least-squares step and the Cholesky factor of X'W X.

    The normal equations are solved by Cholesky (an order of magnitude faster than a QR
    of the n x p matrix for large n); a rank-deficient X raises a clear error instead
    of returning arbitrary coefficients (``numpy.linalg.LinAlgError``, as before).
    """
    wx = np.multiply(X, w[:, None], out=out)
    try:
        factor = linalg.cho_factor(wx.T @ wx, lower=False, check_finite=False)
    except linalg.LinAlgError as err:
        raise np.linalg.LinAlgError(
            "the model's design matrix is rank deficient (a level or covariate has no "
            "variation among the rows analysed)") from err
    return linalg.cho_solve(factor, wx.T @ (z * w), check_finite=False), factor


# ---------------------------------------------------------------------------
# Design-based GLM
# ---------------------------------------------------------------------------
_EVAL_ENV = patsy.EvalEnvironment([{"np": np}])


@dataclass
class ModelFit:
    """A fitted design-based GLM: coefficients, variance and what is needed for margins."""

    formula: str
    family: Family
    design: SurveyDesign
    coef: pd.Series
    vcov: pd.DataFrame
    df_resid: int
    used: np.ndarray                 # boolean mask of the design rows in the fit
    design_info: patsy.DesignInfo
    beta_influence: np.ndarray       # (n_design, p) influence values of the coefficients
    irls: IRLSResult
    variance: str = "taylor"
    extra: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.used.sum())

    def tidy(self, *, level: float = 0.95) -> pd.DataFrame:
        """Coefficient table: ``term, estimate, std_error, statistic, df, p_value, ci_low,
        ci_high, n``."""
        se = np.sqrt(np.diag(self.vcov.to_numpy()))
        return _tidy(self.coef.index, self.coef.to_numpy(), se, self.df_resid, level, self.n)

    def _frame(self) -> pd.DataFrame:
        return self.extra.get("_data", self.design.data).loc[self.used]

    def _weights(self) -> np.ndarray:
        return self.design.w[self.used]

    def margins(self, at: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        """Average predictions under counterfactual settings, with their influence values.

        Parameters
        ----------
        at : list of dict
            Each dict sets columns for everyone analysed, e.g.
            ``{"support_model": "coaching", "vision_z": -1.0}``.

        Returns
        -------
        (ndarray, ndarray)
            The weighted mean prediction of each setting (m,), and its influence
            values (n_design, m): the sampling of the covariates plus the
            coefficients' influence through the delta method (design-based,
            "unconditional" margins). Any linear combination of the margins has
            the variance ``design.variance(influence @ weights)``.
        """
        cache = self.extra.setdefault("_margins", {})
        keys = [tuple(sorted((k, str(v)) for k, v in setting.items())) for setting in at]
        todo = [(key, setting) for key, setting in zip(keys, at, strict=True)
                if key not in cache]
        if todo:
            frame = self._frame()
            w = self._weights()
            total_w = w.sum()
            beta = self.coef.to_numpy()
            rows = np.flatnonzero(self.used)
            for key, setting in todo:
                cf = frame.copy()
                for col, value in setting.items():
                    if isinstance(frame[col].dtype, pd.CategoricalDtype):
                        cf[col] = pd.Categorical(np.repeat(value, len(cf)),
                                                 categories=frame[col].cat.categories)
                    else:
                        cf[col] = value
                X = self._counterfactual_matrix(cf, setting)
                eta = X @ beta
                pred = self.family.linkinv(eta)
                est = np.sum(w * pred) / total_w
                grad = (w * self.family.mu_eta(eta)) @ X / total_w
                infl = self.beta_influence @ grad
                infl[rows] += w * (pred - est) / total_w
                cache[key] = (est, infl)
        est = np.array([cache[k][0] for k in keys])
        infl = np.column_stack([cache[k][1] for k in keys])
        return est, infl

    def _counterfactual_matrix(self, cf: pd.DataFrame, setting: dict) -> np.ndarray:
        """Design matrix of the counterfactual frame: only the terms that involve a set
        column are rebuilt (patsy ``DesignInfo.subset``); the others are reused."""
        X = self.extra.get("_X")
        info = self.design_info
        touched = [t for t in info.terms
                   if any(col in f.name() for f in t.factors for col in setting)]
        if X is None or len(touched) == len(info.terms):
            (out,) = patsy.build_design_matrices([info], cf, NA_action="raise")
            return np.asarray(out)
        out = X.copy()
        sub = info.subset(touched)
        (part,) = patsy.build_design_matrices([sub], cf, NA_action="raise")
        part = np.asarray(part)
        for name, k in zip(sub.column_names, range(part.shape[1]), strict=True):
            out[:, info.column_name_indexes[name]] = part[:, k]
        return out

    def combine(self, at: list[dict], weights, *, labels=None, level: float = 0.95,
                n=None) -> pd.DataFrame:
        """Linear combinations of margins (rows of ``weights``, shape (k, len(at))), with
        design-based SEs and t-based inference on the residual df."""
        est, infl = self.margins(at)
        L = np.atleast_2d(np.asarray(weights, dtype=float))
        value = L @ est
        se = np.sqrt(np.diag(self.design.variance(infl @ L.T)))
        labels = labels if labels is not None else [f"c{k}" for k in range(len(value))]
        return _tidy(labels, value, se, self.df_resid, level, self.n if n is None else n)

    def _levels(self, variable, levels=None) -> list:
        col = self._frame()[variable]
        return list(levels or (col.cat.categories if hasattr(col, "cat") else
                               sorted(col.unique())))

    def _counts(self, variable, levels) -> list[int]:
        counts = self._frame()[variable].astype(object).value_counts()
        return [int(counts.get(lv, 0)) for lv in levels]

    def predicted_rates(self, variable: str, *, levels: list | None = None, at: dict | None = None,
                        level: float = 0.95) -> pd.DataFrame:
        """Average predicted outcome with ``variable`` set to each level (g-computation).

        Each rate is the weighted mean over the analysed rows of the prediction
        with everyone's ``variable`` set to that level (and the columns in
        ``at`` set as given); its variance combines the coefficients' influence
        and the sampling of the covariates (design-based, "unconditional"
        delta method).

        Returns
        -------
        DataFrame
            ``level, estimate, std_error, df, ci_low, ci_high, n`` (``n``: rows whose
            observed value is that level).
        """
        levels = self._levels(variable, levels)
        settings = [dict(at or {}, **{variable: lv}) for lv in levels]
        out = self.combine(settings, np.eye(len(levels)), labels=levels, level=level,
                           n=self._counts(variable, levels))
        return out.rename(columns={"term": "level"}).drop(columns=["statistic", "p_value"])

    def ame(self, variable: str, *, reference, at: dict | None = None,
            level: float = 0.95) -> pd.DataFrame:
        """Average marginal effect of each level of ``variable`` against ``reference``.

        Returns
        -------
        DataFrame
            ``level, estimate, std_error, statistic, df, p_value, ci_low, ci_high, n``
            on the outcome scale (a probability difference for a binary outcome).
        """
        levels = self._levels(variable)
        ref = levels.index(reference)
        others = [j for j in range(len(levels)) if j != ref]
        L = np.zeros((len(others), len(levels)))
        L[np.arange(len(others)), others] = 1.0
        L[:, ref] = -1.0
        settings = [dict(at or {}, **{variable: lv}) for lv in levels]
        counts = self._counts(variable, levels)
        out = self.combine(settings, L, labels=[levels[j] for j in others], level=level,
                           n=[counts[j] for j in others])
        return out.rename(columns={"term": "level"})

    def pairwise(self, variable: str, *, level: float = 0.95,
                 adjust: str = "holm") -> pd.DataFrame:
        """Every pairwise difference of average predictions between levels of ``variable``,
        with multiplicity-adjusted p-values (Holm by default).

        Returns
        -------
        DataFrame
            ``level_a, level_b, estimate`` (a minus b), ``std_error, statistic, df,
            p_value, p_adjusted, ci_low, ci_high``.
        """
        from statsmodels.stats.multitest import multipletests

        levels = self._levels(variable)
        pairs = [(a, b) for i, a in enumerate(levels) for b in levels[i + 1:]]
        L = np.zeros((len(pairs), len(levels)))
        for k, (a, b) in enumerate(pairs):
            L[k, levels.index(a)] = 1.0
            L[k, levels.index(b)] = -1.0
        out = self.combine([{variable: lv} for lv in levels], L,
                           labels=[f"{a} - {b}" for a, b in pairs], level=level)
        out.insert(0, "level_a", [a for a, _ in pairs])
        out.insert(1, "level_b", [b for _, b in pairs])
        out["p_adjusted"] = multipletests(out["p_value"], method=adjust)[1]
        return out.drop(columns=["term", "n"])

    def contrast(self, weights: dict[str, float], *, level: float = 0.95) -> pd.DataFrame:
        """Linear combination of coefficients, e.g. ``{"a": 1, "b": -1}``."""
        L = np.array([weights.get(t, 0.0) for t in self.coef.index])
        est = float(L @ self.coef.to_numpy())
        se = float(np.sqrt(L @ self.vcov.to_numpy() @ L))
        label = " + ".join(f"{v:g}*{k}" for k, v in weights.items())
        return _tidy([label], np.array([est]), np.array([se]), self.df_resid, level, self.n)

    def wald_test(self, terms: list[str] | None = None, *, L=None) -> pd.DataFrame:
        """Design-based Wald F test that the named coefficients (or ``L @ b``) are zero.

        As R's ``regTermTest(..., method="Wald")``: F on (q, residual df).
        Terms may be given by a prefix (``"C(support_model"`` tests all its levels).
        """
        from analysis.stats.design import wald_test

        names = list(self.coef.index)
        if L is None:
            picked = [i for i, t in enumerate(names) if any(t.startswith(p) for p in terms)]
            if not picked:
                raise KeyError(f"no coefficient matches {terms!r}")
            L = np.zeros((len(picked), len(names)))
            L[np.arange(len(picked)), picked] = 1.0
        return wald_test(self.coef.to_numpy(), self.vcov.to_numpy(), L, df=self.df_resid)

    def summary(self) -> str:
        t = self.tidy()
        head = (f"Design-based GLM ({self.family.name}, {self.variance} variance)\n"
                f"{self.formula}\n"
                f"n = {self.n}, PSUs = {self.design.n_psu}, strata = {self.design.n_strata}, "
                f"residual df = {self.df_resid}\n")
        return head + t.to_string(index=False)


def _tidy(terms, est, se, df, level, n) -> pd.DataFrame:
    est = np.asarray(est, dtype=float)
    se = np.asarray(se, dtype=float)
    stat = est / se
    q = stats.t.ppf(0.5 + level / 2, df)
    return pd.DataFrame({
        "term": list(terms), "estimate": est, "std_error": se, "statistic": stat, "df": df,
        "p_value": 2 * stats.t.sf(np.abs(stat), df), "ci_low": est - q * se,
        "ci_high": est + q * se, "n": n,
    })[TIDY_COLUMNS]


def _fast_categorical_to_int(data, levels, NA_action, origin=None):
    """patsy's ``categorical_to_int`` with a fast path for ``C(x, ...)`` of a pandas
    categorical: patsy takes the integer codes of a bare categorical but encodes a
    boxed one (``C(...)``) value by value in Python. Here the codes are mapped to
    patsy's levels in one vectorised step; missing values stay -1 as in patsy's own
    categorical path. Anything else goes to patsy unchanged."""
    box = isinstance(data, patsy.categorical._CategoricalBox)
    inner = data.data if box else data
    if box and data.levels is not None and tuple(data.levels) != tuple(levels):
        return _PATSY_CATEGORICAL_TO_INT(data, levels, NA_action, origin)
    dtype = getattr(inner, "dtype", None)
    if isinstance(dtype, pd.CategoricalDtype):
        position = {level: k for k, level in enumerate(levels)}
        if all(c in position for c in dtype.categories):
            lookup = np.array([position[c] for c in dtype.categories] + [-1])
            codes = np.asarray(inner.cat.codes if isinstance(inner, pd.Series) else inner.codes)
            return lookup[np.where(codes >= 0, codes, len(lookup) - 1)]
    return _PATSY_CATEGORICAL_TO_INT(data, levels, NA_action, origin)


_PATSY_CATEGORICAL_TO_INT = patsy.categorical.categorical_to_int
patsy.build.categorical_to_int = _fast_categorical_to_int


def as_categories(data: pd.DataFrame, formula: str) -> pd.DataFrame:
    """``data`` with the formula's text columns as pandas categoricals (sorted levels).

    patsy encodes a text column value by value in Python; a categorical it encodes
    from its integer codes. The levels are the sorted distinct values either way, so
    the design matrix is the same; only the speed differs (about 10 s less for M1 on
    1,000,000 rows).

    Examples
    --------
    >>> df = pd.DataFrame({"g": ["b", "a", None], "x": [1.0, 2.0, 3.0]})
    >>> as_categories(df, "x ~ C(g)")["g"].cat.categories.tolist()
    ['a', 'b']
    """
    names = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", formula))
    out = None
    for col in data.columns:
        if col not in names:
            continue
        dtype = data[col].dtype
        if pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
            if isinstance(dtype, pd.CategoricalDtype):
                continue
            values = data[col].astype(object).where(data[col].notna(), None)
            if not all(isinstance(v, str) for v in values.dropna().unique()):
                continue
            out = data.copy(deep=False) if out is None else out
            out[col] = pd.Categorical(values)
    return data if out is None else out


def model_frame(formula: str, data: pd.DataFrame):
    """Outcome, design matrix and the mask of complete cases for ``formula``."""
    y, X = patsy.dmatrices(formula, data, eval_env=_EVAL_ENV, NA_action="drop",
                           return_type="dataframe")
    used = data.index.isin(X.index)
    return y.iloc[:, 0].to_numpy(dtype=float), X, used


def fit_svyglm(formula: str, *, design: SurveyDesign, family: str = "quasibinomial"
               ) -> ModelFit:
    """Fit a design-based GLM on complete cases (a domain of the full design).

    Parameters
    ----------
    formula : str
        statsmodels/patsy formula, e.g. the codebook's M1.
    design : SurveyDesign
        The full design; rows with a missing model variable are left out of
        the fit but keep their PSUs and strata, as R's ``svyglm`` does.
    family : {"quasibinomial", "gaussian"}

    Returns
    -------
    ModelFit
    """
    fam = FAMILIES[family]
    data = design.data
    if not data.index.is_unique:
        raise ValueError("the design data needs a unique index")
    data = as_categories(data, formula)
    y, X, used = model_frame(formula, data)
    Xa = X.to_numpy()
    w = design.w[used]
    prior = w / w.mean()
    res = irls(Xa, y, prior, fam)
    score = Xa * (res.working_weights * res.working_residuals)[:, None]
    if used.all():
        influence = score @ res.cov_unscaled
    else:
        influence = np.zeros((len(data), X.shape[1]))
        influence[np.flatnonzero(used)] = score @ res.cov_unscaled
    del score
    vcov = design.variance(influence)
    p = X.shape[1]
    return ModelFit(
        formula=formula, family=fam, design=design,
        coef=pd.Series(res.coef, index=X.columns),
        vcov=pd.DataFrame(vcov, index=X.columns, columns=X.columns),
        df_resid=design.domain_degrees_of_freedom(used) + 1 - p, used=used,
        design_info=X.design_info, beta_influence=influence, irls=res,
        extra={"_X": Xa, "_data": data})


# ---------------------------------------------------------------------------
# The study's models
# ---------------------------------------------------------------------------
def study_design(teachers: pd.DataFrame, *, lonely_psu: str = "fail") -> SurveyDesign:
    """The study's design (instrument section 6): strata, district PSUs, FPC, weights."""
    from analysis.study.codebook import load_codebook

    d = load_codebook().design
    return SurveyDesign(teachers.reset_index(drop=True), weights=d["weight"], strata=d["strata"],
                        psu=d["psu"], fpc=d["fpc"], fpc_type="count", lonely_psu=lonely_psu)


def model_data(teachers: pd.DataFrame) -> pd.DataFrame:
    """Teachers ready for the models: ``support_model`` limited to the six models.

    Districts whose D1 answer stayed ``other`` (unmapped) have no support
    model for the models and are left out as incomplete cases.
    """
    from analysis.study.codebook import load_codebook

    codes = load_codebook().support_model_codes()
    out = teachers.reset_index(drop=True).copy()
    out["support_model"] = pd.Categorical(out["support_model"].astype(object)
                                          .where(out["support_model"].isin(codes)),
                                          categories=codes)
    return out


def fit_study_model(teachers: pd.DataFrame, name: str = "M1") -> ModelFit:
    """Fit one of the codebook's models (M1 by default) on the study design.

    Examples
    --------
    >>> from pathlib import Path
    >>> from analysis.data.clean import clean_study
    >>> fit = fit_study_model(clean_study(Path("data/raw")).teachers)
    >>> ame = fit.ame("support_model", reference="tech_support_only")
    >>> ame["level"].tolist()
    ['pay_and_pray', 'vanguard', 'consultant', 'director', 'coaching']
    """
    from analysis.study.codebook import load_codebook

    cb = load_codebook()
    spec = cb.model_spec(name)
    design = study_design(model_data(teachers))
    return fit_svyglm(cb.model_formula(name), design=design, family=spec["family"])

"""Design-based proportional-odds (cumulative logit) model, as R's ``survey::svyolr``.

The model for an ordered outcome with levels ``l_1 < ... < l_K`` is

    logit P(Y <= l_k | x) = zeta_k - x'beta,    k = 1, ..., K - 1,

the parametrisation of ``MASS::polr`` and ``survey::svyolr`` (a positive
coefficient moves the outcome towards the higher levels). The model matrix has
no intercept: the cut-points ``zeta_k`` (named ``"l_k|l_k+1"``, e.g. ``"S|A"``)
take its place.

Estimation is weighted maximum likelihood by Newton's method with the analytic
gradient and Hessian (the log-likelihood is concave), converged to machine
precision. The variance is design-based (Taylor linearisation): the influence
values ``u_i H^{-1}`` (score contributions times the inverse of the negative
Hessian) go to :meth:`SurveyDesign.variance`. Rows with a missing outcome or
covariate are a domain of the full design, as in :func:`fit_svyglm`.

R's ``svyolr`` maximises with ``optim(method="BFGS")`` and takes the Hessian
from ``optim``'s finite differences of the gradient (step 1e-3 in its
log-increment parametrisation of the cut-points). ``hessian="optim"``
reproduces that Hessian step for step, and with it R's standard errors to six
significant digits; the default ``hessian="analytic"`` is exact and differs
from R's standard errors by a few parts in 10^4 at most.

Examples
--------
>>> import numpy as np, pandas as pd
>>> from analysis.stats.design import SurveyDesign
>>> from analysis.stats.ordinal import fit_svyolr
>>> rng = np.random.default_rng(1)
>>> df = pd.DataFrame({"x": rng.normal(size=600), "psu": np.repeat(np.arange(60), 10),
...                    "w": rng.uniform(1, 3, 600)})
>>> latent = df["x"] + rng.logistic(size=600)
>>> df["y"] = pd.Categorical(np.digitize(latent, [-1, 0.5, 2]), ordered=True)
>>> df["y"] = df["y"].cat.rename_categories(["S", "A", "M", "R"])
>>> fit = fit_svyolr("y ~ x", design=SurveyDesign(df, weights="w", psu="psu"))
>>> fit.tidy()["term"].tolist()
['x', 'S|A', 'A|M', 'M|R']
>>> bool(abs(fit.coef["x"] - 1) < 0.3)
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import patsy
from scipy import special, stats
from threadpoolctl import threadpool_limits

from analysis.stats.design import SurveyDesign
from analysis.stats.models import TIDY_COLUMNS

_EVAL_ENV = patsy.EvalEnvironment([{"np": np}])
HESSIANS = ("analytic", "optim")
#: optim's default finite-difference step (``control$ndeps``).
OPTIM_NDEPS = 1e-3


class OrdinalModelError(ValueError):
    """An ordinal model that cannot be fitted (outcome not ordered, rank deficiency, ...)."""


# ---------------------------------------------------------------------------
# Log-likelihood, score and Hessian
# ---------------------------------------------------------------------------
def _logistic_parts(z: np.ndarray):
    """F, f = F', f' at z (z may hold +-inf: F = 1 or 0, f = f' = 0)."""
    F = special.expit(z)
    f = F * (1.0 - F)
    return F, f, f * (1.0 - 2.0 * F)


def _bounds(zeta: np.ndarray, eta: np.ndarray, y: np.ndarray):
    """Upper (zeta_y - eta) and lower (zeta_{y-1} - eta) bounds of each row's interval."""
    cuts = np.concatenate([[-np.inf], zeta, [np.inf]])
    return cuts[y + 1] - eta, cuts[y] - eta


def _derivative_matrices(X: np.ndarray, y: np.ndarray, q: int):
    """d(upper)/d(theta) and d(lower)/d(theta), theta = (beta, zeta): rows (-x, e_y)."""
    n = len(y)
    upper = np.zeros((n, q))
    lower = np.zeros((n, q))
    rows = np.arange(n)
    top, bottom = y < q, y > 0
    upper[rows[top], y[top]] = 1.0
    lower[rows[bottom], y[bottom] - 1] = 1.0
    return np.hstack([-X, upper]), np.hstack([-X, lower])


def _score_and_information(theta, X, y, w, Da, Db, *, information=True):
    """Log-likelihood, per-row scores (n, p + q) and the negative Hessian (observed
    information) of sum_i w_i log P(Y = y_i)."""
    p = X.shape[1]
    eta = X @ theta[:p]
    a, b = _bounds(theta[p:], eta, y)
    Fa, fa, dfa = _logistic_parts(a)
    Fb, fb, dfb = _logistic_parts(b)
    pr = Fa - Fb
    with np.errstate(divide="ignore"):
        loglik = float(np.sum(w * np.log(pr)))
    g = (Da * (fa / pr)[:, None] - Db * (fb / pr)[:, None])
    scores = g * w[:, None]
    if not information:
        return loglik, scores, None
    curv = (Da * (w * dfa / pr)[:, None]).T @ Da - (Db * (w * dfb / pr)[:, None]).T @ Db
    info = scores.T @ g - curv
    return loglik, scores, info


def _start(y: np.ndarray, w: np.ndarray, p: int, q: int) -> np.ndarray:
    """Null-model MLE: beta = 0, zeta_k = logit of the weighted cumulative shares."""
    shares = np.bincount(y, weights=w, minlength=q + 1) / w.sum()
    cum = np.clip(np.cumsum(shares)[:q], 1e-6, 1 - 1e-6)
    return np.concatenate([np.zeros(p), special.logit(cum)])


def _newton(X, y, w, q, *, tol: float, max_iter: int):
    """Newton-Raphson with step halving on the (concave) weighted log-likelihood."""
    p = X.shape[1]
    Da, Db = _derivative_matrices(X, y, q)
    theta = _start(y, w, p, q)
    loglik, scores, info = _score_and_information(theta, X, y, w, Da, Db)
    for it in range(1, max_iter + 1):  # noqa: B007 (the count is returned)
        grad = scores.sum(axis=0)
        try:
            step = np.linalg.solve(info, grad)
        except np.linalg.LinAlgError as err:
            raise OrdinalModelError("the information matrix is singular: the model "
                                    "matrix is rank-deficient or a level is empty") from err
        t = 1.0
        while True:
            new = theta + t * step
            ordered = np.all(np.diff(new[p:]) > 0)
            if ordered:
                new_ll, new_scores, new_info = _score_and_information(new, X, y, w, Da, Db)
                if np.isfinite(new_ll) and new_ll >= loglik - 1e-12 * abs(loglik):
                    break
            t /= 2
            if t < 1e-10:
                raise OrdinalModelError("Newton's method failed to improve the likelihood")
        theta, loglik, scores, info = new, new_ll, new_scores, new_info
        if np.max(np.abs(t * step) / (1.0 + np.abs(theta))) < tol:
            break
    converged = bool(np.max(np.abs(t * step) / (1.0 + np.abs(theta))) < tol)
    return theta, loglik, scores, info, it, converged, (Da, Db)


def _optim_hessian(theta, X, y, w, Da, Db) -> np.ndarray:
    """R's ``optimhess`` on svyolr's objective: central differences (step 1e-3) of the
    gradient of -loglik in the parametrisation (beta, zeta_1, log(zeta_k - zeta_{k-1})),
    symmetrised, then mapped back to (beta, zeta) as svyolr does (A ginv(H) A')."""
    p = X.shape[1]
    q = len(theta) - p
    zeta = theta[p:]
    par = np.concatenate([theta[:p], [zeta[0]], np.log(np.diff(zeta))])

    def jacobian(log_par):
        e = np.exp(log_par[p + 1:])
        J = np.tril(np.ones((q, q)) * np.concatenate([[1.0], e])[None, :])
        return J

    def gradient(par_):
        zeta_ = np.cumsum(np.concatenate([[par_[p]], np.exp(par_[p + 1:])]))
        _, scores, _ = _score_and_information(np.concatenate([par_[:p], zeta_]), X, y, w,
                                              Da, Db, information=False)
        g = -scores.sum(axis=0)
        return np.concatenate([g[:p], g[p:] @ jacobian(par_)])

    k = len(par)
    H = np.empty((k, k))
    for i in range(k):                       # one pair of gradients per parameter
        step = np.zeros(k)
        step[i] = OPTIM_NDEPS
        H[i] = (gradient(par + step) - gradient(par - step)) / (2 * OPTIM_NDEPS)
    H = 0.5 * (H + H.T)
    A = np.eye(k)
    A[p:, p:] = jacobian(par)
    return A @ np.linalg.pinv(H) @ A.T


# ---------------------------------------------------------------------------
# Result
# ---------------------------------------------------------------------------
@dataclass
class OrdinalFit:
    """A fitted design-based proportional-odds model.

    ``coef`` holds the coefficients then the cut-points (R's ``c(coef, zeta)``
    order); ``influence`` the influence values of all of them on the rows of the
    full design (zero outside the fit).
    """

    formula: str
    design: SurveyDesign
    outcome: str
    outcome_levels: list
    coef: pd.Series
    vcov: pd.DataFrame
    df_resid: int
    used: np.ndarray
    design_info: patsy.DesignInfo
    X: np.ndarray                    # model matrix of the used rows (no intercept)
    influence: np.ndarray
    hessian: str
    loglik: float
    iterations: int
    converged: bool

    @property
    def n(self) -> int:
        return int(self.used.sum())

    @property
    def n_coef(self) -> int:
        """Number of regression coefficients (the cut-points excluded)."""
        return len(self.coef) - (len(self.outcome_levels) - 1)

    @property
    def beta(self) -> pd.Series:
        return self.coef.iloc[:self.n_coef]

    @property
    def zeta(self) -> pd.Series:
        return self.coef.iloc[self.n_coef:]

    def tidy(self, *, level: float = 0.95) -> pd.DataFrame:
        """Coefficients then cut-points: ``term, estimate, std_error, statistic, df,
        p_value, ci_low, ci_high, n`` (t-based on the residual design df, PSUs -
        strata - coefficients, as R's ``svyolr``)."""
        se = np.sqrt(np.diag(self.vcov.to_numpy()))
        return _tidy(self.coef.index, self.coef.to_numpy(), se, self.df_resid, level, self.n)

    def contrast(self, weights: dict[str, float], *, level: float = 0.95) -> pd.DataFrame:
        """Linear combination of coefficients (and cut-points), e.g. ``{"a": 1, "b": -1}``."""
        L = np.array([weights.get(t, 0.0) for t in self.coef.index])
        est = float(L @ self.coef.to_numpy())
        se = float(np.sqrt(L @ self.vcov.to_numpy() @ L))
        label = " + ".join(f"{v:g}*{k}" for k, v in weights.items())
        return _tidy([label], [est], [se], self.df_resid, level, self.n)

    # -- margins -------------------------------------------------------------
    def predicted_probabilities(self, variable: str, levels: list | None = None, *,
                                at_least=None, level: float = 0.95) -> pd.DataFrame:
        """Average predicted probability of each outcome level (or of ``Y >= at_least``)
        with ``variable`` set to each of its ``levels`` for everyone (g-computation).

        The variance combines the influence of the coefficients and the sampling
        of the covariates (design-based delta method, as ``ModelFit.predicted_rates``).

        Returns
        -------
        DataFrame
            ``level, outcome, estimate, std_error, df, ci_low, ci_high, n`` (``outcome``
            an outcome level, or ``">=A"`` with ``at_least="A"``; ``n`` the rows whose
            observed ``variable`` is that level).
        """
        with threadpool_limits(1):
            est, infl, levels, labels = self._counterfactual(variable, levels, at_least)
            se = np.sqrt(np.diag(self.design.variance(infl)))
        m = len(labels)
        out = _tidy(np.repeat(levels, m), est, se, self.df_resid, level,
                    np.repeat(self._counts(variable, levels), m))
        out.insert(1, "outcome", labels * len(levels))
        return out.rename(columns={"term": "level"}).drop(columns=["statistic", "p_value"])

    def ame(self, variable: str, *, reference, at_least, level: float = 0.95) -> pd.DataFrame:
        """Average marginal effect of each level of a categorical ``variable`` against
        ``reference`` on the probability that the outcome is at least ``at_least``
        (e.g. ``at_least="A"``: P(samr_level >= A), non-substitutive use).

        Returns
        -------
        DataFrame
            ``level, estimate, std_error, statistic, df, p_value, ci_low, ci_high, n``
            (probability differences; ``n``: rows observed at that level).
        """
        with threadpool_limits(1):
            est, infl, levels, _ = self._counterfactual(variable, None, at_least)
            if reference not in levels:
                raise KeyError(f"reference {reference!r} is not a level of {variable!r}")
            ref = levels.index(reference)
            others = [j for j in range(len(levels)) if j != ref]
            diff = est[others] - est[ref]
            se = np.sqrt(np.diag(self.design.variance(infl[:, others] - infl[:, [ref]])))
        kept = [levels[j] for j in others]
        out = _tidy(kept, diff, se, self.df_resid, level, self._counts(variable, kept))
        return out.rename(columns={"term": "level"})

    def _counts(self, variable, levels) -> list[int]:
        counts = self.design.data.loc[self.used, variable].astype(object).value_counts()
        return [int(counts.get(lv, 0)) for lv in levels]

    def _targets(self, at_least):
        """Targets as const + L @ C, C the cumulative probabilities P(Y <= l_k)."""
        K = len(self.outcome_levels)
        q = K - 1
        if at_least is None:
            L = np.zeros((K, q))
            L[np.arange(q), np.arange(q)] = 1.0
            L[np.arange(1, K), np.arange(q)] -= 1.0
            const = np.zeros(K)
            const[-1] = 1.0
            return const, L, [str(v) for v in self.outcome_levels]
        if at_least not in self.outcome_levels:
            raise KeyError(f"{at_least!r} is not a level of {self.outcome!r}")
        k = self.outcome_levels.index(at_least)
        if k == 0:
            raise ValueError(f"P({self.outcome} >= {at_least}) is 1: pick a higher level")
        L = np.zeros((1, q))
        L[0, k - 1] = -1.0
        return np.ones(1), L, [f">={at_least}"]

    def _counterfactual(self, variable, levels, at_least):
        from analysis.stats.robust import counterfactual_columns

        frame = self.design.data.loc[self.used]
        levels, cols, values = counterfactual_columns(self.design_info, frame, variable, levels)
        names = self.design_info.column_names
        cols = cols - (cols > names.index("Intercept"))         # X has no intercept column
        const, L, labels = self._targets(at_least)
        m = len(labels)
        w = self.design.w[self.used]
        total_w = w.sum()
        beta, zeta = self.beta.to_numpy(), self.zeta.to_numpy()
        rows = np.flatnonzero(self.used)
        est = np.empty(len(levels) * m)
        infl = np.zeros((len(self.design.data), len(levels) * m))
        X = self.X.copy()
        for j, v in enumerate(values):                  # a few levels, vectorised rows
            X[:, cols] = v
            C, f, _ = _logistic_parts(zeta[None, :] - (X @ beta)[:, None])
            values_j = const[None, :] + C @ L.T                        # (n, m)
            block = slice(j * m, (j + 1) * m)
            est[block] = w @ values_j / total_w
            fw = f * w[:, None] / total_w                               # (n, q)
            grad_beta = -(fw @ L.T).T @ X                               # (m, p)
            grad_zeta = L * fw.sum(axis=0)[None, :]                     # (m, q)
            grad = np.hstack([grad_beta, grad_zeta])
            infl[rows, block] = w[:, None] * (values_j - est[block][None, :]) / total_w
            infl[:, block] += self.influence @ grad.T
        return est, infl, levels, labels

    def summary(self) -> str:
        head = (f"Design-based proportional-odds model (cumulative logit, {self.hessian} "
                f"Hessian)\n{self.formula}\n"
                f"n = {self.n}, PSUs = {self.design.n_psu}, strata = {self.design.n_strata}, "
                f"residual df = {self.df_resid}\n")
        return head + self.tidy().to_string(index=False)


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


def _drop_intercept(X: np.ndarray, info: patsy.DesignInfo) -> np.ndarray:
    keep = [i for i, name in enumerate(info.column_names) if name != "Intercept"]
    return X[:, keep]


def _outcome_codes(values: pd.Series, levels) -> tuple[np.ndarray, list]:
    if levels is None:
        if not (isinstance(values.dtype, pd.CategoricalDtype) and values.cat.ordered):
            raise OrdinalModelError(
                f"the outcome {values.name!r} must be an ordered categorical, or give its "
                "levels in order with levels=[...]")
        levels = list(values.cat.categories)
    codes = pd.Categorical(values.astype(object).where(values.notna()), categories=levels,
                           ordered=True).codes.astype(np.int64)
    bad = values.notna().to_numpy() & (codes < 0)
    if bad.any():
        raise OrdinalModelError(f"outcome {values.name!r} has values outside the levels "
                                f"{levels}: {sorted(set(values[bad].astype(str)))[:5]}")
    if len(levels) < 3:
        raise OrdinalModelError("the outcome needs three or more levels (use a logistic "
                                "model for two)")
    return codes, list(levels)


def fit_svyolr(formula: str, *, design: SurveyDesign, levels: list | None = None,
               hessian: str = "analytic", tol: float = 1e-12, max_iter: int = 100
               ) -> OrdinalFit:
    """Fit a design-based proportional-odds model (R's ``svyolr``).

    Parameters
    ----------
    formula : str
        ``outcome ~ covariates`` in patsy/statsmodels syntax; the outcome is the
        name of an ordered categorical column (e.g. ``samr_level``).
    design : SurveyDesign
        The full design; rows with a missing outcome or covariate stay in the
        design for the variance but out of the fit.
    levels : list, optional
        The outcome's levels in order, when the column is not an ordered categorical.
    hessian : {"analytic", "optim"}
        Hessian behind the variance: exact (default), or R's finite-difference
        one (reproduces R's standard errors to six significant digits).
    tol : float
        Convergence tolerance of Newton's method (relative step size).

    Returns
    -------
    OrdinalFit
        ``.tidy()``, ``.predicted_probabilities()``, ``.ame()``.
    """
    if hessian not in HESSIANS:
        raise ValueError(f"hessian must be one of {HESSIANS}")
    data = design.data
    if not data.index.is_unique:
        raise ValueError("the design data needs a unique index")
    lhs, sep, rhs = formula.partition("~")
    outcome = lhs.strip()
    if not sep or outcome not in data.columns:
        raise OrdinalModelError(f"the formula's outcome must be a column name, got {lhs!r}")
    y_all, outcome_levels = _outcome_codes(data[outcome], levels)
    X_df = patsy.dmatrix(rhs, data, eval_env=_EVAL_ENV, NA_action="drop",
                         return_type="dataframe")
    info = X_df.design_info
    if "Intercept" not in info.column_names:
        raise OrdinalModelError("the model needs an intercept (the cut-points replace it)")
    used = data.index.isin(X_df.index) & (y_all >= 0)
    X = _drop_intercept(X_df.loc[data.index[used]].to_numpy(dtype=float), info)
    names = [c for c in info.column_names if c != "Intercept"]
    y = y_all[used]
    w = design.w[used]
    q = len(outcome_levels) - 1
    if np.bincount(y, minlength=q + 1).min() == 0:
        raise OrdinalModelError(f"some levels of {outcome!r} have no row in the fit")
    with threadpool_limits(1):          # small dense products: one BLAS thread is fastest
        theta, loglik, scores, info_mat, iterations, converged, (Da, Db) = _newton(
            X, y, w, q, tol=tol, max_iter=max_iter)
        if hessian == "analytic":
            cov = np.linalg.inv(info_mat)
        else:
            cov = _optim_hessian(theta, X, y, w, Da, Db)
        influence = np.zeros((len(data), len(theta)))
        influence[used] = scores @ cov
    terms = names + [f"{a}|{b}" for a, b in zip(outcome_levels[:-1], outcome_levels[1:],
                                                 strict=True)]
    vcov = design.variance(influence)
    return OrdinalFit(
        formula=formula, design=design, outcome=outcome, outcome_levels=outcome_levels,
        coef=pd.Series(theta, index=terms),
        vcov=pd.DataFrame(vcov, index=terms, columns=terms),
        df_resid=design.domain_degrees_of_freedom(used) - len(names), used=used,
        design_info=info, X=X, influence=influence, hessian=hessian, loglik=loglik,
        iterations=iterations, converged=converged)


def fit_study_svyolr(teachers: pd.DataFrame, *, model: str = "M1", outcome: str = "samr_level",
                     hessian: str = "analytic") -> OrdinalFit:
    """The proportional-odds version of one of the codebook's models (M1's covariates,
    outcome ``samr_level``) on the study design.

    Examples
    --------
    >>> from pathlib import Path
    >>> from analysis.data.clean import clean_study
    >>> fit = fit_study_svyolr(clean_study(Path("data/raw")).teachers)
    >>> fit.zeta.index.tolist()
    ['S|A', 'A|M', 'M|R']
    """
    from analysis.stats.models import model_data, study_design
    from analysis.study.codebook import load_codebook

    rhs = load_codebook().model_formula(model).partition("~")[2]
    design = study_design(model_data(teachers))
    return fit_svyolr(f"{outcome} ~ {rhs}", design=design, hessian=hessian)

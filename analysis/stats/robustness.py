"""Robustness of the support-model associations to the analyst's choices.

Five checks, each a function that takes the processed teacher table and
returns tidy DataFrames (``robustness_results`` gathers them for
``results.json``):

- :func:`multiple_imputation`: chained-equations imputation (predictive mean
  matching), M completed data sets, each analysed on the survey design,
  pooled with Rubin's rules and the Barnard-Rubin degrees of freedom, with the
  fraction of missing information of every coefficient and AME.
- :func:`support_model_evalues`: VanderWeele-Ding E-values for each model's
  association on the risk-ratio scale.
- :func:`propensity_weighted_ames`: multinomial propensity scores of the six
  models from district covariates, overlap (or stabilised inverse-probability)
  weights times the survey weights, a balance table and the re-estimated AMEs.
- :func:`multiverse`: a specification curve over outcome definitions,
  covariate sets, variance methods, weights and the handling of flagged
  responses.
- :func:`leave_one_out`: the M1 AMEs leaving out one state or one stratum at a
  time.

All of them run on one fast engine (:class:`LogitProblem`): the model matrix
is built once by patsy, the logistic fit is :func:`analysis.stats.models.irls`
(R's ``glm.fit``), the coefficient influence values and the Taylor variance
are those of :func:`analysis.stats.models.fit_svyglm`, and the AMEs of the
support models are computed by switching the support-model columns of the
model matrix instead of rebuilding it (equal to ``ModelFit.ame`` to rounding;
the tests check it). Every result is an adjusted association, never a causal
effect.

Examples
--------
>>> round(evalue(0.80, ci_low=0.71, ci_high=0.91)["evalue_point"], 2)
1.81
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field
from itertools import product

import numpy as np
import pandas as pd
import patsy
from scipy import special, stats
from threadpoolctl import threadpool_limits

from analysis.stats.design import SurveyDesign, group_sums
from analysis.stats.models import BINOMIAL, irls, model_data
from analysis.study.codebook import load_codebook

#: Columns of the AME tables of this module.
AME_COLUMNS = ["support_model", "estimate", "std_error", "statistic", "df", "p_value",
               "ci_low", "ci_high", "n"]
_EVAL_ENV = patsy.EvalEnvironment([{"np": np}])


# ---------------------------------------------------------------------------
# The engine: one logistic model matrix, many fits
# ---------------------------------------------------------------------------
def _support_columns(columns: list[str], variable: str) -> dict[str, int]:
    """Model-matrix column of each non-reference level of ``variable`` (treatment coding)."""
    out = {}
    for j, name in enumerate(columns):
        if name.startswith(f"C({variable}") and "[T." in name and ":" not in name:
            out[name.rsplit("[T.", 1)[1][:-1]] = j
    return out


@dataclass
class LogitFit:
    """Coefficients of one fit of a :class:`LogitProblem` and their influence values."""

    coef: np.ndarray
    rows: np.ndarray                 # design rows in the fit (indices)
    weights: np.ndarray              # analysis weights of those rows
    influence: np.ndarray            # (n_design, p) coefficient influence values
    df_resid: int


@dataclass
class LogitProblem:
    """A logistic model matrix on the rows of a survey design, ready for many fits.

    Parameters
    ----------
    formula : str
        patsy formula whose right-hand side includes ``C(support_model, ...)``
        as a main effect only.
    data : DataFrame
        The design's data (unique default index).

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> df = pd.DataFrame({"g": rng.choice(["a", "b", "c"], 300), "x": rng.normal(size=300),
    ...                    "psu": np.repeat(np.arange(30), 10)})
    >>> df["y"] = (rng.uniform(size=300) < 0.4 + 0.2 * (df["g"] == "c")).astype(float)
    >>> prob = LogitProblem.build("y ~ C(g) + x", df, variable="g")
    >>> design = SurveyDesign(df.assign(w=1.0), weights="w", psu="psu")
    >>> fit = prob.fit(design)
    >>> prob.ame(fit, design, reference="a")["support_model"].tolist()
    ['b', 'c']
    """

    X: np.ndarray
    y: np.ndarray
    rows: np.ndarray                 # design rows that have a complete model matrix
    columns: list[str]
    variable: str
    level_columns: dict[str, int]
    levels: list[str]
    extra: dict = field(default_factory=dict)

    @classmethod
    def build(cls, formula: str, data: pd.DataFrame, *, variable: str = "support_model"
              ) -> LogitProblem:
        y, X = patsy.dmatrices(formula, data, eval_env=_EVAL_ENV, NA_action="drop",
                               return_type="dataframe")
        rows = data.index.get_indexer(X.index)
        col = data[variable]
        levels = (list(col.cat.categories) if isinstance(col.dtype, pd.CategoricalDtype)
                  else sorted(col.dropna().unique()))
        columns = list(X.columns)
        return cls(X=X.to_numpy(dtype=float), y=y.iloc[:, 0].to_numpy(dtype=float),
                   rows=rows, columns=columns, variable=variable,
                   level_columns=_support_columns(columns, variable), levels=levels)

    def subset(self, keep: np.ndarray) -> LogitProblem:
        """The same problem on the rows where the design-row mask ``keep`` is true."""
        sel = np.asarray(keep, dtype=bool)[self.rows]
        return LogitProblem(self.X[sel], self.y[sel], self.rows[sel], self.columns,
                            self.variable, self.level_columns, self.levels, dict(self.extra))

    # -- fitting ---------------------------------------------------------------
    def fit(self, design: SurveyDesign) -> LogitFit:
        """Quasi-binomial fit with the design's weights, as ``fit_svyglm``."""
        w = design.w[self.rows]
        res = irls(self.X, self.y, w / w.mean(), BINOMIAL)
        score = self.X * (res.working_weights * res.working_residuals)[:, None]
        influence = np.zeros((len(design.data), self.X.shape[1]))
        influence[self.rows] = score @ res.cov_unscaled
        mask = np.zeros(len(design.data), dtype=bool)
        mask[self.rows] = True
        df = design.domain_degrees_of_freedom(mask) + 1 - self.X.shape[1]
        return LogitFit(res.coef, self.rows, w, influence, df)

    def coefficients(self, fit: LogitFit, design: SurveyDesign, *, level: float = 0.95
                     ) -> pd.DataFrame:
        """Coefficient table (``term, estimate, std_error, ...``) with the Taylor variance."""
        se = np.sqrt(np.diag(design.variance(fit.influence)))
        out = _tidy(self.columns, fit.coef, se, fit.df_resid, level, len(self.rows))
        return out.rename(columns={"support_model": "term"})

    # -- margins -----------------------------------------------------------------
    def _base(self) -> np.ndarray:
        X0 = self.X.copy()
        X0[:, list(self.level_columns.values())] = 0.0
        return X0

    def margins(self, fit: LogitFit) -> tuple[np.ndarray, np.ndarray, int]:
        """Average predicted probability with every row set to each level, and the
        influence values (n_design, levels) of those margins (as ``ModelFit.margins``)."""
        X0 = self.extra.setdefault("X0", self._base())
        beta = fit.coef
        eta0 = X0 @ beta
        w = fit.weights
        total = w.sum()
        n_design = fit.influence.shape[0]
        est = np.empty(len(self.levels))
        infl = np.zeros((n_design, len(self.levels)))
        grads = np.empty((len(beta), len(self.levels)))
        for j, lv in enumerate(self.levels):
            c = self.level_columns.get(lv)
            eta = eta0 + (beta[c] if c is not None else 0.0)
            p = BINOMIAL.linkinv(eta)
            est[j] = np.sum(w * p) / total
            d = w * BINOMIAL.mu_eta(eta)
            g = d @ X0
            if c is not None:
                g[c] += d.sum()
            grads[:, j] = g / total
            infl[fit.rows, j] = w * (p - est[j]) / total
        infl += fit.influence @ grads
        return est, infl, n_design

    def ame(self, fit: LogitFit, design: SurveyDesign, *, reference: str,
            level: float = 0.95, cov: np.ndarray | None = None) -> pd.DataFrame:
        """AME of each level against ``reference`` (probability scale), Taylor variance
        from ``design`` unless their covariance ``cov`` is given (replicate weights)."""
        est, infl, _ = self.margins(fit)
        r = self.levels.index(reference)
        others = [j for j in range(len(self.levels)) if j != r]
        value = est[others] - est[r]
        if cov is None:
            cov = design.variance(infl[:, others] - infl[:, [r]])
        counts = pd.Series(design.data[self.variable].to_numpy()[fit.rows]).astype(
            object).value_counts()
        n = [int(counts.get(self.levels[j], 0)) for j in others]
        return _tidy([self.levels[j] for j in others], value, np.sqrt(np.diag(cov)),
                     fit.df_resid, level, n)

    # -- replicate weights ----------------------------------------------------------
    def replicate_ame_variance(self, fit: LogitFit, replicate_design, *, reference: str,
                               tol: float = 1e-6, max_iter: int = 50,
                               method: str = "auto", expansion_limit: float = 0.2
                               ) -> np.ndarray:
        """Replicate-weight variance of the AMEs: the model refitted with every set of
        replicate weights and the AMEs recomputed with them.

        Each replicate's estimate solves its own weighted score equations and
        its AMEs average its own predictions over its own weights. Two ways to
        get there:

        - ``method="exact"``: every replicate refitted on every row, by Newton
          steps from the full-sample estimate with the replicate's information
          matrix at the full-sample fit, iterated until no coefficient moves by
          more than ``tol``. Work: rows x replicates per step.
        - ``method="local"`` (what ``"auto"`` picks when each replicate
          reweights at most a quarter of the rows, as the delete-one-PSU
          jackknife does with several strata): a replicate's score is the
          full-sample score, which depends on the replicate only through its
          coefficients, plus the reweighted rows of its own stratum. The
          reweighted rows are evaluated exactly; the full-sample part (and
          likewise the full-sample part of each margin) by its Taylor expansion
          to second order around the full-sample fit, with the tensors computed
          once. The neglected term is of third order in the change of the
          linear predictors, so replicates whose linear predictors can move by
          more than ``expansion_limit`` (bounded by ``sum_j max_i |x_ij| |db_j|``),
          whose information matrix is singular (a small cell left out) or that
          do not converge are refitted exactly. Work: about the rows of one
          stratum per replicate. On the bundled study (1,448 replicates) the
          SEs agree with ``"exact"`` to 2e-6 relative, 35 replicates refitted
          (tested against ``"exact"`` in tests/stats/test_robustness.py).

        ``replicate_design`` is a :class:`~analysis.stats.design.ReplicateDesign`
        derived from the fit's design (one multiplier per PSU and replicate).
        The replicate coefficients are kept in ``extra["replicate_coef"]`` and
        the number refitted exactly in ``extra["replicates_refitted_exactly"]``.
        """
        if method not in ("auto", "exact", "local"):
            raise ValueError("method must be 'auto', 'exact' or 'local'")
        mult_psu = replicate_design._mult                  # (n_psu, R)
        psu = replicate_design._psu[fit.rows]
        n_rep = mult_psu.shape[1]
        plan = None
        if method != "exact":
            if replicate_design not in _PLANS:
                _PLANS[replicate_design] = _delete_one_plan(mult_psu)
            plan = _PLANS[replicate_design]
        if method == "local" and plan is None:
            raise ValueError("method='local' needs delete-one-PSU jackknife replicates "
                             "within strata (JKn)")
        method = "local" if plan is not None else "exact"
        full, _, _ = self.margins(fit)
        if method == "exact":
            B, est = self._exact_replicates(fit, mult_psu, psu, np.arange(n_rep),
                                            np.repeat(fit.coef[:, None], n_rep, axis=1),
                                            tol, max_iter)
            refit = n_rep
        else:
            B, est, bad = self._local_replicates(fit, psu, plan, tol, max_iter,
                                                 expansion_limit)
            refit = len(bad)
            if refit:
                B[:, bad], est[bad] = self._exact_replicates(fit, mult_psu, psu, bad,
                                                             B[:, bad], tol, max_iter)
        r = self.levels.index(reference)
        others = [j for j in range(len(self.levels)) if j != r]
        reps = est[:, others] - est[:, [r]]
        self.extra["replicate_coef"] = B
        self.extra["replicates_refitted_exactly"] = int(refit)
        return replicate_design.replicate_variance(full[others] - full[r], reps)

    def _switched(self, j: int, X0: np.ndarray) -> tuple[np.ndarray, int | None]:
        """Model matrix with every row set to level ``j``, and that level's column."""
        c = self.level_columns.get(self.levels[j])
        Xj = X0.copy()
        if c is not None:
            Xj[:, c] = 1.0
        return Xj, c

    def _exact_replicates(self, fit: LogitFit, mult_psu, psu, which, B, tol, max_iter):
        """Replicates ``which`` refitted on every row from the starting values ``B``
        (p, len(which)); returns their coefficients and margins (len(which), levels)."""
        which = np.asarray(which)
        mult = mult_psu[:, which][psu]                      # (n_used, k)
        w, X, y = fit.weights, self.X, self.y
        W = w[:, None] * mult
        p0 = special.expit(X @ fit.coef)
        v0 = w * p0 * (1 - p0)
        H0 = (X * v0[:, None]).T @ X
        k = len(which)
        H = np.empty((k, X.shape[1], X.shape[1]))
        for r in range(k):                      # replicates: rows of one stratum each
            rows = np.flatnonzero(mult[:, r] != 1.0)
            Xs = X[rows]
            H[r] = H0 + (Xs * (v0[rows] * (mult[rows, r] - 1.0))[:, None]).T @ Xs
        B = np.array(B, dtype=float)
        active = np.arange(k)                   # replicates not yet converged
        for _ in range(max_iter):
            every = len(active) == k
            Wa, Ba = (W, B) if every else (W[:, active], B[:, active])
            resid = X @ Ba
            special.expit(resid, out=resid)
            np.subtract(y[:, None], resid, out=resid)
            resid *= Wa
            step = _solve_steps(H[active], (X.T @ resid).T)
            B[:, active] = Ba + step
            active = active[np.max(np.abs(step), axis=0) >= tol]
            if not len(active):
                break
        X0 = self.extra.setdefault("X0", self._base())
        eta0 = X0 @ B
        totals = W.sum(axis=0)
        est = np.empty((k, len(self.levels)))
        pred = np.empty_like(eta0)
        for j, lv in enumerate(self.levels):
            c = self.level_columns.get(lv)
            np.add(eta0, B[c][None, :] if c is not None else 0.0, out=pred)
            special.expit(pred, out=pred)
            pred *= W
            est[:, j] = pred.sum(axis=0) / totals
        return B, est

    def _local_replicates(self, fit: LogitFit, psu, plan, tol, max_iter, limit):
        """Delete-one-PSU replicates from the second-order expansion of the full-sample
        and stratum sums plus the exact rows of the deleted PSU (see
        ``replicate_ame_variance``). Returns ``B`` (p, R), margins (R, levels) and the
        replicates to refit exactly (linear predictors moved by more than ``limit``,
        singular information, or no convergence)."""
        w, X, y, b = fit.weights, self.X, self.y, fit.coef
        p = X.shape[1]
        n_rep = len(plan.deleted)
        stratum = plan.stratum_of_psu[psu]                   # -1: not reweighted
        n_s = len(plan.factor)
        eta = X @ b
        mu = special.expit(eta)
        v = mu * (1 - mu)
        # stratum sums (a last "stratum" collects the rest) of score, information and
        # third derivatives at the full fit; full-sample sums are their totals
        code = np.where(stratum >= 0, stratum, n_s)
        g_s = group_sums(code, X * (w * (y - mu))[:, None], n_s + 1)
        H_s = _gram_by(code, X, w * v, n_s + 1)
        T_s = _third_by(code, X, w * v * (1 - 2 * mu), n_s + 1)      # (k, p, p*p)
        g0, H0, T0 = g_s.sum(0), H_s.sum(0), T_s.sum(0)
        rep_s, c = plan.stratum_of_rep, plan.factor[plan.stratum_of_rep]   # c = a - 1
        by_stratum = [np.flatnonzero(rep_s == k) for k in range(n_s)]
        # the deleted PSU's rows, exact: weight -(1 + c) in its replicate
        rep_of_row = plan.rep_of_psu[psu]
        drow = np.flatnonzero(rep_of_row >= 0)
        drep = rep_of_row[drow]
        dw = -(1.0 + c[drep]) * w[drow]
        Xd = X[drow]
        H_d = group_sums(drep, _outer(Xd, dw * v[drow]), n_rep).reshape(-1, p, p)
        H = H0[None] + c[:, None, None] * H_s[rep_s] + H_d
        Hinv, singular = _inverse(H)
        Hinv[singular] = 0.0                 # left at the full fit, refitted exactly below
        D = np.zeros((p, n_rep))
        converged = np.zeros(n_rep, dtype=bool)
        for _ in range(max_iter):
            DD = (D[:, None, :] * D[None, :, :]).reshape(p * p, n_rep)
            local = g_s[rep_s].T - np.einsum("rab,br->ar", H_s[rep_s], D)
            for k, reps in enumerate(by_stratum):
                local[:, reps] -= 0.5 * (T_s[k] @ DD[:, reps])
            score = g0[:, None] - H0 @ D - 0.5 * (T0 @ DD) + c * local
            pd_ = special.expit(eta[drow] + np.einsum("ia,ai->i", Xd, D[:, drep]))
            score += group_sums(drep, Xd * (dw * (y[drow] - pd_))[:, None], n_rep).T
            step = np.einsum("rab,br->ar", Hinv, score)
            D += step
            size = np.max(np.abs(step), axis=0)
            converged = size < tol
            diverged = ~(size < 1.0)                 # a poorly determined replicate
            if diverged.any():
                D[:, diverged] = 0.0
                Hinv[diverged] = 0.0
                singular |= diverged
            if converged.all():
                break
        # margins: every row set to each level, expanded and exact in the same way
        X0 = self.extra.setdefault("X0", self._base())
        eta0 = X0 @ b
        w_s = np.bincount(code, weights=w, minlength=n_s + 1)
        totals = w_s.sum() + c * w_s[rep_s] + np.bincount(drep, weights=dw, minlength=n_rep)
        est = np.empty((n_rep, len(self.levels)))
        moved = np.zeros(n_rep)
        for j in range(len(self.levels)):
            Xj, cj = self._switched(j, X0)
            ej = eta0 + (b[cj] if cj is not None else 0.0)
            pj = special.expit(ej)
            vj = pj * (1 - pj)
            S0 = np.bincount(code, weights=w * pj, minlength=n_s + 1)
            G = group_sums(code, Xj * (w * vj)[:, None], n_s + 1)
            M = _gram_by(code, Xj, w * vj * (1 - 2 * pj), n_s + 1)
            quad_s = 0.5 * np.einsum("ar,rab,br->r", D, M[rep_s], D)
            num = (S0.sum() + G.sum(0) @ D + 0.5 * np.einsum("ar,ab,br->r", D, M.sum(0), D)
                   + c * (S0[rep_s] + np.einsum("ra,ar->r", G[rep_s], D) + quad_s))
            pd_ = special.expit(ej[drow] + np.einsum("ia,ai->i", Xj[drow], D[:, drep]))
            num += np.bincount(drep, weights=dw * pd_, minlength=n_rep)
            est[:, j] = num / totals
            moved = np.maximum(moved, np.abs(Xj).max(axis=0) @ np.abs(D))
        bad = np.flatnonzero(~converged | singular | ~(moved <= limit))
        return b[:, None] + D, est, bad


@dataclass
class _DeleteOnePlan:
    """Delete-one-PSU jackknife replicates within strata: replicate ``r`` sets the
    multiplier of PSU ``deleted[r]`` to 0 and of the other PSUs of its stratum to
    ``1 + factor[stratum_of_rep[r]]``."""

    deleted: np.ndarray              # (R,) PSU left out by each replicate
    stratum_of_rep: np.ndarray       # (R,) index into ``factor``
    factor: np.ndarray               # (strata,) multiplier - 1 of the kept PSUs
    stratum_of_psu: np.ndarray       # (n_psu,) -1 where no replicate reweights the PSU
    rep_of_psu: np.ndarray           # (n_psu,) -1 where no replicate deletes the PSU


_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()   # per replicate design


def _delete_one_plan(mult_psu: np.ndarray) -> _DeleteOnePlan | None:
    """The structure of JKn-type multipliers, or None when they have another form."""
    n_psu, n_rep = mult_psu.shape
    changed = mult_psu != 1.0
    zero = mult_psu == 0.0
    if not (zero.sum(axis=0) == 1).all() or np.bincount(
            np.argmax(zero, axis=0), minlength=n_psu).max() > 1:
        return None
    _, first, inverse = np.unique(np.packbits(changed, axis=0).T, axis=0,
                                  return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    order = np.argsort(first)                       # strata in order of first replicate
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    stratum_of_rep = rank[inverse]
    stratum_of_psu = np.full(n_psu, -1)
    factor = np.empty(len(order))
    for s, k in enumerate(order):
        r = first[k]
        psus = np.flatnonzero(changed[:, r])
        if (stratum_of_psu[psus] >= 0).any():
            return None                             # overlapping reweighted sets
        stratum_of_psu[psus] = s
        kept = mult_psu[psus, r][mult_psu[psus, r] != 0.0]
        reps = np.flatnonzero(stratum_of_rep == s)
        block = mult_psu[np.ix_(psus, reps)]
        if len(kept) == 0 or not ((block == kept[0]) | (block == 0.0)).all():
            return None
        factor[s] = kept[0] - 1.0
    deleted = np.argmax(zero, axis=0)
    rep_of_psu = np.full(n_psu, -1)
    rep_of_psu[deleted] = np.arange(n_rep)
    return _DeleteOnePlan(deleted, stratum_of_rep, factor, stratum_of_psu, rep_of_psu)


def _gram_by(codes: np.ndarray, X: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    """``X' diag(weights) X`` over the rows of each code: (k, p, p)."""
    out = np.zeros((k, X.shape[1], X.shape[1]))
    for s in np.unique(codes):
        m = codes == s
        out[s] = (X[m] * weights[m, None]).T @ X[m]
    return out


def _outer(X: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted outer products of the rows of ``X``: (n, p*p)."""
    return (X[:, :, None] * (X * weights[:, None])[:, None, :]).reshape(len(X), -1)


def _third_by(codes: np.ndarray, X: np.ndarray, weights: np.ndarray, k: int,
              chunk: int = 20_000) -> np.ndarray:
    """``sum_i weights_i x_ia x_ib x_ic`` by code: (k, p, p*p), rows in chunks."""
    n, p = X.shape
    out = np.zeros((k, p, p * p))
    for start in range(0, n, chunk):
        sl = slice(start, start + chunk)
        outer = (X[sl, :, None] * X[sl, None, :]).reshape(-1, p * p)
        for s in np.unique(codes[sl]):
            m = codes[sl] == s
            out[s] += (X[sl][m] * weights[sl][m, None]).T @ outer[m]
    return out


def _inverse(H: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverses of a stack of matrices, and which were singular (pseudo-inverted)."""
    try:
        return np.linalg.inv(H), np.zeros(len(H), dtype=bool)
    except np.linalg.LinAlgError:
        out = np.empty_like(H)
        singular = np.zeros(len(H), dtype=bool)
        for r, h in enumerate(H):
            try:
                out[r] = np.linalg.inv(h)
            except np.linalg.LinAlgError:
                out[r] = np.linalg.pinv(h)
                singular[r] = True
        return out, singular


def _solve_steps(H: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Newton steps ``H[r]^-1 g[r]`` for every replicate (columns of the result).

    A replicate that leaves out every row with some level (a small cell) has a singular
    Hessian: its step is the minimum-norm least-squares solution, so the coefficient it
    cannot identify keeps the full-sample value and adds no replicate variance.
    """
    try:
        return np.linalg.solve(H, g[:, :, None])[:, :, 0].T
    except np.linalg.LinAlgError:
        return np.stack([np.linalg.lstsq(h, v, rcond=None)[0] for h, v in zip(H, g, strict=True)],
                        axis=1)


def _tidy(labels, est, se, df, level, n) -> pd.DataFrame:
    est = np.asarray(est, dtype=float)
    se = np.asarray(se, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = est / se
    dfa = np.broadcast_to(np.asarray(df, dtype=float), est.shape)
    q = stats.t.ppf(0.5 + level / 2, dfa)
    return pd.DataFrame({"support_model": list(labels), "estimate": est, "std_error": se,
                         "statistic": stat, "df": dfa, "p_value": 2 * stats.t.sf(np.abs(stat),
                                                                                  dfa),
                         "ci_low": est - q * se, "ci_high": est + q * se, "n": n})[AME_COLUMNS]


def _study_design(data: pd.DataFrame, *, weights: str = "weight", lonely_psu: str = "adjust",
                  variance: str = "taylor") -> SurveyDesign:
    """The study's design on ``data`` (Taylor: strata, district PSUs, FPC), or for
    ``variance="cluster"`` district clusters only (with-replacement, no strata or FPC:
    the cluster-robust sandwich)."""
    d = load_codebook().design
    if variance == "cluster":
        return SurveyDesign(data, weights=weights, psu=d["psu"])
    return SurveyDesign(data, weights=weights, strata=d["strata"], psu=d["psu"], fpc=d["fpc"],
                        fpc_type="count", lonely_psu=lonely_psu)


def _m1_formula() -> str:
    return load_codebook().model_formula("M1")


def _reference() -> str:
    return load_codebook().reference_model


def m1_ames(teachers: pd.DataFrame, *, weights: str = "weight", lonely_psu: str = "adjust"
            ) -> pd.DataFrame:
    """M1's AMEs (probability scale) with the fast engine.

    Examples
    --------
    >>> teachers = pd.read_parquet("data/processed/teachers.parquet")  # doctest: +SKIP
    >>> m1_ames(teachers)["support_model"].tolist()[-2:]                 # doctest: +SKIP
    ['director', 'coaching']
    """
    data = model_data(teachers)
    design = _study_design(data, weights=weights, lonely_psu=lonely_psu)
    prob = LogitProblem.build(_m1_formula(), data)
    return prob.ame(prob.fit(design), design, reference=_reference())


# ---------------------------------------------------------------------------
# Multiple imputation
# ---------------------------------------------------------------------------
def pool_rubin(estimates, variances, *, df_complete: float, labels=None,
               level: float = 0.95) -> pd.DataFrame:
    """Rubin's rules with the Barnard-Rubin (1999) small-sample degrees of freedom.

    Parameters
    ----------
    estimates, variances : array (m, k)
        Each imputation's estimates and their squared standard errors.
    df_complete : float
        Degrees of freedom of the complete-data analysis (here the design's
        residual df).

    Returns
    -------
    DataFrame
        ``term, estimate, std_error, statistic, df, p_value, ci_low, ci_high,
        within, between, riv`` (relative increase in variance), ``lambda``
        (share of the total variance due to missing data) and ``fmi`` (fraction
        of missing information, ``(riv + 2 / (df + 3)) / (riv + 1)`` as R's
        ``mice::pool``).

    Examples
    --------
    >>> out = pool_rubin([[1.0], [3.0]], [[1.0], [1.0]], df_complete=1e9)
    >>> out[["estimate", "within", "between"]].iloc[0].tolist()
    [2.0, 1.0, 2.0]
    >>> float(out["std_error"].iloc[0] ** 2)     # 1 + (1 + 1/2) * 2
    4.0
    """
    q = np.atleast_2d(np.asarray(estimates, dtype=float))
    u = np.atleast_2d(np.asarray(variances, dtype=float))
    m = q.shape[0]
    qbar = q.mean(axis=0)
    ubar = u.mean(axis=0)
    b = q.var(axis=0, ddof=1) if m > 1 else np.zeros_like(qbar)
    t = ubar + (1 + 1 / m) * b
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = np.where(t > 0, (1 + 1 / m) * b / t, 0.0)
        riv = np.where(ubar > 0, (1 + 1 / m) * b / ubar, 0.0)
        df_old = np.where(lam > 0, (m - 1) / lam ** 2, np.inf)
        df_obs = (np.inf if np.isinf(df_complete) else
                  (df_complete + 1) / (df_complete + 3) * df_complete * (1 - lam))
        df = 1.0 / (1.0 / df_old + 1.0 / df_obs)
    fmi = (riv + 2 / (df + 3)) / (riv + 1)
    se = np.sqrt(t)
    stat = qbar / se
    tq = stats.t.ppf(0.5 + level / 2, df)
    labels = list(labels) if labels is not None else [f"q{j}" for j in range(len(qbar))]
    return pd.DataFrame({"term": labels, "estimate": qbar, "std_error": se, "statistic": stat,
                         "df": df, "p_value": 2 * stats.t.sf(np.abs(stat), df),
                         "ci_low": qbar - tq * se, "ci_high": qbar + tq * se, "within": ubar,
                         "between": b, "riv": riv, "lambda": lam, "fmi": fmi})


def _encode(frame: pd.DataFrame) -> np.ndarray:
    """Numeric predictor matrix: numbers standardised, categories as indicators."""
    parts = []
    for col in frame.columns:
        s = frame[col]
        if isinstance(s.dtype, pd.CategoricalDtype) or s.dtype == object or \
                pd.api.types.is_string_dtype(s):
            codes = pd.Categorical(s.astype(object)).codes
            k = codes.max() + 1
            if k > 1:
                parts.append((codes[:, None] == np.arange(1, k)[None, :]).astype(float))
        else:
            v = s.to_numpy(dtype=float)
            sd = np.nanstd(v)
            parts.append(((v - np.nanmean(v)) / (sd if sd > 0 else 1.0))[:, None])
    return np.column_stack([np.ones(len(frame))] + parts)


def _target(values: pd.Series) -> tuple[np.ndarray, bool]:
    """What PMM matches on: the value (numbers) or the indicators of each category."""
    if isinstance(values.dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(
            values):
        codes = pd.Categorical(values.astype(object)).codes
        k = codes.max() + 1
        return (codes[:, None] == np.arange(k)[None, :]).astype(float), True
    return values.to_numpy(dtype=float)[:, None], False


def _ols(Z: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Least squares by the normal equations with a tiny ridge (the indicators of the
    imputation models can be collinear, e.g. strata and locales)."""
    A = Z.T @ Z
    A[np.diag_indices_from(A)] += 1e-8 * np.trace(A) / len(A)
    return np.linalg.solve(A, Z.T @ Y)


def _pmm(values: pd.Series, predictors: np.ndarray, missing: np.ndarray,
         rng: np.random.Generator, donors: int) -> np.ndarray:
    """Bootstrap predictive mean matching: positions (into the observed rows) of the donor
    drawn for each missing row.

    The regression of the target (a number, or the indicators of a category) on
    the predictors is fitted on the observed rows (``beta_hat``) and on a
    bootstrap resample of them (``beta_star``); each missing row's prediction
    under ``beta_star`` is matched to the ``donors`` nearest predictions of the
    observed rows under ``beta_hat`` (Euclidean distance), and one of them is
    drawn at random.
    """
    obs = ~missing
    target, _ = _target(values[obs])
    Z_obs, Z_mis = predictors[obs], predictors[missing]
    boot = rng.integers(0, len(Z_obs), len(Z_obs))
    fit_obs = Z_obs @ _ols(Z_obs, target)
    fit_mis = Z_mis @ _ols(Z_obs[boot], target[boot])
    k = min(donors, len(fit_obs))
    if fit_obs.shape[1] == 1:                    # one dimension: search the sorted fits
        order = np.argsort(fit_obs[:, 0], kind="stable")
        sorted_fit = fit_obs[order, 0]
        pos = np.searchsorted(sorted_fit, fit_mis[:, 0])
        window = np.clip(pos[:, None] + np.arange(-k, k)[None, :], 0, len(order) - 1)
        dist = np.abs(sorted_fit[window] - fit_mis[:, [0]])
        dist[:, 1:][window[:, 1:] == window[:, :-1]] = np.inf     # clipped duplicates
        near = np.take_along_axis(window, np.argsort(dist, axis=1, kind="stable")[:, :k], 1)
        return order[near[np.arange(len(near)), rng.integers(0, k, len(near))]]
    sq_obs = np.sum(fit_obs ** 2, axis=1)
    picks = np.empty(len(fit_mis), dtype=np.int64)
    for start in range(0, len(fit_mis), 256):
        block = fit_mis[start:start + 256]
        dist = sq_obs[None, :] - 2.0 * block @ fit_obs.T      # + |block|^2, same per row
        near = np.argpartition(dist, k - 1, axis=1)[:, :k]
        picks[start:start + 256] = near[np.arange(len(block)), rng.integers(0, k, len(block))]
    return picks


def _fill(values: pd.Series, missing: np.ndarray, picks: np.ndarray) -> pd.Series:
    out = values.copy()
    donors = values[~missing].to_numpy()
    out[missing] = donors[picks]
    return out


def impute_chained(data: pd.DataFrame, *, columns: list[str], group: str | None = None,
                   group_columns: list[str] = (), predictors: list[str] = (),
                   m: int = 20, iterations: int = 5, donors: int = 5, seed: int = 0
                   ) -> list[pd.DataFrame]:
    """Multiple imputation by chained equations with predictive mean matching.

    Parameters
    ----------
    data : DataFrame
        One row per unit (teacher).
    columns : list of str
        Unit-level columns to impute (numbers, 0/1 indicators or categories).
    group, group_columns : optional
        Columns constant within ``group`` (district variables) are imputed on
        one row per group, with the group means of ``columns`` among the
        predictors, so every teacher of a district gets the same value.
    predictors : list of str
        Fully observed auxiliary columns used as predictors only (design
        variables, the exposure, log weights).
    m, iterations, donors, seed
        Number of completed data sets, chained-equation cycles per data set,
        PMM donor pool size, and the seed.

    Returns
    -------
    list of DataFrame
        ``m`` copies of ``data`` with the missing values of ``columns`` and
        ``group_columns`` filled with observed values.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> df = pd.DataFrame({"x": rng.normal(size=200), "c": rng.choice(["a", "b"], 200)})
    >>> df["y"] = df["x"] + rng.normal(size=200)
    >>> df.loc[:19, "y"] = np.nan
    >>> done = impute_chained(df, columns=["y"], predictors=["x", "c"], m=2, iterations=2)
    >>> [int(d["y"].isna().sum()) for d in done]
    [0, 0]
    """
    columns, group_columns, predictors = list(columns), list(group_columns), list(predictors)
    rngs = np.random.default_rng(seed).spawn(m)
    if group:
        gcodes, guniq = pd.factorize(data[group])
        first = pd.Series(np.arange(len(data))).groupby(gcodes).first().to_numpy()
    fixed = _encode(data[predictors])                    # predictors never change
    out = []
    for rng in rngs:
        d = data.copy()
        miss = {c: d[c].isna().to_numpy() for c in columns}
        gmiss = {}
        gframe = None
        if group:
            gframe = d.iloc[first][group_columns].reset_index(drop=True)
            gmiss = {c: gframe[c].isna().to_numpy() for c in group_columns}
            for c in group_columns:                          # start: random observed values
                obs = gframe[c][~gmiss[c]].to_numpy()
                gframe.loc[gmiss[c], c] = rng.choice(obs, gmiss[c].sum())
        for c in columns:
            obs = d[c][~miss[c]].to_numpy()
            vals = d[c].copy()
            vals[miss[c]] = rng.choice(obs, miss[c].sum())
            d[c] = vals
        for _ in range(iterations):
            if group and group_columns:
                unit = np.column_stack([_encode(d[columns])[:, 1:], fixed[:, 1:]])
                means = pd.DataFrame(unit).groupby(gcodes).mean().to_numpy()
                for c in group_columns:
                    if not gmiss[c].any():
                        continue
                    others = [g for g in group_columns if g != c]
                    Z = np.column_stack([_encode(gframe[others]), means])
                    picks = _pmm(gframe[c], Z, gmiss[c], rng, donors)
                    gframe[c] = _fill(gframe[c], gmiss[c], picks)
                for c in group_columns:
                    d[c] = gframe[c].to_numpy()[gcodes]
            for c in columns:
                if not miss[c].any():
                    continue
                others = [o for o in columns + group_columns if o != c]
                Z = np.column_stack([fixed, _encode(d[others])[:, 1:]])
                picks = _pmm(d[c], Z, miss[c], rng, donors)
                d[c] = _fill(d[c], miss[c], picks)
        out.append(d)
    return out


#: What the imputation of M1 fills in: teacher answers and district answers.
MI_TEACHER_COLUMNS = ["non_substitutive", "years_teaching", "grade_band", "subject"]
MI_DISTRICT_COLUMNS = ["tech_spend_pp", "students_per_device"]
MI_PREDICTORS = ["support_model", "frl_pct", "log_enrollment", "locale", "stratum",
                 "log_weight"]


@dataclass
class MIResult:
    """Pooled M1 after multiple imputation (see :func:`multiple_imputation`)."""

    coefficients: pd.DataFrame
    ame: pd.DataFrame
    complete_case_ame: pd.DataFrame
    m: int
    n_imputed_rows: int
    missing: pd.DataFrame


def multiple_imputation(teachers: pd.DataFrame, *, m: int = 20, iterations: int = 5,
                        donors: int = 5, seed: int = 20261130) -> MIResult:
    """M1 after multiple imputation of its missing teacher and district answers.

    The teacher answers (the outcome, experience, grade band, subject) are
    imputed per teacher and the district answers (technology spending,
    students per device) per district, by chained equations with predictive
    mean matching (:func:`impute_chained`), using the support model, the frame
    variables, the stratum and the log weight as predictors (so the
    imputation model respects the design). Each completed data set is analysed
    with M1 on the survey design (Taylor linearisation), and the coefficients
    and AMEs are pooled by Rubin's rules with the Barnard-Rubin degrees of
    freedom, the complete-data df being the design's residual df. Imputed
    outcomes are analysed as well (no deletion of imputed outcomes).

    Returns
    -------
    MIResult
        ``coefficients`` and ``ame`` (pooled, with ``fmi`` per row),
        ``complete_case_ame`` for comparison, and the share missing per column.
    """
    data = model_data(teachers)
    data["log_enrollment"] = np.log(data["enrollment"].astype(float))
    data["log_weight"] = np.log(data["weight"].astype(float))
    data["support_model"] = data["support_model"].cat.add_categories("none").fillna("none")
    cols = [c for c in MI_TEACHER_COLUMNS if c in data]
    gcols = [c for c in MI_DISTRICT_COLUMNS if c in data]
    missing = pd.DataFrame({"column": cols + gcols,
                            "share_missing": [float(data[c].isna().mean()) for c in cols + gcols]})
    formula, ref = _m1_formula(), _reference()
    coefs, coef_var, ames, ame_var = [], [], [], []
    with threadpool_limits(1):
        completed = impute_chained(data, columns=cols, group="district_id",
                                   group_columns=gcols, predictors=MI_PREDICTORS, m=m,
                                   iterations=iterations, donors=donors, seed=seed)
        for d in completed:
            d = model_data(d.assign(support_model=d["support_model"].astype(object)))
            design = _study_design(d, lonely_psu="fail")
            prob = LogitProblem.build(formula, d)
            fit = prob.fit(design)
            coefs.append(fit.coef)
            coef_var.append(np.diag(design.variance(fit.influence)))
            a = prob.ame(fit, design, reference=ref)
            ames.append(a["estimate"].to_numpy())
            ame_var.append(a["std_error"].to_numpy() ** 2)
            df_complete = fit.df_resid
        cc = model_data(teachers)
        cc_design = _study_design(cc, lonely_psu="fail")
        cc_prob = LogitProblem.build(formula, cc)
        cc_ame = cc_prob.ame(cc_prob.fit(cc_design), cc_design, reference=ref)
    pooled = pool_rubin(coefs, coef_var, df_complete=df_complete, labels=prob.columns)
    pooled_ame = pool_rubin(ames, ame_var, df_complete=df_complete,
                            labels=list(a["support_model"]))
    pooled_ame = pooled_ame.rename(columns={"term": "support_model"})
    n_imputed = int(data[cols + gcols].isna().any(axis=1).sum())
    return MIResult(pooled, pooled_ame, cc_ame, m, n_imputed, missing)


# ---------------------------------------------------------------------------
# E-values
# ---------------------------------------------------------------------------
def _evalue_rr(rr):
    rr = np.asarray(rr, dtype=float)
    r = np.where(rr < 1, 1 / rr, rr)
    return r + np.sqrt(r * (r - 1))


def evalue(rr: float, *, ci_low: float | None = None, ci_high: float | None = None) -> dict:
    """E-value of a risk ratio and of the CI limit closest to the null (VanderWeele and
    Ding 2017): the minimum strength of association, on the risk-ratio scale, that an
    unmeasured confounder would need with both exposure and outcome to explain the
    association away. ``RR + sqrt(RR (RR - 1))``, with ``1 / RR`` for RR < 1; the CI
    E-value is 1 when the interval includes 1.

    Examples
    --------
    >>> e = evalue(0.80, ci_low=0.71, ci_high=0.91)   # VanderWeele & Ding (2017)
    >>> round(float(e["evalue_point"]), 2), round(float(e["evalue_ci"]), 2)
    (1.81, 1.43)
    """
    out = {"risk_ratio": float(rr), "evalue_point": float(_evalue_rr(rr))}
    if ci_low is not None and ci_high is not None:
        if ci_low <= 1 <= ci_high:
            out["evalue_ci"] = 1.0
        else:
            out["evalue_ci"] = float(_evalue_rr(ci_low if rr > 1 else ci_high))
    return out


def support_model_evalues(teachers: pd.DataFrame, *, level: float = 0.95) -> pd.DataFrame:
    """E-values of each support model's M1 association against ``tech_support_only``.

    Non-substitutive use is common (about half of teachers), so odds ratios
    would overstate the risk ratio. The risk ratio used here is taken directly
    from the model: the ratio of the adjusted (g-computation) rates, everyone
    set to the model versus everyone set to ``tech_support_only``; its CI comes
    from the design-based delta method on the log scale (t on the residual df).

    Returns
    -------
    DataFrame
        ``support_model, rate, reference_rate, risk_ratio, rr_ci_low, rr_ci_high,
        evalue_point, evalue_ci``.
    """
    data = model_data(teachers)
    design = _study_design(data, lonely_psu="fail")
    prob = LogitProblem.build(_m1_formula(), data)
    fit = prob.fit(design)
    est, infl, _ = prob.margins(fit)
    ref = prob.levels.index(_reference())
    q = stats.t.ppf(0.5 + level / 2, fit.df_resid)
    rows = []
    for j, lv in enumerate(prob.levels):
        if j == ref:
            continue
        log_rr = np.log(est[j] / est[ref])
        z = infl[:, j] / est[j] - infl[:, ref] / est[ref]
        se = float(np.sqrt(design.variance(z)[0, 0]))
        lo, hi = np.exp(log_rr - q * se), np.exp(log_rr + q * se)
        e = evalue(float(np.exp(log_rr)), ci_low=float(lo), ci_high=float(hi))
        rows.append({"support_model": lv, "rate": est[j], "reference_rate": est[ref],
                     "risk_ratio": e["risk_ratio"], "rr_ci_low": lo, "rr_ci_high": hi,
                     "evalue_point": e["evalue_point"], "evalue_ci": e["evalue_ci"]})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------
# Propensity weighting
# ---------------------------------------------------------------------------
#: District covariates of the propensity model (those of M1).
PROPENSITY_COVARIATES = ["frl_pct", "log_enrollment", "locale", "tech_spend_100",
                         "students_per_device"]


def _district_frame(data: pd.DataFrame) -> pd.DataFrame:
    out = data.assign(log_enrollment=np.log(data["enrollment"].astype(float)),
                      tech_spend_100=data["tech_spend_pp"].astype(float) / 100)
    return out


def propensity_weights(teachers: pd.DataFrame, *, method: str = "overlap",
                       covariates: list[str] = PROPENSITY_COVARIATES) -> pd.DataFrame:
    """Generalised propensity scores of the six models and balancing weights per teacher.

    A multinomial logit of the district's support model on the district
    covariates is fitted on one row per district, each district weighted by the
    total survey weight of its analysed teachers (the teachers it stands for), by
    Newton's method (:func:`multinomial_logit`; statsmodels' ``MNLogit`` gives
    the same estimates without weights). Weights:

    - ``"overlap"``: generalised overlap weights (Li and Li 2019),
      ``h(x) / e_z(x)`` with ``h(x) = 1 / sum_k 1 / e_k(x)``: they emphasise
      districts that could plausibly have had any model and are bounded;
    - ``"ipw"``: stabilised inverse-probability weights ``P(Z = z) / e_z(x)``.

    Returns
    -------
    DataFrame
        The model data (six models, complete district covariates) with
        ``propensity_weight`` and ``combined_weight`` (survey weight times the
        propensity weight, rescaled to the survey weights' total) and one
        ``ps_<model>`` column per model.
    """
    if method not in ("overlap", "ipw"):
        raise ValueError("method must be 'overlap' or 'ipw'")
    data = _district_frame(model_data(teachers))
    data = data[data["support_model"].notna() & data[
        [c for c in covariates if c != "locale"]].notna().all(axis=1)].reset_index(drop=True)
    districts = data.drop_duplicates("district_id").reset_index(drop=True)
    X = _mn_design(districts, covariates)
    levels = list(data["support_model"].cat.categories)
    z = pd.Categorical(districts["support_model"], categories=levels).codes
    totals = data.groupby("district_id", sort=False)["weight"].sum()
    _, ps = multinomial_logit(X, z, weights=totals.loc[districts["district_id"]].to_numpy(),
                              n_levels=len(levels))
    own = ps[np.arange(len(z)), z]
    if method == "overlap":
        pw = (1.0 / np.sum(1.0 / ps, axis=1)) / own
    else:
        share = np.bincount(z, minlength=len(levels)) / len(z)
        pw = share[z] / own
    idx = data["district_id"].map(pd.Series(np.arange(len(districts)),
                                            index=districts["district_id"])).to_numpy()
    data["propensity_weight"] = pw[idx]
    w = data["weight"].to_numpy(dtype=float) * data["propensity_weight"].to_numpy()
    data["combined_weight"] = w * data["weight"].sum() / w.sum()
    for k, lv in enumerate(levels):
        data[f"ps_{lv}"] = ps[idx, k]
    return data


def multinomial_logit(X: np.ndarray, z: np.ndarray, *, weights=None, n_levels: int | None = None,
                      tol: float = 1e-10, max_iter: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Weighted multinomial logit by Newton's method (first level the reference).

    Returns the coefficients (columns of X, levels 1..K-1) and the fitted
    probabilities (rows, K).

    Examples
    --------
    >>> import statsmodels.api as sm
    >>> rng = np.random.default_rng(3)
    >>> X = np.column_stack([np.ones(300), rng.normal(size=300)])
    >>> z = rng.integers(0, 3, 300)
    >>> coef, _ = multinomial_logit(X, z)
    >>> bool(np.allclose(coef, sm.MNLogit(z, X).fit(disp=0).params, atol=1e-6))
    True
    """
    n, q = X.shape
    k = int(n_levels or z.max() + 1)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    w = w / w.mean()
    Y = (np.asarray(z)[:, None] == np.arange(1, k)[None, :]).astype(float)
    B = np.zeros((q, k - 1))
    for _ in range(max_iter):
        eta = np.column_stack([np.zeros(n), X @ B])
        P = special.softmax(eta, axis=1)[:, 1:]
        grad = (X.T @ (w[:, None] * (Y - P))).T.ravel()               # level-major
        inner = w[:, None, None] * (P[:, :, None] * (np.eye(k - 1)[None] - P[:, None, :]))
        H = np.einsum("ni,njk,nl->jikl", X, inner, X).reshape((k - 1) * q, (k - 1) * q)
        # least squares: a level with (almost) no districts makes H singular (small cells)
        step = np.linalg.lstsq(H, grad, rcond=None)[0].reshape(k - 1, q).T
        B += step
        if np.max(np.abs(step)) < tol:
            break
    probs = special.softmax(np.column_stack([np.zeros(n), X @ B]), axis=1)
    return B, probs


def _mn_design(districts: pd.DataFrame, covariates: list[str]) -> np.ndarray:
    parts = [np.ones(len(districts))]
    for c in covariates:
        s = districts[c]
        if isinstance(s.dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(s):
            cat = pd.Categorical(s.astype(object))
            parts += [(cat.codes == k).astype(float) for k in range(1, len(cat.categories))]
        else:
            parts.append(s.to_numpy(dtype=float))
    return np.column_stack(parts)


def balance_table(data: pd.DataFrame, *, covariates: list[str], before: str, after: str,
                  treatment: str = "support_model", reference: str | None = None
                  ) -> pd.DataFrame:
    """Weighted standardised mean differences of each covariate, each model against the
    reference, before (``before`` weights) and after (``after`` weights) weighting.

    The denominator is fixed: ``sqrt((s_k^2 + s_ref^2) / 2)`` with the groups'
    SDs under the ``before`` weights, so only the means move.

    Examples
    --------
    >>> df = pd.DataFrame({"g": ["a", "a", "b", "b"], "x": [0.0, 1, 1, 2], "w": 1.0})
    >>> balance_table(df, covariates=["x"], before="w", after="w", treatment="g",
    ...               reference="a")[["smd_before", "smd_after"]].iloc[0].tolist()
    [2.0, 2.0]
    """
    reference = reference or _reference()
    t = data[treatment].astype(object).to_numpy()
    cols = {}
    for c in covariates:
        s = data[c]
        if isinstance(s.dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(s):
            for lv in pd.Categorical(s.astype(object)).categories:
                cols[f"{c}={lv}"] = (s.astype(object) == lv).to_numpy(dtype=float)
        else:
            cols[c] = s.to_numpy(dtype=float)
    rows = []
    wb, wa = data[before].to_numpy(dtype=float), data[after].to_numpy(dtype=float)

    def stats_of(x, w, mask):
        ww = w[mask]
        m = np.sum(ww * x[mask]) / ww.sum()
        v = np.sum(ww * (x[mask] - m) ** 2) / ww.sum()
        return m, v

    ref = t == reference
    for lv in [v for v in pd.unique(t) if v != reference and v is not None]:
        grp = t == lv
        for name, x in cols.items():
            mb1, vb1 = stats_of(x, wb, grp)
            mb0, vb0 = stats_of(x, wb, ref)
            ma1, _ = stats_of(x, wa, grp)
            ma0, _ = stats_of(x, wa, ref)
            sd = np.sqrt((vb1 + vb0) / 2)
            rows.append({"support_model": lv, "covariate": name,
                         "smd_before": (mb1 - mb0) / sd if sd > 0 else 0.0,
                         "smd_after": (ma1 - ma0) / sd if sd > 0 else 0.0})
    out = pd.DataFrame(rows)
    order = {lv: k for k, lv in enumerate(load_codebook().support_model_codes())}
    return out.sort_values(["support_model", "covariate"],
                           key=lambda s: s.map(order) if s.name == "support_model" else s,
                           ignore_index=True)


@dataclass
class PropensityResult:
    ame: pd.DataFrame
    balance: pd.DataFrame
    weights: pd.DataFrame           # summary of the propensity weights by model
    method: str


def propensity_weighted_ames(teachers: pd.DataFrame, *, method: str = "overlap"
                             ) -> PropensityResult:
    """M1's AMEs re-estimated with propensity weights times the survey weights.

    The M1 outcome model (doubly adjusted) is fitted by ``fit_svyglm``'s method
    on the survey design with ``combined_weight``. The standard errors treat
    the propensity weights as fixed (they ignore the estimation of the
    propensity model, which usually makes them slightly conservative for
    overlap weights).

    Returns
    -------
    PropensityResult
        ``ame`` (AME table), ``balance`` (:func:`balance_table` on the district
        covariates, survey weights before vs combined weights after) and a
        summary of the weights.
    """
    data = propensity_weights(teachers, method=method)
    design = _study_design(data, weights="combined_weight", lonely_psu="adjust")
    prob = LogitProblem.build(_m1_formula(), data)
    ame = prob.ame(prob.fit(design), design, reference=_reference())
    balance = balance_table(data, covariates=PROPENSITY_COVARIATES, before="weight",
                            after="combined_weight")
    districts = data.drop_duplicates("district_id")
    wsum = districts.groupby("support_model", observed=True)["propensity_weight"].agg(
        ["min", "median", "max"]).reset_index()
    return PropensityResult(ame, balance, wsum, method)


# ---------------------------------------------------------------------------
# Multiverse (specification curve)
# ---------------------------------------------------------------------------
#: Outcome definitions (column of the analysis data).
MULTIVERSE_OUTCOMES = {
    "non_substitutive": "non_substitutive",
    "transformative": "transformative",
    "nonsub_share_majority": "nonsub_share_majority",
}
#: Covariate sets (right-hand sides after the support model).
MULTIVERSE_COVARIATES = {
    "none": "",
    "district": ("frl_pct + np.log(enrollment) + C(locale, Treatment(\"suburb\"))"
                 " + I(tech_spend_pp / 100) + students_per_device"),
    "M1": None,                     # the codebook's M1 right-hand side
}
MULTIVERSE_VARIANCE = ("taylor", "jackknife", "cluster")
MULTIVERSE_WEIGHTS = ("survey", "unweighted", "trimmed")
MULTIVERSE_FLAGGED = ("as_cleaned", "complete_only", "consistent_model_only")


def trim_weights(w: np.ndarray, *, quantile: float = 0.95) -> np.ndarray:
    """Weights capped at their ``quantile``, the excess spread proportionally over the
    untrimmed weights so the total is kept (weights pushed above the cap by the
    spreading are capped in turn).

    Examples
    --------
    >>> w = np.array([1.0, 1, 1, 1, 1, 1, 1, 1, 2, 4])
    >>> trim_weights(w, quantile=0.9).round(3).tolist()    # cap 2.2, total 14 kept
    [1.2, 1.2, 1.2, 1.2, 1.2, 1.2, 1.2, 1.2, 2.2, 2.2]
    """
    w = np.asarray(w, dtype=float)
    cap = np.quantile(w, quantile)
    total = w.sum()
    trimmed = w > cap
    out = w.copy()
    for _ in range(100):
        out[trimmed] = cap
        rest = ~trimmed
        out[rest] = w[rest] * (total - cap * trimmed.sum()) / w[rest].sum()
        over = rest & (out > cap * (1 + 1e-12))
        if not over.any():
            break
        trimmed |= over
    return out


def _multiverse_data(teachers: pd.DataFrame) -> pd.DataFrame:
    data = model_data(teachers)
    share = data["nonsub_share"].astype(float)
    data["nonsub_share_majority"] = np.where(share.notna(), (share > 0.5).astype(float),
                                             np.nan)
    data["weight_unweighted"] = 1.0
    data["weight_trimmed"] = trim_weights(data["weight"].to_numpy(dtype=float))
    return data


def _flag_masks(data: pd.DataFrame) -> dict[str, np.ndarray]:
    n = len(data)
    partial = data["partial"].fillna(False).to_numpy(dtype=bool) if "partial" in data else \
        np.zeros(n, dtype=bool)
    consistent = np.ones(n, dtype=bool)
    if "support_model_derived" in data:
        derived = data["support_model_derived"].astype(object)
        consistent = (derived.isna() | (derived == data["support_model"].astype(object))
                      ).to_numpy()
    return {"as_cleaned": np.ones(n, dtype=bool), "complete_only": ~partial,
            "consistent_model_only": consistent}


def multiverse(teachers: pd.DataFrame, *, outcomes=None, covariates=None,
               variance=MULTIVERSE_VARIANCE, weights=MULTIVERSE_WEIGHTS,
               flagged=MULTIVERSE_FLAGGED, levels=None,
               alpha: float = 0.05, progress: bool = False, workers: int = 1,
               backend: str = "loky", client=None) -> pd.DataFrame:
    """Specification curve: the AMEs of ``levels`` under every combination of choices.

    Choices (each a keyword, a subset of the module constants):

    - ``outcomes``: ``non_substitutive`` (SAMR A or higher, the primary),
      ``transformative`` (M or R), ``nonsub_share_majority`` (more than half of
      the T6 frequency on A, M and R items);
    - ``covariates``: ``none`` (support model only), ``district`` (M1's district
      covariates), ``M1`` (the full M1 adjustment);
    - ``variance``: ``taylor`` (strata, district PSUs, FPC), ``jackknife`` (JKn
      replicate weights of the same design, the model refitted per replicate by
      ``LogitProblem.replicate_ame_variance``),
      ``cluster`` (district clusters only: the cluster-robust sandwich);
    - ``weights``: ``survey``, ``unweighted``, ``trimmed`` (at the 95th percentile,
      total kept);
    - ``flagged``: ``as_cleaned`` (partial responses with all outcome items kept),
      ``complete_only`` (partial responses dropped), ``consistent_model_only``
      (districts whose D1 answer contradicts D2 dropped).

    The model is fitted once per (outcome, covariates, weights, flagged); the
    three variance methods reuse that fit. Subsets are domains of the full
    design (their PSUs and strata kept), as ``fit_svyglm`` does.

    The specifications are computed in blocks, one per (outcome, covariates),
    which are independent: ``workers`` > 1 runs the blocks in joblib processes
    (``backend="loky"``), and ``backend="dask"`` runs the same block function on
    a ``dask.distributed`` cluster (``client`` if given, else a local cluster of
    ``workers`` processes). The rows and numbers do not depend on where the
    blocks ran.

    Returns
    -------
    DataFrame
        One row per specification: the five choices, then for each level
        ``<level>_estimate``, ``_ci_low``, ``_ci_high``, ``_p_value`` (probability
        scale), ``n`` and ``positive_significant_<level>``; ``attrs["runtime_s"]``
        holds the wall time.
    """
    levels = list(levels or load_codebook().focus_models)
    start = time.perf_counter()
    outcomes = list(outcomes or MULTIVERSE_OUTCOMES)
    covariates = list(covariates or MULTIVERSE_COVARIATES)
    data = _multiverse_data(teachers)
    blocks = list(product(outcomes, covariates))
    kw = {"weights": list(weights), "flagged": list(flagged), "variance": list(variance),
          "levels": levels, "alpha": alpha}
    from tqdm.auto import tqdm

    bar = tqdm(total=len(blocks), desc="multiverse", unit="block", disable=not progress)
    if backend == "dask":
        from analysis.stats.parallel import dask_client

        with dask_client(client, workers) as dc:
            shared = dc.scatter(data, broadcast=True)
            futures = [dc.submit(_multiverse_block, shared, o, c, pure=False, **kw)
                       for o, c in blocks]
            parts = []
            for f in futures:
                parts.append(f.result())
                bar.update()
    elif backend != "loky":
        raise ValueError("backend must be 'loky' or 'dask'")
    elif workers > 1:
        from joblib import Parallel, delayed

        parts = []
        for part in Parallel(n_jobs=workers, backend="loky", return_as="generator")(
                delayed(_multiverse_block)(data, o, c, **kw) for o, c in blocks):
            parts.append(part)
            bar.update()
    else:
        parts = []
        for o, c in blocks:
            parts.append(_multiverse_block(data, o, c, **kw))
            bar.update()
    bar.close()
    out = pd.DataFrame([row for part in parts for row in part])
    out.attrs["runtime_s"] = time.perf_counter() - start
    return out


def _multiverse_block(data: pd.DataFrame, outcome: str, cov: str, *, weights, flagged,
                      variance, levels, alpha) -> list[dict]:
    """The specifications of one (outcome, covariates) block of :func:`multiverse`: one
    fit per (weights, flagged), each with every variance method."""
    masks = _flag_masks(data)
    ref = _reference()
    m1_rhs = _m1_formula().split("~", 1)[1].strip()
    support = f'C(support_model, Treatment("{ref}"))'
    rows = []
    with threadpool_limits(1):          # many small problems: one BLAS thread is fastest
        rhs = m1_rhs if MULTIVERSE_COVARIATES[cov] is None else " + ".join(
            [support] + ([MULTIVERSE_COVARIATES[cov]] if MULTIVERSE_COVARIATES[cov] else []))
        problem = LogitProblem.build(f"{MULTIVERSE_OUTCOMES[outcome]} ~ {rhs}", data)
        for wname in weights:
            col = {"survey": "weight", "unweighted": "weight_unweighted",
                   "trimmed": "weight_trimmed"}[wname]
            base = _study_design(data, weights=col)
            cluster = _study_design(data, weights=col, variance="cluster") \
                if "cluster" in variance else None
            replicates = base.replicate("JKn") if "jackknife" in variance else None
            for flag in flagged:
                prob = problem.subset(masks[flag])
                fit = prob.fit(base)
                for v in variance:
                    if v == "jackknife":
                        rep_cov = prob.replicate_ame_variance(fit, replicates, reference=ref)
                        ame = prob.ame(fit, base, reference=ref, cov=rep_cov)
                    elif v == "cluster":
                        cfit = LogitFit(fit.coef, fit.rows, fit.weights, fit.influence,
                                        cluster.domain_degrees_of_freedom(
                                            _mask(fit.rows, len(data))) + 1 - len(fit.coef))
                        ame = prob.ame(cfit, cluster, reference=ref)
                    else:
                        ame = prob.ame(fit, base, reference=ref)
                    ame = ame.set_index("support_model")
                    row = {"outcome": outcome, "covariates": cov, "variance": v,
                           "weights": wname, "flagged": flag, "n": int(len(fit.rows))}
                    for lv in levels:
                        a = ame.loc[lv]
                        row.update({f"{lv}_estimate": a["estimate"],
                                    f"{lv}_ci_low": a["ci_low"],
                                    f"{lv}_ci_high": a["ci_high"],
                                    f"{lv}_p_value": a["p_value"],
                                    f"positive_significant_{lv}": bool(
                                        a["estimate"] > 0 and a["p_value"] < alpha)})
                    rows.append(row)
    return rows


def _mask(rows: np.ndarray, n: int) -> np.ndarray:
    m = np.zeros(n, dtype=bool)
    m[rows] = True
    return m


def specification_curve(curve: pd.DataFrame, *, level: str | None = None) -> pd.DataFrame:
    """The data of a specification-curve figure for one model: specifications ranked by
    the AME (percentage points), with their CI, significance and choices (the
    indicator panel below the curve).

    Examples
    --------
    >>> curve = pd.DataFrame({"outcome": ["a", "b"], "coaching_estimate": [0.2, 0.1],
    ...                       "coaching_ci_low": [0.1, -0.1], "coaching_ci_high": [0.3, 0.3],
    ...                       "coaching_p_value": [0.01, 0.4]})
    >>> specification_curve(curve)[["rank", "outcome", "estimate_pp"]].values.tolist()
    [[1, 'b', 10.0], [2, 'a', 20.0]]
    """
    level = level or load_codebook().focus_models[0]
    choices = [c for c in ("outcome", "covariates", "variance", "weights", "flagged")
               if c in curve]
    out = curve[choices].copy()
    for part in ("estimate", "ci_low", "ci_high"):
        out[f"{part}_pp"] = 100 * curve[f"{level}_estimate" if part == "estimate"
                                        else f"{level}_{part}"]
    out["p_value"] = curve[f"{level}_p_value"]
    out["significant"] = out["p_value"] < 0.05
    out = out.sort_values("estimate_pp", kind="stable", ignore_index=True)
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    out.insert(1, "support_model", level)
    return out


def multiverse_summary(curve: pd.DataFrame, *, levels=None) -> dict:
    """Share of specifications with a positive AME, and with a positive and significant one.

    Examples
    --------
    >>> curve = pd.DataFrame({"coaching_estimate": [0.1, -0.1],
    ...                       "positive_significant_coaching": [True, False]})
    >>> multiverse_summary(curve, levels=["coaching"])["coaching"]["share_positive"]
    0.5
    """
    levels = list(levels or load_codebook().focus_models)
    out = {"n_specifications": int(len(curve))}
    for lv in levels:
        est = curve[f"{lv}_estimate"]
        out[lv] = {"share_positive": float((est > 0).mean()),
                   "share_positive_significant": float(
                       curve[f"positive_significant_{lv}"].mean()),
                   "median_estimate_pp": float(100 * est.median()),
                   "min_estimate_pp": float(100 * est.min()),
                   "max_estimate_pp": float(100 * est.max())}
    return out


# ---------------------------------------------------------------------------
# Leave one state / stratum out
# ---------------------------------------------------------------------------
def leave_one_out(teachers: pd.DataFrame, *, by: str = "state") -> pd.DataFrame:
    """M1's AMEs with the teachers of one ``by`` group (state or stratum) left out.

    Each fit is a domain of the full design (R's ``subset()`` of a survey
    design): the left-out teachers get zero influence, the design's strata and
    PSUs are kept, and the df are those of the PSUs still in the fit.

    Returns
    -------
    DataFrame
        ``by, left_out``, then the AME columns (probability scale).

    Examples
    --------
    >>> teachers = pd.read_parquet("data/processed/teachers.parquet")  # doctest: +SKIP
    >>> leave_one_out(teachers, by="stratum").columns[:3].tolist()     # doctest: +SKIP
    ['by', 'left_out', 'support_model']
    """
    data = model_data(teachers)
    ref = _reference()
    parts = []
    with threadpool_limits(1):
        design = _study_design(data, lonely_psu="fail")
        prob = LogitProblem.build(_m1_formula(), data)
        values = data[by].astype(object).to_numpy()
        for g in sorted(pd.unique(values[pd.notna(values)])):
            sub = prob.subset(values != g)
            try:
                a = sub.ame(sub.fit(design), design, reference=ref)
            except np.linalg.LinAlgError:
                # leaving this group out removes a whole support model (a small cell):
                # no estimate for this left-out group
                continue
            a.insert(0, "left_out", g)
            a.insert(0, "by", by)
            parts.append(a)
    return pd.concat(parts, ignore_index=True)


# ---------------------------------------------------------------------------
# Everything for results.json
# ---------------------------------------------------------------------------
def _pp(df: pd.DataFrame, cols=("estimate", "std_error", "ci_low", "ci_high")) -> list[dict]:
    out = df.copy()
    for c in cols:
        out[c] = 100 * out[c]
    return out.rename(columns={c: f"{c}_pp" for c in cols}).to_dict(orient="records")


def multiple_imputation_task(teachers: pd.DataFrame, m: int = 20, seed: int = 20261130
                             ) -> MIResult:
    """:func:`multiple_imputation` on one BLAS thread (for a worker process)."""
    with threadpool_limits(1):
        return multiple_imputation(teachers, m=m, seed=seed)


def robustness_results(teachers: pd.DataFrame, *, m: int = 20, seed: int = 20261130,
                       mi: MIResult | None = None, curve: pd.DataFrame | None = None) -> dict:
    """The ``robustness`` entry of ``results.json`` (deterministic for a given seed).

    Keys: ``multiple_imputation``, ``evalues``, ``propensity``, ``multiverse``,
    ``leave_one_out``; effects in percentage points (``_pp``). The two long parts
    may be passed in, computed elsewhere (e.g. in worker processes): ``mi``, the
    result of ``multiple_imputation(teachers, m=m, seed=seed)``, and ``curve``, of
    ``multiverse(teachers)``.
    """
    ref = _reference()
    with threadpool_limits(1):          # many small problems: one BLAS thread is fastest
        mi = mi if mi is not None else multiple_imputation(teachers, m=m, seed=seed)
        ev = support_model_evalues(teachers)
        ps = propensity_weighted_ames(teachers)
        curve = curve if curve is not None else multiverse(teachers)
        loo = pd.concat([leave_one_out(teachers, by="state"),
                         leave_one_out(teachers, by="stratum")], ignore_index=True)
    spec_cols = [c for c in curve.columns if not c.startswith("positive_significant")]
    curve_pp = curve[spec_cols].copy()
    for c in spec_cols:
        if c.endswith(("_estimate", "_ci_low", "_ci_high")):
            curve_pp[c] = 100 * curve_pp[c]
    curve_pp = curve_pp.rename(columns={c: f"{c}_pp" for c in spec_cols
                                        if c.endswith(("_estimate", "_ci_low", "_ci_high"))})
    return {
        "reference_model": ref,
        "wording": "adjusted associations, not causal effects",
        "multiple_imputation": {
            "method": "chained equations, predictive mean matching (5 donors); teacher "
                      "answers imputed per teacher, district answers per district; "
                      "M1 on the survey design per completed data set; Rubin's rules with "
                      "Barnard-Rubin df",
            "m": mi.m, "n_rows_with_imputed_values": mi.n_imputed_rows,
            "missing": mi.missing.to_dict(orient="records"),
            "ame": _pp(mi.ame[["support_model", "estimate", "std_error", "ci_low", "ci_high",
                               "df", "p_value", "fmi"]]),
            "complete_case_ame": _pp(mi.complete_case_ame[["support_model", "estimate",
                                                           "std_error", "ci_low", "ci_high",
                                                           "p_value", "n"]]),
            "coefficients": mi.coefficients[["term", "estimate", "std_error", "df",
                                             "p_value", "riv", "fmi"]].to_dict(
                orient="records"),
        },
        "evalues": {"scale": "risk ratio of adjusted rates (model vs reference)",
                    "rows": ev.to_dict(orient="records")},
        "propensity": {
            "method": f"{ps.method} weights from a multinomial logit of the support model on "
                      "district covariates, times the survey weights (SEs treat the "
                      "propensity weights as fixed)",
            "ame": _pp(ps.ame),
            "balance": ps.balance.to_dict(orient="records"),
            "max_abs_smd_before": float(ps.balance["smd_before"].abs().max()),
            "max_abs_smd_after": float(ps.balance["smd_after"].abs().max()),
            "weights": ps.weights.to_dict(orient="records"),
        },
        "multiverse": {"summary": multiverse_summary(curve),
                       "choices": {"outcome": list(MULTIVERSE_OUTCOMES),
                                   "covariates": list(MULTIVERSE_COVARIATES),
                                   "variance": list(MULTIVERSE_VARIANCE),
                                   "weights": list(MULTIVERSE_WEIGHTS),
                                   "flagged": list(MULTIVERSE_FLAGGED)},
                       "specifications": curve_pp.to_dict(orient="records")},
        "leave_one_out": _pp(loo),
    }

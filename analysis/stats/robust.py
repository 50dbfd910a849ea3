"""Cluster-robust GLMs: inference for readers without the survey design.

``fit_glm_cluster`` fits a GLM (gaussian or binomial, optionally weighted) by
the same IRLS as :func:`fit_svyglm` and computes a sandwich variance clustered
on one column:

- ``vcov="CR1"``: ``M (sum_g u_g u_g') M`` with ``u_g`` the cluster totals of
  the score contributions, times ``G/(G-1) (n-1)/(n-p)`` (R's
  ``sandwich::vcovCL(type="HC1")``, Stata's ``vce(cluster)``); t tests on G - 1
  degrees of freedom.
- ``vcov="CR2"``: the Bell and McCaffrey (2002) bias-reduced linearisation
  with the working model's inverse-variance target, exactly as R's
  ``clubSandwich::vcovCR(type="CR2")`` handles a ``glm`` (model matrix
  ``D X`` with ``D = dmu/deta``, weights ``w / V(mu)``, response residuals);
  single-coefficient and contrast t tests use the Bell-McCaffrey
  (Satterthwaite) degrees of freedom of ``clubSandwich::coef_test(test =
  "Satterthwaite")`` and ``linear_contrast``.

The per-cluster matrix work of CR2 is batched: clusters of equal size are
stacked and decomposed together (``numpy.linalg.eigh`` on a stack), so the
Python loop runs over the distinct cluster sizes, not over clusters.

Examples
--------
>>> import numpy as np, pandas as pd
>>> from analysis.stats.robust import fit_glm_cluster
>>> rng = np.random.default_rng(2)
>>> df = pd.DataFrame({"g": np.repeat(np.arange(30), 8), "x": rng.normal(size=240),
...                    "arm": np.tile(["a", "b", "c"], 80)})
>>> df["y"] = (rng.uniform(size=240) < 0.3 + 0.2 * (df["arm"] == "c")).astype(float)
>>> fit = fit_glm_cluster("y ~ x + C(arm)", df, cluster="g", vcov="CR2")
>>> fit.tidy()["term"].tolist()
['Intercept', 'C(arm)[T.b]', 'C(arm)[T.c]', 'x']
>>> bool((fit.tidy()["df"] < 29).all())     # Satterthwaite df below G - 1
True
>>> fit.ame("arm", reference="a")["level"].tolist()
['b', 'c']
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import patsy
from scipy import stats
from threadpoolctl import threadpool_limits

from analysis.stats.design import group_sums
from analysis.stats.models import FAMILIES, TIDY_COLUMNS, Family, IRLSResult, irls, model_frame

VCOV_TYPES = ("CR1", "CR2")
#: clubSandwich's matrix_power drops eigenvalues at or below 10^-12.
_EIGEN_TOL = 1e-12


@dataclass
class _CR2Parts:
    """What the Satterthwaite degrees of freedom need (clubSandwich's ``get_GH``).

    ``g_rows`` (n, p): row i of cluster j holds column i of ``G_j = M E_j chol(Theta_j)'``;
    ``h`` (J, p, p): ``H_j = M E_j U_j chol(M)``.
    """

    g_rows: np.ndarray
    h: np.ndarray


@dataclass
class RobustFit:
    """A GLM with a cluster-robust covariance matrix (CR1 or CR2)."""

    formula: str
    family: Family
    data: pd.DataFrame               # the rows used in the fit
    coef: pd.Series
    vcov: pd.DataFrame
    vcov_type: str
    cluster_codes: np.ndarray        # cluster of each used row, 0..G-1
    n_clusters: int
    weights: np.ndarray              # prior weights of the used rows
    design_info: patsy.DesignInfo
    X: np.ndarray                    # model matrix of the used rows
    y: np.ndarray
    irls: IRLSResult
    cr2: _CR2Parts | None = None

    @property
    def n(self) -> int:
        return len(self.data)

    def with_vcov(self, vcov: str) -> RobustFit:
        """The same fit with the other cluster-robust covariance (no refitting)."""
        if vcov not in VCOV_TYPES:
            raise ValueError(f"vcov must be one of {VCOV_TYPES}")
        with threadpool_limits(1):
            V, parts = _robust_vcov(vcov, self.X, self.y, self.weights, self.family,
                                    self.irls, self.cluster_codes, self.n_clusters)
        names = self.coef.index
        return replace(self, vcov=pd.DataFrame(V, index=names, columns=names), vcov_type=vcov,
                       cr2=parts)

    def degrees_of_freedom(self, contrasts: np.ndarray) -> np.ndarray:
        """t degrees of freedom of linear combinations ``contrasts @ coef`` (rows).

        CR1: G - 1. CR2: Bell-McCaffrey / Satterthwaite,
        ``(tr P)^2 / ||P||_F^2`` with ``P = -H_c' H_c + diag(||g_c||^2)`` (clubSandwich).
        """
        C = np.atleast_2d(np.asarray(contrasts, dtype=float))
        if self.vcov_type == "CR1":
            return np.full(len(C), float(self.n_clusters - 1))
        gc = group_sums(self.cluster_codes, (self.cr2.g_rows @ C.T) ** 2, self.n_clusters)
        hc = np.einsum("kp,jpu->kju", C, self.cr2.h)                    # (k, J, u)
        gram = np.einsum("kju,klu->kjl", hc, hc)                         # (k, J, J)
        diag = np.einsum("kjj->kj", gram)
        trace = (gc.T - diag).sum(axis=1)
        frob = (gram ** 2).sum(axis=(1, 2)) - 2 * (gc.T * diag).sum(axis=1) + \
            (gc.T ** 2).sum(axis=1)
        return trace ** 2 / frob

    def tidy(self, *, level: float = 0.95) -> pd.DataFrame:
        """``term, estimate, std_error, statistic, df, p_value, ci_low, ci_high, n``."""
        se = np.sqrt(np.diag(self.vcov.to_numpy()))
        df = self.degrees_of_freedom(np.eye(len(self.coef)))
        return _tidy(self.coef.index, self.coef.to_numpy(), se, df, level, self.n)

    def contrast(self, weights: dict[str, float], *, level: float = 0.95) -> pd.DataFrame:
        """Linear combination of coefficients, e.g. ``{"a": 1, "b": -1}``."""
        L = np.array([weights.get(t, 0.0) for t in self.coef.index])
        est = float(L @ self.coef.to_numpy())
        se = float(np.sqrt(L @ self.vcov.to_numpy() @ L))
        label = " + ".join(f"{v:g}*{k}" for k, v in weights.items())
        return _tidy([label], [est], [se], self.degrees_of_freedom(L), level, self.n)

    def predicted_rates(self, variable: str, *, levels: list | None = None,
                        level: float = 0.95) -> pd.DataFrame:
        """Average predicted outcome (weighted by the fit's weights) with ``variable`` set
        to each level for every row; delta-method SEs from the robust covariance (the
        covariates taken as fixed).

        Returns
        -------
        DataFrame
            ``level, estimate, std_error, df, ci_low, ci_high, n``.
        """
        est, grad, levels = self._counterfactual(variable, levels)
        se = np.sqrt(np.einsum("kp,pq,kq->k", grad, self.vcov.to_numpy(), grad))
        out = _tidy(levels, est, se, self.degrees_of_freedom(grad), level,
                    self._counts(variable, levels))
        return out.rename(columns={"term": "level"}).drop(columns=["statistic", "p_value"])

    def ame(self, variable: str, *, reference, level: float = 0.95) -> pd.DataFrame:
        """Average marginal effect of each level of ``variable`` against ``reference``
        (difference of average predictions; a probability difference for a binary
        outcome), with delta-method SEs from the cluster-robust covariance and, for
        CR2, Satterthwaite degrees of freedom of the linearised contrast.

        Returns
        -------
        DataFrame
            ``level, estimate, std_error, statistic, df, p_value, ci_low, ci_high, n``.
        """
        est, grad, levels = self._counterfactual(variable, None)
        if reference not in levels:
            raise KeyError(f"reference {reference!r} is not a level of {variable!r}")
        ref = levels.index(reference)
        others = [j for j in range(len(levels)) if j != ref]
        d_grad = grad[others] - grad[ref]
        se = np.sqrt(np.einsum("kp,pq,kq->k", d_grad, self.vcov.to_numpy(), d_grad))
        kept = [levels[j] for j in others]
        out = _tidy(kept, est[others] - est[ref], se, self.degrees_of_freedom(d_grad), level,
                    self._counts(variable, kept))
        return out.rename(columns={"term": "level"})

    def _counts(self, variable, levels) -> list[int]:
        counts = self.data[variable].astype(object).value_counts()
        return [int(counts.get(lv, 0)) for lv in levels]

    @threadpool_limits.wrap(limits=1)
    def _counterfactual(self, variable, levels):
        levels, cols, values = counterfactual_columns(self.design_info, self.data, variable,
                                                      levels)
        w = self.weights / self.weights.sum()
        beta = self.coef.to_numpy()
        est = np.empty(len(levels))
        grad = np.empty((len(levels), len(beta)))
        X = self.X.copy()
        for j, v in enumerate(values):                   # a few levels; rows vectorised
            X[:, cols] = v
            eta = X @ beta
            est[j] = w @ self.family.linkinv(eta)
            grad[j] = (w * self.family.mu_eta(eta)) @ X
        return est, grad, levels

    def summary(self) -> str:
        head = (f"GLM ({self.family.name}) with {self.vcov_type} cluster-robust variance\n"
                f"{self.formula}\nn = {self.n}, clusters = {self.n_clusters}\n")
        return head + self.tidy().to_string(index=False)


def _tidy(terms, est, se, df, level, n) -> pd.DataFrame:
    est = np.asarray(est, dtype=float)
    se = np.asarray(se, dtype=float)
    df = np.broadcast_to(np.asarray(df, dtype=float), est.shape)
    stat = est / se
    q = stats.t.ppf(0.5 + level / 2, df)
    return pd.DataFrame({
        "term": list(terms), "estimate": est, "std_error": se, "statistic": stat, "df": df,
        "p_value": 2 * stats.t.sf(np.abs(stat), df), "ci_low": est - q * se,
        "ci_high": est + q * se, "n": n,
    })[TIDY_COLUMNS]


def counterfactual_columns(design_info: patsy.DesignInfo, frame: pd.DataFrame, variable: str,
                           levels=None):
    """Model-matrix columns that change when ``variable`` is set to each level for all rows.

    Only the terms that involve ``variable`` are rebuilt (``DesignInfo.subset``), so
    a counterfactual costs one small patsy build per level, not a whole model matrix.

    Returns
    -------
    levels : list
    cols : int array
        Positions of the changing columns in ``design_info.column_names``.
    values : list of arrays (n, len(cols))
        Their values with everyone at each level.
    """
    pattern = re.compile(rf"(?<![\w.]){re.escape(variable)}(?!\w)")
    terms = [t for t in design_info.terms if any(pattern.search(f.name()) for f in t.factors)]
    if not terms:
        raise KeyError(f"{variable!r} is not a variable of the model")
    col = frame[variable]
    is_cat = isinstance(col.dtype, pd.CategoricalDtype)
    levels = list(levels if levels is not None else
                  (col.cat.categories if is_cat else sorted(col.dropna().unique())))
    sub = design_info.subset(terms)
    positions = np.arange(len(design_info.column_names))
    cols = np.concatenate([positions[design_info.term_slices[t]] for t in terms])
    values = []
    for lv in levels:
        cf = frame.copy()
        cf[variable] = (pd.Categorical([lv] * len(cf), categories=col.cat.categories)
                        if is_cat else lv)
        values.append(np.asarray(patsy.build_design_matrices([sub], cf, NA_action="raise")[0]))
    return levels, cols, values


# ---------------------------------------------------------------------------
# Sandwich pieces
# ---------------------------------------------------------------------------
def _cr1(X, res: IRLSResult, codes, n_clusters) -> np.ndarray:
    """sandwich::vcovCL(type = "HC1"): M U'U M G/(G-1) (n-1)/(n-p)."""
    n, p = X.shape
    scores = X * (res.working_weights * res.working_residuals)[:, None]
    u = group_sums(codes, scores, n_clusters)
    M = res.cov_unscaled
    adj = n_clusters / (n_clusters - 1) * (n - 1) / (n - p)
    return adj * M @ (u.T @ u) @ M


def _inverse_sqrt(B: np.ndarray) -> np.ndarray:
    """Stack of symmetric inverse square roots, eigenvalues <= 1e-12 dropped (clubSandwich)."""
    vals, vecs = np.linalg.eigh(B)
    keep = vals > _EIGEN_TOL
    powered = np.where(keep, np.abs(vals) ** -0.5, 0.0)
    return (vecs * powered[..., None, :]) @ np.swapaxes(vecs, -1, -2)


def _cr2(X, y, prior, family, res: IRLSResult, codes, n_clusters):
    """clubSandwich's CR2 for a glm with the inverse-variance working model.

    With U = D X (D = dmu/deta), W = diag(w / V(mu)) = S^2 and Theta = W^-1:
    B_j = S_j^-1 (Theta_j - U_j M_U U_j') S_j^-1, A_j = S_j^-1 B_j^-1/2 S_j^-1,
    E_j = U_j' W_j A_j, V = M (sum_j E_j e_j e_j' E_j') M with e = y - mu.
    As in clubSandwich, M_U = (U'WU)^-1 at the final fit while M (the bread) is
    glm's unscaled covariance from the last IRLS iteration.
    """
    n, p = X.shape
    M = res.cov_unscaled
    L = np.linalg.cholesky(M)                       # R's t(chol(M_U)), lower triangular
    U = X * family.mu_eta(res.eta)[:, None]
    s = np.sqrt(prior / family.variance(res.mu))
    M_U = np.linalg.inv((U * (s ** 2)[:, None]).T @ U)
    e = y - res.mu
    order = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes, minlength=n_clusters)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    comps = np.empty((n_clusters, p))
    h = np.empty((n_clusters, p, p))
    g_rows = np.empty((n, p))
    for m in np.unique(sizes):                      # one batch per distinct cluster size
        _cr2_batch(m, sizes, order, starts, U, s, e, M, M_U, L, comps, h, g_rows)
    V = M @ (comps.T @ comps) @ M
    return V, _CR2Parts(g_rows=g_rows, h=h)


def _cr2_batch(m, sizes, order, starts, U, s, e, M, M_U, L, comps, h, g_rows):
    """CR2 pieces of every cluster of size m, stacked (fills comps, h and g_rows)."""
    p = U.shape[1]
    clusters = np.flatnonzero(sizes == m)
    rows = order[starts[clusters][:, None] + np.arange(m)[None, :]]         # (c, m)
    Uc, sc = U[rows], s[rows]                                                # (c, m, p), (c, m)
    Us = Uc / sc[..., None]
    B = -(Us @ M_U @ np.swapaxes(Us, 1, 2))
    B[:, np.arange(m), np.arange(m)] += sc ** -4
    Bih = _inverse_sqrt(B)                                                   # (c, m, m)
    ZB = np.swapaxes(Uc * sc[..., None], 1, 2) @ Bih                         # (S U)' B^-1/2
    comps[clusters] = np.einsum("cpm,cm->cp", ZB, e[rows] / sc)              # E_j e_j
    ME = M @ ZB / sc[:, None, :]                                             # M E_j
    g_rows[rows.ravel()] = np.swapaxes(ME / sc[:, None, :], 1, 2).reshape(-1, p)
    h[clusters] = ME @ Uc @ L


def _robust_vcov(vcov, X, y, prior, family, res, codes, n_clusters):
    if vcov == "CR1":
        return _cr1(X, res, codes, n_clusters), None
    return _cr2(X, y, prior, family, res, codes, n_clusters)


def fit_glm_cluster(formula: str, data: pd.DataFrame, *, cluster: str,
                    weights: str | None = None, family: str = "binomial",
                    vcov: str = "CR2") -> RobustFit:
    """Fit a GLM with a cluster-robust (CR1 or CR2) covariance matrix.

    Parameters
    ----------
    formula : str
        patsy/statsmodels formula (e.g. the codebook's M1).
    data : DataFrame
        One row per observation; rows with a missing model variable, cluster or
        weight are left out (complete cases).
    cluster : str
        Column of cluster identifiers (e.g. ``district_id``).
    weights : str, optional
        Column of prior (e.g. sampling) weights; unweighted when omitted.
    family : {"binomial", "quasibinomial", "gaussian"}
        Binomial fits with non-integer weights are quasi-binomial fits (same
        estimates).
    vcov : {"CR1", "CR2"}

    Returns
    -------
    RobustFit
        ``.tidy()``, ``.ame()``, ``.predicted_rates()``, ``.contrast()``,
        ``.with_vcov()`` (the other covariance without refitting).
    """
    if vcov not in VCOV_TYPES:
        raise ValueError(f"vcov must be one of {VCOV_TYPES}")
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}")
    fam = FAMILIES[family]
    keep = data[cluster].notna()
    if weights is not None:
        keep &= data[weights].notna()
    frame = data.loc[keep].reset_index(drop=True)
    y, X_df, used = model_frame(formula, frame)
    frame = frame.loc[used].reset_index(drop=True)
    X = X_df.to_numpy(dtype=float)
    if np.linalg.matrix_rank(X) < X.shape[1]:
        raise ValueError("the model matrix is rank-deficient")
    prior = (frame[weights].to_numpy(dtype=float) if weights is not None
             else np.ones(len(frame)))
    if (prior <= 0).any():
        raise ValueError("weights must be positive")
    codes, labels = pd.factorize(frame[cluster], sort=True)
    n_clusters = len(labels)
    if n_clusters < 2:
        raise ValueError("cluster-robust variance needs at least two clusters")
    with threadpool_limits(1):          # small dense problems: one BLAS thread is fastest
        res = irls(X, y, prior, fam)
        V, parts = _robust_vcov(vcov, X, y, prior, fam, res, codes, n_clusters)
    names = list(X_df.columns)
    return RobustFit(
        formula=formula, family=fam, data=frame, coef=pd.Series(res.coef, index=names),
        vcov=pd.DataFrame(V, index=names, columns=names), vcov_type=vcov,
        cluster_codes=np.asarray(codes), n_clusters=n_clusters, weights=prior,
        design_info=X_df.design_info, X=X, y=y, irls=res, cr2=parts)

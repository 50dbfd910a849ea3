"""Three-level random-intercept logistic models (teachers in schools in districts).

The model, for teacher ``i`` in school ``s`` of district ``d``::

    y_i ~ Bernoulli(expit(x_i' beta + sd_district * u_d + sd_school * v_s)),
    u_d, v_s ~ N(0, 1) independent,

fitted by maximum likelihood with the Laplace approximation, as R's
``lme4::glmer(y ~ x + (1 | district) + (1 | district:school), family = binomial,
nAGQ = 1)``. The conditional mode of ``(u_d, v_s)`` within a district has an
arrowhead Hessian (the district intercept is coupled to each of its schools'),
so the inner Newton steps, the log-determinants and the Laplace log-likelihood
are vectorised over all districts at once with ``np.bincount``. The gradient
with respect to ``(beta, sd_district, sd_school)`` is analytic (the derivative
of the log-determinant through the conditional mode uses one adjoint solve);
the outer optimiser is L-BFGS-B followed by Newton steps on the Hessian, which
is the central-difference Jacobian of the analytic gradient.

Two versions, and what each estimates
-------------------------------------
Unweighted (``weights``, ``school_weights``, ``district_weights`` all ``None``)
    The model-based maximum-likelihood estimates: conditional (subject-specific)
    log odds ratios for teachers in the *sample's* schools and districts,
    assuming the model is right. Standard errors: the inverse Hessian of the
    Laplace log-likelihood (``vcov="model"``, as ``vcov(glmer_fit)``), and a
    cluster-robust sandwich with district score contributions (``vcov="robust"``).
Weighted (pseudo-likelihood; Rabe-Hesketh and Skrondal 2006)
    The level-wise weights enter the likelihood, each at its level::

        log PL = sum_d w_d log Int phi(u) prod_s [Int phi(v) prod_i
                 f(y_i | u, v) ^ w_{i|s} dv] ^ w_{s|d} du

    with teacher weights ``w_{i|s}`` (conditional on the school) scaled within
    each school (``weight_scaling="size"``: to sum to the school's number of
    sampled teachers, Stata's ``pwscale(size)``; ``"effective"``: to the
    school's effective sample size), school weights ``w_{s|d}`` (conditional on
    the district; 1 when every school of a sampled district is taken) and
    district weights ``w_d``, both used as given. The integrals are approximated
    by Laplace's method level by level at the joint mode of the weighted
    integrand (each school's log-curvature term carries its weight ``w_{s|d}``);
    with unit school weights this is the joint Laplace approximation, and with
    all weights 1 it is the unweighted model's (lme4's). The target
    is the census parameter: the maximum-likelihood estimate that the same model
    would give if fitted to every teacher of the population. Standard errors: the
    sandwich ``H^-1 (D / (D - 1) sum_d s_d s_d') H^-1`` with the per-district
    score contributions ``s_d`` (clustered on districts, strata and FPC ignored),
    as Stata's ``melogit ... [pw=]`` with ``vce(robust)``. No R implementation of
    this estimator is available to check against; the tests check its
    invariances instead (unit weights give the unweighted fit; rescaling the
    teacher or the district weights leaves the estimates unchanged).

Neither is design-based like M1 (``analysis.stats.models.fit_svyglm``): they are
model-based (the weighted one with design-consistent estimating equations), and
their coefficients are *conditional* on the random intercepts. Because the logit
is not collapsible, conditional log odds ratios are larger in magnitude than M1's
marginal ones, and so are AMEs computed at zero random effects. ``ame`` reports,
by default, population-averaged AMEs (integrated over the random-intercept
distribution with Gauss-Hermite quadrature), which are the quantities comparable
to M1's AMEs; they still differ from M1's because the model and its estimand
differ (the mean structure is not the same).

Examples
--------
>>> import numpy as np, pandas as pd
>>> from analysis.stats.multilevel import fit_multilevel_logit, simulate_three_level
>>> df = simulate_three_level(n_districts=60, schools_per_district=4, teachers_per_school=8,
...                           beta=(-0.5, 0.8), sd_district=0.7, sd_school=0.4, seed=1)
>>> fit = fit_multilevel_logit("y ~ x", df)
>>> fit.tidy()["term"].tolist()
['Intercept', 'x', 'sd(Intercept | district_id)', 'sd(Intercept | district_id:school_id)']
>>> bool(abs(fit.coef["x"] - 0.8) < 0.25)
True
>>> fit.icc()["level"].tolist()
['district', 'school']
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import patsy
from scipy import optimize, sparse, special, stats

from analysis.stats.models import BINOMIAL, irls, model_frame

TIDY_COLUMNS = ["term", "estimate", "std_error", "statistic", "p_value", "ci_low", "ci_high",
                "n"]
ICC_COLUMNS = ["level", "estimate", "std_error", "ci_low", "ci_high"]
LOGISTIC_VARIANCE = np.pi ** 2 / 3
WEIGHT_SCALINGS = ("size", "effective")
_AT_ZERO = 1e-6          # an SD below this many of its scale units is on the boundary


# ---------------------------------------------------------------------------
# The data of one fit in array form
# ---------------------------------------------------------------------------
@dataclass
class _Problem:
    X: np.ndarray              # (n, p) fixed-effects design
    y: np.ndarray              # (n,) 0/1 outcome
    a: np.ndarray              # (n,) scaled teacher weights (1: unweighted)
    c: np.ndarray              # (S,) school weights
    g: np.ndarray              # (D,) district weights
    school: np.ndarray         # (n,) school codes 0..S-1
    district: np.ndarray       # (n,) district codes 0..D-1
    school_district: np.ndarray  # (S,) district code of each school
    to_district: sparse.csr_matrix  # (D, n) indicator, for per-district column sums

    @property
    def n_schools(self) -> int:
        return len(self.c)

    @property
    def n_districts(self) -> int:
        return len(self.g)


def _make_problem(X, y, a, c, g, school, district, school_district) -> _Problem:
    n = len(y)
    ind = sparse.csr_matrix((np.ones(n), (district, np.arange(n))), shape=(len(g), n))
    return _Problem(X=X, y=y, a=a, c=c, g=g, school=school, district=district,
                    school_district=school_district, to_district=ind)


# ---------------------------------------------------------------------------
# Laplace approximation: conditional modes, log-likelihood and its gradient
# ---------------------------------------------------------------------------
@dataclass
class _Laplace:
    """Value and analytic gradient of the Laplace log (pseudo-)likelihood.

    Keeps the last conditional modes as the next starting values.
    """

    prob: _Problem
    tol: float = 1e-10
    maxit: int = 100
    u: np.ndarray = None
    v: np.ndarray = None
    n_evaluations: int = 0

    def __post_init__(self):
        self.u = np.zeros(self.prob.n_districts)
        self.v = np.zeros(self.prob.n_schools)

    def _district_sum(self, x_school):
        return np.bincount(self.prob.school_district, weights=x_school,
                           minlength=self.prob.n_districts)

    def _school_sum(self, x_obs):
        return np.bincount(self.prob.school, weights=x_obs, minlength=self.prob.n_schools)

    def _joint(self, offset, td, ts, u, v):
        """eta, and G_d = log phi-kernel + weighted conditional log-likelihood, per district."""
        P = self.prob
        eta = offset + td * u[P.district] + ts * v[P.school]
        loglik = P.y * eta - np.logaddexp(0.0, eta)
        school_part = P.c * (-0.5 * v ** 2 + self._school_sum(P.a * loglik))
        return eta, -0.5 * u ** 2 + self._district_sum(school_part)

    def _solve(self, A, td, ts, b_u, b_v):
        """Solve H x = b for the arrowhead H = -Hessian of G (blocks over districts)."""
        P = self.prob
        B = 1.0 + ts ** 2 * A
        D = P.c * B
        h = P.c * td * ts * A
        S = 1.0 + td ** 2 * self._district_sum(P.c * A / B)
        x_u = (b_u - self._district_sum(h * b_v / D)) / S
        x_v = (b_v - h * x_u[P.school_district]) / D
        return x_u, x_v, B, S

    def modes(self, beta, td, ts):
        """Newton iterations for the conditional modes of all districts at once."""
        P = self.prob
        offset = P.X @ beta
        u, v = self.u.copy(), self.v.copy()
        eta, G = self._joint(offset, td, ts, u, v)
        for _ in range(self.maxit):
            mu = special.expit(eta)
            W = mu * (1.0 - mu)
            A = self._school_sum(P.a * W)
            R = self._school_sum(P.a * (P.y - mu))
            g_v = P.c * (-v + ts * R)
            g_u = -u + td * self._district_sum(P.c * R)
            d_u, d_v, _, _ = self._solve(A, td, ts, g_u, g_v)
            step = np.ones(P.n_districts)
            for _halving in range(30):
                u_new = u + step * d_u
                v_new = v + step[P.school_district] * d_v
                eta_new, G_new = self._joint(offset, td, ts, u_new, v_new)
                worse = G_new < G - 1e-12 * (1.0 + np.abs(G))
                if not worse.any():
                    break
                step = np.where(worse, step / 2, step)
            u, v, eta, G = u_new, v_new, eta_new, G_new
            if max(np.abs(d_u).max(initial=0.0), np.abs(d_v).max(initial=0.0)) < self.tol:
                break
        else:  # pragma: no cover - Newton on a strictly concave function converges
            raise RuntimeError("the conditional modes did not converge")
        self.u, self.v = u, v
        return offset, u, v, eta, G

    def evaluate(self, params, *, scores: bool = False):
        """Log pseudo-likelihood, its gradient, and optionally per-district scores.

        Returns ``(loglik, gradient)`` or ``(loglik, gradient, scores, per_district)``
        where ``scores`` is (D, k) and ``per_district`` the (D,) weighted contributions.
        """
        P = self.prob
        self.n_evaluations += 1
        p = P.X.shape[1]
        beta, td, ts = params[:p], params[p], params[p + 1]
        _, u, v, eta, G = self.modes(beta, td, ts)
        mu = special.expit(eta)
        W = mu * (1.0 - mu)
        W1 = W * (1.0 - 2.0 * mu)                       # d W / d eta
        r = P.y - mu
        A = self._school_sum(P.a * W)
        B = 1.0 + ts ** 2 * A
        S = 1.0 + td ** 2 * self._district_sum(P.c * A / B)
        T = self._district_sum(P.c * np.log(B)) + np.log(S)
        per_district = G - 0.5 * T                       # Laplace log-likelihood, per district

        # dT/dA_s, and the adjoint lambda = H^-1 grad_mode(T)
        S_s = S[P.school_district]
        T_A = P.c * ts ** 2 / B + td ** 2 * P.c / (S_s * B ** 2)
        e = T_A[P.school] * P.a * W1
        E = self._school_sum(e)
        lam_u, lam_v, _, _ = self._solve(A, td, ts, td * self._district_sum(E), ts * E)
        ca = P.c[P.school] * P.a
        lam_z = td * lam_u[P.district] + ts * lam_v[P.school]
        # d eta_i / d p (explicit): x_i for beta, u_d for sd_district, v_s for sd_school.
        # coefficient of d eta / d p in d(G - T/2)/dp:
        k = ca * r - 0.5 * (e - ca * W * lam_z)
        # terms through d z_i / d p (only for the SDs): -1/2 * ca * r * lambda
        grad_beta = P.to_district @ (k[:, None] * P.X)                # (D, p)
        grad_td = (np.bincount(P.district, weights=k, minlength=P.n_districts) * u
                   - 0.5 * np.bincount(P.district, weights=ca * r,
                                       minlength=P.n_districts) * lam_u)
        school_k = self._school_sum(k) * v - 0.5 * self._school_sum(ca * r) * lam_v
        grad_ts = self._district_sum(school_k)
        # explicit derivatives of T with respect to the SDs
        CAB = self._district_sum(P.c * A / B)
        grad_td -= 0.5 * 2.0 * td * CAB / S
        dT_ts = (self._district_sum(P.c * 2.0 * ts * A / B)
                 - td ** 2 * self._district_sum(P.c * 2.0 * ts * A ** 2 / B ** 2) / S)
        grad_ts -= 0.5 * dT_ts
        score = np.column_stack([grad_beta, grad_td, grad_ts]) * P.g[:, None]
        contributions = P.g * per_district
        value = float(contributions.sum())
        gradient = score.sum(axis=0)
        if scores:
            return value, gradient, score, contributions
        return value, gradient


# ---------------------------------------------------------------------------
# Outer optimisation
# ---------------------------------------------------------------------------
def _hessian(lap: _Laplace, params, scale, step=1e-4):
    """Central-difference Jacobian of the analytic gradient (symmetrised)."""
    k = len(params)
    H = np.empty((k, k))
    for j in range(k):
        h = step * scale[j]
        up, down = params.copy(), params.copy()
        up[j] += h
        down[j] -= h
        H[:, j] = (lap.evaluate(up)[1] - lap.evaluate(down)[1]) / (2 * h)
    return (H + H.T) / 2


def _sds_off_a_minimum(lap: _Laplace, params, scale, step=1e-3):
    """Which SDs sit at zero although the likelihood increases away from zero.

    The Laplace likelihood is even in each SD, so zero is always a stationary
    point; a gradient method that reaches it stops there even when it is a
    minimum along that SD. Zero is kept only if the likelihood decreases at
    ``step`` (in the SD's units).
    """
    k = len(params)
    off = np.zeros(2, dtype=bool)
    for j in (0, 1):
        index = k - 2 + j
        if params[index] < _AT_ZERO * scale[index]:
            probe = params.copy()
            probe[index] = step
            off[j] = lap.evaluate(probe)[1][index] > 0
    return off


def _maximise(lap: _Laplace, start, scale, *, gtol, max_newton=10, max_restarts=3):
    """L-BFGS-B on scaled parameters (SDs >= 0), then Newton polishing steps.

    An SD stopped at zero where the likelihood increases away from zero is moved
    to 0.1 and the optimiser restarted.
    """
    k = len(start)

    def objective(z):
        value, grad = lap.evaluate(start + z * scale)
        return -value / norm, -grad * scale / norm

    norm = max(abs(lap.evaluate(start)[0]), 1.0)
    lower = np.full(k, -np.inf)
    lower[-2:] = -start[-2:] / scale[-2:]
    bounds = list(zip(lower, np.full(k, np.inf), strict=True))
    z0 = np.zeros(k)
    iterations = 0
    for _restart in range(max_restarts + 1):
        res = optimize.minimize(objective, z0, jac=True, method="L-BFGS-B", bounds=bounds,
                                options={"maxiter": 5000, "ftol": 1e-15, "gtol": gtol * 1e-2,
                                         "maxcor": 30})
        iterations += res.nit
        params = start + res.x * scale
        off = _sds_off_a_minimum(lap, params, scale)
        if not off.any():
            break
        params[k - 2:][off] = 0.1
        z0 = (params - start) / scale
    value, grad = lap.evaluate(params)
    H = _hessian(lap, params, scale)
    for _ in range(max_newton):
        free = params[-2:] > _AT_ZERO * scale[-2:]
        active = np.r_[np.ones(k - 2, bool), free]
        if np.max(np.abs(grad[active] * scale[active])) < gtol:
            break
        Ha = -H[np.ix_(active, active)]
        try:
            delta = np.linalg.solve(Ha, grad[active])
        except np.linalg.LinAlgError:
            break
        trial = params.copy()
        trial[active] += delta
        trial[-2:] = np.maximum(trial[-2:], 0.0)
        t_value, t_grad = lap.evaluate(trial)
        if t_value < value - 1e-10 * abs(value):
            break
        params, value, grad = trial, t_value, t_grad
        H = _hessian(lap, params, scale)
        iterations += 1
    free = params[-2:] > _AT_ZERO * scale[-2:]
    active = np.r_[np.ones(k - 2, bool), free]
    converged = bool(np.max(np.abs(grad[active] * scale[active])) < gtol * 10
                     and not _sds_off_a_minimum(lap, params, scale).any())
    return params, value, H, converged, iterations


# ---------------------------------------------------------------------------
# Result object
# ---------------------------------------------------------------------------
@dataclass
class MultilevelFit:
    """A fitted three-level random-intercept logistic model.

    Attributes
    ----------
    coef : Series
        Fixed effects (conditional log odds ratios).
    sd : Series
        SDs of the district and the school (within district) random intercepts.
    vcov_model, vcov_robust : DataFrame
        Covariances of ``(fixed effects, sd_district, sd_school)``: the inverse
        Hessian of the Laplace log-likelihood (unweighted fits only; ``None`` for
        pseudo-likelihood fits) and the district-clustered sandwich.
    loglik : float
        Laplace log-likelihood (unweighted; comparable with ``logLik(glmer_fit)``)
        or log pseudo-likelihood (weighted; not a likelihood, no LR tests).
    """

    formula: str
    weighted: bool
    coef: pd.Series
    sd: pd.Series
    vcov_model: pd.DataFrame | None
    vcov_robust: pd.DataFrame
    loglik: float
    converged: bool
    iterations: int
    n_evaluations: int
    n: int
    n_schools: int
    n_districts: int
    district: str
    school: str
    data: pd.DataFrame               # the analysed rows
    design_info: patsy.DesignInfo
    design_matrix: np.ndarray        # (n, p) fixed-effects design of the analysed rows
    average_weights: np.ndarray      # weights of the averages in ame (1 unweighted)
    scores: np.ndarray               # (D, k) per-district score contributions
    hessian: np.ndarray              # (k, k) Hessian of the log (pseudo-)likelihood
    district_codes: np.ndarray
    weight_scaling: str | None = None
    extra: dict = field(default_factory=dict)

    # -- variance ---------------------------------------------------------
    @property
    def default_vcov(self) -> str:
        return "robust" if self.weighted else "model"

    def vcov(self, kind: str | None = None) -> pd.DataFrame:
        """Covariance of all parameters: ``"model"`` or ``"robust"`` (default per fit)."""
        kind = kind or self.default_vcov
        if kind == "robust":
            return self.vcov_robust
        if kind == "model":
            if self.vcov_model is None:
                raise ValueError("a pseudo-likelihood fit has no model-based variance: its "
                                 "Hessian is not an information matrix; use vcov='robust'")
            return self.vcov_model
        raise ValueError(f"vcov must be 'model' or 'robust', not {kind!r}")

    @property
    def params(self) -> pd.Series:
        return pd.concat([self.coef, self.sd])

    @property
    def sd_terms(self) -> list[str]:
        return [f"sd(Intercept | {self.district})",
                f"sd(Intercept | {self.district}:{self.school})"]

    # -- tables -----------------------------------------------------------
    def tidy(self, *, vcov: str | None = None, level: float = 0.95) -> pd.DataFrame:
        """Fixed effects and random-intercept SDs.

        Returns
        -------
        DataFrame
            ``term, estimate, std_error, statistic, p_value, ci_low, ci_high, n``.
            Fixed effects: Wald z tests and intervals (``n``: teachers). SDs
            (``sd(Intercept | district)``, ``sd(Intercept | district:school)``):
            Wald intervals on the log scale, missing when the SD is on the
            boundary (zero); no test, since zero is on the boundary of the
            parameter space (``n``: districts, schools).
        """
        V = self.vcov(vcov).to_numpy()
        se = np.sqrt(np.diag(V))
        z = stats.norm.ppf(0.5 + level / 2)
        p = len(self.coef)
        b, b_se = self.coef.to_numpy(), se[:p]
        fixed = pd.DataFrame({"term": list(self.coef.index), "estimate": b, "std_error": b_se,
                              "statistic": b / b_se,
                              "p_value": 2 * stats.norm.sf(np.abs(b / b_se)),
                              "ci_low": b - z * b_se, "ci_high": b + z * b_se, "n": self.n})
        s, s_se = self.sd.to_numpy(), se[p:]
        with np.errstate(divide="ignore", invalid="ignore"):
            inside = s > 1e-6
            half = np.where(inside, z * s_se / s, np.nan)
            low, high = s * np.exp(-half), s * np.exp(half)
        sds = pd.DataFrame({"term": self.sd_terms, "estimate": s,
                            "std_error": np.where(inside, s_se, np.nan), "statistic": np.nan,
                            "p_value": np.nan, "ci_low": low, "ci_high": high,
                            "n": [self.n_districts, self.n_schools]})
        return pd.concat([fixed, sds], ignore_index=True)[TIDY_COLUMNS]

    def icc(self, *, vcov: str | None = None, level: float = 0.95) -> pd.DataFrame:
        """Latent-scale intraclass correlations (logistic residual variance pi^2/3).

        ``district``: ``s_d^2 / (s_d^2 + s_s^2 + pi^2/3)``, the correlation of two
        teachers of the same district in different schools; ``school``:
        ``(s_d^2 + s_s^2) / (s_d^2 + s_s^2 + pi^2/3)``, of two teachers of the same
        school. Delta-method SEs; intervals are Wald intervals on the logit scale.

        Returns
        -------
        DataFrame
            ``level, estimate, std_error, ci_low, ci_high``.
        """
        sd_d, sd_s = self.sd.to_numpy()
        V = self.vcov(vcov).to_numpy()[-2:, -2:]
        total = sd_d ** 2 + sd_s ** 2 + LOGISTIC_VARIANCE
        est = np.array([sd_d ** 2, sd_d ** 2 + sd_s ** 2]) / total
        # gradients with respect to (sd_d, sd_s)
        grad = np.array([
            [2 * sd_d * (sd_s ** 2 + LOGISTIC_VARIANCE), -2 * sd_s * sd_d ** 2],
            [2 * sd_d * LOGISTIC_VARIANCE, 2 * sd_s * LOGISTIC_VARIANCE],
        ]) / total ** 2
        se = np.sqrt(np.einsum("ij,jk,ik->i", grad, V, grad))
        z = stats.norm.ppf(0.5 + level / 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            half = z * se / (est * (1 - est))
            low = special.expit(special.logit(est) - half)
            high = special.expit(special.logit(est) + half)
        return pd.DataFrame({"level": ["district", "school"], "estimate": est,
                             "std_error": se, "ci_low": low, "ci_high": high})[ICC_COLUMNS]

    def contrast(self, weights: dict[str, float], *, vcov: str | None = None,
                 level: float = 0.95) -> pd.DataFrame:
        """Linear combination of fixed effects, e.g. ``{"a": 1, "b": -1}`` (Wald z)."""
        names = list(self.coef.index)
        L = np.array([weights.get(t, 0.0) for t in names])
        V = self.vcov(vcov).to_numpy()[: len(names), : len(names)]
        est, se = float(L @ self.coef.to_numpy()), float(np.sqrt(L @ V @ L))
        z = stats.norm.ppf(0.5 + level / 2)
        label = " + ".join(f"{v:g}*{k}" for k, v in weights.items())
        return pd.DataFrame({"term": [label], "estimate": est, "std_error": se,
                             "statistic": est / se,
                             "p_value": 2 * stats.norm.sf(abs(est / se)),
                             "ci_low": est - z * se, "ci_high": est + z * se,
                             "n": self.n})[TIDY_COLUMNS]

    # -- marginal effects -------------------------------------------------
    def ame(self, variable: str, *, reference, random_effects: str = "integrate",
            vcov: str | None = None, level: float = 0.95, nodes: int = 40) -> pd.DataFrame:
        """Average marginal effect of each level of ``variable`` against ``reference``.

        Parameters
        ----------
        random_effects : {"integrate", "zero"}
            ``"integrate"`` (default): the population-averaged AME. Each
            teacher's probability is integrated over the random intercepts,
            ``Int expit(x'b + t z) phi(z) dz`` with ``t^2 = s_d^2 + s_s^2``
            (Gauss-Hermite, ``nodes`` points); this is the quantity comparable
            to M1's AMEs. ``"zero"``: the conditional AME for a school and
            district whose random intercepts are zero (a "typical" cluster),
            larger in magnitude because the logit is not collapsible.
        vcov : {"model", "robust"}, optional
            ``"model"``: delta method with the model-based covariance,
            conditional on the covariates. ``"robust"``: district-clustered,
            combining the parameters' score contributions and the sampling of
            the covariates (the "unconditional" delta method that M1 uses).

        Averages are unweighted for an unweighted fit and weighted by the
        product of the level weights (before scaling) for a weighted one.

        Returns
        -------
        DataFrame
            ``level, estimate, std_error, statistic, p_value, ci_low, ci_high, n``
            on the probability scale (``n``: teachers observed at that level).
        """
        kind = vcov or self.default_vcov
        frame = self.data
        col = frame[variable]
        levels = list(col.cat.categories if hasattr(col, "cat") else sorted(col.unique()))
        if reference not in levels:
            raise KeyError(f"{reference!r} is not a level of {variable!r}: {levels}")
        if random_effects not in ("integrate", "zero"):
            raise ValueError("random_effects must be 'integrate' or 'zero'")
        x_nodes, x_weights = np.polynomial.hermite_e.hermegauss(nodes)
        x_weights = x_weights / x_weights.sum()
        sd_d, sd_s = self.sd.to_numpy()
        t = np.hypot(sd_d, sd_s) if random_effects == "integrate" else 0.0
        w = self.average_weights
        total = w.sum()
        beta = self.coef.to_numpy()
        preds, grads = [], []
        for lv in levels:
            cf = frame.copy()
            cf[variable] = (pd.Categorical([lv] * len(cf), categories=col.cat.categories)
                            if hasattr(col, "cat") else lv)
            X = self._counterfactual_design(variable, cf)
            eta = (X @ beta)[:, None] + t * x_nodes[None, :]
            mu = special.expit(eta)
            dmu = mu * (1 - mu)
            preds.append(mu @ x_weights)
            d_eta = dmu @ x_weights                       # d pred / d eta
            d_t = (dmu * x_nodes) @ x_weights              # d pred / d t
            with np.errstate(divide="ignore", invalid="ignore"):
                dt_dsd = (np.array([sd_d, sd_s]) / t if t > 0 else np.zeros(2))
            if random_effects == "zero":
                dt_dsd = np.zeros(2)
            grads.append(np.r_[(w * d_eta) @ X, (w @ d_t) * dt_dsd] / total)
        preds, grads = np.column_stack(preds), np.array(grads)
        ref = levels.index(reference)
        others = [j for j in range(len(levels)) if j != ref]
        diff = preds[:, others] - preds[:, [ref]]          # (n, L-1) per-teacher effects
        est = w @ diff / total
        G = grads[others] - grads[ref]                     # (L-1, k)
        if kind == "robust":
            bread = np.linalg.inv(-self.hessian)
            infl = self.scores @ bread @ G.T               # (D, L-1)
            dev = (w[:, None] * (diff - est)) / total
            infl = infl + np.column_stack([np.bincount(self.district_codes, weights=dev[:, j],
                                                       minlength=self.n_districts)
                                           for j in range(len(others))])
            D = self.n_districts
            V = D / (D - 1) * infl.T @ infl
        else:
            V = G @ self.vcov("model").to_numpy() @ G.T
        se = np.sqrt(np.diag(V))
        z = stats.norm.ppf(0.5 + level / 2)
        counts = col.astype(object).value_counts()
        return pd.DataFrame({
            "level": [levels[j] for j in others], "estimate": est, "std_error": se,
            "statistic": est / se, "p_value": 2 * stats.norm.sf(np.abs(est / se)),
            "ci_low": est - z * se, "ci_high": est + z * se,
            "n": [int(counts.get(levels[j], 0)) for j in others]})

    def _counterfactual_design(self, variable: str, frame: pd.DataFrame) -> np.ndarray:
        """The design matrix for ``frame``, rebuilding only the terms that use ``variable``."""
        pattern = re.compile(rf"\b{re.escape(variable)}\b")
        info = self.design_info
        terms = [t for t in info.terms if any(pattern.search(f.name()) for f in t.factors)]
        X = self.design_matrix.copy()
        if terms:
            sub = info.subset(terms)
            cols = np.concatenate([np.arange(info.term_slices[t].start,
                                             info.term_slices[t].stop) for t in terms])
            X[:, cols] = np.asarray(patsy.build_design_matrices([sub], frame,
                                                                NA_action="raise")[0])
        return X

    def summary(self) -> str:
        kind = ("pseudo-likelihood, level weights scaled by "
                f"'{self.weight_scaling}'" if self.weighted else "maximum likelihood")
        head = (f"Three-level random-intercept logistic model (Laplace, {kind})\n"
                f"{self.formula} + (1 | {self.district}) + (1 | {self.district}:{self.school})\n"
                f"n = {self.n}, schools = {self.n_schools}, districts = {self.n_districts}, "
                f"log {'pseudo-' if self.weighted else ''}likelihood = {self.loglik:.4f}, "
                f"SEs: {self.default_vcov}, converged: {self.converged}\n")
        icc = self.icc()
        tail = "\nIntraclass correlations (latent scale):\n" + icc.to_string(index=False)
        return head + self.tidy().to_string(index=False) + tail


# ---------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------
def _level_weight(data: pd.DataFrame, column: str | None, codes: np.ndarray, n_groups: int,
                  what: str) -> np.ndarray:
    """One weight per group from a column that must be constant within groups."""
    if column is None:
        return np.ones(n_groups)
    values = data[column].to_numpy(dtype=float)
    first = np.full(n_groups, np.nan)
    first[codes[::-1]] = values[::-1]
    if not np.allclose(values, first[codes], rtol=1e-12, atol=0):
        raise ValueError(f"{what} weights in column {column!r} must be constant within each "
                         f"{what}; they vary in at least one {what}")
    return first


def _scale_teacher_weights(w, school, n_schools, method):
    if method not in WEIGHT_SCALINGS:
        raise ValueError(f"weight_scaling must be one of {WEIGHT_SCALINGS}, not {method!r}")
    sum_w = np.bincount(school, weights=w, minlength=n_schools)
    if method == "size":
        target = np.bincount(school, minlength=n_schools)
    else:
        target = sum_w ** 2 / np.bincount(school, weights=w ** 2, minlength=n_schools)
    return w * (target / sum_w)[school]


def fit_multilevel_logit(formula: str, data: pd.DataFrame, *, district: str = "district_id",
                         school: str = "school_id", weights: str | None = None,
                         school_weights: str | None = None,
                         district_weights: str | None = None, weight_scaling: str = "size",
                         gtol: float = 1e-7) -> MultilevelFit:
    """Fit a three-level random-intercept logistic model by Laplace (pseudo-)likelihood.

    Parameters
    ----------
    formula : str
        statsmodels/patsy formula of the fixed part (binary 0/1 outcome), e.g.
        the codebook's M1. The random intercepts are added for ``district`` and
        for ``school`` within district.
    data : DataFrame
        One row per teacher; rows with a missing model variable, group or
        weight are left out (complete cases).
    district, school : str
        Columns of the district and school identifiers (school IDs need only be
        unique within a district).
    weights : str, optional
        Teacher weights conditional on the school (``w_{i|s}``), scaled within
        schools by ``weight_scaling``.
    school_weights : str, optional
        School weights conditional on the district (``w_{s|d}``, constant within
        schools; 1 when omitted, as when every school of a sampled district is taken).
    district_weights : str, optional
        District weights (``w_d``, constant within districts).
    weight_scaling : {"size", "effective"}
        Scaling of the teacher weights within schools (Stata ``pwscale()``).
        School and district weights are used as given.
    gtol : float
        Convergence tolerance on the gradient (in units of the starting GLM's SEs).

    Returns
    -------
    MultilevelFit
        The fit is unweighted (maximum likelihood, as ``lme4::glmer`` with
        ``nAGQ = 1``) when no weight column is given, and a pseudo-likelihood
        fit otherwise; see the module docstring for what each estimates.

    Examples
    --------
    >>> df = simulate_three_level(n_districts=40, schools_per_district=3,
    ...                           teachers_per_school=6, seed=3)
    >>> df["w_district"] = np.repeat(np.linspace(1, 5, 40), 18)
    >>> weighted = fit_multilevel_logit("y ~ x", df, district_weights="w_district")
    >>> weighted.tidy()["n"].tolist()
    [720, 720, 40, 120]
    >>> bool(weighted.vcov_model is None)
    True
    """
    weighted = any(c is not None for c in (weights, school_weights, district_weights))
    needed = [district, school] + [c for c in (weights, school_weights, district_weights) if c]
    frame = data.loc[data[needed].notna().all(axis=1)].reset_index(drop=True)
    y, X, used = model_frame(formula, frame)
    frame = frame.loc[used].reset_index(drop=True)
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(f"the outcome of {formula!r} must be 0/1")
    district_codes, _ = pd.factorize(frame[district].astype(str), sort=True)
    school_codes, school_keys = pd.factorize(
        pd.MultiIndex.from_arrays([frame[district].astype(str), frame[school].astype(str)]),
        sort=True)
    n_schools, n_districts = len(school_keys), int(district_codes.max()) + 1
    school_district = np.empty(n_schools, dtype=np.int64)
    school_district[school_codes] = district_codes
    for col in needed[2:]:
        if not (np.isfinite(frame[col]) & (frame[col] > 0)).all():
            raise ValueError(f"weights in column {col!r} must be positive and finite")
    raw_w = frame[weights].to_numpy(float) if weights else np.ones(len(frame))
    a = _scale_teacher_weights(raw_w, school_codes, n_schools, weight_scaling) if weights \
        else raw_w
    c = _level_weight(frame, school_weights, school_codes, n_schools, "school")
    g = _level_weight(frame, district_weights, district_codes, n_districts, "district")
    prob = _make_problem(X.to_numpy(), y, a, c, g, school_codes, district_codes,
                         school_district)

    # starting values: the single-level GLM with the products of the weights
    glm_weights = a * c[school_codes] * g[district_codes]
    glm = irls(prob.X, y, glm_weights, BINOMIAL)
    glm_se = np.sqrt(np.diag(glm.cov_unscaled) * glm_weights.mean())
    start = np.r_[glm.coef, 0.5, 0.5]
    scale = np.r_[np.maximum(glm_se, 1e-8), 0.1, 0.1]
    lap = _Laplace(prob)
    params, value, H, converged, iterations = _maximise(lap, start, scale, gtol=gtol)
    _, _, score, _ = lap.evaluate(params, scores=True)

    names = list(X.columns) + [f"sd(Intercept | {district})",
                               f"sd(Intercept | {district}:{school})"]
    bread = np.linalg.inv(-H)
    meat = n_districts / (n_districts - 1) * score.T @ score
    robust = pd.DataFrame(bread @ meat @ bread, index=names, columns=names)
    model = None if weighted else pd.DataFrame(bread, index=names, columns=names)
    p = X.shape[1]
    average_weights = (raw_w * c[school_codes] * g[district_codes]) if weighted \
        else np.ones(len(frame))
    return MultilevelFit(
        formula=formula, weighted=weighted,
        coef=pd.Series(params[:p], index=X.columns),
        sd=pd.Series(np.abs(params[p:]), index=["district", "school"]),
        vcov_model=model, vcov_robust=robust, loglik=value, converged=converged,
        iterations=iterations, n_evaluations=lap.n_evaluations, n=len(frame),
        n_schools=n_schools, n_districts=n_districts, district=district, school=school,
        data=frame, design_info=X.design_info, design_matrix=prob.X,
        average_weights=average_weights,
        scores=score, hessian=H, district_codes=district_codes,
        weight_scaling=weight_scaling if weights else None)


# ---------------------------------------------------------------------------
# The study's model, and tables beside M1
# ---------------------------------------------------------------------------
def fit_study_multilevel(teachers: pd.DataFrame, *, weighted: bool, name: str = "M1",
                         weight_scaling: str = "size") -> MultilevelFit:
    """The multilevel version of a codebook model (M1 by default) on the study's teachers.

    Fixed part: the codebook formula; random intercepts for districts and for
    schools within districts; complete cases of ``model_data(teachers)``.

    Parameters
    ----------
    weighted : bool
        ``False``: unweighted maximum likelihood. ``True``: pseudo-likelihood
        with the teacher weight conditional on the school, ``weight /
        district_weight`` (= n_teachers / responding teachers in the school),
        scaled within schools, school weights 1 (every school of a sampled
        district is taken) and the district weights ``district_weight``.

    Examples
    --------
    >>> from pathlib import Path
    >>> from analysis.data.clean import clean_study
    >>> fit = fit_study_multilevel(clean_study(Path("data/raw")).teachers, weighted=False)
    >>> fit.tidy()["term"].iloc[-2:].tolist()
    ['sd(Intercept | district_id)', 'sd(Intercept | district_id:school_id)']
    >>> fit.icc()["level"].tolist()
    ['district', 'school']
    """
    from analysis.stats.models import model_data
    from analysis.study.codebook import load_codebook

    cb = load_codebook()
    design = cb.design
    data = model_data(teachers)
    options = dict(district=design["psu"], school=design["ssu"])
    if weighted:
        data["teacher_weight_in_school"] = data[design["weight"]] / data["district_weight"]
        options.update(weights="teacher_weight_in_school", district_weights="district_weight",
                       weight_scaling=weight_scaling)
    return fit_multilevel_logit(cb.model_formula(name), data, **options)


def ame_table(fits: Mapping[str, object], variable: str, *, reference) -> pd.DataFrame:
    """AMEs of several fits side by side (long format, a ``model`` column first).

    Works for any fits with ``.ame(variable, reference=...)``, e.g. M1's
    ``ModelFit`` and the two multilevel fits.
    """
    parts = [fit.ame(variable, reference=reference).assign(model=label)
             for label, fit in fits.items()]
    out = pd.concat(parts, ignore_index=True)
    return out[["model"] + [c for c in out.columns if c != "model"]]


# ---------------------------------------------------------------------------
# Simulation (tests, examples)
# ---------------------------------------------------------------------------
def simulate_three_level(*, n_districts: int = 100, schools_per_district: int = 5,
                         teachers_per_school: int = 8, beta=(-0.3, 0.7),
                         sd_district: float = 0.6, sd_school: float = 0.4,
                         seed: int = 0) -> pd.DataFrame:
    """Simulate teachers in schools in districts from the random-intercept logit model.

    One standard-normal covariate ``x``; the linear predictor is
    ``beta[0] + beta[1] x + sd_district u_d + sd_school v_s``.

    Returns
    -------
    DataFrame
        ``district_id, school_id, x, y`` (balanced, one row per teacher).

    Examples
    --------
    >>> simulate_three_level(n_districts=2, schools_per_district=2,
    ...                      teachers_per_school=3).shape
    (12, 4)
    """
    rng = np.random.default_rng(seed)
    n_schools = n_districts * schools_per_district
    n = n_schools * teachers_per_school
    school = np.repeat(np.arange(n_schools), teachers_per_school)
    district = school // schools_per_district
    x = rng.normal(size=n)
    eta = (beta[0] + beta[1] * x + sd_district * rng.normal(size=n_districts)[district]
           + sd_school * rng.normal(size=n_schools)[school])
    y = (rng.uniform(size=n) < special.expit(eta)).astype(float)
    return pd.DataFrame({"district_id": [f"d{d:04d}" for d in district],
                         "school_id": [f"s{s:05d}" for s in school], "x": x, "y": y})

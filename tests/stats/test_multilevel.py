"""Three-level random-intercept logit: against R's lme4 (stored numbers), recovery, invariances.

Reference: tests/reference/multilevel_reference.csv, written by multilevel_reference.R
(lme4 1.1.31, ``glmer(..., nAGQ = 1)``) from multilevel_data.csv.gz (refresh_multilevel.py).
"""

import re

import numpy as np
import pandas as pd
import patsy
import pytest
from helpers import REFERENCE
from scipy import optimize, special

from analysis.stats.models import model_data
from analysis.stats.multilevel import (
    _Laplace,
    _make_problem,
    fit_multilevel_logit,
    fit_study_multilevel,
    simulate_three_level,
)

#: columns of multilevel_data.csv.gz (as refresh_multilevel.py writes them)
DATA_COLUMNS = ["response_id", "district_id", "school_id", "non_substitutive", "support_model",
                "frl_pct", "enrollment", "locale", "tech_spend_pp", "students_per_device",
                "years_teaching", "grade_band", "subject", "weight", "district_weight"]
SUPPORT = 'C(support_model, Treatment("tech_support_only"))'


def _r_term(term: str) -> str:
    """Our (patsy) term name -> lme4's coefficient name."""
    m = re.fullmatch(r'C\((\w+), Treatment\("(\w+)"\)\)\[T\.(\w+)\]', term)
    if m:
        return f'relevel({m[1]}, "{m[2]}"){m[3]}'
    return {"Intercept": "(Intercept)", "np.log(enrollment)": "log(enrollment)",
            "I(tech_spend_pp / 100)": "I(tech_spend_pp/100)"}.get(term, term)


def _read_data() -> pd.DataFrame:
    df = pd.read_csv(REFERENCE / "multilevel_data.csv.gz",
                     dtype={"district_id": str, "school_id": str, "response_id": str})
    return model_data(df.assign(support_model=df["support_model"].astype("category")))


@pytest.fixture(scope="module")
def study():
    return _read_data()


@pytest.fixture(scope="module")
def lme4():
    return pd.read_csv(REFERENCE / "multilevel_reference.csv").set_index("term")


@pytest.fixture(scope="module")
def unweighted(study):
    return fit_study_multilevel(study, weighted=False)


@pytest.fixture(scope="module")
def weighted(study):
    return fit_study_multilevel(study, weighted=True)


# ---------------------------------------------------------------------------
# Against lme4
# ---------------------------------------------------------------------------
def test_reference_optimum_is_tight(lme4):
    """lme4's stored optimum (glmer, then Newton steps on lme4's deviance) has a deviance
    gradient below 1e-4, i.e. parameters within about SE^2 * 1e-4 / 2 < 1e-5 of the
    maximum: far inside the tolerances below. glmer alone stops at gradients of 0.01-0.1
    (further when an SD is on the boundary), so polishing can only raise its log-likelihood."""
    assert lme4.loc["max_abs_gradient", "estimate"] < 1e-4
    assert lme4.loc["logLik", "estimate"] >= lme4.loc["glmer_logLik", "estimate"] - 1e-8


def test_fixed_effects_sds_and_loglik_match_lme4(unweighted, lme4):
    """Both fits maximise the same Laplace log-likelihood; only the optimisers differ.

    Both optima have gradients below 1e-4 (lme4, deviance) and 1e-7 (here), so the
    estimates agree to about 1e-6: tolerances 1e-5 relative (1e-6 absolute for
    estimates near zero) and 1e-5 absolute for the log-likelihood. Observed on the
    bundled study: 4e-6 relative, 3e-7 absolute, log-likelihood 2e-9.
    """
    assert unweighted.converged
    tidy = unweighted.tidy().set_index("term")
    assert len(unweighted.coef) == 24
    for term, est in unweighted.coef.items():
        ref = lme4.loc[_r_term(term), "estimate"]
        assert np.isclose(est, ref, rtol=1e-5, atol=1e-6), (term, est, ref)
    for term in unweighted.sd_terms:
        assert np.isclose(tidy.loc[term, "estimate"], lme4.loc[term, "estimate"],
                          rtol=1e-5), term
    assert abs(unweighted.loglik - lme4.loc["logLik", "estimate"]) < 1e-5
    assert unweighted.n == lme4.loc["n", "estimate"]
    assert unweighted.n_schools == lme4.loc["n_schools", "estimate"]
    assert unweighted.n_districts == lme4.loc["n_districts", "estimate"]


def test_model_based_ses_match_lme4(unweighted, lme4):
    """Both invert a finite-difference Hessian of the Laplace log-likelihood over all
    parameters, lme4 from deviance values (``deriv12``, step 1e-4), ours from the
    analytic gradient (stable to 1e-8 across steps). lme4's second differences carry
    the PIRLS and rounding noise of the deviance: SEs agree to 2e-3 relative
    (observed: at most 9e-4, for the intercept)."""
    tidy = unweighted.tidy(vcov="model").set_index("term")
    for term in unweighted.coef.index:
        assert np.isclose(tidy.loc[term, "std_error"], lme4.loc[_r_term(term), "std_error"],
                          rtol=2e-3), term


# ---------------------------------------------------------------------------
# The Laplace likelihood's derivatives
# ---------------------------------------------------------------------------
def _weighted_problem(seed=5):
    df = simulate_three_level(n_districts=30, schools_per_district=3, teachers_per_school=5,
                              seed=seed)
    rng = np.random.default_rng(seed)
    school, _ = pd.factorize(df["school_id"])
    district, _ = pd.factorize(df["district_id"])
    school_district = np.zeros(school.max() + 1, dtype=np.int64)
    school_district[school] = district
    X = np.column_stack([np.ones(len(df)), df["x"]])
    return _make_problem(X, df["y"].to_numpy(), rng.uniform(0.5, 2, len(df)),
                         rng.uniform(1, 2, school.max() + 1), rng.uniform(1, 3, district.max() + 1),
                         school, district, school_district)


def test_analytic_gradient_and_district_scores_match_finite_differences():
    lap = _Laplace(_weighted_problem(), tol=1e-13)
    params = np.array([-0.2, 0.6, 0.7, 0.3])
    _, grad, scores, _ = lap.evaluate(params, scores=True)
    h = 1e-5
    fd = np.column_stack([
        (lap.evaluate(params + h * e, scores=True)[3] - lap.evaluate(params - h * e,
                                                                     scores=True)[3]) / (2 * h)
        for e in np.eye(4)])
    assert np.allclose(scores, fd, rtol=1e-6, atol=1e-7)
    assert np.allclose(grad, fd.sum(axis=0), rtol=1e-6, atol=1e-7)
    assert np.abs(grad).max() > 1                    # not at an optimum: a real check


def _dense_laplace(prob, params):
    """The weighted Laplace log-likelihood district by district, with dense matrices and
    a general-purpose optimiser (no arrowhead algebra, no bincount)."""
    beta, sd_d, sd_s = params[:-2], params[-2], params[-1]
    total = 0.0
    for d in range(prob.n_districts):
        schools = np.flatnonzero(prob.school_district == d)
        rows = np.flatnonzero(prob.district == d)
        local = np.searchsorted(schools, prob.school[rows])
        Z = np.zeros((len(rows), 1 + len(schools)))   # columns: u_d, v_s for s in d
        Z[:, 0] = sd_d
        Z[np.arange(len(rows)), 1 + local] = sd_s
        a, c = prob.a[rows], prob.c[schools]
        prior = np.r_[1.0, c]                        # -1/2 u^2 - sum_s c_s v_s^2 / 2
        obs_weight = a * c[local]
        offset = prob.X[rows] @ beta
        y = prob.y[rows]

        def G(b, Z=Z, offset=offset, y=y, obs_weight=obs_weight, prior=prior):
            eta = offset + Z @ b
            return -0.5 * prior @ b ** 2 + obs_weight @ (y * eta - np.logaddexp(0, eta))

        b = optimize.minimize(lambda b, G=G: -G(b), np.zeros(Z.shape[1]), method="BFGS",
                              options={"gtol": 1e-12}).x
        mu = special.expit(offset + Z @ b)
        H = np.diag(prior) + Z.T @ (Z * (obs_weight * mu * (1 - mu))[:, None])
        # school s: c_s * log of its own Laplace curvature; district: the Schur complement
        schur = H[0, 0] - H[0, 1:] @ np.linalg.solve(H[1:, 1:], H[1:, 0])
        log_det = c @ np.log(np.diag(H)[1:] / c) + np.log(schur)
        total += prob.g[d] * (G(b) - 0.5 * log_det)
    return total


def test_vectorised_laplace_equals_a_dense_per_district_computation():
    prob = _weighted_problem(seed=8)
    params = np.array([-0.3, 0.5, 0.8, 0.6])
    value, _ = _Laplace(prob, tol=1e-13).evaluate(params)
    assert np.isclose(value, _dense_laplace(prob, params), rtol=1e-9)


# ---------------------------------------------------------------------------
# Parameter recovery
# ---------------------------------------------------------------------------
def test_recovers_simulated_parameters():
    truth = {"Intercept": -0.4, "x": 0.8, "district": 0.7, "school": 0.5}
    df = simulate_three_level(n_districts=200, schools_per_district=5, teachers_per_school=6,
                              beta=(truth["Intercept"], truth["x"]),
                              sd_district=truth["district"], sd_school=truth["school"], seed=11)
    fit = fit_multilevel_logit("y ~ x", df)
    est = pd.concat([fit.coef, fit.sd])
    se = np.sqrt(np.diag(fit.vcov("model")))
    z = (est - pd.Series(truth)[est.index]).to_numpy() / se
    assert np.all(np.abs(z) < 3), dict(zip(est.index, z, strict=True))
    assert np.all(se < [0.1, 0.05, 0.08, 0.08])      # precise enough for the check to bite
    # a correct model: the sandwich agrees with the model-based SEs
    robust = np.sqrt(np.diag(fit.vcov("robust")))
    assert np.allclose(robust[:2], se[:2], rtol=0.2)


def test_recovers_a_zero_school_variance_on_the_boundary():
    df = simulate_three_level(n_districts=80, schools_per_district=4, teachers_per_school=5,
                              sd_district=0.8, sd_school=0.0, seed=4)
    fit = fit_multilevel_logit("y ~ x", df)
    assert fit.converged
    assert fit.sd["school"] < 0.15
    row = fit.tidy().set_index("term").loc["sd(Intercept | district_id:school_id)"]
    assert np.isnan(row["statistic"]) and np.isnan(row["p_value"])


def test_an_sd_started_at_zero_leaves_the_stationary_point():
    """The likelihood is even in each SD, so zero has a zero gradient: the optimiser
    must check that it is a maximum, not stop there."""
    from analysis.stats.multilevel import _maximise

    df = simulate_three_level(n_districts=60, schools_per_district=4, teachers_per_school=6,
                              sd_district=0.5, sd_school=0.8, seed=21)
    fit = fit_multilevel_logit("y ~ x", df)
    assert fit.sd["school"] > 0.4
    school, _ = pd.factorize(df["school_id"])
    district, _ = pd.factorize(df["district_id"])
    school_district = np.zeros(school.max() + 1, dtype=np.int64)
    school_district[school] = district
    prob = _make_problem(np.column_stack([np.ones(len(df)), df["x"]]), df["y"].to_numpy(),
                         np.ones(len(df)), np.ones(school.max() + 1),
                         np.ones(district.max() + 1), school, district, school_district)
    start = np.r_[fit.coef.to_numpy(), 0.5, 0.0]
    params, value, _, converged, _ = _maximise(_Laplace(prob), start, np.r_[0.1, 0.1, 0.1, 0.1],
                                               gtol=1e-7)
    assert converged
    assert np.allclose(params, fit.params, rtol=1e-5)
    assert np.isclose(value, fit.loglik, rtol=1e-10)


# ---------------------------------------------------------------------------
# Pseudo-likelihood: invariances
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small():
    df = simulate_three_level(n_districts=60, schools_per_district=4, teachers_per_school=6,
                              seed=7)
    rng = np.random.default_rng(3)
    school, _ = pd.factorize(df["school_id"])
    district, _ = pd.factorize(df["district_id"])
    df["w_teacher"] = rng.uniform(1, 4, len(df))
    df["w_district"] = rng.uniform(1, 10, district.max() + 1)[district]
    df["one"] = 1.0
    return df


def test_unit_weights_give_the_unweighted_fit(small):
    plain = fit_multilevel_logit("y ~ x", small)
    ones = fit_multilevel_logit("y ~ x", small, weights="one", school_weights="one",
                                district_weights="one")
    assert ones.weighted and not plain.weighted
    assert np.allclose(ones.params, plain.params, rtol=1e-6, atol=1e-8)
    assert np.isclose(ones.loglik, plain.loglik, rtol=1e-10)
    assert np.allclose(ones.vcov("robust"), plain.vcov("robust"), rtol=1e-4, atol=1e-10)


def test_rescaling_teacher_and_district_weights_leaves_the_fit_unchanged(small):
    base = fit_multilevel_logit("y ~ x", small, weights="w_teacher",
                                district_weights="w_district")
    scaled = small.assign(w_teacher=small["w_teacher"] * 7.3,
                          w_district=small["w_district"] * 0.37)
    refit = fit_multilevel_logit("y ~ x", scaled, weights="w_teacher",
                                 district_weights="w_district")
    assert np.allclose(refit.params, base.params, rtol=1e-6, atol=1e-8)
    assert np.allclose(refit.tidy()["std_error"], base.tidy()["std_error"], rtol=1e-4)
    assert np.isclose(refit.loglik, 0.37 * base.loglik, rtol=1e-10)
    # ... and the weights do matter
    plain = fit_multilevel_logit("y ~ x", small)
    assert not np.allclose(base.params, plain.params, rtol=1e-3)


def test_size_scaling_makes_teacher_weights_constant_within_school_irrelevant(small):
    """Scaled to the school's sample size, a weight constant within school becomes 1."""
    per_school = small["w_teacher"].groupby(small["school_id"]).transform("first")
    with_teacher = fit_multilevel_logit("y ~ x", small.assign(w=per_school), weights="w",
                                        district_weights="w_district")
    without = fit_multilevel_logit("y ~ x", small, district_weights="w_district")
    assert np.allclose(with_teacher.params, without.params, rtol=1e-6, atol=1e-8)
    effective = fit_multilevel_logit("y ~ x", small, weights="w_teacher",
                                     district_weights="w_district", weight_scaling="effective")
    size = fit_multilevel_logit("y ~ x", small, weights="w_teacher",
                                district_weights="w_district")
    assert not np.allclose(effective.params, size.params, rtol=1e-4)


def test_study_weighted_fit_uses_the_district_weights(weighted):
    """In this study the teacher weight given the school (n_teachers / respondents) is
    constant within school, so the pseudo-likelihood is that of the district weights alone
    (teacher and school weights 1): same value, zero gradient at the fit."""
    lap = _study_laplace(weighted)
    value, grad = lap.evaluate(weighted.params.to_numpy())
    assert np.isclose(value, weighted.loglik, rtol=1e-12)
    se = np.sqrt(np.diag(weighted.vcov("robust")))
    assert np.max(np.abs(grad * se)) < 1e-4
    assert weighted.weighted and weighted.weight_scaling == "size"
    with pytest.raises(ValueError, match="pseudo-likelihood"):
        weighted.tidy(vcov="model")


def test_study_fits_are_maxima_along_each_sd(unweighted, weighted):
    """Moving either SD by 0.02 either way (or to zero) lowers the log (pseudo-)likelihood
    (an SD stuck at zero, a stationary point, would fail this)."""
    for fit in (unweighted, weighted):
        params = fit.params.to_numpy()
        best = fit.loglik
        lap = _study_laplace(fit)
        for j in (-2, -1):
            for value in (params[j] - 0.02, params[j] + 0.02, 0.0):
                probe = params.copy()
                probe[j] = max(value, 0.0)
                if probe[j] == params[j]:
                    continue
                assert lap.evaluate(probe)[0] < best, (fit.weighted, j, value)


def _study_laplace(fit):
    """The Laplace likelihood of a study fit, rebuilt from its analysed rows."""
    from analysis.stats.models import model_frame

    frame = fit.data
    _, X, _ = model_frame(fit.formula, frame)
    district, _ = pd.factorize(frame["district_id"].astype(str), sort=True)
    school, _ = pd.factorize(pd.MultiIndex.from_arrays([frame["district_id"].astype(str),
                                                        frame["school_id"].astype(str)]),
                             sort=True)
    school_district = np.zeros(school.max() + 1, dtype=np.int64)
    school_district[school] = district
    g = np.ones(district.max() + 1)
    if fit.weighted:
        g[district] = frame["district_weight"].to_numpy()
    prob = _make_problem(X.to_numpy(), frame["non_substitutive"].to_numpy(float),
                         np.ones(len(frame)), np.ones(school.max() + 1), g, school, district,
                         school_district)
    return _Laplace(prob)


def test_level_weights_must_be_constant_within_their_level(small):
    with pytest.raises(ValueError, match="constant within each district"):
        fit_multilevel_logit("y ~ x", small, district_weights="w_teacher")


# ---------------------------------------------------------------------------
# ICCs and marginal effects
# ---------------------------------------------------------------------------
def test_icc_from_the_sds(unweighted):
    icc = unweighted.icc().set_index("level")
    s_d, s_s = unweighted.sd
    total = s_d ** 2 + s_s ** 2 + np.pi ** 2 / 3
    assert np.isclose(icc.loc["district", "estimate"], s_d ** 2 / total)
    assert np.isclose(icc.loc["school", "estimate"], (s_d ** 2 + s_s ** 2) / total)
    assert (icc["ci_low"] < icc["estimate"]).all() and (icc["estimate"] < icc["ci_high"]).all()


def test_population_averaged_ame_integrates_over_both_random_intercepts(unweighted):
    """Against a two-dimensional product Gauss-Hermite rule over (u_d, v_s) written here
    with the physicists' nodes (the fit integrates once over u_d s_d + v_s s_s)."""
    ame = unweighted.ame("support_model", reference="tech_support_only").set_index("level")
    zero = unweighted.ame("support_model", reference="tech_support_only",
                          random_effects="zero").set_index("level")
    nodes, weights = np.polynomial.hermite.hermgauss(24)
    nodes, weights = np.sqrt(2) * nodes, weights / np.sqrt(np.pi)
    shift = (unweighted.sd["district"] * nodes[:, None]
             + unweighted.sd["school"] * nodes[None, :]).ravel()
    weight = np.outer(weights, weights).ravel()
    frame = unweighted.data
    categories = frame["support_model"].cat.categories
    rate = {}
    for level in ("tech_support_only", "director"):
        cf = frame.assign(support_model=pd.Categorical([level] * len(frame),
                                                       categories=categories))
        X = np.asarray(patsy.build_design_matrices([unweighted.design_info], cf)[0])
        eta = X @ unweighted.coef.to_numpy()
        rate[level] = (special.expit(eta[:, None] + shift[None, :]) @ weight).mean()
    assert np.isclose(ame.loc["director", "estimate"],
                      rate["director"] - rate["tech_support_only"], rtol=1e-8)
    # non-collapsibility: the effect at zero random intercepts is larger
    assert zero.loc["director", "estimate"] > ame.loc["director", "estimate"] + 0.005 > 0
    assert list(ame.columns) == ["estimate", "std_error", "statistic", "p_value", "ci_low",
                                 "ci_high", "n"]


def test_tidy_columns_and_sd_rows(weighted):
    tidy = weighted.tidy()
    assert list(tidy.columns) == ["term", "estimate", "std_error", "statistic", "p_value",
                                  "ci_low", "ci_high", "n"]
    sds = tidy.set_index("term").loc[weighted.sd_terms]
    inside = sds["estimate"] > 1e-6
    assert inside.any()
    assert (sds.loc[inside, "ci_low"] < sds.loc[inside, "estimate"]).all()
    assert (sds.loc[inside, "estimate"] < sds.loc[inside, "ci_high"]).all()
    # an SD on the boundary (zero) has no Wald interval on the log scale
    assert sds.loc[~inside, ["std_error", "ci_low", "ci_high"]].isna().all().all()
    assert sds["n"].tolist() == [weighted.n_districts, weighted.n_schools]
    assert "pseudo-likelihood" in weighted.summary()


# ---------------------------------------------------------------------------
# The stored data is what the cleaner makes of the bundled study today
# ---------------------------------------------------------------------------
def test_bundled_cleaner_reproduces_the_reference_data(teachers):
    ours = model_data(teachers)[DATA_COLUMNS].reset_index(drop=True)
    stored = pd.read_csv(REFERENCE / "multilevel_data.csv.gz",
                         dtype={"district_id": str, "school_id": str, "response_id": str})
    assert list(stored.columns) == DATA_COLUMNS
    assert list(stored["response_id"]) == list(ours["response_id"])
    for col in DATA_COLUMNS:
        a, b = ours[col], stored[col]
        if pd.api.types.is_numeric_dtype(b):
            assert np.allclose(a.astype(float), b, equal_nan=True, rtol=0, atol=0), col
        else:
            assert (a.astype(object).fillna("") == b.fillna("")).all(), col


def test_ame_table_puts_fits_side_by_side(unweighted, weighted):
    from analysis.stats.multilevel import ame_table

    table = ame_table({"unweighted": unweighted, "weighted": weighted}, "support_model",
                      reference="tech_support_only")
    assert table.columns[0] == "model"
    assert table.groupby("model").size().to_dict() == {"unweighted": 5, "weighted": 5}
    ours = weighted.ame("support_model", reference="tech_support_only")
    assert np.allclose(table.loc[table["model"] == "weighted", "estimate"], ours["estimate"])

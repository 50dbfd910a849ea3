"""Design-based proportional-odds model against R's survey::svyolr (stored numbers).

References: tests/reference/ordinal_reference.R (R 4.2.2, survey 4.1.1) on the
bundled study (ordinal_data.csv.gz, written by refresh_ordinal.py from the cleaner)
and on the api data, plus the api line of api/api_reference_output.txt.

Tolerances, and why:
- R's svyolr maximises with optim's BFGS, which stops when the objective changes
  by less than 1e-8 (relative). Its default estimates are therefore off the
  maximum by up to ~1e-4 (relative) on the study and ~6e-7 on api. The R script
  also refits with reltol = 1e-15 ("tight"); those estimates agree with our
  Newton solution (converged to machine precision) to six significant digits.
- svyolr's standard errors come from optim's finite-difference Hessian (central
  differences with step 1e-3 of the gradient, in svyolr's log-increment
  parametrisation of the cut-points). ``hessian="optim"`` reproduces it, and
  then the SEs (and the AMEs' SEs) agree to six significant digits; the exact
  analytic Hessian (the default) gives SEs within 1e-3 (relative) of R's, the
  size of the finite-difference error (4e-4 at most here).
"""

import re
import sys

import numpy as np
import pandas as pd
import pytest
from helpers import REFERENCE, ROOT
from statsmodels.miscmodels.ordinal_model import OrderedModel
from test_design import R, sig6

from analysis.stats.design import SurveyDesign
from analysis.stats.models import model_data, study_design
from analysis.stats.ordinal import OrdinalModelError, fit_study_svyolr, fit_svyolr
from analysis.study.codebook import load_codebook

sys.path.insert(0, str(ROOT / "tests" / "reference"))
from refresh_ordinal import ORDINAL_COLUMNS  # noqa: E402

RHS = load_codebook().model_formula("M1").partition("~")[2]
FORMULA = f"samr_level ~ {RHS}"
API_LEVELS = ["(0,500]", "(500,650]", "(650,800]", "(800,1e+03]"]


def _r_term(term: str) -> str:
    """Our (patsy) term name -> R's coefficient name."""
    m = re.fullmatch(r'C\((\w+), Treatment\("(\w+)"\)\)\[T\.(\w+)\]', term)
    if m:
        return f'relevel({m[1]}, "{m[2]}"){m[3]}'
    return {"np.log(enrollment)": "log(enrollment)",
            "I(tech_spend_pp / 100)": "I(tech_spend_pp/100)"}.get(term, term)


def _read_ordinal_data() -> pd.DataFrame:
    df = pd.read_csv(REFERENCE / "ordinal_data.csv.gz", dtype={"district_id": str,
                                                               "response_id": str})
    df["samr_level"] = pd.Categorical(df["samr_level"], categories=list("SAMR"), ordered=True)
    return model_data(df.assign(support_model=df["support_model"].astype("category")))


@pytest.fixture(scope="module")
def design():
    return study_design(_read_ordinal_data())


@pytest.fixture(scope="module")
def fit_optim(design):
    return fit_svyolr(FORMULA, design=design, hessian="optim")


@pytest.fixture(scope="module")
def fit_analytic(design):
    return fit_svyolr(FORMULA, design=design)


@pytest.fixture(scope="module")
def reference():
    return pd.read_csv(REFERENCE / "ordinal_reference.csv")


def _r_rows(reference, model, fit, terms):
    r = reference[(reference["model"] == model) & (reference["fit"] == fit)].set_index("term")
    assert sorted(r.index) == sorted(terms)
    return r.loc[list(terms)]


def test_study_matches_r_tight_fit_to_six_digits(fit_optim, reference):
    tidy = fit_optim.tidy()
    r = _r_rows(reference, "study", "tight", tidy["term"].map(_r_term))
    assert len(tidy) == 26 and list(tidy["term"].iloc[-3:]) == ["S|A", "A|M", "M|R"]
    assert sig6(tidy["estimate"], r["estimate"])
    assert sig6(tidy["std_error"], r["std_error"])
    assert (tidy["df"] == r["df_residual"].to_numpy()).all()
    assert (tidy["n"] == r["n"].to_numpy()).all()
    assert fit_optim.converged


def test_study_analytic_hessian_within_finite_difference_error(fit_analytic, fit_optim,
                                                                reference):
    tidy = fit_analytic.tidy()
    r = _r_rows(reference, "study", "tight", tidy["term"].map(_r_term))
    assert np.allclose(tidy["std_error"], r["std_error"], rtol=1e-3, atol=0)
    assert not np.allclose(tidy["std_error"], r["std_error"], rtol=1e-5, atol=0)
    assert np.array_equal(fit_analytic.coef, fit_optim.coef)     # same point estimates


def test_study_r_default_fit_stops_short_of_the_maximum(fit_optim, reference):
    """Documents why the comparison uses R's tight fit: the default BFGS estimates are
    ~1e-4 (relative) away, its SEs ~2e-6."""
    tidy = fit_optim.tidy()
    r = _r_rows(reference, "study", "default", tidy["term"].map(_r_term))
    assert np.allclose(tidy["estimate"], r["estimate"], rtol=5e-4, atol=0)
    assert not sig6(tidy["estimate"], r["estimate"])
    assert np.allclose(tidy["std_error"], r["std_error"], rtol=1e-5, atol=0)


@pytest.fixture(scope="module")
def api_design():
    df = pd.read_csv(REFERENCE / "api" / "apiclus1.csv")
    df["api_cat"] = pd.cut(df["api00"], [0, 500, 650, 800, 1000]).cat.rename_categories(
        API_LEVELS)
    return SurveyDesign(df, weights="pw", psu="dnum", fpc="fpc")


def test_api_svyolr_matches_r(api_design, reference):
    fit = fit_svyolr("api_cat ~ meals + ell", design=api_design, hessian="optim")
    tidy = fit.tidy()
    assert list(tidy["term"]) == ["meals", "ell"] + [f"{a}|{b}" for a, b in
                                                   zip(API_LEVELS[:-1], API_LEVELS[1:], strict=True)]
    tight = _r_rows(reference, "api", "tight", tidy["term"])
    assert sig6(tidy["estimate"], tight["estimate"])
    assert sig6(tidy["std_error"], tight["std_error"])
    assert fit.df_resid == 12
    # api_reference_output.txt: svyolr's defaults; BFGS leaves ell 6e-7 off the maximum
    est, se = R["dclus1 svyolr cut(api00) ~ meals+ell coef"][0], \
        R["dclus1 svyolr cut(api00) ~ meals+ell se"][0]
    assert np.allclose(tidy["estimate"], est, rtol=2e-6, atol=0)
    assert sig6(tidy["std_error"], se)
    analytic = fit_svyolr("api_cat ~ meals + ell", design=api_design).tidy()
    assert np.allclose(analytic["std_error"], se, rtol=1e-3, atol=0)


@pytest.mark.parametrize("at_least", ["A", "M"])
def test_ames_match_r(fit_optim, at_least):
    r = pd.read_csv(REFERENCE / "ordinal_ame_reference.csv")
    r = r[r["at_least"] == at_least].set_index("support_model")
    ame = fit_optim.ame("support_model", reference="tech_support_only", at_least=at_least)
    ame = ame.set_index("level")
    assert sorted(ame.index) == sorted(r.index)
    r = r.loc[ame.index]
    assert sig6(ame["estimate"], r["estimate"])
    assert sig6(ame["std_error"], r["std_error"])


def test_predicted_probabilities_are_consistent(fit_analytic):
    each = fit_analytic.predicted_probabilities("support_model")
    assert list(each["outcome"].unique()) == list("SAMR")
    totals = each.groupby("level", observed=True)["estimate"].sum()
    assert np.allclose(totals, 1.0, rtol=0, atol=1e-12)
    at_least = fit_analytic.predicted_probabilities("support_model", at_least="A")
    upper = each[each["outcome"] != "S"].groupby("level", observed=True)["estimate"].sum()
    assert np.allclose(at_least.set_index("level")["estimate"], upper.loc[at_least["level"]])
    ame = fit_analytic.ame("support_model", reference="tech_support_only", at_least="A")
    p = at_least.set_index("level")["estimate"]
    assert np.allclose(ame.set_index("level")["estimate"],
                       p.loc[ame["level"]].to_numpy() - p["tech_support_only"])
    # a probability that is 1 - P(S) has the SE of P(S)
    s = each[each["outcome"] == "S"].set_index("level")["std_error"]
    assert np.allclose(at_least.set_index("level")["std_error"], s.loc[at_least["level"]])


def test_contrast_of_two_coefficients(fit_analytic):
    a = 'C(support_model, Treatment("tech_support_only"))[T.coaching]'
    b = 'C(support_model, Treatment("tech_support_only"))[T.director]'
    c = fit_analytic.contrast({a: 1, b: -1}).iloc[0]
    v = fit_analytic.vcov
    assert np.isclose(c["estimate"], fit_analytic.coef[a] - fit_analytic.coef[b])
    assert np.isclose(c["std_error"] ** 2, v.loc[a, a] + v.loc[b, b] - 2 * v.loc[a, b])
    assert c["df"] == fit_analytic.df_resid


def test_unweighted_fit_matches_statsmodels_ordered_model():
    """Second source for the estimates: statsmodels' OrderedModel (same parametrisation,
    unweighted ML) on a simulated sample."""
    rng = np.random.default_rng(5)
    n = 800
    df = pd.DataFrame({"x": rng.normal(size=n), "z": rng.uniform(size=n),
                       "psu": np.arange(n), "w": 1.0})
    latent = 0.8 * df["x"] - 0.5 * df["z"] + rng.logistic(size=n)
    df["y"] = pd.Categorical.from_codes(np.digitize(latent, [-1.0, 0.3, 1.5]),
                                        categories=list("SAMR"), ordered=True)
    ours = fit_svyolr("y ~ x + z", design=SurveyDesign(df, weights="w", psu="psu"))
    sm_fit = OrderedModel(df["y"], df[["x", "z"]], distr="logit").fit(
        method="newton", disp=False, maxiter=100, tol=1e-12)
    assert sm_fit.mle_retvals["converged"]
    cuts = sm_fit.params.to_numpy()[2:]
    zeta = np.cumsum(np.concatenate([[cuts[0]], np.exp(cuts[1:])]))
    assert np.allclose(ours.beta, sm_fit.params.to_numpy()[:2], rtol=1e-8)
    assert np.allclose(ours.zeta, zeta, rtol=1e-8)
    assert np.isclose(ours.loglik, sm_fit.llf, rtol=1e-10)


def test_missing_outcome_rows_are_a_domain(design):
    data = design.data.copy()
    drop = data.index[::7]
    data.loc[drop, "samr_level"] = np.nan
    full = study_design(data)
    fit = fit_svyolr(FORMULA, design=full)
    assert not fit.used[drop].any()
    assert len(fit.design.data) == len(data)                   # the design is kept whole
    subset = fit_svyolr(FORMULA, design=study_design(data.loc[fit.used]))
    assert np.allclose(fit.coef, subset.coef, rtol=1e-10)


def test_study_helper_uses_m1_covariates(teachers):
    fit = fit_study_svyolr(teachers)
    assert fit.outcome == "samr_level" and fit.outcome_levels == list("SAMR")
    assert fit.n_coef == 23


def test_bundled_cleaner_reproduces_the_r_input(teachers):
    ours = model_data(teachers)[ORDINAL_COLUMNS].reset_index(drop=True)
    stored = pd.read_csv(REFERENCE / "ordinal_data.csv.gz", dtype={"district_id": str,
                                                                   "response_id": str})
    assert list(stored["response_id"]) == list(ours["response_id"])
    for col in ORDINAL_COLUMNS:
        a, b = ours[col], stored[col]
        if pd.api.types.is_numeric_dtype(b):
            assert np.allclose(a.astype(float), b, equal_nan=True, rtol=0, atol=0), col
        else:
            assert (a.astype(object).fillna("") == b.fillna("")).all(), col


def test_errors(api_design):
    data = api_design.data.assign(unordered=api_design.data["api_cat"].astype(str),
                                  two=np.where(api_design.data["api00"] > 650, "hi", "lo"))
    d = SurveyDesign(data, weights="pw", psu="dnum", fpc="fpc")
    with pytest.raises(OrdinalModelError, match="ordered"):
        fit_svyolr("unordered ~ meals", design=d)
    fit = fit_svyolr("unordered ~ meals", design=d, levels=API_LEVELS)   # levels given
    assert fit.zeta.index[0] == "(0,500]|(500,650]"
    with pytest.raises(OrdinalModelError, match="three or more"):
        fit_svyolr("two ~ meals", design=d, levels=["lo", "hi"])
    with pytest.raises(ValueError, match="hessian"):
        fit_svyolr("api_cat ~ meals", design=d, hessian="numeric")
    fit = fit_svyolr("unordered ~ meals + C(stype)", design=d, levels=API_LEVELS)
    with pytest.raises(KeyError, match="not a level"):
        fit.ame("stype", reference="E", at_least="Z")
    with pytest.raises(ValueError, match="is 1"):
        fit.ame("stype", reference="E", at_least="(0,500]")
    with pytest.raises(KeyError, match="not a variable"):
        fit.ame("sch.wide", reference="Yes", at_least="(500,650]")
    assert list(fit.ame("stype", reference="E", at_least="(500,650]")["level"]) == ["H", "M"]

"""Design-based GLMs and AMEs against R's survey package (stored numbers)."""

import re

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from helpers import M1_COLUMNS, REFERENCE
from test_design import API, R, sig6

from analysis.stats.design import SurveyDesign
from analysis.stats.models import fit_study_model, fit_svyglm, model_data
from analysis.study.codebook import load_codebook

cb = load_codebook()


def _r_term(term: str) -> str:
    """Our (patsy) term name -> R's coefficient name in m1_reference.csv."""
    m = re.fullmatch(r'C\((\w+), Treatment\("(\w+)"\)\)\[T\.(\w+)\]', term)
    if m:
        return f'relevel({m[1]}, "{m[2]}"){m[3]}'
    return {"Intercept": "(Intercept)", "np.log(enrollment)": "log(enrollment)",
            "I(tech_spend_pp / 100)": "I(tech_spend_pp/100)"}.get(term, term)


@pytest.fixture(scope="module")
def m1_data():
    df = pd.read_csv(REFERENCE / "m1_data.csv.gz", dtype={"district_id": str,
                                                          "response_id": str})
    return model_data(df.assign(support_model=df["support_model"].astype("category")))


@pytest.fixture(scope="module")
def m1_fit(m1_data):
    return fit_study_model(m1_data, "M1")


def test_m1_coefficients_and_ses_match_r_to_six_digits(m1_fit):
    r = pd.read_csv(REFERENCE / "m1_reference.csv").set_index("term")
    tidy = m1_fit.tidy().set_index("term")
    assert len(tidy) == len(r) == 24
    for term, row in tidy.iterrows():
        ref = r.loc[_r_term(term)]
        assert sig6(row["estimate"], ref["estimate"]), term
        assert sig6(row["std_error"], ref["std_error"]), term
        assert np.isclose(row["p_value"], ref["p_value"], rtol=1e-5), term
    assert m1_fit.df_resid == int(r["df_residual"].iloc[0])


def test_m1_ames_match_r(m1_fit):
    r = pd.read_csv(REFERENCE / "m1_ame_reference.csv").set_index("support_model")
    ame = m1_fit.ame("support_model", reference="tech_support_only").set_index("level")
    assert sorted(ame.index) == sorted(r.index)
    for model, row in ame.iterrows():
        assert sig6(row["estimate"], r.loc[model, "estimate"]), model
        assert sig6(row["std_error"], r.loc[model, "std_error"]), model


def test_ame_equals_difference_of_predicted_rates(m1_fit):
    rates = m1_fit.predicted_rates("support_model").set_index("level")["estimate"]
    ame = m1_fit.ame("support_model", reference="tech_support_only").set_index("level")
    for model, row in ame.iterrows():
        assert np.isclose(row["estimate"], rates[model] - rates["tech_support_only"])


def test_bundled_cleaner_reproduces_the_r_input(teachers):
    """The R numbers are for the bundled study as the package cleans it today."""
    ours = model_data(teachers)[M1_COLUMNS].reset_index(drop=True)
    stored = pd.read_csv(REFERENCE / "m1_data.csv.gz", dtype={"district_id": str,
                                                              "response_id": str})
    assert list(stored["response_id"]) == list(ours["response_id"])
    for col in M1_COLUMNS:
        a, b = ours[col], stored[col]
        if pd.api.types.is_numeric_dtype(b):
            assert np.allclose(a.astype(float), b, equal_nan=True, rtol=0, atol=0), col
        else:
            assert (a.astype(object).fillna("") == b.fillna("")).all(), col


@pytest.mark.parametrize("key,formula,family,design", [
    ("dstrat svyglm api00~ell+meals+mobility", "api00 ~ ell + meals + mobility", "gaussian",
     "dstrat"),
    ("dclus1 svyglm quasibinomial sch.wide~ell+meals", "sch_wide ~ ell + meals",
     "quasibinomial", "dclus1"),
])
def test_api_svyglm_matches_r(key, formula, family, design):
    if design == "dstrat":
        df = pd.read_csv(API / "apistrat.csv")
        d = SurveyDesign(df, weights="pw", strata="stype", fpc="fpc")
    else:
        df = pd.read_csv(API / "apiclus1.csv")
        df["sch_wide"] = (df["sch.wide"] == "Yes").astype(float)
        d = SurveyDesign(df, weights="pw", psu="dnum", fpc="fpc")
    fit = fit_svyglm(formula, design=d, family=family)
    assert sig6(fit.coef.to_numpy(), R[key + " coef"][0])
    assert sig6(np.sqrt(np.diag(fit.vcov)), R[key + " se"][0])


def test_irls_agrees_with_statsmodels_glm(m1_fit):
    d = m1_fit.design.data.loc[m1_fit.used]
    g = sm.GLM(d["non_substitutive"].to_numpy(),
               np.asarray(__import__("patsy").build_design_matrices(
                   [m1_fit.design_info], d)[0]),
               family=sm.families.Binomial(), var_weights=d["weight"].to_numpy()).fit(tol=1e-12)
    assert np.allclose(g.params, m1_fit.coef.to_numpy(), rtol=1e-7)


def test_other_support_model_is_left_out_as_incomplete(teachers):
    fit = fit_study_model(teachers)
    used = fit.design.data.loc[fit.used]
    assert set(used["support_model"].astype(str)) == set(cb.support_model_codes())
    assert fit.n == len(used) < len(teachers)


def test_contrast_of_two_coefficients(m1_fit):
    a = 'C(support_model, Treatment("tech_support_only"))[T.coaching]'
    b = 'C(support_model, Treatment("tech_support_only"))[T.director]'
    c = m1_fit.contrast({a: 1, b: -1})
    v = m1_fit.vcov
    assert np.isclose(c["estimate"].iloc[0], m1_fit.coef[a] - m1_fit.coef[b])
    assert np.isclose(c["std_error"].iloc[0] ** 2, v.loc[a, a] + v.loc[b, b] - 2 * v.loc[a, b])


def test_other_outcome_and_moderation_models_match_r(m1_data):
    """M2-M8 of hypotheses.yaml (tests/reference/models_reference.csv, m1_reference.R)."""
    from analysis.stats.hypotheses import fit_models

    data = m1_data.copy()
    data["position_cut"] = pd.Categorical(data["position_cut"],
                                          categories=["yes", "no", "not_sure"])
    ref_all = pd.read_csv(REFERENCE / "models_reference.csv")
    names = ["M2", "M3", "M4", "M5", "M6", "M7", "M8"]
    fits = fit_models(data, names)
    for name in names:
        r = ref_all[ref_all["model"] == name].copy()
        r["term"] = r["term"].str.replace("'", '"')
        r = r.set_index("term")
        tidy = fits[name].tidy().set_index("term")
        assert len(tidy) == len(r), name
        for term, row in tidy.iterrows():
            ref = r.loc[_r_term(term)]
            assert sig6(row["estimate"], ref["estimate"]), (name, term)
            assert sig6(row["std_error"], ref["std_error"]), (name, term)
        assert fits[name].df_resid == int(r["df_residual"].iloc[0])


def test_pairwise_contrasts_are_differences_of_rates_with_holm(m1_fit):
    pw = m1_fit.pairwise("support_model")
    assert len(pw) == 15
    rates = m1_fit.predicted_rates("support_model").set_index("level")["estimate"]
    for r in pw.itertuples():
        assert np.isclose(r.estimate, rates[r.level_a] - rates[r.level_b])
    assert (pw["p_adjusted"] >= pw["p_value"] - 1e-15).all()
    from statsmodels.stats.multitest import multipletests
    assert np.allclose(pw["p_adjusted"], multipletests(pw["p_value"], method="holm")[1])


def test_margins_variance_of_a_contrast_equals_ame_se(m1_fit):
    ame = m1_fit.ame("support_model", reference="tech_support_only").set_index("level")
    c = m1_fit.combine([{"support_model": "coaching"}, {"support_model": "tech_support_only"}],
                       [[1, -1]])
    assert np.isclose(c["std_error"].iloc[0], ame.loc["coaching", "std_error"], rtol=1e-12)

"""Cluster-robust GLMs against R's sandwich and clubSandwich (stored numbers).

References: tests/reference/robust_reference.R (R 4.2.2, sandwich 3.0.2,
clubSandwich 0.5.8) fitted M1's formula to m1_data.csv.gz, clustered by district:
CR1 = sandwich::vcovCL(type = "HC1"), CR2 = clubSandwich::vcovCR(type = "CR2") with
coef_test / linear_contrast Satterthwaite degrees of freedom. Every number agrees
to six significant digits (in practice to about 1e-12: the same algorithm).
Second sources: statsmodels' cluster-robust OLS (the same CR1 small-sample factor)
and HC2 (CR2 with one observation per cluster is HC2).
"""

import re

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from helpers import REFERENCE
from test_design import sig6

from analysis.stats.models import model_data
from analysis.stats.robust import fit_glm_cluster
from analysis.study.codebook import load_codebook

M1 = load_codebook().model_formula("M1")
FITS = {"unweighted": (None, "binomial"), "weighted": ("weight", "quasibinomial"),
        "gaussian_unweighted": (None, "gaussian"), "gaussian_weighted": ("weight", "gaussian")}


def _r_term(term: str) -> str:
    """Our (patsy) term name -> R's coefficient name."""
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
def fits(m1_data):
    out = {}
    for name, (weights, family) in FITS.items():
        out[name, "CR2"] = fit_glm_cluster(M1, m1_data, cluster="district_id",
                                           weights=weights, family=family, vcov="CR2")
        out[name, "CR1"] = out[name, "CR2"].with_vcov("CR1")
    return out


@pytest.fixture(scope="module")
def reference():
    return pd.read_csv(REFERENCE / "robust_reference.csv")


@pytest.mark.parametrize("name", list(FITS))
def test_coefficients_and_standard_errors_match_r(fits, reference, name):
    r = reference[reference["fit"] == name].set_index("term")
    cr1 = fits[name, "CR1"].tidy()
    cr2 = fits[name, "CR2"].tidy()
    assert len(cr1) == len(r) == 24
    assert sorted(cr1["term"].map(_r_term)) == sorted(r.index)
    r = r.loc[cr1["term"].map(_r_term)]
    assert sig6(cr1["estimate"], r["estimate"])
    assert sig6(cr2["estimate"], r["estimate"])
    assert sig6(cr1["std_error"], r["se_cr1"])
    assert sig6(cr2["std_error"], r["se_cr2"])
    assert sig6(cr2["df"], r["df_cr2"])
    assert (cr1["df"] == r["clusters"].iloc[0] - 1).all()          # CR1: G - 1
    assert (cr1["n"] == r["n"].iloc[0]).all()
    assert fits[name, "CR1"].n_clusters == r["clusters"].iloc[0]


@pytest.mark.parametrize("name", list(FITS))
def test_ames_match_r(fits, name):
    r = pd.read_csv(REFERENCE / "robust_ame_reference.csv")
    r = r[r["fit"] == name].set_index("support_model")
    for vcov, se_col in (("CR1", "se_cr1"), ("CR2", "se_cr2")):
        ame = fits[name, vcov].ame("support_model", reference="tech_support_only")
        ame = ame.set_index("level").loc[r.index]
        assert sig6(ame["estimate"], r["estimate"])
        assert sig6(ame["std_error"], r[se_col])
        if vcov == "CR2":
            assert sig6(ame["df"], r["df_cr2"])


def test_cr2_is_larger_than_cr1_here_and_df_below_clusters(fits):
    """Bias reduction inflates the SEs of district-level terms; Satterthwaite df sit
    far below G - 1 for the support models (few districts per model)."""
    cr1 = fits["unweighted", "CR1"].tidy().set_index("term")
    cr2 = fits["unweighted", "CR2"].tidy().set_index("term")
    support = [t for t in cr2.index if t.startswith("C(support_model")]
    assert (cr2.loc[support, "std_error"] > cr1.loc[support, "std_error"]).all()
    assert (cr2.loc[support, "df"] < fits["unweighted", "CR1"].n_clusters - 1).all()


def test_ame_is_difference_of_predicted_rates(fits):
    fit = fits["weighted", "CR2"]
    rates = fit.predicted_rates("support_model").set_index("level")["estimate"]
    ame = fit.ame("support_model", reference="tech_support_only").set_index("level")
    for model, row in ame.iterrows():
        assert np.isclose(row["estimate"], rates[model] - rates["tech_support_only"],
                          rtol=1e-12)


def test_contrast_uses_the_robust_covariance(fits):
    fit = fits["unweighted", "CR2"]
    a = 'C(support_model, Treatment("tech_support_only"))[T.coaching]'
    b = 'C(support_model, Treatment("tech_support_only"))[T.director]'
    c = fit.contrast({a: 1, b: -1})
    v = fit.vcov
    assert np.isclose(c["std_error"].iloc[0] ** 2, v.loc[a, a] + v.loc[b, b] - 2 * v.loc[a, b])
    # a single-coefficient contrast has that coefficient's Satterthwaite df
    assert np.isclose(fit.contrast({a: 1})["df"].iloc[0],
                      fit.tidy().set_index("term").loc[a, "df"], rtol=1e-10)


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(11)
    n = 400
    df = pd.DataFrame({"g": rng.integers(0, 40, n), "x": rng.normal(size=n),
                       "z": rng.uniform(size=n)})
    df["y"] = 1 + 0.5 * df["x"] - df["z"] + rng.normal(size=n) + 0.5 * rng.normal(size=40)[df["g"]]
    return df


def test_cr1_matches_statsmodels_cluster_ols(small):
    fit = fit_glm_cluster("y ~ x + z", small, cluster="g", family="gaussian", vcov="CR1")
    ols = sm.OLS(small["y"], sm.add_constant(small[["x", "z"]])).fit(
        cov_type="cluster", cov_kwds={"groups": small["g"]})
    assert np.allclose(fit.coef.to_numpy(), ols.params.to_numpy(), rtol=1e-10)
    assert np.allclose(fit.tidy()["std_error"], ols.bse.to_numpy(), rtol=1e-10)


def test_cr2_with_singleton_clusters_is_hc2(small):
    data = small.assign(row=np.arange(len(small)))
    fit = fit_glm_cluster("y ~ x + z", data, cluster="row", family="gaussian", vcov="CR2")
    ols = sm.OLS(small["y"], sm.add_constant(small[["x", "z"]])).fit(cov_type="HC2")
    assert np.allclose(fit.tidy()["std_error"], ols.bse.to_numpy(), rtol=1e-10)


def test_rows_with_missing_cluster_or_weight_are_left_out(small):
    data = small.assign(w=1.0)
    data.loc[:9, "g"] = np.nan
    data.loc[10:14, "w"] = np.nan
    fit = fit_glm_cluster("y ~ x + z", data, cluster="g", weights="w", family="gaussian")
    assert fit.n == len(small) - 15
    ref = fit_glm_cluster("y ~ x + z", small.iloc[15:], cluster="g", family="gaussian")
    assert np.allclose(fit.tidy()["std_error"], ref.tidy()["std_error"], rtol=1e-12)


def test_with_vcov_equals_a_refit(small):
    cr2 = fit_glm_cluster("y ~ x + z", small, cluster="g", family="gaussian", vcov="CR2")
    cr1 = fit_glm_cluster("y ~ x + z", small, cluster="g", family="gaussian", vcov="CR1")
    assert np.allclose(cr2.with_vcov("CR1").vcov, cr1.vcov, rtol=1e-14)
    assert np.allclose(cr1.with_vcov("CR2").tidy()["df"], cr2.tidy()["df"], rtol=1e-14)


def test_weights_scale_free(small):
    a = fit_glm_cluster("y ~ x + z", small.assign(w=2.0), cluster="g", weights="w",
                        family="gaussian", vcov="CR2").tidy()
    b = fit_glm_cluster("y ~ x + z", small, cluster="g", family="gaussian", vcov="CR2").tidy()
    assert np.allclose(a[["estimate", "std_error", "df"]], b[["estimate", "std_error", "df"]],
                       rtol=1e-9)


def test_errors(small):
    with pytest.raises(ValueError, match="vcov"):
        fit_glm_cluster("y ~ x", small, cluster="g", family="gaussian", vcov="HC3")
    with pytest.raises(ValueError, match="two clusters"):
        fit_glm_cluster("y ~ x", small.assign(g=1), cluster="g", family="gaussian")
    with pytest.raises(ValueError, match="rank"):
        fit_glm_cluster("y ~ x + I(2 * x)", small, cluster="g", family="gaussian")
    fit = fit_glm_cluster("y ~ x + C(k)", small.assign(k=(small["g"] % 3).astype(str)),
                          cluster="g", family="gaussian")
    with pytest.raises(KeyError, match="reference"):
        fit.ame("k", reference="9")

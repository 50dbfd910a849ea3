"""SurveyDesign against R's survey package on the api data (tests/reference/api)."""

import numpy as np
import pandas as pd
import pytest
from helpers import REFERENCE

from analysis.stats.design import DesignError, SurveyDesign

API = REFERENCE / "api"


def r_reference() -> dict[str, list[list[float]]]:
    """api_reference_output.txt: name -> [estimates, SEs] (R survey 4.1.1)."""
    out = {}
    for line in (API / "api_reference_output.txt").read_text().splitlines():
        parts = line.split("\t")
        if len(parts) < 2 or not parts[1].strip():
            continue
        out[parts[0].strip()] = [[float(x) for x in p.split()] for p in parts[1:] if p.strip()]
    return out


R = r_reference()


def sig6(a, b):
    """Agreement to 6 significant digits."""
    return np.allclose(a, b, rtol=5e-7, atol=0)


@pytest.fixture(scope="module")
def apistrat():
    return pd.read_csv(API / "apistrat.csv")


@pytest.fixture(scope="module")
def apiclus1():
    return pd.read_csv(API / "apiclus1.csv")


def dstrat(df):
    return SurveyDesign(df, weights="pw", strata="stype", fpc="fpc")


def dclus1(df):
    return SurveyDesign(df, weights="pw", psu="dnum", fpc="fpc")


@pytest.mark.parametrize("design,stat,column,key", [
    ("dstrat", "mean", "api00", "dstrat svymean api00"),
    ("dstrat", "total", "enroll", "dstrat svytotal enroll"),
    ("dclus1", "mean", "api00", "dclus1 svymean api00"),
    ("dclus1", "total", "enroll", "dclus1 svytotal enroll"),
])
def test_means_and_totals_match_r(apistrat, apiclus1, design, stat, column, key):
    d = dstrat(apistrat) if design == "dstrat" else dclus1(apiclus1)
    res = getattr(d, stat)(column)
    est, se = R[key]
    assert sig6(res["estimate"].iloc[0], est[0])
    assert sig6(res["std_error"].iloc[0], se[0])


def test_published_values(apistrat, apiclus1):
    """Second source: the values printed in the survey package's documentation."""
    m = dclus1(apiclus1).mean("api00")
    assert round(m["estimate"].iloc[0], 2) == 644.17
    assert round(m["std_error"].iloc[0], 3) == 23.542
    t = dclus1(apiclus1).total("enroll")
    assert round(t["estimate"].iloc[0]) == 3404940
    assert round(t["std_error"].iloc[0]) == 932235
    s = dstrat(apistrat).mean("api00")
    assert round(s["estimate"].iloc[0], 2) == 662.29
    assert round(s["std_error"].iloc[0], 4) == 9.4089


def test_degrees_of_freedom(apistrat, apiclus1):
    assert dclus1(apiclus1).degrees_of_freedom == 15 - 1        # 15 districts, 1 stratum
    assert dstrat(apistrat).degrees_of_freedom == 200 - 3


def test_fpc_as_fraction_equals_fpc_as_count(apiclus1):
    df = apiclus1.copy()
    df["f"] = 15 / df["fpc"]
    a = SurveyDesign(df, weights="pw", psu="dnum", fpc="fpc").mean("api00")
    b = SurveyDesign(df, weights="pw", psu="dnum", fpc="f", fpc_type="fraction").mean("api00")
    assert np.isclose(a["std_error"].iloc[0], b["std_error"].iloc[0], rtol=1e-12)


def test_fpc_confusion_is_an_error_not_a_wrong_answer(apiclus1):
    df = apiclus1.copy()
    df["f"] = 15 / df["fpc"]
    with pytest.raises(DesignError, match="fraction"):
        SurveyDesign(df, weights="pw", psu="dnum", fpc="f")        # fractions declared as counts


def test_without_fpc_the_se_is_larger(apiclus1):
    with_fpc = dclus1(apiclus1).mean("api00")["std_error"].iloc[0]
    without = SurveyDesign(apiclus1, weights="pw", psu="dnum").mean("api00")["std_error"].iloc[0]
    assert without > with_fpc
    # closed form: the FPC factor is sqrt(1 - 15/757)
    assert np.isclose(with_fpc / without, np.sqrt(1 - 15 / 757), rtol=1e-12)


def _lonely():
    return pd.DataFrame({"y": [1.0, 2.0, 3.0, 4.0, 10.0], "w": [1.0] * 5,
                         "h": ["a", "a", "b", "b", "c"], "psu": [1, 2, 3, 4, 5]})


def test_lonely_psu_fails_by_default():
    with pytest.raises(DesignError, match="only one PSU"):
        SurveyDesign(_lonely(), weights="w", strata="h", psu="psu").mean("y")


def test_lonely_psu_policies():
    df = _lonely()
    cert = SurveyDesign(df, weights="w", strata="h", psu="psu", lonely_psu="certainty")
    # certainty: stratum c contributes nothing; by hand: strata a, b each (n/(n-1)) sum sq
    infl = (df["y"] - df["y"].mean()) / 5
    by_hand = sum(2 * ((infl[i] - infl[j]) / 2) ** 2 * 2 for i, j in ((0, 1), (2, 3)))
    assert np.isclose(cert.variance(infl.to_numpy())[0, 0], by_hand)
    avg = SurveyDesign(df, weights="w", strata="h", psu="psu", lonely_psu="average")
    assert np.isclose(avg.variance(infl.to_numpy())[0, 0], by_hand * 3 / 2)
    adj = SurveyDesign(df, weights="w", strata="h", psu="psu", lonely_psu="adjust")
    assert adj.variance(infl.to_numpy())[0, 0] > by_hand


def test_simple_random_sample_closed_form():
    rng = np.random.default_rng(1)
    y = rng.normal(size=50)
    d = SurveyDesign(pd.DataFrame({"y": y, "w": 1.0}), weights="w")
    res = d.mean("y")
    assert np.isclose(res["std_error"].iloc[0], y.std(ddof=1) / np.sqrt(50))
    q = __import__("scipy").stats.t.ppf(0.975, 49)
    assert np.isclose(res["ci_high"].iloc[0] - res["estimate"].iloc[0], q * y.std(ddof=1) / 50**.5)


# ---------------------------------------------------------------------------
# Against tests/reference/design_reference.csv (R survey 4.1.1, design_reference.R)
# ---------------------------------------------------------------------------
REF = pd.read_csv(REFERENCE / "design_reference.csv")
POP_TYPES = {"E": 4421, "H": 755, "M": 1018}
POP_SCHWIDE = {"No": 1072, "Yes": 5122}


def ref(name):
    rows = REF[REF["name"] == name]
    assert len(rows), name
    return rows


@pytest.fixture(scope="module")
def apiclus2():
    return pd.read_csv(API / "apiclus2.csv")


@pytest.fixture(scope="module")
def paired(apistrat):
    p = apistrat.sort_values(["stype", "snum"]).reset_index(drop=True)
    p["pair"] = np.repeat(np.arange(100), 2)
    return p


def _check(result: pd.DataFrame, name: str, *, rtol=5e-7, extra=None):
    r = ref(name)
    assert sig6(result["estimate"].to_numpy(), r["estimate"].to_numpy())
    assert np.allclose(result["std_error"].to_numpy(), r["std_error"].to_numpy(), rtol=rtol,
                       atol=0), (result["std_error"].to_numpy(), r["std_error"].to_numpy())
    if extra is not None:
        assert np.allclose(result[extra].to_numpy(), r["extra"].to_numpy(), rtol=rtol)


def test_two_stage_design_matches_r(apiclus2):
    d = SurveyDesign(apiclus2, psu="dnum", ssu="snum", fpc="fpc1", fpc2="fpc2")
    assert np.allclose(d.w, apiclus2["pw"], rtol=1e-9)      # weights from the FPCs
    _check(d.mean("api00"), "dclus2 mean api00")
    _check(d.total("enroll"), "dclus2 total enroll")         # 6 missing: a domain, as na.rm


def test_jk1_matches_r_with_fpc(apiclus1):
    jk = dclus1(apiclus1).replicate("JK1")
    assert jk.n_replicates == 15
    _check(jk.mean("api00"), "dclus1 JK1 mean api00")
    _check(jk.total("enroll"), "dclus1 JK1 total enroll")


def test_jkn_matches_r(apistrat):
    _check(dstrat(apistrat).replicate("JKn").mean("api00"), "dstrat JKn mean api00")


@pytest.mark.parametrize("kind", ["BRR", "Fay"])
def test_brr_and_fay_totals_match_r(paired, kind):
    d = SurveyDesign(paired, weights="pw", strata="pair")
    rep = d.replicate(kind, fay_rho=0.5)
    _check(rep.total("enroll"), f"paired {kind} total enroll")
    # for a total, fully balanced BRR equals the Taylor variance
    _check(d.total("enroll"), "paired Taylor total enroll")


def test_poststratification_matches_r(apiclus1):
    ps = dclus1(apiclus1).poststratify("stype", POP_TYPES)
    _check(ps.mean("api00"), "dclus1 poststratify mean api00")
    _check(ps.total("enroll"), "dclus1 poststratify total enroll")
    assert np.isclose(ps.w.sum(), 6194)


def test_raking_matches_r(apiclus1):
    df = apiclus1.rename(columns={"sch.wide": "sch_wide"})
    rk = SurveyDesign(df, weights="pw", psu="dnum", fpc="fpc").rake(
        {"stype": POP_TYPES, "sch_wide": POP_SCHWIDE})
    _check(rk.mean("api00"), "dclus1 rake mean api00", rtol=1e-6)
    _check(rk.total("enroll"), "dclus1 rake total enroll", rtol=1e-6)


def test_calibration_matches_r(apiclus1):
    cal = dclus1(apiclus1).calibrate("C(stype) + api99", {
        "Intercept": 6194, "C(stype)[T.H]": 755, "C(stype)[T.M]": 1018, "api99": 3914069})
    _check(cal.mean("api00"), "dclus1 calibrate mean api00")
    _check(cal.total("enroll"), "dclus1 calibrate total enroll")


def test_domains_match_svyby(apiclus1):
    d = dclus1(apiclus1)
    _check(d.mean("api00", by="stype", deff=True), "dclus1 svyby mean api00 by stype",
           extra="deff")
    _check(d.total("enroll", by="stype"), "dclus1 svyby total enroll by stype")
    # the published svyby domain means of ell (api_reference_output.txt)
    ell = d.mean("ell", by="stype")
    est, se = R["dclus1 svyby ell by stype"]
    assert sig6(ell["estimate"].to_numpy(), est) and sig6(ell["std_error"].to_numpy(), se)


def test_domain_is_not_a_subset(apiclus1):
    """Subsetting the data gives a different (wrong) SE than the domain estimate."""
    d = dclus1(apiclus1)
    domain = d.mean("api00", by="stype").set_index("stype").loc["H", "std_error"]
    sub = apiclus1[apiclus1["stype"] == "H"]
    naive = SurveyDesign(sub, weights="pw", psu="dnum", fpc="fpc", lonely_psu="adjust")
    assert not np.isclose(naive.mean("api00")["std_error"].iloc[0], domain, rtol=1e-3)


def test_deff_proportion_ratio_quantile(apiclus1, apistrat):
    d = dclus1(apiclus1)
    _check(d.mean("api00", deff=True), "dclus1 mean api00 deff", extra="deff")
    _check(d.proportion("stype", deff=True), "dclus1 proportion stype", extra="deff")
    _check(d.total("enroll", deff=True), "dclus1 total enroll deff", extra="deff")
    _check(d.ratio("api.stu", "enroll"), "dclus1 ratio api.stu/enroll")
    q = d.quantile("api00", 0.5)
    _check(q, "dclus1 quantile api00 0.5", extra="ci_low")
    assert q["ci_high"].iloc[0] == 714                     # published: 561 to 714
    _check(dstrat(apistrat).quantile("api00", 0.25), "dstrat quantile api00 0.25",
           extra="ci_low")


def test_rao_scott_matches_r(apiclus1):
    t = dclus1(apiclus1).chisq_test("sch.wide", "stype")
    r = ref("dclus1 chisq sch.wide stype")
    assert sig6(t["statistic"].iloc[0], r["estimate"].iloc[0])
    assert sig6(t["p_value"].iloc[0], r["std_error"].iloc[0])
    assert sig6([t["ndf"].iloc[0], t["ddf"].iloc[0]], r["extra"].to_numpy())


def test_wald_test_matches_regtermtest(apistrat):
    from analysis.stats.design import wald_test
    from analysis.stats.models import fit_svyglm

    fit = fit_svyglm("api00 ~ ell + meals + mobility", design=dstrat(apistrat),
                     family="gaussian")
    L = np.zeros((2, 4))
    L[0, 1] = L[1, 2] = 1
    t = wald_test(fit.coef.to_numpy(), fit.vcov.to_numpy(), L, df=fit.df_resid)
    assert fit.wald_test(["ell", "meals"]).equals(t)
    r = ref("dstrat regTermTest ell+meals")
    assert sig6(t["statistic"].iloc[0], r["estimate"].iloc[0])
    assert np.isclose(t["p_value"].iloc[0], r["std_error"].iloc[0], rtol=1e-5)
    assert [t["ndf"].iloc[0], t["ddf"].iloc[0]] == list(r["extra"])


# -- the bundled study, computed by R --------------------------------------------
@pytest.fixture(scope="module")
def study():
    df = pd.read_csv(REFERENCE / "design_data.csv.gz", dtype={"district_id": str,
                                                              "school_id": str})
    return SurveyDesign(df, weights="weight", strata="stratum", psu="district_id",
                        fpc="fpc_districts")


def test_study_domain_means_match_r(study):
    order = ["pay_and_pray", "tech_support_only", "vanguard", "consultant", "director",
             "coaching", "other"]
    df = study.data.assign(support_model=pd.Categorical(study.data["support_model"],
                                                        categories=order))
    d = SurveyDesign(df, weights="weight", strata="stratum", psu="district_id",
                     fpc="fpc_districts")
    _check(d.mean("non_substitutive", by="support_model", deff=True),
           "study mean non_substitutive by support_model", extra="deff")


def test_study_total_deff_chisq_and_jkn_match_r(study):
    _check(study.total("non_substitutive"), "study total non_substitutive")
    _check(study.mean("frl_pct", deff=True), "study mean frl_pct", extra="deff")
    t = study.chisq_test("support_model", "samr_level")
    r = ref("study chisq support_model samr_level")
    assert sig6(t["statistic"].iloc[0], r["estimate"].iloc[0])
    assert sig6([t["ndf"].iloc[0], t["ddf"].iloc[0]], r["extra"].to_numpy())
    _check(study.replicate("JKn").mean("non_substitutive"), "study JKn mean non_substitutive")


def test_bundled_cleaner_reproduces_design_data(teachers):
    from helpers import DESIGN_COLUMNS

    stored = pd.read_csv(REFERENCE / "design_data.csv.gz", dtype={"district_id": str,
                                                                  "school_id": str})
    ours = teachers[DESIGN_COLUMNS].reset_index(drop=True)
    assert list(ours["response_id"]) == list(stored["response_id"])
    assert np.array_equal(ours["weight"].to_numpy(), stored["weight"].to_numpy())
    assert (ours["samr_level"].astype(str) == stored["samr_level"].astype(str)).all()


# -- replicate weights supplied with the data, and the bootstrap -----------------------
def test_supplied_replicate_weights_equal_created_ones(apiclus1):
    jk = dclus1(apiclus1).replicate("JK1")
    psu = pd.factorize(apiclus1["dnum"], sort=True)[0]
    cols = {f"rw{r}": apiclus1["pw"] * jk._mult[psu, r] for r in range(jk.n_replicates)}
    df = pd.concat([apiclus1, pd.DataFrame(cols)], axis=1)
    from analysis.stats.design import ReplicateDesign

    supplied = ReplicateDesign(df, weights="pw", replicate_weights=list(cols), type="JK1",
                               scale=jk.scale)
    a, b = supplied.mean("api00"), jk.mean("api00")
    assert np.isclose(a["std_error"].iloc[0], b["std_error"].iloc[0], rtol=1e-12)


def test_rao_wu_bootstrap_agrees_with_taylor(apistrat):
    d = SurveyDesign(apistrat, weights="pw", strata="stype")
    boot = d.replicate("bootstrap", replicates=4000, seed=1)
    ratio = boot.mean("api00")["std_error"].iloc[0] / d.mean("api00")["std_error"].iloc[0]
    assert 0.93 < ratio < 1.07


def test_bootstrap_is_reproducible_with_a_seed(apistrat):
    d = SurveyDesign(apistrat, weights="pw", strata="stype")
    a = d.replicate("bootstrap", replicates=50, seed=3).mean("api00")
    b = d.replicate("bootstrap", replicates=50, seed=3).mean("api00")
    assert a.equals(b)


@pytest.mark.parametrize("policy", ["certainty", "remove", "adjust", "average"])
def test_lonely_psu_policies_match_r(apistrat, policy):
    h = apistrat.index[apistrat["stype"] == "H"]
    lonely = apistrat.drop(index=h[1:])
    d = SurveyDesign(lonely, weights="pw", strata="stype", fpc="fpc", lonely_psu=policy)
    _check(d.mean("api00"), f"lonely {policy} mean api00")

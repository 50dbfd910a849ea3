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

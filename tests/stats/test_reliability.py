"""Scale reliability against R's psych and factanal, pingouin's documented example and
closed forms.

References: tests/reference/reliability_reference.R (R 4.2.2, psych 2.2.9) on the
agreeableness and conscientiousness items of psych's bfi data
(reliability_data.csv.gz), a 6-row toy example and a Heywood case. Alpha and its
Feldt CI are closed-form and agree to 1e-12; the ML one-factor solution agrees
with factanal (run with a tight optimiser tolerance) to about 1e-9, so loadings,
uniquenesses and omega are compared to six significant digits.
"""

import numpy as np
import pandas as pd
import pytest
from helpers import REFERENCE
from test_design import sig6

from analysis.stats.reliability import (
    RELIABILITY_COLUMNS,
    cronbach_alpha,
    feldt_ci,
    mcdonald_omega,
    one_factor_loadings,
    one_factor_ml,
    scale_reliability,
    study_reliability,
)
from analysis.study.codebook import load_codebook

BFI = {"agreeableness": ([f"A{i}" for i in range(1, 6)], ["A1"]),
       "conscientiousness": ([f"C{i}" for i in range(1, 6)], ["C4", "C5"])}
TOY = pd.DataFrame({"a": [1, 2, 3, 4, 5, 2], "b": [2, 2, 3, 5, 5, 1], "c": [1, 3, 3, 4, 4, 2]})

#: pingouin's documented example (pingouin.cronbach_alpha, data set "cronbach_alpha",
#: from real-statistics.com): 15 subjects x 10 items, alpha 0.591719, 95% CI
#: [0.195, 0.840], which pingouin checks against R's psych::alpha.
PINGOUIN_ITEMS = np.array([
    [3, 5, 7, 2, 6, 1, 4, 2, 6, 5, 4, 4, 5, 6, 4],
    [2, 4, 3, 4, 5, 2, 3, 4, 5, 4, 3, 2, 5, 5, 3],
    [4, 6, 5, 3, 6, 3, 5, 4, 5, 6, 5, 3, 6, 5, 5],
    [1, 3, 5, 3, 5, 4, 3, 3, 5, 4, 2, 2, 2, 4, 5],
    [4, 5, 6, 2, 4, 2, 5, 7, 1, 3, 5, 5, 3, 2, 3],
    [5, 1, 4, 2, 4, 5, 2, 2, 6, 5, 3, 3, 3, 2, 1],
    [1, 2, 3, 2, 4, 2, 1, 2, 5, 3, 2, 4, 2, 1, 3],
    [4, 5, 3, 6, 6, 3, 2, 4, 2, 1, 3, 2, 4, 4, 2],
    [3, 5, 6, 6, 7, 5, 4, 6, 3, 7, 4, 3, 4, 6, 3],
    [2, 5, 5, 3, 5, 2, 3, 5, 2, 2, 1, 4, 5, 5, 4],
]).T


@pytest.fixture(scope="module")
def bfi():
    return pd.read_csv(REFERENCE / "reliability_data.csv.gz")


@pytest.fixture(scope="module")
def reference():
    return pd.read_csv(REFERENCE / "reliability_reference.csv").set_index("scale")


@pytest.fixture(scope="module")
def loadings_reference():
    return pd.read_csv(REFERENCE / "reliability_loadings_reference.csv")


@pytest.mark.parametrize("scale", list(BFI))
def test_alpha_and_feldt_ci_match_psych(bfi, reference, scale):
    items, reverse = BFI[scale]
    r = reference.loc[scale]
    listwise = cronbach_alpha(bfi, items=items, reverse=reverse, points=6).iloc[0]
    assert listwise["n"] == r["n"]
    assert sig6(listwise["alpha"], r["alpha_listwise"])
    assert sig6(listwise["ci_low"], r["alpha_ci_low"])
    assert sig6(listwise["ci_high"], r["alpha_ci_high"])
    pairwise = cronbach_alpha(bfi, items=items, reverse=reverse, points=6,
                              nan_policy="pairwise").iloc[0]
    assert pairwise["n"] == r["n_rows"]
    assert sig6(pairwise["alpha"], r["alpha_pairwise"])
    assert sig6(pairwise["ci_low"], r["alpha_pairwise_ci_low"])
    assert sig6(pairwise["ci_high"], r["alpha_pairwise_ci_high"])


@pytest.mark.parametrize("scale", list(BFI))
def test_omega_and_loadings_match_factanal(bfi, reference, loadings_reference, scale):
    items, reverse = BFI[scale]
    r = reference.loc[scale]
    raw = mcdonald_omega(bfi, items=items, reverse=reverse, points=6, n_boot=200, seed=1)
    std = mcdonald_omega(bfi, items=items, reverse=reverse, points=6, n_boot=200, seed=1,
                         standardized=True)
    assert sig6(raw["omega"].iloc[0], r["omega"])
    assert sig6(std["omega"].iloc[0], r["omega_std"])
    load = one_factor_loadings(bfi, items=items, reverse=reverse, points=6)
    lr = loadings_reference[loadings_reference["scale"] == scale]
    assert list(load["item"]) == list(lr["item"])
    assert sig6(load["loading"], lr["loading"])
    assert sig6(load["uniqueness"], lr["uniqueness"])


def test_reverse_coding_matters(bfi, reference):
    items, _ = BFI["agreeableness"]
    unreversed = cronbach_alpha(bfi, items=items, points=6)["alpha"].iloc[0]
    assert unreversed < reference.loc["agreeableness", "alpha_listwise"] - 0.1


def test_toy_example_matches_r(reference, loadings_reference):
    r = reference.loc["toy"]
    a = cronbach_alpha(TOY, items=["a", "b", "c"]).iloc[0]
    assert sig6([a["alpha"], a["ci_low"], a["ci_high"]],
                [r["alpha_listwise"], r["alpha_ci_low"], r["alpha_ci_high"]])
    o = mcdonald_omega(TOY, items=["a", "b", "c"], n_boot=50, seed=0)
    assert sig6(o["omega"].iloc[0], r["omega"])
    lr = loadings_reference[loadings_reference["scale"] == "toy"]
    load = one_factor_loadings(TOY, items=["a", "b", "c"])
    assert sig6(load["loading"], lr["loading"])


def test_heywood_case_matches_factanal(loadings_reference):
    """The uniqueness stops at factanal's lower bound 0.005, the others are re-fitted."""
    R = np.array([[1, .8, .8, .3], [.8, 1, .5, .3], [.8, .5, 1, .3], [.3, .3, .3, 1]])
    load, psi = one_factor_ml(R)
    lr = loadings_reference[loadings_reference["scale"] == "heywood"]
    assert psi[0] == 0.005
    assert sig6(load, lr["loading"])
    assert sig6(psi, lr["uniqueness"])


def test_pingouin_documented_example():
    df = pd.DataFrame(PINGOUIN_ITEMS, columns=[f"Q{i}" for i in range(1, 11)])
    res = cronbach_alpha(df, items=list(df.columns)).iloc[0]
    assert round(res["alpha"], 6) == 0.591719
    assert (round(res["ci_low"], 3), round(res["ci_high"], 3)) == (0.195, 0.840)
    assert [round(v, 3) for v in feldt_ci(0.591719, 15, 10)] == [0.195, 0.840]


@pytest.mark.parametrize("k,r", [(3, 0.3), (5, 0.5), (10, 0.2)])
def test_parallel_items_closed_forms(k, r):
    """Alpha of k parallel items with correlation r is k r / (1 + (k - 1) r), and so is
    omega (equal loadings sqrt(r)): checked on data whose sample covariance is exactly
    the parallel structure."""
    rng = np.random.default_rng(k)
    z = rng.normal(size=(400, k))
    z = (z - z.mean(axis=0)) @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T
    target = np.full((k, k), r) + np.diag(np.full(k, 1 - r))
    x = z @ np.linalg.cholesky(target).T * 2.0 + 3.0         # covariance exactly 4 * target
    df = pd.DataFrame(x, columns=[f"i{j}" for j in range(k)])
    items = list(df.columns)
    expected = k * r / (1 + (k - 1) * r)
    assert np.isclose(cronbach_alpha(df, items=items)["alpha"].iloc[0], expected, rtol=1e-12)
    om = mcdonald_omega(df, items=items, n_boot=20, seed=0)["omega"].iloc[0]
    assert np.isclose(om, expected, rtol=1e-9)
    load, psi = one_factor_ml(target)
    assert np.allclose(load, np.sqrt(r), rtol=1e-9) and np.allclose(psi, 1 - r, rtol=1e-9)


def test_bootstrap_is_seeded_and_covers(bfi):
    items, reverse = BFI["conscientiousness"]
    a = mcdonald_omega(bfi, items=items, reverse=reverse, points=6, n_boot=300, seed=7)
    b = mcdonald_omega(bfi, items=items, reverse=reverse, points=6, n_boot=300, seed=7)
    c = mcdonald_omega(bfi, items=items, reverse=reverse, points=6, n_boot=300, seed=8)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)
    row = a.iloc[0]
    assert row["ci_low"] < row["omega"] < row["ci_high"]
    assert 0.01 < row["ci_high"] - row["ci_low"] < 0.1       # n = 2707: a narrow interval
    boot = cronbach_alpha(bfi, items=items, reverse=reverse, points=6, method="bootstrap",
                          n_boot=300, seed=7).iloc[0]
    feldt = cronbach_alpha(bfi, items=items, reverse=reverse, points=6).iloc[0]
    assert boot["alpha"] == feldt["alpha"]
    assert abs(boot["ci_low"] - feldt["ci_low"]) < 0.01
    assert abs(boot["ci_high"] - feldt["ci_high"]) < 0.01


def test_scale_reliability_table(bfi, reference):
    out = scale_reliability(bfi, scales={s: BFI[s][0] for s in BFI},
                            reverse=["A1", "C4", "C5"], points=6, n_boot=100, seed=1)
    assert list(out.columns) == RELIABILITY_COLUMNS
    assert list(out["scale"]) == list(BFI)
    assert sig6(out["alpha"], reference.loc[list(BFI), "alpha_listwise"])
    assert sig6(out["omega"], reference.loc[list(BFI), "omega"])
    assert list(out["flag"]) == [False, False]
    low = scale_reliability(bfi, scales={"a": BFI["agreeableness"][0]}, points=6,
                            n_boot=20, seed=1)         # A1 not reversed: alpha below .70
    assert low["flag"].tolist() == [True]


def test_study_reliability(teachers, processed_dir):
    districts = pd.read_parquet(processed_dir / "districts.parquet")
    out = study_reliability(teachers, districts, n_boot=100, seed=3)
    assert list(out["scale"]) == ["it_control", "vision", "support_quality", "self_efficacy"]
    assert list(out["n_items"]) == [3, 4, 4, 3]
    assert out.loc[0, "n"] == districts[["it_control_1", "it_control_2",
                                         "it_control_3"]].notna().all(axis=1).sum()
    assert out.loc[2, "n"] == teachers[[f"support_quality_{i}" for i in range(1, 5)]
                                       ].notna().all(axis=1).sum()
    # it_control_2 is reverse-coded as the codebook says
    assert load_codebook().reverse_items() == ["it_control_2"]
    manual = districts[["it_control_1", "it_control_2", "it_control_3"]].dropna().astype(float)
    manual["it_control_2"] = 6 - manual["it_control_2"]
    C = np.cov(manual.to_numpy(), rowvar=False)
    assert np.isclose(out.loc[0, "alpha"], 1.5 * (1 - np.trace(C) / C.sum()), rtol=1e-12)
    assert ((out["alpha_ci_low"] < out["alpha"]) & (out["alpha"] < out["alpha_ci_high"])).all()
    assert ((out["omega_ci_low"] < out["omega"]) & (out["omega"] < out["omega_ci_high"])).all()


def test_errors(bfi):
    with pytest.raises(KeyError, match="Z9"):
        cronbach_alpha(bfi, items=["A1", "Z9"])
    with pytest.raises(ValueError, match="two items"):
        cronbach_alpha(bfi, items=["A1"])
    with pytest.raises(ValueError, match="method"):
        cronbach_alpha(bfi, items=["A1", "A2"], method="exact")
    with pytest.raises(ValueError, match="nan_policy"):
        cronbach_alpha(bfi, items=["A1", "A2"], nan_policy="drop")

"""Weights: base and nonresponse-adjusted district weights, teacher weights, raking,
post-stratification, trimming and the weights report."""

import numpy as np
import pandas as pd
import pytest

from analysis.data.weights import (
    WeightingError,
    district_weights,
    poststratify_weights,
    rake_weights,
    teacher_weights,
    trim_weights,
    weights_report,
)


def _frame():
    return pd.DataFrame({
        "district_id": list("abcdefgh"), "stratum": ["s"] * 4 + ["t"] * 4,
        "sampled": [1, 1, 1, 0, 1, 1, 0, 0], "selection_prob": [0.75] * 4 + [0.5] * 4,
        "size": ["big", "small", "big", "small"] * 2})


def test_nonresponse_adjustment_within_strata_preserves_sampled_totals():
    out = district_weights(_frame(), responding=["a", "b", "e"])
    w = out.set_index("district_id")["district_weight"]
    # stratum s: 3 sampled x 4/3 = 4 spread over 2 responders; t: 2 x 2 over 1
    assert w.to_dict() == pytest.approx({"a": 2.0, "b": 2.0, "e": 4.0})
    assert out["base_weight"].tolist() == pytest.approx([4 / 3, 4 / 3, 2.0])


def test_nonresponse_weighting_class_can_differ_from_stratum():
    out = district_weights(_frame(), responding=["a", "b", "e", "f"], weighting_class="size")
    # class big: a, c, e sampled (4/3 + 4/3 + 2) over a, e
    w = out.set_index("district_id")["district_weight"]
    assert w["a"] + w["e"] == pytest.approx(4 / 3 + 4 / 3 + 2)


def test_teacher_weight_formula():
    t = pd.DataFrame({"school_id": ["x", "x", "y"], "district_weight": [2.0, 2.0, 3.0],
                      "n_teachers": [10, 10, 4]})
    assert teacher_weights(t).tolist() == [10.0, 10.0, 12.0]


def test_poststratify_hits_the_population_counts():
    df = pd.DataFrame({"g": ["a", "b", "b", "c"], "w": [1.0, 2.0, 3.0, 4.0]})
    w = poststratify_weights(df, weights="w", by="g", population={"a": 10, "b": 10, "c": 5})
    assert pd.Series(w).groupby(df["g"]).sum().to_dict() == pytest.approx(
        {"a": 10, "b": 10, "c": 5})
    with pytest.raises(WeightingError, match="no one"):
        poststratify_weights(df, weights="w", by="g", population={"a": 1, "b": 1, "c": 1,
                                                                  "d": 1})


def test_raking_converges_to_every_margin_and_reports_iterations():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.choice(list("xyz"), 500), "b": rng.choice(list("uv"), 500)})
    margins = {"a": {"x": 300, "y": 500, "z": 200}, "b": {"u": 600, "v": 400}}
    w, diag = rake_weights(df, weights=np.ones(500), margins=margins, tol=1e-12)
    for col, target in margins.items():
        got = pd.Series(w).groupby(df[col]).sum()
        assert got.to_dict() == pytest.approx(target, rel=1e-10)
    assert diag["max_relative_error"].iloc[-1] < 1e-12
    assert diag["max_relative_error"].is_monotonic_decreasing


def test_raking_reports_non_convergence():
    df = pd.DataFrame({"a": ["x", "x", "y"], "b": ["u", "u", "v"]})   # a and b coincide
    with pytest.raises(WeightingError, match="did not converge"):
        rake_weights(df, weights=np.ones(3), margins={"a": {"x": 1, "y": 9},
                                                       "b": {"u": 9, "v": 1}}, max_iter=20)


def test_trimming_caps_and_preserves_the_total():
    rng = np.random.default_rng(1)
    w = rng.lognormal(0, 1.2, 1000)
    cap = np.quantile(w, 0.95)
    t = trim_weights(w, upper=cap)
    assert t.max() <= cap * (1 + 1e-9)
    assert t.sum() == pytest.approx(w.sum(), rel=1e-12)


def test_weights_report_closed_form():
    df = pd.DataFrame({"w": [1.0, 1.0, 2.0, 4.0, 5.0, 5.0], "h": list("aaaabb")})
    r = weights_report(df, weights="w", by="h").set_index("h")
    # stratum b: equal weights -> no design effect
    assert r.loc["b", "deff_weighting"] == pytest.approx(1.0)
    assert r.loc["b", "kish_n_eff"] == pytest.approx(2.0)
    # stratum a: deff = 1 + CV^2 with the population SD
    w = np.array([1.0, 1.0, 2.0, 4.0])
    assert r.loc["a", "deff_weighting"] == pytest.approx(1 + (w.std() / w.mean()) ** 2)
    assert r.loc["a", "sum"] == 8.0

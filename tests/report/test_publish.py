"""results.json (the contract) and the headline figure."""

import json

import pandas as pd
import pytest
from helpers import REFERENCE

from analysis.report.publish import run_report

REQUIRED = {"schema_version", "provenance", "data", "models", "ame", "hypotheses"}


@pytest.fixture(scope="module")
def results(reports_dir):
    return json.loads((reports_dir / "results.json").read_text())


def test_results_contract(results):
    assert REQUIRED <= set(results)
    assert results["schema_version"] == 1
    prov = results["provenance"]
    assert {"package_version", "git_commit", "data_sha256", "python", "packages"} <= set(prov)
    assert set(prov["data_sha256"]) == {"teacher_survey.csv", "district_survey.xlsx",
                                        "frame_districts.csv", "frame_schools.csv"}
    assert {"pandas", "statsmodels", "numpy"} <= set(prov["packages"])
    data = results["data"]
    assert data["synthetic"] is True and data["n_teachers"] > 8000
    assert data["n_districts"] > 250 and data["n_schools"] > data["n_districts"]
    m1 = results["models"]["M1"]
    assert m1["family"] == "quasibinomial" and m1["variance"] in ("taylor", "cluster")
    assert {"term", "estimate", "std_error", "ci_low", "ci_high", "p_value"} <= set(
        m1["coefficients"][0])
    ame = results["ame"]["M1"]
    assert {a["support_model"] for a in ame} == {"pay_and_pray", "vanguard", "consultant",
                                                 "director", "coaching"}
    for a in ame:
        assert {"support_model", "estimate_pp", "ci_low_pp", "ci_high_pp", "p_value"} <= set(a)
        assert a["ci_low_pp"] < a["estimate_pp"] < a["ci_high_pp"]
    hyp = results["hypotheses"]
    assert {h["hypothesis"] for h in hyp} == {f"H{k}" for k in range(1, 9)}
    for h in hyp:
        assert {"id", "statement", "estimate", "ci_low", "ci_high", "p_value", "p_adjusted",
                "verdict"} <= set(h)
        assert h["verdict"] in ("supported", "not supported", "inconclusive")
    assert set(results["hypothesis_verdicts"]) == {f"H{k}" for k in range(1, 9)}
    assert {"M1", "M2", "M3", "M4"} <= set(results["models"]) and {"M1", "M4"} <= set(
        results["ame"])
    for model in results["models"].values():
        assert {"formula", "outcome", "family", "estimator", "n", "coefficients"} <= set(model)
    assert len(results["contrasts"]["M1"]) == 15
    assert {"M9", "M10", "M11", "M12"} <= set(results["models"])
    assert {"M9", "M10", "M11", "M12"} <= set(results["ame"])
    assert {(r["model"], r["level"]) for r in results["icc"]} == {
        ("M11", "district"), ("M11", "school"), ("M12", "district"), ("M12", "school")}
    assert {r["scale"] for r in results["reliability"]} == {"it_control", "vision",
                                                           "support_quality", "self_efficacy"}


def test_results_m1_numbers_are_rs(results):
    """The published coefficients are R's (6 significant digits)."""
    r = pd.read_csv(REFERENCE / "m1_reference.csv")
    ours = {c["term"]: c for c in results["models"]["M1"]["coefficients"]}
    r_est = sorted(r["estimate"])
    assert pytest.approx(r_est, rel=5e-7) == sorted(c["estimate"] for c in ours.values())
    r_ame = pd.read_csv(REFERENCE / "m1_ame_reference.csv").set_index("support_model")
    for a in results["ame"]["M1"]:
        assert a["estimate_pp"] == pytest.approx(100 * r_ame.loc[a["support_model"], "estimate"],
                                                 rel=5e-7)


def test_same_inputs_same_bytes(processed_dir, reports_dir, tmp_path):
    run_report(processed_dir, tmp_path)
    assert (tmp_path / "results.json").read_bytes() == (reports_dir / "results.json").read_bytes()
    for name in ("adjusted_rates_by_model.svg", "adjusted_rates_by_model.png",
                 "adjusted_rates_by_model.txt"):
        assert (tmp_path / "figures" / name).read_bytes() == \
            (reports_dir / "figures" / name).read_bytes(), name


def test_headline_figure(reports_dir):
    fig = reports_dir / "figures"
    svg = (fig / "adjusted_rates_by_model.svg").read_text()
    assert "SYNTHETIC DATA" in svg
    assert "1:1 Coaching" in svg and "n = " in svg
    alt = (fig / "adjusted_rates_by_model.txt").read_text()
    assert "synthetic" in alt and "not causal" in alt
    assert (fig / "adjusted_rates_by_model.png").stat().st_size > 10_000


def test_no_timestamps_in_results(reports_dir):
    text = (reports_dir / "results.json").read_text()
    assert "2026-" not in text and "T00:" not in text

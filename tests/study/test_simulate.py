"""The simulator: deterministic, documented, with the planted truth."""

import json
import re

import numpy as np
import pytest
from helpers import RAW

from analysis.study.codebook import load_codebook
from analysis.study.simulate import load_scenario, sha256_file, simulate_study, write_raw

cb = load_codebook()


def test_same_seed_same_bytes(tmp_path):
    for k in (1, 2):
        study = simulate_study("default", seed=7, n_districts=400, teacher_respondents=800)
        write_raw(study, tmp_path / str(k))
    for name in ("frame_districts.csv", "frame_schools.csv", "district_survey.xlsx",
                 "teacher_survey.csv", "truth.json", "README.md"):
        assert (tmp_path / "1" / name).read_bytes() == (tmp_path / "2" / name).read_bytes()


def test_different_seed_different_data():
    a = simulate_study("default", seed=1, n_districts=400, teacher_respondents=800)
    b = simulate_study("default", seed=2, n_districts=400, teacher_respondents=800)
    assert not a.frame_districts.equals(b.frame_districts)


def test_bundled_raw_data_is_what_the_simulator_writes(tmp_path):
    """`make data-raw` regenerates the committed files byte for byte."""
    readme = (RAW / "README.md").read_text()
    seed = int(re.search(r"--seed (\d+)", readme).group(1))
    scenario = re.search(r"--scenario (\w+)", readme).group(1)
    hashes = write_raw(simulate_study(scenario, seed=seed), tmp_path)
    for name, digest in hashes.items():
        assert sha256_file(RAW / name) == digest, name
        assert digest in readme
    assert (tmp_path / "README.md").read_text() == readme


def test_bundled_study_size_and_synthetic_label():
    truth = json.loads((RAW / "truth.json").read_text())
    assert truth["synthetic"] is True
    assert 250 <= truth["n_responding_districts"] <= 350
    readme = (RAW / "README.md").read_text()
    assert "SYNTHETIC" in readme and "synthetic" in readme


def test_default_truth_follows_the_blog_grades():
    truth = simulate_study("default", seed=3, n_districts=1500, teacher_respondents=500).truth
    ame = truth["ame_pp"]
    order = [ame.get(c, 0.0) for c in cb.support_model_codes()]   # reference is 0
    assert order == sorted(order)
    assert ame["coaching"] > 5 and ame["pay_and_pray"] < 0


def test_null_scenario_has_zero_effects():
    p = load_scenario("null")
    assert all(v == 0 for v in p["outcome"]["model_effects"].values())
    truth = simulate_study("null", seed=3, n_districts=800, teacher_respondents=500).truth
    assert all(v == 0 for v in truth["ame_pp"].values())


def test_adoption_is_confounded_by_size():
    """Larger districts adopt coaching and directors more often (a naive comparison is
    confounded)."""
    s = simulate_study("default", seed=5, n_districts=4000, teacher_respondents=500)
    d = s.district_survey.merge(s.frame_districts, on="district_id")
    big = d["enrollment"] > d["enrollment"].median()
    share = d.groupby(big)["support_model"].apply(
        lambda m: np.isin(m, ["coaching", "director"]).mean())
    assert share[True] > share[False] + 0.1


def test_raw_exports_follow_the_instrument(tmp_path):
    s = simulate_study("default", seed=9, n_districts=400, teacher_respondents=600)
    write_raw(s, tmp_path)
    raw = (tmp_path / "teacher_survey.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    lines = raw.decode("utf-8-sig").split("\r\n")
    assert lines[0].split(",")[:2] == ["StartDate", "EndDate"]
    assert lines[2].startswith('"{""ImportId"":""startDate""}"')
    import pandas as pd

    x = pd.read_excel(tmp_path / "district_survey.xlsx", dtype=str)
    assert list(x.columns) == [c.header for c in cb.columns("district_survey")]
    assert x["District NCES ID"].str.fullmatch(r"\d{7}").all()


@pytest.mark.parametrize("rule", ["not_consented", "partial", "speeders", "duplicates"])
def test_mess_is_present(rule):
    s = simulate_study("default", seed=11, n_districts=600, teacher_respondents=3000)
    t = s.teacher_survey
    found = {
        "not_consented": (t["consent"] == 0).sum(),
        "partial": (~t["finished"]).sum(),
        "speeders": (t["duration_seconds"] < t["duration_seconds"].median() / 3).sum(),
        "duplicates": t["recipient_email"].duplicated().sum(),
    }[rule]
    assert found > 0

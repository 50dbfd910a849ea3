"""Every file of the corpus of real-world and bad exports (tests/corpus) through the CLI.

Each case replaces one file of a small study (tests/corpus/base) and runs
``python -m analysis clean`` in a subprocess. Either it is cleaned (exit 0,
the log holds the expected rules, and for a format variant the processed
teachers equal those of the base study), or it stops with a clear error (exit
2, no traceback, the file named, the expected words, data/processed as it
was). Raw files are never modified, and no personal value reaches any output
or message.
"""

import csv
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import ROOT

CORPUS = ROOT / "tests" / "corpus"
CASES = list(csv.DictReader((CORPUS / "expected.csv").open(encoding="utf-8")))
PERSONAL = [v for v in (CORPUS / "personal_values.txt").read_text(encoding="utf-8").splitlines()
            if v]
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")
IP = re.compile(r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b")
#: Processed teacher columns that must agree between the base study and a format variant.
SAME = ["response_id", "district_id", "school_id", "consent", "grade_band", "subject",
        "use_freq", "samr_level", "non_substitutive", "transformative", "nonsub_share",
        "samr_index", "coaching_hours", "pd_hours", "support_quality_1", "self_efficacy_3",
        "minutes_lost", "partial", "support_model", "support_model_derived", "it_control",
        "vision", "weight", "stratum", "fpc_districts"]
SENTINEL = b"previous good output"


def run_clean(raw: Path, processed: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "analysis", "clean", "--raw", str(raw),
                           "--processed", str(processed), *args], capture_output=True,
                          text=True, env=env, cwd=ROOT)


def install(case: dict, raw: Path) -> None:
    shutil.copytree(CORPUS / "base", raw)
    for old in raw.glob(case["role"] + ".*"):
        old.unlink()
    shutil.copyfile(CORPUS / "cases" / case["file"], raw / case["installs_as"])


def hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def output_text(folder: Path) -> str:
    parts = []
    for path in sorted(folder.iterdir()):
        if path.suffix == ".parquet":
            parts.append(pd.read_parquet(path).astype(str).to_csv(index=False))
        else:
            parts.append(path.read_text(encoding="utf-8"))
    return "\n".join(parts)


def assert_no_personal_data(text: str, where: str) -> None:
    assert not EMAIL.search(text), where
    assert not IP.search(text), where
    words = set(re.findall(r"[A-Za-z][A-Za-z.@'-]+", text))
    leaked = {v for v in PERSONAL if v in words or (" " in v and v in text)}
    assert leaked == set(), where


@pytest.fixture(scope="module")
def base_teachers(tmp_path_factory):
    out = tmp_path_factory.mktemp("base")
    r = run_clean(CORPUS / "base", out / "processed")
    assert r.returncode == 0, r.stderr
    return pd.read_parquet(out / "processed" / "teachers.parquet")


def test_corpus_is_large_and_described():
    assert len(CASES) >= 25
    assert sum(c["outcome"] == "error" for c in CASES) >= 15
    readme = (CORPUS / "README.md").read_text(encoding="utf-8")
    for case in CASES:
        assert (CORPUS / "cases" / case["file"]).exists()
        assert f"`{case['file']}`" in readme
    assert len(PERSONAL) > 50


@pytest.mark.parametrize("case", CASES, ids=[c["file"] for c in CASES])
def test_corpus_case(case, tmp_path, base_teachers):
    raw = tmp_path / "raw"
    install(case, raw)
    before = hashes(raw)
    processed = tmp_path / "processed"
    processed.mkdir()
    (processed / "teachers.parquet").write_bytes(SENTINEL)
    option = {"teacher_survey": "--teacher-format", "district_survey": "--district-format"}
    args = [option[case["role"]], case["format"]] if case["format"] else []
    r = run_clean(raw, processed, *args)
    assert hashes(raw) == before, "a raw file was modified"
    assert "Traceback" not in r.stderr, r.stderr
    assert_no_personal_data(r.stdout + r.stderr, "terminal output")
    expected = [w for w in case["expect"].split("|") if w]
    if case["outcome"] == "error":
        assert r.returncode == 2, r.stdout + r.stderr
        message = r.stderr
        assert case["installs_as"] in message or "more than one" in message, message
        for words in expected:
            assert words in message, (words, message)
        assert sorted(p.name for p in processed.iterdir()) == ["teachers.parquet"]
        assert (processed / "teachers.parquet").read_bytes() == SENTINEL
        return
    assert r.returncode == 0, r.stderr
    log = pd.read_csv(processed / "cleaning_log.csv", dtype=str, keep_default_na=False)
    for item in expected:                    # "rule" or "rule=text of its new_value"
        rule, _, text = item.partition("=")
        rows = log[log["rule"] == rule]
        assert (rows["new_value"].str.contains(text, regex=False)).any(), \
            (item, sorted(set(log["rule"])), rows["new_value"].tolist()[:3])
    assert (log["source_file"] == case["installs_as"]).any()
    assert_no_personal_data(output_text(processed), "processed outputs")
    teachers = pd.read_parquet(processed / "teachers.parquet")
    assert len(teachers) > 0.8 * len(base_teachers)
    if case["same_as_base"] == "1":
        a = base_teachers[SAME].reset_index(drop=True)
        b = teachers[SAME].reset_index(drop=True)
        pd.testing.assert_frame_equal(a, b, check_dtype=False, check_categorical=False)


def test_more_than_one_teacher_export_is_refused(tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(CORPUS / "base", raw)
    sav = next(c for c in CASES if c["file"].endswith(".sav"))
    shutil.copyfile(CORPUS / "cases" / sav["file"], raw / "teacher_survey.sav")
    r = run_clean(raw, tmp_path / "processed")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "more than one export of the teacher survey" in r.stderr
    assert "teacher_survey.csv, teacher_survey.sav" in r.stderr
    assert not (tmp_path / "processed").exists()


def test_no_teacher_export_names_the_accepted_files(tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(CORPUS / "base", raw)
    (raw / "teacher_survey.csv").unlink()
    r = run_clean(raw, tmp_path / "processed")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "file not found" in r.stderr and "teacher_survey.sav" in r.stderr


def test_base_study_exercises_every_quality_rule(tmp_path):
    r = run_clean(CORPUS / "base", tmp_path)
    assert r.returncode == 0, r.stderr
    flow = pd.read_csv(tmp_path / "flow.csv")
    dropped = flow[flow["table"] == "teachers"].set_index("rule")["n_dropped"]
    for rule in ("not_consented", "partial_without_outcomes", "speeder", "straight_lining",
                 "failed_attention_check", "duplicate_response", "unknown_district_id"):
        assert dropped[rule] >= 1, rule
    log = pd.read_csv(tmp_path / "cleaning_log.csv", dtype=str, keep_default_na=False)
    dup = log[log["rule"] == "duplicate_response"]
    assert "R_corpusDuplicate1" in set(dup["record_id"])

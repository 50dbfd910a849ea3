"""Bad input stops with one clear message, exit code 2, no traceback, nothing written."""

import os
import subprocess
import sys

import pandas as pd
import pytest
from helpers import ROOT, write_study


def _run_clean(raw, processed):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "analysis", "clean", "--raw", str(raw),
                           "--processed", str(processed)], capture_output=True, text=True,
                          env=env, cwd=ROOT)


def _drop_column(header):
    return lambda t: t.drop(columns=[header])


CASES = {
    "missing_teacher_file": (lambda raw: (raw / "teacher_survey.csv").unlink(),
                             "teacher_survey.csv", "file not found"),
    "empty_teacher_file": (lambda raw: (raw / "teacher_survey.csv").write_bytes(b""),
                           "teacher_survey.csv", "empty"),
    "binary_renamed_csv": (lambda raw: (raw / "teacher_survey.csv").write_bytes(
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 50), "teacher_survey.csv", "binary"),
    "not_a_workbook": (lambda raw: (raw / "district_survey.xlsx").write_text("a,b\n1,2\n"),
                       "district_survey.xlsx", "not an Excel workbook"),
    "frame_missing_column": (lambda raw: pd.read_csv(raw / "frame_districts.csv", dtype=str)
                             .drop(columns=["selection_prob"])
                             .to_csv(raw / "frame_districts.csv", index=False),
                             "frame_districts.csv", "selection_prob"),
    "latin1_bytes": (lambda raw: (raw / "teacher_survey.csv").write_bytes(
        (raw / "teacher_survey.csv").read_bytes() + b"caf\xe9\r\n"),
        "teacher_survey.csv", "UTF-8"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_file_gives_clear_error(tmp_path, case):
    breaker, file_name, words = CASES[case]
    raw = write_study(tmp_path / "raw")
    breaker(raw)
    processed = tmp_path / "processed"
    processed.mkdir()
    (processed / "teachers.parquet").write_bytes(b"previous good output")
    r = _run_clean(raw, processed)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert file_name in r.stderr and words in r.stderr
    assert r.stderr.count("\n") <= 2
    assert sorted(p.name for p in processed.iterdir()) == ["teachers.parquet"]
    assert (processed / "teachers.parquet").read_bytes() == b"previous good output"


@pytest.mark.parametrize("header", ["T7", "district_id", "D3. Number of campuses"])
def test_missing_question_column_names_the_column(tmp_path, header):
    if header.startswith("D"):
        raw = write_study(tmp_path / "raw", districts=_drop_column(header))
    else:
        raw = write_study(tmp_path / "raw", teachers=_drop_column(header))
    r = _run_clean(raw, tmp_path / "processed")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"column {header}" in r.stderr and "required column is missing" in r.stderr
    assert not (tmp_path / "processed" / "teachers.parquet").exists()


def test_renamed_column_suggests_the_close_header(tmp_path):
    raw = write_study(tmp_path / "raw",
                      districts=lambda d: d.rename(columns={"D3. Number of campuses":
                                                            "D3. Number of campus"}))
    r = _run_clean(raw, tmp_path / "processed")
    assert r.returncode == 2
    assert "'D3. Number of campus', which is close" in r.stderr


def test_duplicated_header(tmp_path):
    def dup(t):
        cols = list(t.columns)
        cols[cols.index("T5")] = "T4"
        t.columns = cols
        return t

    raw = write_study(tmp_path / "raw", teachers=dup)
    r = _run_clean(raw, tmp_path / "processed")
    assert r.returncode == 2 and "more than once" in r.stderr and "column T4" in r.stderr


def test_truncated_row_names_the_row(tmp_path):
    raw = write_study(tmp_path / "raw")
    path = raw / "teacher_survey.csv"
    lines = path.read_bytes().split(b"\r\n")
    lines[10] = lines[10][: len(lines[10]) // 2]
    path.write_bytes(b"\r\n".join(lines))
    r = _run_clean(raw, tmp_path / "processed")
    assert r.returncode == 2 and "row 11" in r.stderr and "number of cells" in r.stderr


def test_extra_unknown_column_is_reported_not_silently_dropped(tmp_path):
    def extra(t):
        t["Q99_survey_note"] = "x"
        return t

    raw = write_study(tmp_path / "raw", teachers=extra)
    r = _run_clean(raw, tmp_path / "processed")
    assert r.returncode == 0, r.stderr
    assert "Q99_survey_note" in r.stdout and "not in the codebook" in r.stdout

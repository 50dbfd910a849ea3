"""The readers: containers, encodings, formats, header matching, SPSS and Stata."""

import csv
import io

import numpy as np
import pandas as pd
import pytest
from helpers import ROOT

from analysis.data.clean import (
    CleaningLog,
    match_labels,
    normalise_label,
    parse_numbers,
    safe_text,
)
from analysis.data.ingest import (
    HeaderIndex,
    find_source_file,
    header_key,
    read_survey,
    read_text_table,
)
from analysis.errors import InputError
from analysis.study.codebook import load_codebook

cb = load_codebook()
CORPUS = ROOT / "tests" / "corpus"
CASES = {c["file"]: c for c in csv.DictReader((CORPUS / "expected.csv").open())}
BASE_TEACHERS = CORPUS / "base" / "teacher_survey.csv"


def _case(stem: str):
    name = next(f for f in CASES if f[3:].startswith(stem))
    return CORPUS / "cases" / name


@pytest.mark.parametrize("stem,fmt", [
    ("qualtrics_text", "qualtrics"), ("qualtrics_numeric", "qualtrics"),
    ("qualtrics_legacy.", "qualtrics-legacy"), ("excel_resaved", "qualtrics"),
    ("excel_unicode_text", "qualtrics"), ("spss", "spss"), ("stata", "stata"),
    ("surveymonkey.", "surveymonkey")])
def test_teacher_formats_are_detected_and_give_the_same_table(stem, fmt):
    base = read_survey(BASE_TEACHERS, "teacher_survey")
    export = read_survey(_case(stem), "teacher_survey")
    assert export.format == fmt
    assert export.unknown == []
    # the same responses, the same IDs, in the same order
    assert export.data["response_id"].tolist() == base.data["response_id"].tolist()
    assert len(export.headers) >= len(base.headers) - 9      # SurveyMonkey lacks metadata


def test_district_formats_are_detected():
    for stem, sheet in (("district_form", None), ("district_second_sheet", "Responses")):
        export = read_survey(_case(stem), "district_survey")
        assert export.format == "form"
        assert export.details.get("sheet") == sheet
        assert export.data["district_id"].str.len().eq(7).all()


def test_row_numbers_are_the_files_rows():
    qualtrics = read_survey(BASE_TEACHERS, "teacher_survey")
    assert qualtrics.data["source_row"].iloc[0] == 4
    legacy = read_survey(_case("qualtrics_legacy."), "teacher_survey")
    assert legacy.data["source_row"].iloc[0] == 3
    spss = read_survey(_case("spss"), "teacher_survey")
    assert spss.data["source_row"].iloc[0] == 1


def test_blank_lines_and_quoted_newlines_keep_row_numbers(tmp_path):
    lines = BASE_TEACHERS.read_bytes().split(b"\r\n")
    header = next(csv.reader([lines[0].decode("utf-8-sig")]))
    t13 = header.index("T13")
    row = next(csv.reader([lines[5].decode()]))
    row[t13] = "first line\nsecond line"
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerow(row)
    lines[5] = buf.getvalue().rstrip("\r\n").encode()
    lines.insert(8, b"")                                     # a blank line: row 9
    path = tmp_path / "teacher_survey.csv"
    path.write_bytes(b"\r\n".join(lines))
    export = read_survey(path, "teacher_survey")
    rows = export.data["source_row"].tolist()
    assert rows[:6] == [4, 5, 6, 7, 8, 10]                   # the blank row 9 is skipped
    assert export.data["response_id"].iloc[5] == next(csv.reader([lines[9].decode()]))[8]


def test_encoding_judged_beyond_the_first_megabyte(tmp_path):
    lines = BASE_TEACHERS.read_bytes()[3:].split(b"\r\n")[:-1]    # ASCII, without the BOM
    assert all(line.isascii() for line in lines)
    filler = lines[3:] * (1_200_000 // sum(map(len, lines[3:])) + 1)
    last = lines[4][: lines[4].rindex(b",") + 1] + "Caf\u00e9".encode("cp1252")
    data = b"\r\n".join(lines[:3] + filler + [last]) + b"\r\n"
    assert len(data) > 1 << 20
    path = tmp_path / "teacher_survey.csv"
    path.write_bytes(data)
    table = read_text_table(path)
    assert table.details["encoding"] == "cp1252"
    assert table.rows.iloc[-1, -1] == "Caf\u00e9"
    assert len(table.rows) == len(filler) + 4
    mixed = tmp_path / "mixed.csv"
    mixed.write_bytes(data.replace(b"StartDate", "St\u00e4rtDate".encode(), 1))
    with pytest.raises(InputError, match="mixes character encodings"):
        read_text_table(mixed)


def _spss_teacher_file(path, *, t1_codes, t2_values, labels, missing):
    """The base study's teacher export as an SPSS file: text columns as strings, T1 and
    T2 numeric with the given value labels and user-missing codes."""
    import pyreadstat

    base = pd.read_csv(BASE_TEACHERS, skiprows=[1, 2], dtype=str, keep_default_na=False,
                       encoding="utf-8-sig")
    base = base.rename(columns={"Duration (in seconds)": "Duration__in_seconds_"})
    n = len(base)
    base["T1"] = np.resize(np.array(t1_codes, dtype=float), n)
    base["T2"] = np.resize(np.array(t2_values, dtype=float), n)
    pyreadstat.write_sav(base, str(path), variable_value_labels=labels, missing_ranges=missing)
    return n


def test_spss_value_labels_and_user_missing(tmp_path):
    path = tmp_path / "teacher_survey.sav"
    n = _spss_teacher_file(path, t1_codes=[1, 2, 1], t2_values=[12, 99, 3.5, 98],
                           labels={"T1": {1.0: "Yes", 2.0: "No"},
                                   "T2": {99.0: "Not applicable", 98.0: "Refused"}},
                           missing={"T2": [99.0]})
    export = read_survey(path, "teacher_survey")
    assert export.format == "spss" and len(export.data) == n
    assert export.data["consent"].tolist()[:3] == ["Yes", "No", "Yes"]   # labels, not codes
    # 99 is user-missing: empty, never a number; 98 has a label only: its label (text)
    assert export.data["years_teaching"].tolist()[:4] == ["12", "", "3.5", "Refused"]
    note = export.notes[0]
    assert note.rule == "user_missing_set_missing" and note.old[0] == "99 (Not applicable)"
    assert list(note.rows[:2]) == [1, 5]


def test_spss_and_stata_corpus_files_carry_labels_and_missing_codes():
    for stem in ("spss", "stata"):
        export = read_survey(_case(stem), "teacher_survey")
        consent = set(export.data["consent"])
        assert consent <= set(cb.scale_labels("yes_no")), consent
        assert [n.rule for n in export.notes] == ["user_missing_set_missing"]
        assert len(export.notes[0].rows) == 2
        assert (export.data["years_teaching"].iloc[export.notes[0].rows] == "").all()


def test_headers_match_every_platforms_name():
    index = HeaderIndex(cb, "teacher_survey")
    assert index.lookup("Duration (in seconds)") == "duration_seconds"
    assert index.lookup("Duration__in_seconds_") == "duration_seconds"     # SPSS
    assert index.lookup("duration__in_seconds_") == "duration_seconds"     # Stata
    assert index.lookup("Respondent ID") == "response_id"                  # SurveyMonkey
    assert index.lookup("ResponseID") == "response_id"                     # legacy
    assert index.lookup("t6_1") == "samr_freq_1"
    assert index.lookup(cb.column("teacher_survey", "samr_freq_1").question) == "samr_freq_1"
    assert index.lookup("Q99") is None
    assert index.closest("T6_9") == "T6_8"
    assert header_key(" Curly \u201cquoted\u201d ") == "curlyquoted"


def test_forced_format_is_checked():
    with pytest.raises(InputError, match="three header rows"):
        read_survey(_case("qualtrics_legacy."), "teacher_survey", format="qualtrics")
    with pytest.raises(InputError, match="not a SPSS file"):
        read_survey(BASE_TEACHERS, "teacher_survey", format="spss")
    with pytest.raises(InputError, match="unknown export format"):
        read_survey(BASE_TEACHERS, "teacher_survey", format="excel")


def test_source_file_must_be_unique(tmp_path):
    (tmp_path / "teacher_survey.csv").write_text("x")
    assert find_source_file(tmp_path, "teacher_survey").name == "teacher_survey.csv"
    (tmp_path / "teacher_survey.dta").write_text("x")
    with pytest.raises(InputError, match="more than one export"):
        find_source_file(tmp_path, "teacher_survey")


# -- label and number parsing ---------------------------------------------------
def test_match_labels_variants_codes_and_trailing_text():
    scale = cb.scale("agreement")
    values, how = match_labels(["Agree", "4", "  strongly   AGREE", "\u201cAgree\u201d",
                                "Agree - mostly", "Disagree.", "Agreed", "", "6"],
                               scale, cb.scale_codes("agreement"))
    assert values == [4, 4, 5, 4, 4, 2, None, None, None]
    assert how == ["exact", "code", "normalised", "normalised", "trailing_text",
                   "normalised", "unknown", "empty", "unknown"]
    # a shorter label is not taken for a longer one
    yn = cb.scale("yes_no_not_sure")
    assert match_labels(["Not sure", "no"], yn, cb.scale_codes("yes_no_not_sure"))[0] == \
        [yn["Not sure"], yn["No"]]


def test_text_codes_have_numeric_recodes():
    for scale in cb.raw["scales"]:
        codes = cb.scale_codes(scale)
        assert len(codes) == len(cb.scale_labels(scale)), scale
    assert sorted(cb.support_model_recodes().values()) == sorted(
        cb.support_model_codes() + [cb.other_model_code])


def test_parse_numbers_and_safe_text():
    values = parse_numbers(pd.Series(["3", " 4.5 ", "-2", "1e2", "n/a", "", "12 years"]))
    assert values.tolist()[:4] == [3.0, 4.5, -2.0, 100.0]
    assert values.iloc[4:].isna().all()
    shown = safe_text(pd.Series(["Agree", "a@b.org", "10.0.0.1", "https://x.org"]), limit=60)
    assert shown.tolist() == ["Agree", "<redacted>", "<redacted>", "<redacted>"]
    assert normalise_label(None) == ""


def test_other_mapping_is_versioned_and_uses_codebook_codes():
    version, mapping, digest = cb.other_mapping()
    assert version and len(digest) == 64 and len(mapping) >= 5
    assert set(mapping.values()) <= set(cb.support_model_codes())
    assert all(text == normalise_label(text) for text in mapping)


def test_cleaning_log_redacts_personal_values():
    log = CleaningLog()
    log.add(source_file="t.csv", rows=[5], record_ids=["R_1"], column="recipient_email",
            old=["x@y.org"], new="", rule="r", pii=True)
    assert log.frame()["old_value"].tolist() == ["<redacted>"]


def test_sort_order_and_lookup_join_agree_with_pandas():
    from analysis.data.clean import lookup_join, sort_order

    rng = np.random.default_rng(3)
    df = pd.DataFrame({"a": rng.choice(list("abc"), 500),
                       "b": rng.choice([f"x{i}" for i in range(400)], 500),
                       "c": [f"r{i:04d}" for i in rng.permutation(500)]}).astype("str")
    for by in (["a", "b", "c"], ["b", "a"], ["c"]):
        expected = df.sort_values(by, kind="stable").index.to_numpy()
        assert (sort_order(df, by) == expected).all(), by
    right = pd.DataFrame({"a": ["a", "b"], "y": [1.0, 2.0]})
    joined = lookup_join(df, right, on="a")
    merged = df.merge(right, on="a", how="left")
    pd.testing.assert_frame_equal(joined, merged)

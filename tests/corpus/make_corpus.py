"""Write the corpus of real-world and bad survey exports (tests/corpus).

Run from the project root:

    python tests/corpus/make_corpus.py

It simulates one small study with the project's simulator, plants one
example of every response-quality problem of the instrument in it, and writes

- ``base/``: the four raw files of that study as the platforms export them
  (Qualtrics CSV, form-style .xlsx, the two frame CSVs);
- ``cases/``: one file per case, each a variant of one base file: the same
  responses in another export format, or an export with one thing wrong;
- ``expected.csv``: for each case, the file it replaces, the format forced
  with ``--teacher-format`` / ``--district-format`` (if any), the expected outcome and the log rules or error words the
  test looks for;
- ``personal_values.txt``: every personal value planted in the files (names,
  e-mail and IP addresses, external references, free text), which must never
  reach data/processed, the log or a message;
- ``README.md``: the table of cases.

Names, e-mail addresses and IP addresses are fake (the simulator's made-up
names, example.org addresses and the RFC 5737 documentation ranges). The same
command writes the same files, byte for byte, with the same simulator.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from analysis.study import simulate  # noqa: E402
from analysis.study.codebook import load_codebook  # noqa: E402

cb = load_codebook()
SEED, N_DISTRICTS, N_TEACHERS = 7, 120, 60
T_COLS = {c.header: c for c in cb.columns("teacher_survey")}
D_COLS = {c.header: c for c in cb.columns("district_survey")}
VAR_T = {c.variable: c.header for c in cb.columns("teacher_survey")}
VAR_D = {c.variable: c.header for c in cb.columns("district_survey")}
CASES: list[dict] = []
PERSONAL: set[str] = set()


# ---------------------------------------------------------------------------
# The base study
# ---------------------------------------------------------------------------
def base_exports():
    study = simulate.simulate_study("default", seed=SEED, n_districts=N_DISTRICTS,
                                    teacher_respondents=N_TEACHERS)
    t = simulate.to_teacher_export(study)
    d = simulate.to_district_export(study)
    fd, fs = simulate.to_frame_exports(study)
    return plant_quality_problems(t), d, fd, fs


def _set_duration(t, i, seconds):
    start = pd.Timestamp(t.loc[i, VAR_T["start_date"]])
    end = start + pd.Timedelta(seconds=seconds)
    t.loc[i, VAR_T["duration_seconds"]] = str(seconds)
    t.loc[i, VAR_T["end_date"]] = end.strftime("%Y-%m-%d %H:%M:%S")
    t.loc[i, VAR_T["recorded_date"]] = end.strftime("%Y-%m-%d %H:%M:%S")


def plant_quality_problems(t: pd.DataFrame) -> pd.DataFrame:
    """One response for each quality rule of the instrument (instrument.md section 3)."""
    t = t.copy()
    agree = cb.scale_labels("agreement")
    complete = t.index[(t[VAR_T["finished"]] == "True") & (t[VAR_T["consent"]] == "Yes")]
    a, b, c, d, e, f, g = complete[:7]
    questions = [h for h, col in T_COLS.items() if col.question and not col.import_id
                 and col.type != "id" and h != VAR_T["consent"]]
    t.loc[a, VAR_T["consent"]] = cb.scale_labels("yes_no")[1]                 # not consented
    t.loc[a, questions] = ""
    t.loc[b, VAR_T["progress"]] = "40"                                         # partial, no outcomes
    t.loc[b, VAR_T["finished"]] = "False"
    t.loc[b, questions[4:]] = ""
    _set_duration(t, c, 45)                                                    # speeder
    sl = [VAR_T[v] for v in cb.quality_rules["straightline_items"]]
    t.loc[d, sl] = agree[3]                                                    # straight-lining
    t.loc[e, VAR_T["attention_check"]] = agree[1]                              # failed attention
    t.loc[f, VAR_T["district_id"]] = "0999999"                                 # not in the frame
    first = t.loc[[g]].copy()                                                  # duplicate
    first[VAR_T["response_id"]] = "R_corpusDuplicate1"
    earlier = pd.Timestamp(t.loc[g, VAR_T["start_date"]]) - pd.Timedelta(days=1)
    first[VAR_T["start_date"]] = earlier.strftime("%Y-%m-%d %H:%M:%S")
    first[VAR_T["end_date"]] = (earlier + pd.Timedelta(seconds=int(
        t.loc[g, VAR_T["duration_seconds"]]))).strftime("%Y-%m-%d %H:%M:%S")
    first[VAR_T["recorded_date"]] = first[VAR_T["end_date"]]
    t = pd.concat([first, t], ignore_index=True)
    t.loc[t.index[-1], VAR_T["comments"]] = "Thanks, Rowan (rowan.corpus@school.example.org)"
    return t


def personal_values(t: pd.DataFrame, d: pd.DataFrame) -> set[str]:
    out = set()
    for var in ("recipient_last_name", "recipient_first_name", "recipient_email", "ip_address",
                "external_reference", "comments"):
        out |= set(t[VAR_T[var]])
    out |= set(d[VAR_D["email"]]) | set(d[VAR_D["respondent_name"]])
    for full in d[VAR_D["respondent_name"]]:
        out |= set(full.split())
    return {v for v in out if v}


# ---------------------------------------------------------------------------
# Writers of the export formats (what each platform writes)
# ---------------------------------------------------------------------------
def _import_id(header: str) -> str:
    col = T_COLS.get(header)
    if col is None:
        return header
    if col.import_id:
        return col.import_id
    q, _, sub = header[1:].partition("_")
    return f"QID{q}" + (f"_{sub}" if sub else "") if q.isdigit() else header


def qualtrics_bytes(t: pd.DataFrame, *, header_rows=3, bom=True, newline="\r\n",
                    encoding="utf-8", delimiter=",") -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator=newline, delimiter=delimiter)
    w.writerow(t.columns)
    w.writerow([T_COLS[h].question if h in T_COLS and T_COLS[h].question else h
                for h in t.columns])
    if header_rows == 3:
        w.writerow([json.dumps({"ImportId": _import_id(h)}, separators=(",", ":"))
                    for h in t.columns])
    w.writerows(t.itertuples(index=False, name=None))
    text = buf.getvalue()
    if encoding == "utf-16":
        return text.encode("utf-16")
    return (("\ufeff" if bom else "") + text).encode(encoding)


def _code_of(scale: str, label: str) -> str:
    """Numeric code of a label: the codebook's recode (or numeric value)."""
    if label == "":
        return ""
    value = cb.scale(scale)[label]
    codes = {v: k for k, v in cb.scale_codes(scale).items()}
    return str(int(codes[value]))


def numeric_codes(t: pd.DataFrame) -> pd.DataFrame:
    """A Qualtrics export with numeric codes instead of choice text."""
    t = t.copy()
    for h, col in T_COLS.items():
        if col.scale and h in t:
            t[h] = t[h].map(lambda v, s=col.scale: _code_of(s, v))
    t[VAR_T["finished"]] = t[VAR_T["finished"]].map({"True": "1", "False": "0"})
    return t


def xlsx_bytes(sheets: dict[str, pd.DataFrame | list]) -> bytes:
    from openpyxl import Workbook

    wb = Workbook()
    wb.remove(wb.active)
    for name, content in sheets.items():
        ws = wb.create_sheet(name)
        if isinstance(content, list):
            for row in content:
                ws.append(row)
            continue
        ws.append(list(content.columns))
        for row in content.itertuples(index=False, name=None):
            ws.append([simulate._xlsx_value(v) for v in row])
    fixed = pd.Timestamp("2026-01-01").to_pydatetime()
    wb.properties.created = fixed
    wb.properties.modified = fixed
    buf = io.BytesIO()
    wb.save(buf)
    return simulate._normalise_zip(buf.getvalue())


def excel_resaved(t: pd.DataFrame) -> bytes:
    """What Excel on a European Windows computer writes after opening and saving the CSV:
    cp1252, semicolons, no byte-order mark, leading zeros lost, m/d/yyyy h:mm dates,
    TRUE/FALSE, decimal commas."""
    t = t.copy()
    for var in ("start_date", "end_date", "recorded_date"):
        h = VAR_T[var]
        t[h] = pd.to_datetime(t[h]).dt.strftime("%m/%d/%Y %H:%M").str.lstrip("0")
    for var in ("district_id", "school_id"):
        t[VAR_T[var]] = t[VAR_T[var]].str.lstrip("0")
    t[VAR_T["finished"]] = t[VAR_T["finished"]].str.upper()
    for var in ("coaching_hours", "pd_hours", "location_latitude", "location_longitude"):
        t[VAR_T[var]] = t[VAR_T[var]].str.replace(".", ",", regex=False)
    t.loc[t.index[3], VAR_T["comments"]] = "Caf\u00e9 Wi-Fi is \u201cslow\u201d \u2013 Jamie"
    PERSONAL.add(t.loc[t.index[3], VAR_T["comments"]])
    return qualtrics_bytes(t, bom=False, encoding="cp1252", delimiter=";")


def surveymonkey_bytes(t: pd.DataFrame) -> bytes:
    """SurveyMonkey's CSV: question text over blank continuation cells, then
    ``Response`` / ``Open-Ended Response`` or the item text; SurveyMonkey's own
    metadata names; no Progress, Finished or Duration."""
    rename = {"response_id": "Respondent ID", "start_date": "Start Date", "end_date": "End Date",
              "ip_address": "IP Address", "recipient_email": "Email Address",
              "recipient_first_name": "First Name", "recipient_last_name": "Last Name",
              "external_reference": "Custom Data 1"}
    drop = ["status", "progress", "duration_seconds", "finished", "recorded_date",
            "location_latitude", "location_longitude", "distribution_channel", "user_language"]
    t = t.drop(columns=[VAR_T[v] for v in drop])
    row1, row2, body = [], [], []
    stems = {"T8": "About your technology support this year",
             "T9": "How much do you agree with each statement?",
             "T10": "How much do you agree with each statement about yourself?"}
    previous = None
    for h in t.columns:
        col = T_COLS[h]
        var = col.variable
        if var in rename:
            row1.append(rename[var]), row2.append("")
        elif col.type == "id":
            row1.append(h), row2.append("")
        else:
            block = h.split("_")[0]
            if "_" in h:
                stem = col.question.split(" - ")[0] if " - " in col.question else stems[block]
                item = col.question.split(" - ")[1] if " - " in col.question else col.question
                row1.append(stem if block != previous else "")
                row2.append(item)
            else:
                row1.append(col.question)
                row2.append("Open-Ended Response" if col.type in ("number", "text")
                            else "Response")
            previous = block
        body.append(h)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(["Collector ID"] + row1[:1] + row1[1:])
    w.writerow([""] + row2)
    collector = "431234567"
    for row in t[body].itertuples(index=False, name=None):
        w.writerow([collector, *row])
    return buf.getvalue().encode("utf-8")


def spss_bytes(t: pd.DataFrame, path: Path, *, stata=False) -> None:
    """A Qualtrics SPSS (or Stata) export: numeric codes with value labels, variable
    labels, and a user-defined missing code 99 = "Not applicable" in T2."""
    import pyreadstat

    data, labels, value_labels, names = {}, [], {}, []
    for h in t.columns:
        col = T_COLS[h]
        name = h.replace(" (in seconds)", "__in_seconds_") if not stata else \
            h.replace(" (in seconds)", "__in_seconds_").lower()
        names.append(name)
        labels.append((col.question or h)[:80] if stata else (col.question or h))
        cell = t[h]
        if col.scale:
            # Qualtrics' own codes: Yes = 1, No = 2 (not the codebook's 1/0): the value
            # labels, not the codes, carry the meaning
            scale_labels = cb.scale_labels(col.scale)
            codes = {lab: float(k + 1) for k, lab in enumerate(scale_labels)}
            data[name] = cell.map(lambda v, c=codes: c.get(v, np.nan)).astype(float)
            value_labels[name] = {v: k for k, v in codes.items()}
        elif col.type == "datetime":
            data[name] = pd.to_datetime(cell)
        elif col.type == "boolean":
            data[name] = cell.map({"True": 1.0, "False": 0.0}).astype(float)
            value_labels[name] = {1.0: "True", 0.0: "False"}
        elif col.type == "number":
            data[name] = pd.to_numeric(cell.replace("", np.nan)).astype(float)
        else:
            data[name] = cell.astype(str)
    df = pd.DataFrame(data)
    t2 = names[list(t.columns).index(VAR_T["years_teaching"])]
    rows = df.index[df[t2].notna()][10:12]
    if stata:
        df[t2] = df[t2].astype(object)
        df.loc[rows, t2] = "a"
        value_labels[t2] = {"a": "Not applicable"}
        pyreadstat.write_dta(df, str(path), column_labels=labels,
                             variable_value_labels=value_labels,
                             missing_user_values={t2: ["a"]})
    else:
        df.loc[rows, t2] = 99.0
        value_labels[t2] = {99.0: "Not applicable"}
        pyreadstat.write_sav(df, str(path), column_labels=labels,
                             variable_value_labels=value_labels, missing_ranges={t2: [99.0]})
    _fixed_timestamp(path)


def _fixed_timestamp(path: Path) -> None:
    """Replace the creation time pyreadstat writes into the file, for byte identity."""
    data = bytearray(path.read_bytes())
    if data.startswith(b"$FL2"):                  # SPSS header: date and time of creation
        data[84:101] = b"01 Jan 2600:00:00"
    else:                                         # Stata 118: <timestamp> with its length
        start = data.index(b"<timestamp>") + len(b"<timestamp>") + 1
        data[start:start + 17] = b"01 Jan 2026 00:00"
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------
def case(name, role, content, *, installs_as=None, fmt="", outcome="cleaned", expect="",
         wrong, same_as_base=False):
    """Register a case; ``content`` is bytes or a function that writes the file."""
    ext = Path(installs_as or name).suffix
    file = f"{len(CASES) + 1:02d}_{Path(name).stem}{ext}"
    path = HERE / "cases" / file
    if callable(content):
        content(path)
    else:
        path.write_bytes(content)
    CASES.append({"file": file, "role": role,
                  "installs_as": installs_as or f"{role}{ext}", "format": fmt,
                  "outcome": outcome, "expect": expect, "same_as_base": int(same_as_base),
                  "what_is_wrong": wrong})


def make_cases(t, d, fd, fs):
    T, D = "teacher_survey", "district_survey"
    # -- the same responses in every format the readers know ------------------
    case("qualtrics_text.csv", T, qualtrics_bytes(t),
         expect="read_as=qualtrics; encoding=utf-8-sig|speeder|not_consented",
         wrong="nothing: the Qualtrics export of the instrument (3 header rows, BOM, CRLF, "
               "choice text), with one response for each quality rule", same_as_base=True)
    case("qualtrics_numeric.csv", T, qualtrics_bytes(numeric_codes(t)),
         expect="numeric_codes_mapped",
         wrong="numeric choice codes instead of choice text", same_as_base=True)
    case("qualtrics_no_bom_lf.csv", T, qualtrics_bytes(t, bom=False, newline="\n"),
         expect="read_as=encoding=utf-8;|read_as=line_ends=LF",
         wrong="no byte-order mark, LF line ends", same_as_base=True)
    case("qualtrics_legacy.csv", T, qualtrics_bytes(t, header_rows=2),
         expect="read_as=qualtrics-legacy",
         wrong="the legacy two-header-row export (no ImportId row)",
         same_as_base=True)
    case("qualtrics_legacy_forced.csv", T, qualtrics_bytes(t, header_rows=2),
         fmt="qualtrics-legacy", expect="read_as=qualtrics-legacy",
         wrong="legacy export with the format forced (--teacher-format qualtrics-legacy)",
         same_as_base=True)
    case("excel_resaved_cp1252.csv", T, excel_resaved(t),
         expect="read_as=encoding=cp1252; delimiter=;|restore_leading_zeros|date_layout_read|"
                "decimal_comma",
         wrong="opened and saved by Excel: cp1252, semicolons, leading zeros lost, "
               "m/d/yyyy h:mm dates, TRUE/FALSE, decimal commas", same_as_base=True)
    case("excel_tab_utf8.csv", T, qualtrics_bytes(t, delimiter="\t"),
         expect="read_as=delimiter=\\t",
         wrong="tab-delimited", same_as_base=True)
    case("excel_unicode_text.txt", T, qualtrics_bytes(t, delimiter="\t", encoding="utf-16"),
         installs_as="teacher_survey.txt", expect="read_as=encoding=utf-16",
         wrong="Excel's 'Unicode text': UTF-16 with tabs, saved as .txt", same_as_base=True)
    case("spss.sav", T, lambda p: spss_bytes(t, p),
         expect="read_as=spss|user_missing_set_missing",
         wrong="Qualtrics SPSS export: value labels (Yes = 1, No = 2), variable labels, "
               "99 = 'Not applicable' declared user-missing in T2", same_as_base=True)
    case("stata.dta", T, lambda p: spss_bytes(t, p, stata=True),
         expect="read_as=stata|user_missing_set_missing",
         wrong="Qualtrics Stata export: lower-case names, value labels, .a = "
               "'Not applicable' in T2", same_as_base=True)
    case("surveymonkey.csv", T, surveymonkey_bytes(t),
         expect="read_as=surveymonkey|derived_from_platform_metadata|completion_from_answers|"
                "platform_column_not_used",
         wrong="SurveyMonkey export: two header rows, question text over blank "
               "continuation cells for grids, its own metadata names, no Progress or "
               "Duration", same_as_base=True)
    case("surveymonkey_forced.csv", T, surveymonkey_bytes(t), fmt="surveymonkey",
         expect="read_as=surveymonkey",
         wrong="SurveyMonkey export with the format forced (--teacher-format surveymonkey)",
         same_as_base=True)

    # -- cleaned, with the change logged ----------------------------------------
    def variants(x):
        x = x.copy()
        rows = x.index[(x[VAR_T["consent"]] == "Yes")][8:14]
        x.loc[rows[0], VAR_T["grade_band"]] = "  elementary   (k-5) "
        x.loc[rows[1], VAR_T["attention_check"]] = "AGREE"
        x.loc[rows[2], VAR_T["samr_self"]] = "\u201c" + x.loc[rows[2], VAR_T["samr_self"]] \
            + "\u201d"
        x.loc[rows[3], VAR_T["use_freq"]] = x.loc[rows[3], VAR_T["use_freq"]] + " (most weeks)"
        x.loc[rows[4], VAR_T["subject"]] = x.loc[rows[4], VAR_T["subject"]].upper() + "."
        x.loc[rows[5], VAR_T["grade_band"]] = "Kindergarten only"
        return x
    case("label_variants.csv", T, qualtrics_bytes(variants(t)),
         expect="normalise_label|unknown_label_set_missing",
         wrong="labels with other case, extra spaces, curly quotes, trailing text; one "
               "label that is no choice of T3")

    def non_numeric(x):
        x = x.copy()
        rows = x.index[(x[VAR_T["consent"]] == "Yes")][8:12]
        x.loc[rows[0], VAR_T["years_teaching"]] = "twelve"
        x.loc[rows[1], VAR_T["coaching_hours"]] = "n/a"
        x.loc[rows[2], VAR_T["minutes_lost"]] = "call me: jane.doe@school.example.org"
        x.loc[rows[3], VAR_T["pd_hours"]] = "5 hrs"
        PERSONAL.add("jane.doe@school.example.org")
        return x
    case("non_numeric_text.csv", T, qualtrics_bytes(non_numeric(t)),
         expect="not_a_number_set_missing",
         wrong="text in number items (one of them an e-mail address): set missing, "
               "logged as <redacted>")

    def out_of_range(x):
        x = x.copy()
        rows = x.index[(x[VAR_T["consent"]] == "Yes")][8:11]
        x.loc[rows[0], VAR_T["years_teaching"]] = "75"
        x.loc[rows[1], VAR_T["pd_hours"]] = "-3"
        x.loc[rows[2], VAR_T["minutes_lost"]] = "-10"
        return x
    case("out_of_range.csv", T, qualtrics_bytes(out_of_range(t)),
         expect="out_of_range_set_missing",
         wrong="numbers out of range (75 years of teaching, negative hours): set missing, "
               "not dropped")

    def zeros_lost(x):
        x = x.copy()
        x[VAR_T["district_id"]] = x[VAR_T["district_id"]].str.lstrip("0")
        x[VAR_T["school_id"]] = x[VAR_T["school_id"]].str.lstrip("0")
        return x
    case("ids_lost_leading_zeros.csv", T, qualtrics_bytes(zeros_lost(t)),
         expect="restore_leading_zeros", wrong="district and school IDs lost their leading "
                                               "zeros", same_as_base=True)

    def extra_columns(x):
        x = x.copy()
        x.insert(len(x.columns), "Q_RecaptchaScore", "0.9")
        x.insert(len(x.columns), "T6_9", "Never")
        return x
    case("extra_columns.csv", T, qualtrics_bytes(extra_columns(t)),
         expect="unknown_column_not_used|platform_column_not_used",
         wrong="a question T6_9 the instrument does not have, and a Qualtrics platform "
               "column: reported, not used", same_as_base=True)

    # -- district survey variants --------------------------------------------------
    dd = d.copy()
    comp = VAR_D["support_components"]
    case("district_form.csv", D,
         dd.assign(**{comp: dd[comp].str.replace("; ", ", ", regex=False)})
         .to_csv(index=False, lineterminator="\r\n").encode("utf-8"),
         expect="read_as=form; encoding=utf-8",
         wrong="form export as CSV, checkbox answers joined by ','",
         same_as_base=True)
    case("district_second_sheet.xlsx", D,
         xlsx_bytes({"Read me": [["Responses are on the next sheet."]], "Responses": dd}),
         expect="read_as=sheet=Responses",
         wrong="the data are on the second sheet of the workbook",
         same_as_base=True)

    def ids_as_numbers(x):
        x = x.copy()
        x[VAR_D["district_id"]] = x[VAR_D["district_id"]].astype(int)
        return x
    case("district_ids_numbers.xlsx", D, xlsx_bytes({"Form Responses 1": ids_as_numbers(dd)}),
         expect="restore_leading_zeros",
         wrong="district IDs stored as numbers: leading zeros lost", same_as_base=True)

    def other_specify(x):
        x = x.copy()
        d1, d1o = VAR_D["support_model"], VAR_D["support_model_other"]
        other = cb.other_model_label
        x.loc[0, d1], x.loc[0, d1o] = other, "We contract with an outside Ed Tech consultant."
        x.loc[1, d1], x.loc[1, d1o] = other, "Our superintendent's nephew helps out"
        x.loc[2, d1] = "Every school has an instructional technology coach"
        x.loc[3, d1] = cb.support_models()[1]["label"].upper() + "  (since 2019)"
        PERSONAL.update(x.loc[[0, 1], d1o])
        PERSONAL.add(x.loc[2, d1])
        return x
    case("district_other_specify.xlsx", D,
         xlsx_bytes({"Form Responses 1": other_specify(dd)}),
         expect="other_specify_mapped|other_specify_unmapped|normalise_label",
         wrong="'Other (please specify)' answers: one in the mapping table, one not, one "
               "typed into D1 itself (form style); a D1 label in capitals with trailing text")

    # -- errors -------------------------------------------------------------------
    q = qualtrics_bytes(t)
    lines = q.split(b"\r\n")
    case("empty.csv", T, b"", outcome="error", expect="empty",
         wrong="an empty file (0 bytes)")
    case("binary_png_named_csv.csv", T, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 40,
         outcome="error", expect="binary", wrong="a PNG picture renamed .csv")
    case("html_login_page.csv", T,
         b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Please sign in"
         b"</body></html>\n", outcome="error", expect="web page",
         wrong="an HTML page saved instead of the export (expired login)")
    truncated = list(lines)
    truncated[10] = truncated[10][: len(truncated[10]) // 2]
    case("truncated_row.csv", T, b"\r\n".join(truncated), outcome="error",
         expect="row 11|different number of cells", wrong="a row cut in half in the middle")
    cut = q[: int(len(q) * 0.7)]
    n_row = cut.count(b"\r\n") + 1
    case("truncated_download.csv", T, cut, outcome="error",
         expect=f"row {n_row}|different number of cells",
         wrong="the download stopped part-way through a row")
    extra = list(lines)
    extra[12] = extra[12] + b",unexpected"
    case("extra_cell.csv", T, b"\r\n".join(extra), outcome="error",
         expect="row 13|different number of cells", wrong="a row with one cell too many")
    case("pipe_delimited.csv", T, qualtrics_bytes(t).replace(b",", b"|"), outcome="error",
         expect="delimiter", wrong="columns separated by '|'")

    def dup_header(x):
        cols = list(x.columns)
        cols[cols.index(VAR_T["use_freq"])] = VAR_T["subject"]
        x = x.copy()
        x.columns = cols
        return x
    case("duplicated_header.csv", T, qualtrics_bytes(dup_header(t)), outcome="error",
         expect="more than once|T4", wrong="the header T4 appears twice (T5 was renamed)")
    case("missing_question.csv", T, qualtrics_bytes(t.drop(columns=[VAR_T["samr_self"]])),
         outcome="error", expect="required column is missing|T7",
         wrong="question T7 is missing")

    def spanish(x):
        x = x.copy()
        es = {"Yes": "S\u00ed", "No": "No", "Strongly disagree": "Totalmente en desacuerdo",
              "Disagree": "En desacuerdo", "Neither agree nor disagree": "Ni de acuerdo ni en "
              "desacuerdo", "Agree": "De acuerdo", "Strongly agree": "Totalmente de acuerdo"}
        for h, col in T_COLS.items():
            if col.scale in ("yes_no", "agreement"):
                x[h] = x[h].map(lambda v: es.get(v, v))
        return x
    case("labels_in_spanish.csv", T, qualtrics_bytes(spanish(t)), outcome="error",
         expect="T1|another language", wrong="choice labels in Spanish")
    mixed = q + "R_x,Caf\u00e9".encode("cp1252")
    case("mixed_encoding.csv", T, mixed, outcome="error", expect="UTF-8",
         wrong="a UTF-8 file (with BOM) with a cp1252 byte appended")

    def scientific(x):
        x = x.copy()
        x[VAR_T["school_id"]] = x[VAR_T["school_id"]].map(lambda s: f"{int(s):.5E}")
        return x
    case("school_ids_scientific.csv", T, qualtrics_bytes(scientific(t)), outcome="error",
         expect="scientific notation|school_id", wrong="school IDs saved by Excel as 4.10127E+11")

    def raw_schema(x):
        x = x.copy()
        x.loc[5, VAR_T["response_id"]] = x.loc[4, VAR_T["response_id"]]
        x.loc[[7, 9], VAR_T["district_id"]] = ["04-1012", "unknown"]
        return x
    case("raw_schema_failures.csv", T, qualtrics_bytes(raw_schema(t)), outcome="error",
         expect="ResponseId|district_id|row 9|rows 11, 13",
         wrong="a repeated ResponseId and two district IDs that are not digits: every "
               "failure reported at once")
    case("header_rows_only.csv", T, b"\r\n".join(lines[:3]) + b"\r\n", outcome="error",
         expect="no responses", wrong="the three header rows and no responses")
    spss_path = HERE / "cases" / "_tmp.sav"
    spss_bytes(t, spss_path)
    case("spss_named_csv.csv", T, spss_path.read_bytes(), outcome="error",
         expect="holds an SPSS file|teacher_survey.sav",
         wrong="an SPSS file renamed .csv")
    spss_path.unlink()
    case("legacy_forced_as_qualtrics.csv", T, qualtrics_bytes(t, header_rows=2),
         fmt="qualtrics", outcome="error", expect="three header rows|ImportId",
         wrong="a legacy two-row export forced with --teacher-format qualtrics")
    case("district_text_named_xlsx.xlsx", D, b"District NCES ID,D1\n0412345,x\n",
         outcome="error", expect="not an Excel workbook",
         wrong="a CSV file renamed .xlsx")
    case("district_old_xls.xlsx", D, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600,
         outcome="error", expect="old-style Excel", wrong="an old Excel 97 .xls renamed .xlsx")
    good = xlsx_bytes({"Form Responses 1": dd})
    broken = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as src, zipfile.ZipFile(broken, "w") as dst:
        for info in src.infolist():
            if "sheet1" not in info.filename:
                dst.writestr(info, src.read(info.filename))
    case("district_broken_workbook.xlsx", D, broken.getvalue(), outcome="error",
         expect="could not be read as a workbook", wrong="a workbook whose sheet is missing")

    def d_missing(x):
        return x.drop(columns=[VAR_D["n_campuses"]])
    case("district_missing_question.xlsx", D,
         xlsx_bytes({"Form Responses 1": d_missing(dd)}), outcome="error",
         expect="required column is missing|D3. Number of campuses",
         wrong="question D3 is missing")
    case("frame_missing_column.csv", "frame_districts",
         fd.drop(columns=["selection_prob"]).to_csv(index=False).encode(), outcome="error",
         expect="selection_prob|required column", wrong="the frame has no selection_prob")
    bad_frame = fd.copy().astype(str)
    bad_frame.loc[3, "selection_prob"] = "0"
    bad_frame.loc[5, "selection_prob"] = "n/a"
    bad_frame.loc[8, "district_id"] = bad_frame.loc[7, "district_id"]
    case("frame_bad_values.csv", "frame_districts",
         bad_frame.to_csv(index=False).encode(), outcome="error",
         expect="selection_prob|row 5|row 7|district_id|row 10",
         wrong="a zero and a text selection probability and a repeated district ID: "
               "reported together")


# ---------------------------------------------------------------------------
def write_readme(cases: pd.DataFrame) -> None:
    lines = [
        "# Corpus of real-world and bad survey exports",
        "",
        "Generated by `python tests/corpus/make_corpus.py` (do not edit by hand). Every file",
        "comes from one small simulated study (`analysis.study.simulate`, seed "
        f"{SEED}, {N_DISTRICTS} districts, about {N_TEACHERS} teachers) with one response for "
        "each",
        "quality rule planted in it. All names, e-mail and IP addresses are fake.",
        "",
        "- `base/`: the study's four raw files as the platforms export them.",
        "- `cases/`: one file per case; the test (`tests/data/test_corpus.py`) copies `base/`,",
        "  replaces one file with the case file (under the name in `installs_as`), runs",
        "  `python -m analysis clean` and checks the outcome: either the run succeeds and",
        "  the cleaning log holds the rules listed (and, where `same as base` is yes, the",
        "  processed teachers equal those of `base/`), or it stops with exit code 2, no",
        "  traceback, a message naming the file and holding the words listed, and",
        "  data/processed untouched. Raw files are never modified (checked by hash).",
        "- `expected.csv`: the same table, read by the test.",
        "- `personal_values.txt`: personal values planted in the files; none may reach an",
        "  output, the log or a message.",
        "",
        "| # | file | replaces | format option | what is wrong | outcome | log rules / error words "
        "| same as base |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k, r in enumerate(cases.itertuples(), 1):
        words = " ; ".join("`" + w.replace("=", "` saying `", 1) + "`"
                           for w in r.expect.split("|") if w)
        option = f"`--{r.role.split('_')[0]}-format {r.format}`" if r.format else "auto"
        lines.append(f"| {k} | `{r.file}` | `{r.installs_as}` | {option} | "
                     f"{r.what_is_wrong.replace('|', chr(92) + '|')} | {r.outcome} | {words} | "
                     f"{'yes' if r.same_as_base else ''} |")
    lines.append("")
    (HERE / "README.md").write_text("\n".join(lines))


def main() -> None:
    t, d, fd, fs = base_exports()
    for folder in ("base", "cases"):
        shutil.rmtree(HERE / folder, ignore_errors=True)
        (HERE / folder).mkdir()
    (HERE / "base" / "teacher_survey.csv").write_bytes(qualtrics_bytes(t))
    (HERE / "base" / "district_survey.xlsx").write_bytes(
        xlsx_bytes({"Form Responses 1": d}))
    fd.to_csv(HERE / "base" / "frame_districts.csv", index=False, lineterminator="\n")
    fs.to_csv(HERE / "base" / "frame_schools.csv", index=False, lineterminator="\n")
    PERSONAL.update(personal_values(t, d))
    make_cases(t, d, fd, fs)
    cases = pd.DataFrame(CASES)
    cases.to_csv(HERE / "expected.csv", index=False, lineterminator="\n")
    (HERE / "personal_values.txt").write_text("\n".join(sorted(PERSONAL)) + "\n")
    write_readme(cases)
    print(f"wrote {len(cases)} cases to {HERE / 'cases'}")


if __name__ == "__main__":
    main()

"""Readers of the raw exports: one reader per export format.

Each reader returns a DataFrame of **text** cells whose columns are the
codebook's variable names, plus ``source_row``: the row as numbered in the
file (1 = the file's first line). Values are not interpreted here; the
cleaner (``analysis.data.clean``) maps labels and numbers through the
codebook and logs what it changes.

A problem a person can fix (a missing file, a missing column, a file that is
not what its name says) raises :class:`analysis.errors.InputError` naming the
file, the row or column, what was expected and what to do.

Examples
--------
>>> from pathlib import Path
>>> from analysis.data.ingest import read_raw
>>> raw = read_raw(Path("data/raw"))
>>> raw.teachers.columns[:3].tolist()
['source_row', 'start_date', 'end_date']
>>> int(raw.teachers["source_row"].iloc[0])     # data start on line 4 of a Qualtrics export
4
"""

from __future__ import annotations

import csv
import difflib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.errors import InputError
from analysis.study.codebook import Codebook, load_codebook

QUALTRICS_HEADER_ROWS = 3
ROW_COLUMN = "source_row"


@dataclass
class RawStudy:
    """The four raw sources, read but not yet cleaned."""

    frame_districts: pd.DataFrame
    frame_schools: pd.DataFrame
    districts: pd.DataFrame
    teachers: pd.DataFrame
    files: dict[str, Path]
    unknown_columns: list[tuple[str, str, str | None]]


def _require_file(path: Path) -> Path:
    if not path.exists():
        raise InputError(path, "file not found",
                         hint="put the export in the raw folder under this name, "
                              "or pass --raw with the folder that holds it")
    if path.is_dir():
        raise InputError(path, "is a folder, not a file")
    if path.stat().st_size == 0:
        raise InputError(path, "the file is empty", hint="export the data again")
    return path


def _decode(path: Path) -> str:
    data = path.read_bytes()
    if b"\x00" in data[:4096]:
        raise InputError(path, "is not a text (CSV) file: it contains binary data",
                         hint="export the survey as CSV")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise InputError(path, "is not valid UTF-8 text", row=line,
                         hint="export the file again as UTF-8 CSV") from None


def _check_columns(path: Path, found: list[str], cb: Codebook, source: str,
                   optional: set[str]) -> tuple[dict[str, str], list[tuple[str, str, str | None]]]:
    """Match file headers to codebook variables; fail on missing required ones."""
    known = cb.headers(source)
    dupes = sorted({h for h in found if found.count(h) > 1})
    if dupes:
        raise InputError(path, "a column header appears more than once", column=dupes[0],
                         hint="remove or rename the repeated column and export again")
    missing = [h for h, v in known.items() if h not in found and v not in optional]
    if missing:
        h = missing[0]
        close = difflib.get_close_matches(h, [f for f in found if f not in known], n=1)
        raise InputError(
            path, f"a required column is missing ({len(missing)} missing in all)", column=h,
            expected=f"a column headed {h!r}",
            found=f"a column headed {close[0]!r}, which is close" if close else None,
            hint="export the survey with every question and the exact headers of the "
                 "instrument, or rename the column")
    unknown = []
    for h in found:
        if h not in known and h != "":
            close = difflib.get_close_matches(h, list(known), n=1)
            unknown.append((str(path), h, close[0] if close else None))
    return {h: known[h] for h in found if h in known}, unknown


def read_qualtrics_csv(path: Path, cb: Codebook | None = None) -> tuple[pd.DataFrame, list]:
    """Read a Qualtrics CSV export (three header rows, choice text).

    Returns
    -------
    (DataFrame, list)
        The responses with variable-name columns and ``source_row``, and the
        headers that match no codebook question (file, header, closest match).
    """
    cb = cb or load_codebook()
    path = _require_file(Path(path))
    text = _decode(path)
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as err:
        raise InputError(path, f"is not a readable CSV file ({err})") from None
    if len(rows) < QUALTRICS_HEADER_ROWS:
        raise InputError(path, "has fewer than the three header rows of a Qualtrics export",
                         expected="column names, question texts, ImportId row",
                         hint="export from Qualtrics as CSV with choice text")
    header = rows[0]
    optional = set(cb.pii_variables("teacher_survey"))
    mapping, unknown = _check_columns(path, header, cb, "teacher_survey", optional)
    body = rows[QUALTRICS_HEADER_ROWS:]
    width = len(header)
    for k, row in enumerate(body):
        if len(row) != width and any(cell.strip() for cell in row):
            raise InputError(path, "a row has a different number of cells than the header",
                             row=k + QUALTRICS_HEADER_ROWS + 1, expected=f"{width} cells",
                             found=f"{len(row)} cells",
                             hint="the file may be truncated or re-saved with another "
                                  "delimiter; export it again")
    body = [row for row in body if len(row) == width]
    df = pd.DataFrame(body, columns=header, dtype=object)
    df = df[[h for h in header if h in mapping]].rename(columns=mapping)
    df.insert(0, ROW_COLUMN, range(QUALTRICS_HEADER_ROWS + 1, QUALTRICS_HEADER_ROWS + 1 + len(df)))
    return df, unknown


def read_form_xlsx(path: Path, cb: Codebook | None = None) -> tuple[pd.DataFrame, list]:
    """Read a form-style Excel export (one header row of question text)."""
    cb = cb or load_codebook()
    path = _require_file(Path(path))
    if not zipfile.is_zipfile(path):
        raise InputError(path, "is not an Excel workbook (.xlsx)",
                         hint="export the district form as .xlsx")
    try:
        df = pd.read_excel(path, sheet_name=0, dtype=object, engine="openpyxl")
    except Exception as err:  # openpyxl raises many types for corrupt workbooks
        raise InputError(path, f"could not be read as a workbook ({type(err).__name__})",
                         hint="open it in a spreadsheet program and save it as .xlsx") from None
    header = [str(c) for c in df.columns]
    df.columns = header
    optional = set(cb.pii_variables("district_survey")) | {"support_model_other"}
    mapping, unknown = _check_columns(path, header, cb, "district_survey", optional)
    df = df[[h for h in header if h in mapping]].rename(columns=mapping)
    df = df.dropna(how="all")
    df.insert(0, ROW_COLUMN, df.index.to_numpy() + 2)
    return df.reset_index(drop=True), unknown


def read_frame_csv(path: Path, source: str, cb: Codebook | None = None) -> pd.DataFrame:
    """Read a sampling-frame CSV whose headers are variable names."""
    cb = cb or load_codebook()
    path = _require_file(Path(path))
    text = _decode(path)
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise InputError(path, f"is not a readable CSV file ({err})") from None
    needed = [c.variable for c in cb.columns(source)]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise InputError(path, "a required column is missing", column=missing[0],
                         expected=", ".join(needed), found=", ".join(df.columns),
                         hint="the frame needs every column the instrument lists")
    df.insert(0, ROW_COLUMN, range(2, 2 + len(df)))
    return df


def read_raw(raw_dir: Path, cb: Codebook | None = None) -> RawStudy:
    """Read the four raw sources of the study from ``raw_dir``."""
    cb = cb or load_codebook()
    raw_dir = Path(raw_dir)
    files = {s: raw_dir / cb.file_name(s) for s in
             ("frame_districts", "frame_schools", "district_survey", "teacher_survey")}
    fd = read_frame_csv(files["frame_districts"], "frame_districts", cb)
    fs = read_frame_csv(files["frame_schools"], "frame_schools", cb)
    districts, unknown_d = read_form_xlsx(files["district_survey"], cb)
    teachers, unknown_t = read_qualtrics_csv(files["teacher_survey"], cb)
    return RawStudy(fd, fs, districts, teachers, files, unknown_d + unknown_t)

"""Readers of the raw exports: one code path per export format.

Every survey export goes through the same three steps:

1. the *container* is recognised from the file's bytes (text, Excel workbook,
   SPSS ``.sav``, Stata ``.dta``; a binary file, an HTML page or an empty file
   is refused), and for text its encoding (UTF-8 with or without a
   byte-order mark, UTF-16, or Excel's cp1252) and delimiter (comma,
   semicolon or tab);
2. the *format* is detected from the header rows (or forced by the caller):
   ``qualtrics`` (three header rows: names, question text, ImportId),
   ``qualtrics-legacy`` (two header rows), ``surveymonkey`` (question text
   with blank continuation cells, then ``Response`` or the item text),
   ``form`` (one header row of question text, ``Timestamp`` first), ``spss``
   and ``stata`` (variable names and labels, value labels and user-defined
   missing codes);
3. each header is matched to a codebook variable (by column name, question
   text, ImportId or a platform alias from ``codebook.yaml``).

The result is a :class:`SurveyExport`: a DataFrame of **text** cells whose
columns are codebook variable names, plus ``source_row``, the row as numbered
in the file (1 = the file's first line or, for SPSS and Stata, the first
case). Values are not interpreted here; the cleaner (``analysis.data.clean``)
maps labels, codes and numbers through the codebook and logs what it does.

A problem a person can fix raises :class:`analysis.errors.InputError` naming
the file, the row or column, what was expected and what to do.

Examples
--------
>>> from pathlib import Path
>>> from analysis.data.ingest import read_raw
>>> raw = read_raw(Path("data/raw"))
>>> raw.teachers.columns[:3].tolist()
['source_row', 'start_date', 'end_date']
>>> int(raw.teachers["source_row"].iloc[0])     # data start on line 4 of a Qualtrics export
4
>>> raw.exports["teacher_survey"].format
'qualtrics'
"""

from __future__ import annotations

import codecs
import csv
import difflib
import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.errors import InputError
from analysis.study.codebook import Codebook, load_codebook

ROW_COLUMN = "source_row"
#: What the log and error messages show instead of a personal value.
REDACTED = "<redacted>"
AUTO = "auto"
#: Export formats a survey file can be read as (``auto`` detects one from the content).
FORMATS = ("qualtrics", "qualtrics-legacy", "spss", "stata", "form", "surveymonkey")
QUALTRICS_HEADER_ROWS = 3
#: Formats whose file is a table of text cells (CSV or workbook).
_TABLE_FORMATS = ("qualtrics", "qualtrics-legacy", "surveymonkey", "form")
_SNIFF_BYTES = 1 << 20


@dataclass
class ReadNote:
    """A change made while reading (a user-defined missing code set to missing).

    The cleaner copies each note into the cleaning log.
    """

    variable: str
    rows: np.ndarray
    old: list[str]
    rule: str


@dataclass
class SurveyExport:
    """One survey export, read but not interpreted.

    Attributes
    ----------
    data : DataFrame
        ``source_row`` and one text column per matched codebook variable
        (missing cells are empty strings).
    path : Path
        The file.
    format : str
        The export format it was read as (one of :data:`FORMATS`).
    details : dict
        How it was read: container, encoding, delimiter, line ends, sheet.
    headers : dict
        Variable -> the header it has in the file.
    unknown : list of (file, header, closest known header or None)
        Headers that match no codebook column (not used, reported).
    platform_columns : list of str
        Platform columns without study information (not used, logged).
    notes : list of ReadNote
        Values changed while reading (user-defined missing codes).
    """

    data: pd.DataFrame
    path: Path
    format: str
    details: dict = field(default_factory=dict)
    headers: dict = field(default_factory=dict)
    unknown: list = field(default_factory=list)
    platform_columns: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    def describe(self) -> str:
        """One line saying how the file was read (for the cleaning log).

        Examples
        --------
        >>> SurveyExport(pd.DataFrame(), Path("t.csv"), "qualtrics",
        ...              {"encoding": "utf-8-sig", "delimiter": ","}).describe()
        'qualtrics; encoding=utf-8-sig; delimiter=,'
        """
        parts = [self.format] + [f"{k}={v}" for k, v in self.details.items()
                                 if k != "container"]
        return "; ".join(parts).replace("\t", "\\t")


@dataclass
class RawStudy:
    """The four raw sources, read but not yet cleaned."""

    frame_districts: pd.DataFrame
    frame_schools: pd.DataFrame
    districts: pd.DataFrame
    teachers: pd.DataFrame
    files: dict[str, Path]
    unknown_columns: list[tuple[str, str, str | None]]
    exports: dict[str, SurveyExport] = field(default_factory=dict)


# ---------------------------------------------------------------------------
# Files and containers
# ---------------------------------------------------------------------------
def find_source_file(raw_dir: Path, source: str, cb: Codebook | None = None) -> Path:
    """The one file of ``source`` in ``raw_dir`` (any accepted name of the codebook).

    Raises
    ------
    InputError
        When none, or more than one, of the accepted names is present.

    Examples
    --------
    >>> find_source_file(Path("data/raw"), "teacher_survey").name
    'teacher_survey.csv'
    """
    cb = cb or load_codebook()
    raw_dir = Path(raw_dir)
    names = cb.file_names(source)
    wanted = {n.lower() for n in names}
    present = sorted(p for p in raw_dir.iterdir() if p.name.lower() in wanted) \
        if raw_dir.is_dir() else []
    if not present:
        raise InputError(raw_dir / names[0], "file not found",
                         expected="one of " + ", ".join(names),
                         hint="put the export in the raw folder under one of these names, "
                              "or pass --raw with the folder that holds it")
    if len(present) > 1:
        raise InputError(raw_dir, f"more than one export of the {source.replace('_', ' ')}",
                         expected="exactly one of " + ", ".join(names),
                         found=", ".join(p.name for p in present),
                         hint="keep only the export you want cleaned in the raw folder")
    return present[0]


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


def sniff_container(path: Path) -> str:
    """What kind of file this is, from its first bytes: text, xlsx, sav or dta.

    Examples
    --------
    >>> sniff_container(Path("data/raw/district_survey.xlsx"))
    'xlsx'
    """
    path = _require_file(Path(path))
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if head.startswith(b"PK\x03\x04"):
        return "xlsx"
    if head[:4] in (b"$FL2", b"$FL3"):
        return "sav"
    if head.startswith(b"<stata_dta>") or (len(head) > 2 and head[0] in (0x71, 0x72, 0x73)
                                            and head[1] in (1, 2) and head[2] == 1):
        return "dta"
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        raise InputError(path, "is an old-style Excel .xls workbook",
                         hint="open it in a spreadsheet program and save it as .xlsx or CSV")
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "text"
    if b"\x00" in head:
        raise InputError(path, "is not a text (CSV) file: it contains binary data",
                         hint="export the survey as CSV (or .sav, .dta, .xlsx)")
    start = head.lstrip(codecs.BOM_UTF8).lstrip().lower()
    if start.startswith((b"<!doctype html", b"<html")):
        raise InputError(path, "is a web page (HTML), not a data export",
                         hint="the download may have failed or needed a login; "
                              "download the export again")
    return "text"


_KIND = {"text": "a text (CSV) file", "xlsx": "an Excel workbook", "sav": "an SPSS file",
         "dta": "a Stata file"}
_SUFFIX = {".csv": "text", ".tsv": "text", ".txt": "text", ".xlsx": "xlsx", ".sav": "sav",
           ".dta": "dta"}


def _container_matching_name(path: Path) -> str:
    """The container, which must be what the file name says it is."""
    container = sniff_container(path)
    named = _SUFFIX.get(path.suffix.lower())
    if named and named != container:
        right = next(s for s, c in _SUFFIX.items() if c == container)
        raise InputError(path, f"is not {_KIND[named]}: it is named {path.suffix} but holds "
                         f"{_KIND[container]}",
                         hint=f"rename it to {path.stem}{right} if it is the right export, "
                              "or export the survey again")
    return container


# ---------------------------------------------------------------------------
# Text (CSV) files
# ---------------------------------------------------------------------------
@dataclass
class TextTable:
    """Every record of a delimited text file as text columns ``c0`` ... (no header)."""

    rows: pd.DataFrame
    details: dict


def _encoding(path: Path, data: bytes, fallback: str) -> str:
    """UTF-16 (BOM), UTF-8 (with or without BOM) or the fallback single-byte encoding."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    bom = data.startswith(codecs.BOM_UTF8)
    try:
        codecs.decode(data, "utf-8")
    except UnicodeDecodeError as err:
        before = data[: err.start]
        line = before.count(b"\n") + 1
        if bom or not before.isascii():
            raise InputError(path, "is not valid UTF-8 text: it mixes character encodings",
                             row=line, expected="UTF-8 throughout",
                             hint="export the file again as UTF-8 CSV, without editing it "
                                  "in another program") from None
        try:
            codecs.decode(data, fallback)
        except UnicodeDecodeError as err2:
            raise InputError(path, "is neither UTF-8 nor Windows (cp1252) text",
                             row=data[: err2.start].count(b"\n") + 1,
                             hint="export the file again as UTF-8 CSV") from None
        return fallback
    return "utf-8-sig" if bom else "utf-8"


def _prefix_encoding(path: Path, prefix: bytes, fallback: str) -> str:
    """The encoding judged from the first megabyte (the rest is checked while parsing)."""
    head = prefix[:_SNIFF_BYTES]
    if len(prefix) <= _SNIFF_BYTES or head.startswith((codecs.BOM_UTF16_LE,
                                                        codecs.BOM_UTF16_BE)):
        return _encoding(path, path.read_bytes(), fallback)
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)  # may end mid-character
    except UnicodeDecodeError:
        return _encoding(path, path.read_bytes(), fallback)
    return "utf-8-sig" if head.startswith(codecs.BOM_UTF8) else "utf-8"


def _delimiter(path: Path, text: str, candidates: list[str]) -> str:
    """The candidate delimiter that splits the first record into the most fields."""
    best, best_n = candidates[0], 0
    for delim in candidates:
        first = next(csv.reader(io.StringIO(text, newline=""), delimiter=delim), [])
        if len(first) > best_n:
            best, best_n = delim, len(first)
    if best_n < 2:
        raise InputError(path, "the column delimiter could not be found", row=1,
                         expected="columns separated by commas, semicolons or tabs",
                         found="one column only",
                         hint="export the file again as CSV (comma-separated)")
    return best


def read_text_table(path: Path, cb: Codebook | None = None) -> TextTable:
    """Read every record of a delimited text file as text (fast path: pyarrow).

    Rows whose number of cells differs from the first row stop the read with
    an :class:`InputError` naming the row; blank lines are skipped but keep
    their row numbers.

    Examples
    --------
    >>> t = read_text_table(Path("data/raw/teacher_survey.csv"))
    >>> t.details["delimiter"], t.details["encoding"], t.details["line_ends"]
    (',', 'utf-8-sig', 'CRLF')
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    cb = cb or load_codebook()
    fmt = cb.export_formats
    path = _require_file(Path(path))
    with open(path, "rb") as fh:                  # the whole file is read by the parser
        prefix = fh.read(_SNIFF_BYTES + 1)
    encoding = _prefix_encoding(path, prefix, fmt["fallback_encoding"])
    head = prefix[:_SNIFF_BYTES].decode(encoding, errors="ignore")
    delimiter = _delimiter(path, head.lstrip("\ufeff"), fmt["delimiters"])
    first = next(csv.reader(io.StringIO(head.lstrip("\ufeff"), newline=""),
                            delimiter=delimiter))
    width = len(first)
    details = {"container": "text", "encoding": encoding, "delimiter": delimiter,
               "line_ends": "CRLF" if b"\r\n" in prefix[:_SNIFF_BYTES] else "LF"}
    bad: list = []

    def invalid(row) -> str:
        bad.append(row)
        return "skip"

    names = [f"c{k}" for k in range(width)]

    def parse(encoding):
        return pacsv.read_csv(
            str(path),
            # one thread: as fast as several on two cores, and steadier on a busy machine
            read_options=pacsv.ReadOptions(column_names=names, use_threads=False,
                                           encoding="utf8" if encoding.startswith("utf-8")
                                           else encoding),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True,
                                             ignore_empty_lines=False,
                                             invalid_row_handler=invalid),
            # large_string: the storage of pandas' ``str`` dtype, so that ``to_pandas``
            # does not copy every column once more to widen its offsets
            convert_options=pacsv.ConvertOptions(column_types={n: pa.large_string()
                                                               for n in names},
                                                 strings_can_be_null=False,
                                                 quoted_strings_can_be_null=False))

    try:
        try:
            table = parse(encoding)
        except pa.ArrowInvalid as err:
            if "UTF8" not in str(err) or not encoding.startswith("utf-8"):
                raise
            # invalid UTF-8 past the first megabyte: a mixed file (error) or cp1252
            encoding = _encoding(path, path.read_bytes(), fmt["fallback_encoding"])
            details["encoding"] = encoding
            bad.clear()
            table = parse(encoding)
    except pa.ArrowInvalid:
        # the parser's own message may quote a row (personal data): not shown
        raise InputError(path, "is not a readable CSV file (the CSV parser stopped, for "
                         "example at a quote that is never closed)",
                         hint="export the file again as CSV") from None
    if bad:
        data = path.read_bytes()
        encoding = _encoding(path, data, fmt["fallback_encoding"])
        rows = _python_rows(path, data.decode(encoding), delimiter, width)
    else:
        rows = table.to_pandas()
        if rows.iloc[0, 0].startswith("\ufeff"):
            rows.iloc[0, 0] = rows.iloc[0, 0].lstrip("\ufeff")
        rows.index = pd.RangeIndex(1, len(rows) + 1)
    return TextTable(rows, details)


def _python_rows(path: Path, text: str, delimiter: str, width: int) -> pd.DataFrame:
    """Slow, exact pass: finds the first record of the wrong length, or skips blank ones."""
    kept, numbers = [], []
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""), delimiter=delimiter)
    try:
        for number, row in enumerate(reader, start=1):
            if len(row) == width:
                kept.append(row)
                numbers.append(number)
            elif any(cell.strip() for cell in row):
                raise InputError(path, "a row has a different number of cells than the header",
                                 row=number, expected=f"{width} cells",
                                 found=f"{len(row)} cells",
                                 hint="the file may be truncated or re-saved with another "
                                      "delimiter; export it again")
    except csv.Error as err:
        raise InputError(path, f"is not a readable CSV file ({err})",
                         hint="export the file again as CSV") from None
    rows = pd.DataFrame(kept, columns=[f"c{k}" for k in range(width)], dtype="str")
    rows.index = pd.Index(numbers)
    return rows


# ---------------------------------------------------------------------------
# Workbooks, SPSS and Stata
# ---------------------------------------------------------------------------
def _cell_text(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT:
        return ""
    if isinstance(value, pd.Timestamp | np.datetime64) or hasattr(value, "isoformat"):
        return pd.Timestamp(value).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        f = float(value)
        return str(int(f)) if f.is_integer() else repr(f)
    return str(value)


def to_text(values: pd.Series, *, labels: dict | None = None) -> pd.Series:
    """Cells of any type as text, formatted once per distinct value.

    Integers keep no decimal point, dates are ISO 8601, missing is ``""``;
    a value with an entry in ``labels`` (SPSS or Stata value labels) becomes
    its label.

    Examples
    --------
    >>> to_text(pd.Series([3.0, 2.5, None, "x"], dtype=object)).tolist()
    ['3', '2.5', '', 'x']
    >>> to_text(pd.Series([1.0, 2.0]), labels={1.0: "Yes"}).tolist()
    ['Yes', '2']
    """
    labels = labels or {}
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    text = np.array([labels.get(_label_key(u), None) or _cell_text(u) for u in uniques]
                    + [""], dtype=object)
    return pd.Series(text[codes], index=values.index, dtype="str")


def _read_workbook(path: Path, cb: Codebook, source: str, fmt: str) -> tuple[TextTable, str]:
    """All sheets of a workbook; the one whose header rows match the codebook best."""
    if not zipfile.is_zipfile(path):
        raise InputError(path, "is not an Excel workbook (.xlsx)",
                         hint="export the district form as .xlsx")
    try:
        sheets = pd.read_excel(path, sheet_name=None, header=None, dtype=object,
                               engine="openpyxl")
    except Exception as err:  # openpyxl raises many types for corrupt workbooks
        raise InputError(path, f"could not be read as a workbook ({type(err).__name__})",
                         hint="open it in a spreadsheet program and save it as .xlsx") from None
    index = HeaderIndex(cb, source)
    best, best_score = None, -1
    for name, sheet in sheets.items():
        sheet = sheet.dropna(how="all", axis=1)
        if sheet.dropna(how="all").empty:
            continue
        rows = _head_rows(sheet.iloc[:4].apply(to_text))
        guess = _guess_format(rows, index) if fmt == AUTO else fmt
        score = len(index.match_headers(_header_candidates(rows, guess, index))[0])
        if score > best_score:
            best, best_score = name, score
    if best is None:
        raise InputError(path, "the workbook has no data on any sheet",
                         hint="export the responses again")
    sheet = sheets[best].dropna(how="all", axis=1)
    rows = sheet.apply(to_text)
    rows.columns = [f"c{k}" for k in range(rows.shape[1])]
    rows.index = pd.RangeIndex(1, len(rows) + 1)
    details = {"container": "xlsx", "sheet": str(best)}
    if len(sheets) > 1:
        details["sheets_in_file"] = len(sheets)
    return TextTable(rows, details), str(best)


def _head_rows(rows: pd.DataFrame) -> list[list[str]]:
    return [list(map(str, r)) for r in rows.head(4).itertuples(index=False, name=None)]


def _read_stat(path: Path, container: str, cb: Codebook, source: str) -> SurveyExport:
    """SPSS (.sav) or Stata (.dta): value labels applied, user-missing codes set missing."""
    import pyreadstat

    reader = pyreadstat.read_sav if container == "sav" else pyreadstat.read_dta
    kind = "SPSS" if container == "sav" else "Stata"
    try:
        df, meta = reader(str(path), user_missing=True)
    except Exception as err:  # pyreadstat raises ReadstatError and others
        raise InputError(path, f"could not be read as a {kind} file ({type(err).__name__})",
                         hint=f"export the survey again as {kind}") from None
    fmt_name = "spss" if container == "sav" else "stata"
    names = list(df.columns)
    labels = meta.column_names_to_labels or {}
    candidates = [[n, labels.get(n) or ""] for n in names]
    index = HeaderIndex(cb, source)
    matched, unknown, platform = index.match_headers(candidates)
    mapping = _check_columns(path, names, matched, unknown, index)
    out = pd.DataFrame({ROW_COLUMN: np.arange(1, len(df) + 1)})
    notes = []
    value_labels = meta.variable_value_labels or {}
    for name, variable in mapping.items():
        values = df[name]
        missing = _user_missing(values, name, meta, container)
        lookup = {_label_key(k): v for k, v in value_labels.get(name, {}).items()}
        text = to_text(values, labels=lookup)
        if missing.any():
            col = index.column(variable)
            old = (to_text(values[missing]) + " (" + text[missing] + ")")
            notes.append(ReadNote(variable, np.flatnonzero(missing.to_numpy()),
                                  _safe_old(old, col), "user_missing_set_missing"))
            text = text.where(~missing, "")
        out[variable] = text.to_numpy()
    headers = {v: n for n, v in mapping.items()}
    return SurveyExport(out, path, fmt_name, {"container": container, "cases": len(df)},
                        headers, [(str(path), h, c) for h, c in unknown], platform, notes)


def _label_key(value):
    if isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool):
        return float(value) if not np.isnan(value) else None
    return value


def _user_missing(values: pd.Series, name: str, meta, container: str) -> pd.Series:
    mask = pd.Series(False, index=values.index)
    if container == "sav":
        for rng in (meta.missing_ranges or {}).get(name, []):
            if pd.api.types.is_numeric_dtype(values):
                mask |= values.between(rng["lo"], rng["hi"])
            else:
                mask |= values.isin([rng["lo"], rng["hi"]])
    else:
        codes = (meta.missing_user_values or {}).get(name, [])
        if codes:
            mask |= values.isin(codes)
    return mask


def _safe_old(old: pd.Series, col) -> list[str]:
    if col is not None and (col.pii or col.free_text):
        return [REDACTED] * len(old)
    return old.tolist()


# ---------------------------------------------------------------------------
# Headers -> codebook variables
# ---------------------------------------------------------------------------
def header_key(text: str) -> str:
    """Matching key of a header: case-folded letters and digits only.

    ``Duration (in seconds)``, ``Duration__in_seconds_`` (SPSS) and
    ``duration__in_seconds_`` (Stata) all give ``durationinseconds``.

    Examples
    --------
    >>> header_key("  IP Address ")
    'ipaddress'
    """
    text = str(text).translate(_QUOTES)
    return re.sub(r"[\W_]+", "", text.casefold())


_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
                         "\u00a0": " "})


class HeaderIndex:
    """Every name a codebook column may have in an export, for one source.

    A column is known by its header, its question text, its Qualtrics
    ImportId and the platform aliases of ``codebook.yaml``; keys shared by two
    columns are left out so that nothing is matched by chance.

    Examples
    --------
    >>> index = HeaderIndex(load_codebook(), "teacher_survey")
    >>> index.lookup("Respondent ID"), index.lookup("Duration__in_seconds_")
    ('response_id', 'duration_seconds')
    """

    def __init__(self, cb: Codebook, source: str):
        self.cb = cb
        self.source = source
        self.columns = {c.variable: c for c in cb.columns(source)}
        seen: dict[str, set[str]] = {}
        for c in cb.columns(source):
            for name in (c.header, c.question, c.import_id, c.variable, *c.aliases):
                if name:
                    seen.setdefault(header_key(name), set()).add(c.variable)
        self.keys = {k: next(iter(v)) for k, v in seen.items() if len(v) == 1 and k}
        fmt = cb.export_formats
        self.platform = {header_key(h) for h in fmt["platform_columns"]}
        self.markers = {header_key(m) for m in fmt["surveymonkey_answer_markers"]}
        self.import_key = fmt["qualtrics_import_key"]
        self.separator = fmt["item_separator"]

    def column(self, variable: str):
        return self.columns.get(variable)

    def lookup(self, text: str) -> str | None:
        return self.keys.get(header_key(text)) if text else None

    def match_headers(self, candidates: list[list[str]]):
        """Match each file column (a list of candidate names, best first).

        Returns
        -------
        (matched, unknown, platform)
            ``matched``: list of (position, variable); ``unknown``: list of
            (header, closest known header); ``platform``: platform columns.
        """
        matched, unknown, platform = [], [], []
        for pos, names in enumerate(candidates):
            variable = next((v for v in map(self.lookup, names) if v), None)
            label = next((n for n in names if n), "")
            if variable:
                matched.append((pos, variable))
            elif header_key(label) in self.platform:
                platform.append(label)
            elif label:
                unknown.append((label, self.closest(label)))
        return matched, unknown, platform

    def closest(self, header: str) -> str | None:
        known = [c.header for c in self.columns.values()]
        close = difflib.get_close_matches(header, known, n=1)
        return close[0] if close else None

    def import_id(self, cell: str) -> str:
        """The ImportId of a Qualtrics third-row cell, or ``""``."""
        try:
            value = json.loads(cell)
        except (ValueError, TypeError):
            return ""
        return str(value.get(self.import_key, "")) if isinstance(value, dict) else ""


def _header_candidates(rows: list[list[str]], fmt: str, index: HeaderIndex) -> list[list[str]]:
    """Candidate names of each column from the header rows of a format."""
    sep, markers = index.separator, index.markers
    width = len(rows[0]) if rows else 0

    def row(k):
        return rows[k] + [""] * (width - len(rows[k])) if len(rows) > k else [""] * width

    r1, r2, r3 = row(0), row(1), row(2)
    if fmt == "qualtrics":
        ids = [index.import_id(c) for c in r3]
        return [[a, b, c] for a, b, c in zip(r1, r2, ids, strict=True)]
    if fmt == "qualtrics-legacy":
        return [[a, b] for a, b in zip(r1, r2, strict=True)]
    if fmt == "surveymonkey":
        out, stem = [], ""
        for a, b in zip(r1, r2, strict=True):
            stem = a or stem
            item = "" if header_key(b) in markers else b
            names = [f"{stem}{sep}{item}" if item and stem else "", item]
            names.append(a)          # a continuation column (blank row 1) has no own name
            out.append(names if item or a else [b])
        return out
    return [[a] for a in r1]


def _guess_format(rows: list[list[str]], index: HeaderIndex) -> str:
    """The table format whose header rows fit best (see the module docstring)."""
    r2 = rows[1] if len(rows) > 1 else []
    r3 = rows[2] if len(rows) > 2 else []
    filled3 = [c for c in r3 if c]
    if filled3 and sum(bool(index.import_id(c)) for c in filled3) >= len(filled3) / 2:
        return "qualtrics"
    if any(header_key(c) in index.markers for c in r2):
        return "surveymonkey"
    own = len(index.match_headers([[c] for c in rows[0]])[0]) if rows else 0
    second = len(index.match_headers([[c] for c in r2])[0])
    if second >= max(3, own / 2):
        return "qualtrics-legacy"
    return "form"


def _check_forced(path: Path, rows: list[list[str]], fmt: str, index: HeaderIndex) -> None:
    if fmt == "qualtrics" and _guess_format(rows, index) != "qualtrics":
        raise InputError(path, "is not a Qualtrics export with three header rows", row=3,
                         expected='an ImportId row ({"ImportId":"..."} in every cell)',
                         hint="use --format auto, or --format qualtrics-legacy for a "
                              "two-row export")


def _check_columns(path: Path, headers: list[str], matched, unknown,
                   index: HeaderIndex) -> dict[str, str]:
    """File header -> variable; fails on a repeated or a missing required column."""
    by_variable: dict[str, list[int]] = {}
    for pos, variable in matched:
        by_variable.setdefault(variable, []).append(pos)
    for positions in by_variable.values():
        if len(positions) > 1:
            names = [headers[p] for p in positions]
            raise InputError(path, "a column header appears more than once",
                             column=names[0],
                             found=" and ".join(f"columns {p + 1} ({n!r})"
                                                for p, n in zip(positions, names, strict=True)),
                             hint="remove or rename the repeated column and export again")
    present = set(by_variable)
    missing = [c for c in index.columns.values() if c.variable not in present
               and _required(c, present)]
    if missing:
        h = missing[0].header
        close = difflib.get_close_matches(h, [u for u, _ in unknown], n=1)
        raise InputError(
            path, f"a required column is missing ({len(missing)} missing in all)", column=h,
            expected=f"a column headed {h!r}",
            found=f"a column headed {close[0]!r}, which is close" if close else None,
            hint="export the survey with every question and the exact headers of the "
                 "instrument, or rename the column")
    return {headers[pos]: variable for pos, variable in matched}


def _required(col, present: set[str]) -> bool:
    if col.pii or col.free_text or not col.required:
        return False
    if col.derive_from and all(v in present for v in col.derive_from):
        return False
    return True


# ---------------------------------------------------------------------------
# Survey exports
# ---------------------------------------------------------------------------
def read_survey(path: Path, source: str, cb: Codebook | None = None, *,
                format: str = AUTO) -> SurveyExport:
    """Read a survey export of ``source`` (``teacher_survey`` or ``district_survey``).

    Parameters
    ----------
    path : Path
        The export.
    source : str
        Which survey the file holds.
    format : str
        ``auto`` (detect from the content) or one of :data:`FORMATS`.

    Returns
    -------
    SurveyExport

    Examples
    --------
    >>> export = read_survey(Path("data/raw/district_survey.xlsx"), "district_survey")
    >>> export.format, export.details["sheet"]
    ('form', 'Form Responses 1')
    """
    cb = cb or load_codebook()
    path = Path(path)
    if format != AUTO and format not in FORMATS:
        raise InputError(path, f"unknown export format {format!r}",
                         expected="auto or one of " + ", ".join(FORMATS))
    container = _container_matching_name(path)
    if format in ("spss", "stata") and container != {"spss": "sav", "stata": "dta"}[format]:
        raise InputError(path, f"is not a {format.upper() if format == 'spss' else 'Stata'} "
                         "file", expected=f"--format {format}", found=f"a {container} file",
                         hint="use --format auto to detect the format from the file")
    if container in ("sav", "dta"):
        return _read_stat(path, container, cb, source)
    if format != AUTO and format not in _TABLE_FORMATS:
        raise InputError(path, f"is a {container} file, not {format}",
                         hint="use --format auto to detect the format from the file")
    index = HeaderIndex(cb, source)
    if container == "xlsx":
        table, _sheet = _read_workbook(path, cb, source, format)
    else:
        table = read_text_table(path, cb)
    rows = _head_rows(table.rows)
    if format == AUTO:
        fmt = _guess_format(rows, index)
    else:
        _check_forced(path, rows, format, index)
        fmt = format
    return _survey_from_table(path, table, rows, fmt, index)


def _survey_from_table(path: Path, table: TextTable, rows: list[list[str]], fmt: str,
                       index: HeaderIndex) -> SurveyExport:
    n_header = index.cb.export_formats["header_rows"][fmt]
    candidates = _header_candidates(rows, fmt, index)
    matched, unknown, platform = index.match_headers(candidates)
    headers = [next((n for n in names if n), "") for names in candidates]
    blank = [k for k, h in enumerate(headers) if not h]
    body = table.rows.iloc[n_header:]
    first_empty = (body.iloc[:, 0] == "").to_numpy()
    if first_empty.any():                    # a row of empty cells only is no response
        empty_row = np.zeros(len(body), dtype=bool)
        empty_row[first_empty] = (body[first_empty] == "").all(axis=1).to_numpy()
        body = body[~empty_row]
    for k in blank:
        if (body.iloc[:, k] != "").any():
            unknown.append((f"(no header, column {k + 1})", None))
    _check_columns(path, headers, matched, unknown, index)
    if body.empty:
        raise InputError(path, "has no responses below the header rows",
                         row=n_header + 1, expected=f"{n_header} header row(s), then responses",
                         hint="export the responses again (with the responses included)")
    out = body.iloc[:, [pos for pos, _ in matched]]
    out.columns = [variable for _, variable in matched]
    out.insert(0, ROW_COLUMN, body.index.to_numpy())
    out = out.reset_index(drop=True)
    headers_out = {v: headers[p] for p, v in matched}
    details = dict(table.details)
    return SurveyExport(out, path, fmt, details, headers_out,
                        [(str(path), h, c) for h, c in unknown], platform)


def read_qualtrics_csv(path: Path, cb: Codebook | None = None) -> tuple[pd.DataFrame, list]:
    """Read a Qualtrics CSV export (three header rows); kept for existing callers.

    Returns
    -------
    (DataFrame, list)
        The responses with variable-name columns and ``source_row``, and the
        headers that match no codebook question (file, header, closest match).
    """
    export = read_survey(path, "teacher_survey", cb, format="qualtrics")
    return export.data, export.unknown


def read_form_xlsx(path: Path, cb: Codebook | None = None) -> tuple[pd.DataFrame, list]:
    """Read a form-style export (one header row of question text); kept for existing callers."""
    export = read_survey(path, "district_survey", cb, format="form")
    return export.data, export.unknown


# ---------------------------------------------------------------------------
# Sampling frame
# ---------------------------------------------------------------------------
def read_frame_csv(path: Path, source: str, cb: Codebook | None = None) -> pd.DataFrame:
    """Read a sampling-frame CSV whose headers are variable names."""
    cb = cb or load_codebook()
    path = Path(path)
    if _container_matching_name(path) != "text":
        raise InputError(path, "is not a CSV file", hint="save the frame as CSV")
    table = read_text_table(path, cb)
    header = [h.strip() for h in table.rows.iloc[0].tolist()]
    needed = [c.variable for c in cb.columns(source)]
    missing = [c for c in needed if c not in header]
    if missing:
        raise InputError(path, "a required column is missing", column=missing[0],
                         expected=", ".join(needed), found=", ".join(header),
                         hint="the frame needs every column the instrument lists")
    dupes = sorted({h for h in header if header.count(h) > 1 and h in needed})
    if dupes:
        raise InputError(path, "a column header appears more than once", column=dupes[0],
                         hint="remove the repeated column")
    body = table.rows.iloc[1:]
    body = body[(body != "").any(axis=1)]
    out = pd.DataFrame({ROW_COLUMN: body.index.to_numpy()})
    for variable in needed:
        out[variable] = body.iloc[:, header.index(variable)].str.strip().to_numpy()
    return out


def read_raw(raw_dir: Path, cb: Codebook | None = None, *,
             formats: dict[str, str] | None = None) -> RawStudy:
    """Read the four raw sources of the study from ``raw_dir``.

    Parameters
    ----------
    raw_dir : Path
        The folder of the raw exports.
    formats : dict, optional
        Source (``teacher_survey``, ``district_survey``) -> export format to
        force; ``auto`` (the default) detects it from the file.
    """
    cb = cb or load_codebook()
    raw_dir = Path(raw_dir)
    formats = formats or {}
    files = {s: find_source_file(raw_dir, s, cb) for s in
             ("frame_districts", "frame_schools", "district_survey", "teacher_survey")}
    fd = read_frame_csv(files["frame_districts"], "frame_districts", cb)
    fs = read_frame_csv(files["frame_schools"], "frame_schools", cb)
    exports = {s: read_survey(files[s], s, cb, format=formats.get(s, AUTO))
               for s in ("district_survey", "teacher_survey")}
    unknown = exports["district_survey"].unknown + exports["teacher_survey"].unknown
    return RawStudy(fd, fs, exports["district_survey"].data, exports["teacher_survey"].data,
                    files, unknown, exports)

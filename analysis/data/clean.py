"""Cleaning pipeline: raw exports -> processed tables, with an audit trail.

``run_clean(raw_dir, processed_dir)`` reads the four raw sources through the
codebook (:mod:`analysis.data.ingest`), checks them against the raw-side
schemas, normalises labels and numeric codes, parses numbers (out-of-range
values become missing, never dropped), maps "Other (please specify)" answers
through the versioned mapping table, applies the response-quality rules of
the instrument in order, merges the districts, derives outcomes and scale
scores, computes the weights, checks the processed schemas and writes
``teachers.parquet``, ``districts.parquet``, ``flow.csv``,
``cleaning_log.csv`` and ``manifest.json``, all or nothing.

The cleaning log has one row per change: ``source_file``, ``source_row`` (as
numbered in the file), ``record_id`` (ResponseId or district_id),
``column``, ``old_value``, ``new_value`` and ``rule``. A row whose
``source_row`` is empty describes a whole file or column (how the file was
read, which date layout a column used, a header that matched no question).
Personal values (names, e-mails, IP addresses, locations, external
references, free text, and any text typed into a number field) are never
copied into it: they are logged as ``<redacted>``.

Examples
--------
>>> from pathlib import Path
>>> from analysis.data.clean import clean_study
>>> result = clean_study(Path("data/raw"))
>>> result.flow.loc[result.flow["table"] == "teachers", "rule"].iloc[1]
'not_consented'
>>> bool((result.teachers["weight"] > 0).all())
True
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import analysis
from analysis import config
from analysis.data import derive, schemas, weights
from analysis.data.ingest import (
    REDACTED,
    ROW_COLUMN,
    RawStudy,
    SurveyExport,
    read_raw,
)
from analysis.errors import InputError
from analysis.study.codebook import Codebook, load_codebook
from analysis.study.simulate import sha256_file

LOG_COLUMNS = ["source_file", "source_row", "record_id", "column", "old_value", "new_value",
               "rule"]
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
                         "\u00a0": " "})
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")
_IP = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b")
_URL = re.compile(r"https?://|www\.", re.IGNORECASE)


# ---------------------------------------------------------------------------
# The audit trail
# ---------------------------------------------------------------------------
class CleaningLog:
    """One row per change the cleaner makes (vectorised appends).

    Examples
    --------
    >>> log = CleaningLog()
    >>> log.add(source_file="t.csv", rows=pd.Series([4]), record_ids=pd.Series(["R_1"]),
    ...         column="T2", old="75", new="", rule="out_of_range_set_missing")
    >>> log.frame()[["source_row", "rule"]].values.tolist()
    [[4, 'out_of_range_set_missing']]
    """

    def __init__(self):
        self._parts: list[pd.DataFrame] = []

    def add(self, *, source_file: str, rows, record_ids, column: str, old, new, rule: str,
            pii: bool = False) -> None:
        """Log a change for each row in ``rows`` (aligned sequences)."""
        n = len(rows)
        if n == 0:
            return
        self._parts.append(pd.DataFrame({
            "source_file": source_file, "source_row": np.asarray(rows, dtype=object),
            "record_id": _as_text(record_ids, n), "column": column,
            "old_value": [REDACTED] * n if pii else _as_text(old, n),
            "new_value": _as_text(new, n), "rule": rule,
        }))

    def note(self, *, source_file: str, column: str = "", old: str = "", new: str = "",
             rule: str) -> None:
        """Log a change to a whole file or column (no row)."""
        self._parts.append(pd.DataFrame({
            "source_file": [source_file], "source_row": [""], "record_id": [""],
            "column": [column], "old_value": [old], "new_value": [new], "rule": [rule]}))

    def frame(self) -> pd.DataFrame:
        if not self._parts:
            return pd.DataFrame(columns=LOG_COLUMNS)
        return pd.concat(self._parts, ignore_index=True)[LOG_COLUMNS]


def _as_text(values, n) -> np.ndarray:
    if values is None or isinstance(values, str) or np.isscalar(values):
        return np.full(n, "" if values is None else str(values), dtype=object)
    s = pd.Series(np.asarray(values, dtype=object))
    return s.where(s.notna(), "").astype(str).to_numpy(dtype=object)


def safe_text(values: pd.Series, *, limit: int) -> pd.Series:
    """Values fit for the log or an error message: anything that looks personal
    (an e-mail or IP address, a web address, or long text) becomes ``<redacted>``.

    Examples
    --------
    >>> safe_text(pd.Series(["Agree", "me@x.org", "x" * 99]), limit=60).tolist()
    ['Agree', '<redacted>', '<redacted>']
    """
    text = values.astype(str)
    codes, uniques = pd.factorize(text)          # the checks once per distinct value
    u = pd.Series(uniques, dtype=object).astype(str)
    personal = (u.str.contains(_EMAIL) | u.str.contains(_IP) | u.str.contains(_URL)
                | (u.str.len() > limit)).to_numpy()
    if not personal.any():
        return text
    return text.where(~personal[codes], REDACTED)


def normalise_label(value) -> str:
    """Case-fold, straighten quotes, collapse white space.

    Examples
    --------
    >>> normalise_label("  Strongly   AGREE ")
    'strongly agree'
    """
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    text = str(value).translate(_QUOTES)
    return re.sub(r"\s+", " ", text).strip().casefold()


def _label_key(value) -> str:
    """Normalised label without surrounding quotes or trailing punctuation."""
    return normalise_label(value).strip(" \"'.,;:!")


def match_labels(values: list[str], labels: dict[str, Any],
                 codes: dict[float, Any] | None = None) -> tuple[list, list[str]]:
    """Match answers to a response scale, the way a careful person would.

    Each answer is matched, in order, exactly; as a numeric code of the scale
    (numeric exports); after normalising case, spaces, quotes and trailing
    punctuation; or as a label followed by trailing text (``"Agree - mostly"``).

    Returns
    -------
    (values, how)
        The scale value of each answer (``None`` when unmatched) and how it
        matched: ``exact``, ``code``, ``normalised``, ``trailing_text``,
        ``empty`` or ``unknown``.

    Examples
    --------
    >>> match_labels(["Agree", "4", " AGREE ", "Agree (mostly)", "Vale"],
    ...              {"Agree": 4, "Disagree": 2}, {4.0: 4, 2.0: 2})
    ([4, 4, 4, 4, None], ['exact', 'code', 'normalised', 'trailing_text', 'unknown'])
    """
    codes = codes or {}
    by_key = {_label_key(k): v for k, v in labels.items()}
    prefixes = sorted(by_key, key=len, reverse=True)
    out, how = [], []
    for value in values:
        key = _label_key(value)
        number = _as_number(value)
        if value in labels:
            out.append(labels[value]), how.append("exact")
        elif key == "":
            out.append(None), how.append("empty")
        elif number is not None and number in codes:
            out.append(codes[number]), how.append("code")
        elif key in by_key:
            out.append(by_key[key]), how.append("normalised")
        else:
            prefix = next((p for p in prefixes if p and key.startswith(p)
                           and not key[len(p)].isalnum()), None)
            if prefix is not None:
                out.append(by_key[prefix]), how.append("trailing_text")
            else:
                out.append(None), how.append("unknown")
    return out, how


_NUMBER = r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$"


def parse_numbers(text: pd.Series) -> pd.Series:
    """Numbers written as text -> float; anything else (empty, words) -> NaN.

    Vectorised with Arrow compute: one regular-expression match and one cast
    per column, no Python call per cell.

    Examples
    --------
    >>> parse_numbers(pd.Series([" 12 ", "1e3", "twelve", "", ".5"])).tolist()
    [12.0, 1000.0, nan, nan, 0.5]
    >>> parse_numbers(pd.Series(["3", "", "inf", "nan", "1e400"])).tolist()
    [3.0, nan, nan, nan, nan]
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pc.utf8_trim_whitespace(pa.array(text.astype("str"), type=pa.large_string()))
    null = pa.scalar(None, pa.large_string())
    try:                                      # a column of numbers (and blanks) only
        values = pc.cast(pc.if_else(pc.equal(arr, ""), null, arr), pa.float64())
        finite = pc.is_finite(values)
        if not pc.all(pc.or_kleene(finite, pc.is_null(values))).as_py():
            raise pa.ArrowInvalid("inf or nan written as a number")
    except pa.ArrowInvalid:                   # some cells are not numbers: match each cell
        ok = pc.match_substring_regex(arr, _NUMBER)
        values = pc.cast(pc.if_else(ok, arr, null), pa.float64())
    out = values.to_numpy(zero_copy_only=False).astype(float)
    out[~np.isfinite(out)] = np.nan                       # 1e400 is no answer either
    return pd.Series(out, index=text.index, copy=False)


def factorize(values: pd.Series, *, sort: bool = False):
    """Integer codes (-1 for missing) and the distinct values of a column.

    Examples
    --------
    >>> codes, uniques = factorize(pd.Series(["b", "a", "b", None], dtype="str"), sort=True)
    >>> codes.tolist(), list(uniques)
    ([1, 0, 1, -1], ['a', 'b'])
    """
    codes, uniques = pd.factorize(values, sort=sort, use_na_sentinel=True)
    return codes, uniques


def take_text(values: list[str], codes: np.ndarray, *, index=None) -> pd.Series:
    """A text column ``values[codes]`` built by Arrow (code -1 takes the last value).

    Examples
    --------
    >>> take_text(["a", "b", ""], np.array([1, 0, -1])).tolist()
    ['b', 'a', '']
    """
    import pyarrow as pa

    codes = np.where(codes < 0, len(values) - 1, codes)
    taken = pa.array(values, type=pa.large_string()).take(pa.array(codes))
    dtype = pd.StringDtype("pyarrow", na_value=np.nan)
    return pd.Series(dtype.__from_arrow__(taken), index=index)


def map_unique(values: pd.Series, func) -> pd.Series:
    """``func`` applied once per distinct value (not once per row).

    Examples
    --------
    >>> map_unique(pd.Series(["A", "b", "A"]), str.lower).tolist()
    ['a', 'b', 'a']
    """
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    out = np.array([func(u) for u in uniques] + [func("")], dtype=object)
    return pd.Series(out[codes], index=values.index, copy=False)


def _scale_series(matched: list, codes: np.ndarray, mapping: dict, index) -> pd.Series:
    """Cells' scale values from their distinct values' matches: float for a numeric
    scale, categorical (categories in scale order) for a scale of text codes, object
    otherwise (booleans)."""
    values = list(dict.fromkeys(mapping.values()))
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        table = np.array([np.nan if m is None else m for m in matched] + [np.nan], dtype=float)
        return pd.Series(table[codes], index=index, copy=False)
    if all(isinstance(v, str) for v in values):
        position = {v: k for k, v in enumerate(values)}
        table = np.array([position.get(m, -1) for m in matched] + [-1], dtype=np.int64)
        return pd.Series(pd.Categorical.from_codes(table[codes], categories=values),
                         index=index)
    table = np.array(matched + [None], dtype=object)
    return pd.Series(table[codes], index=index, dtype=object, copy=False)


def _as_number(value) -> float | None:
    try:
        return float(str(value).strip())
    except ValueError:
        return None


# ---------------------------------------------------------------------------
# Typing one column at a time
# ---------------------------------------------------------------------------
@dataclass
class Source:
    """The raw file a table came from, as the cleaner logs and reports it."""

    file: str
    path: Path
    id_col: str
    headers: dict[str, str] = field(default_factory=dict)
    decimal_comma: bool = False

    def header(self, variable: str) -> str:
        return self.headers.get(variable, variable)


@dataclass
class Cleaner:
    """State shared by the cleaning steps of one run."""

    cb: Codebook
    log: CleaningLog

    def _log(self, df, mask, src: Source, column, old, new, rule, *, pii=False,
             safe=False):
        """Log the rows of ``mask``; ``old`` and ``new`` are scalars or aligned with ``df``
        (only the logged rows are converted). ``safe`` passes ``old`` through
        :func:`safe_text`."""
        where = np.flatnonzero(np.asarray(mask, dtype=bool))
        if len(where) == 0:
            return
        ids = df[src.id_col] if src.id_col in df else df[ROW_COLUMN]

        def pick(values):
            if values is None or np.isscalar(values):
                return values
            if isinstance(values, pd.Series):
                return values.iloc[where].reset_index(drop=True)
            return np.asarray(values)[where]

        old = pick(old)
        if safe and isinstance(old, pd.Series):
            old = safe_text(old, limit=self.cb.cleaning["max_logged_text"])
        self.log.add(source_file=src.file, rows=df[ROW_COLUMN].to_numpy()[where],
                     record_ids=ids.iloc[where].to_numpy(), column=column, old=old,
                     new=pick(new), rule=rule, pii=pii)

    def _too_many_unknown(self, src: Source, column: str, n_unknown: int, n_answered: int,
                          examples: list[str], expected: str) -> None:
        rules = self.cb.cleaning
        if n_unknown >= rules["min_unknown"] and n_unknown > rules["max_unknown_share"] * \
                n_answered:
            shown = safe_text(pd.Series(examples[:3], dtype=object),
                              limit=rules["max_logged_text"]).tolist()
            raise InputError(
                src.path, "most answers in this column are not answers the instrument allows",
                column=src.header(column), expected=expected,
                found=", ".join(map(repr, shown)) + f" ({n_unknown} of {n_answered} answers)",
                hint="export the survey with the instrument's English choice labels or its "
                     "numeric codes; labels in another language are not translated")

    def labels(self, df, column, mapping, *, src: Source, codes=None, unknown: str = "log"):
        """Map answers through a scale (label -> value), normalising variants (logged).

        ``unknown="log"`` sets unmatched answers missing and logs them;
        ``unknown="keep"`` leaves them missing for the caller.
        """
        codes_, uniques = factorize(df[column])
        matched, how = match_labels(list(uniques), mapping, codes)
        value = _scale_series(matched, codes_, mapping, df.index)
        kinds = ["exact", "code", "normalised", "trailing_text", "empty", "unknown"]
        how_u = np.array([kinds.index(h) for h in how] + [kinds.index("empty")], dtype=np.int8)
        cell_how = how_u[codes_]
        loose = (cell_how == kinds.index("normalised")) | (cell_how == kinds.index("trailing_text"))
        self._log(df, loose, src, column, df[column], value, "normalise_label", safe=True)
        n_codes = int((cell_how == kinds.index("code")).sum())
        if n_codes:
            self.log.note(source_file=src.file, column=column, new=f"{n_codes} cells",
                          rule="numeric_codes_mapped")
        bad = cell_how == kinds.index("unknown")
        if unknown == "log" and bad.any():
            answered = int((cell_how != kinds.index("empty")).sum())
            examples = [u for u, h in zip(uniques, how, strict=True) if h == "unknown"]
            self._too_many_unknown(src, column, int(bad.sum()), answered, examples,
                                   "one of " + ", ".join(map(repr, list(mapping)[:8])))
            self._log(df, bad, src, column, df[column], "", "unknown_label_set_missing",
                      safe=True)
        return value

    def number(self, df, column, *, src: Source, lo=None, hi=None, lo_exclusive=False,
               check_range: bool = True):
        """Parse numbers; non-numbers and out-of-range values become missing (logged).

        Text typed into a number field is logged as ``<redacted>``: it is free text.
        """
        text = df[column].astype("str")
        value = parse_numbers(text)
        if src.decimal_comma:
            comma = value.isna() & text.str.fullmatch(r"\s*-?\d+,\d+\s*")
            if comma.any():
                fixed = parse_numbers(text[comma].str.replace(",", ".", regex=False))
                value[comma] = fixed
                self._log(df, comma, src, column, text, value, "decimal_comma")
        bad = value.isna() & (text != "")
        if bad.any():
            bad &= text.str.strip() != ""
        if bad.any():
            self._too_many_unknown(src, column, int(bad.sum()), int((text != "").sum()),
                                   [REDACTED], "numbers")
            self._log(df, bad, src, column, REDACTED, "", "not_a_number_set_missing")
        if not check_range:
            return value
        out = pd.Series(False, index=df.index)
        if lo is not None:
            out |= (value <= lo) if lo_exclusive else (value < lo)
        if hi is not None:
            out |= value > hi
        self._log(df, out, src, column, text, "", "out_of_range_set_missing")
        return value.where(~out)

    def ids(self, df, column, digits, *, src: Source):
        """IDs as zero-padded digit strings; restores leading zeros lost by spreadsheets.

        An ID in scientific notation (``4.1E+11``, written by Excel) has lost
        digits for good: the run stops and says how to re-export it.
        """
        codes, uniques = factorize(df[column].astype("str"))
        raw = pd.Series(uniques, dtype="str").str.strip()      # the work is per distinct ID
        sci = raw.str.fullmatch(r"\d+(?:\.\d+)?[eE]\+?\d+").to_numpy()
        if sci.any():
            k = int(np.flatnonzero(np.isin(codes, np.flatnonzero(sci)))[0])
            raise InputError(src.path, "an ID was turned into a number in scientific notation "
                             "(a spreadsheet program does this), so its digits are lost",
                             row=int(df[ROW_COLUMN].iloc[k]), column=src.header(column),
                             expected=f"{digits} digits", found=repr(raw[codes[k]]),
                             hint="export the file again from the survey platform, or format "
                                  "the column as Text before saving it in the spreadsheet")
        clean = raw.str.replace(r"\.0+$", "", regex=True).str.lstrip("'")
        short = clean.str.fullmatch(r"\d+") & (clean.str.len() < digits)
        fixed = clean.where(~short, clean.str.zfill(digits))
        padded = take_text(list(fixed) + [""], codes, index=df.index)
        changed_u = np.append((fixed != pd.Series(uniques, dtype="str")).to_numpy(), False)
        self._log(df, changed_u[codes], src, column, df[column], padded,
                  "restore_leading_zeros")
        return padded

    def dates(self, df, column, *, src: Source):
        """Parse date-times; a column that is not ISO 8601 is read with the first layout
        of the codebook that reads all of it (logged once for the column)."""
        text = df[column].astype("str").str.strip()
        filled = text != ""
        formats = self.cb.export_formats["datetime_formats"]
        value = pd.to_datetime(text.where(filled), format=formats[0], errors="coerce")
        rest = filled & value.isna()
        if rest.any():
            best, best_n = None, -1
            for fmt in formats[1:]:
                parsed = pd.to_datetime(text[rest], format=fmt, errors="coerce")
                if parsed.notna().sum() > best_n:
                    best, best_n, best_values = fmt, int(parsed.notna().sum()), parsed
                if best_n == int(rest.sum()):
                    break
            if best_n > 0:
                value[rest] = best_values
                self.log.note(source_file=src.file, column=column, old=best,
                              new=f"ISO 8601 ({best_n} cells)", rule="date_layout_read")
            bad = filled & value.isna()
            self._log(df, bad, src, column, safe_text(text, limit=40), "",
                      "not_a_date_set_missing")
        return value

    def booleans(self, df, column, *, src: Source):
        vocab = self.cb.export_formats["boolean"]
        mapping = {}
        for value, words in ((True, vocab["true"]), (False, vocab["false"])):
            for word in words:                    # true, TRUE and True are all exact
                mapping |= {word: value, word.upper(): value, word.title(): value}
        return self.labels(df, column, mapping, src=src).astype(object)


def _typed(cleaner: Cleaner, df: pd.DataFrame, source: str, src: Source,
           skip=()) -> pd.DataFrame:
    """Type every codebook column of a survey source (labels -> codes, text -> numbers)."""
    cb = cleaner.cb
    out = {ROW_COLUMN: df[ROW_COLUMN]}
    for col in cb.columns(source):
        v = col.variable
        if v not in df or v in skip or col.pii or col.free_text:
            continue
        if col.scale:
            out[v] = cleaner.labels(df, v, cb.scale(col.scale), codes=cb.scale_codes(col.scale),
                                    src=src)
        elif col.type in ("number", "integer"):
            out[v] = cleaner.number(df, v, src=src, lo=col.min, hi=col.max,
                                    lo_exclusive=col.min_exclusive)
        elif col.type == "id":
            out[v] = cleaner.ids(df, v, col.digits, src=src)
        elif col.type == "datetime":
            out[v] = cleaner.dates(df, v, src=src)
        elif col.type == "boolean":
            out[v] = cleaner.booleans(df, v, src=src)
        else:
            out[v] = df[v]
    # copy=False: the columns are fresh arrays; not stacking them into 2-D blocks saves a
    # copy of every numeric column (the values are the same either way)
    return pd.DataFrame(out, index=df.index, copy=False)


def _source(export: SurveyExport, id_col: str) -> Source:
    return Source(export.path.name, export.path, id_col, dict(export.headers),
                  decimal_comma=export.details.get("delimiter", ",") != ",")


def _log_reading(cleaner: Cleaner, export: SurveyExport, id_col: str) -> None:
    """How a file was read, what was changed while reading, what was not used."""
    log, file = cleaner.log, export.path.name
    log.note(source_file=file, new=export.describe(), rule="read_as")
    for _f, header, closest in export.unknown:
        log.note(source_file=file, column=header, new=f"closest known header: {closest}"
                 if closest else "", rule="unknown_column_not_used")
    for header in export.platform_columns:
        log.note(source_file=file, column=header, rule="platform_column_not_used")
    data = export.data
    ids = data[id_col] if id_col in data else data[ROW_COLUMN]
    for note in export.notes:
        log.add(source_file=file, rows=data[ROW_COLUMN].to_numpy()[note.rows],
                record_ids=np.asarray(ids)[note.rows], column=note.variable, old=note.old,
                new="", rule=note.rule)


# ---------------------------------------------------------------------------
# Districts
# ---------------------------------------------------------------------------
def clean_districts(raw: RawStudy, cleaner: Cleaner, flow: Flow | None = None) -> pd.DataFrame:
    """District survey -> typed district answers with derived variables.

    Repeated submissions of a district keep the last one (counted in ``flow``
    when given).
    """
    cb = cleaner.cb
    export = raw.exports.get("district_survey") or _bare_export(raw, "district_survey",
                                                                raw.districts)
    src = _source(export, "district_id")
    df = raw.districts.copy()
    df["district_id"] = cleaner.ids(df, "district_id", 7, src=src)
    out = _typed(cleaner, df, "district_survey", src,
                 skip=("district_id", "support_model", "support_components"))
    out["district_id"] = df["district_id"]
    out["support_model"] = _support_model(df, cleaner, src)
    out["support_components"] = _components(df, cleaner, src)
    out = _drop_duplicate_districts(out, cleaner, src.file, flow)
    derived = derive.derived_support_model(out, cb=cb)
    out["support_model_derived"] = derived
    bad = out["support_model"].isin(cb.support_model_codes()) & (out["support_model"] != derived)
    cleaner.log.add(source_file=src.file, rows=out.loc[bad, ROW_COLUMN],
                    record_ids=out.loc[bad, "district_id"], column="support_model",
                    old=out.loc[bad, "support_model"], new=out.loc[bad, "support_model"],
                    rule="d1_d2_inconsistent_kept_self_report")
    out = pd.concat([out, derive.district_derived(out, cb)], axis=1)
    for variable in cb.reverse_items():
        if variable in out:
            col = next(c for c in cb.columns("district_survey") if c.variable == variable)
            cleaner.log.note(source_file=src.file, column=variable, old="x",
                             new=f"6 - x in the {col.construct} score (item kept as answered)",
                             rule="reverse_coded_in_scale_score")
    out["support_components"] = out["support_components"].map(";".join)
    return out


def _bare_export(raw: RawStudy, source: str, data: pd.DataFrame) -> SurveyExport:
    return SurveyExport(data, raw.files[source], "unknown")


def _support_model(df: pd.DataFrame, cleaner: Cleaner, src: Source) -> pd.Series:
    """D1 codes; "Other (please specify)" texts mapped only through the mapping table.

    A D1 answer that is no label of the instrument is an "Other" text (form
    exports put the typed text in the D1 cell itself).
    """
    cb = cleaner.cb
    mapping = dict(cb.support_model_labels())
    mapping[cb.other_model_label] = cb.other_model_code
    model = cleaner.labels(df, "support_model", mapping, codes=cb.support_model_recodes(),
                           src=src, unknown="keep").astype(object)
    d1_text = df["support_model"].astype("str").str.strip()
    other_col = df["support_model_other"].astype("str").str.strip() \
        if "support_model_other" in df else pd.Series("", index=df.index)
    typed_in_d1 = model.isna() & (d1_text != "")
    other_text = other_col.where(model == cb.other_model_code, "").where(~typed_in_d1, d1_text)
    version, table, _ = cb.other_mapping()
    lookup = {_label_key(k): v for k, v in table.items()}
    mapped = map_unique(other_text, _label_key).map(lookup)
    is_other = (model == cb.other_model_code) | typed_in_d1
    hit = is_other & mapped.notna()
    miss = is_other & mapped.isna()
    rule_suffix = f" (other_mapping v{version})"
    cleaner._log(df, hit, src, "support_model", REDACTED, mapped.astype(str) + rule_suffix,
                 "other_specify_mapped")
    cleaner._log(df, miss, src, "support_model", REDACTED, cb.other_model_code + rule_suffix,
                 "other_specify_unmapped")
    model = model.where(~hit, mapped).where(~miss, cb.other_model_code)
    empty = model.isna()
    cleaner._log(df, empty, src, "support_model", "", cb.other_model_code,
                 "support_model_missing_set_other")
    return model.fillna(cb.other_model_code)


def _components(df: pd.DataFrame, cleaner: Cleaner, src: Source) -> pd.Series:
    """D2 checkbox answers (joined by any separator of the codebook) -> component codes."""
    cb = cleaner.cb
    labels = {c["label"]: c["code"] for c in cb.support_components()}
    codes = {float(c["recode"]): c["code"] for c in cb.support_components()}
    order = [c["code"] for c in cb.support_components()]
    pattern = "|".join(map(re.escape, cb.component_separators))
    cells, uniques = pd.factorize(df["support_components"].astype("str"),
                                  use_na_sentinel=True)
    parsed, unknown = [], []
    for cell in uniques:
        parts = [p for p in re.split(pattern, cell) if p.strip()]
        values, how = match_labels(parts, labels, codes)
        found = {v for v in values if v}
        parsed.append(tuple(c for c in order if c in found))
        unknown.append("; ".join(p for p, h in zip(parts, how, strict=True) if h == "unknown"))
    parsed.append(())
    unknown.append("")
    table = np.empty(len(parsed), dtype=object)
    for k, codes_k in enumerate(parsed):
        table[k] = codes_k
    result = pd.Series(table[cells], index=df.index, copy=False)
    bad = np.array(unknown, dtype=object)[cells]
    has_bad = bad != ""
    old = safe_text(pd.Series(bad, index=df.index), limit=cleaner.cb.cleaning["max_logged_text"])
    cleaner._log(df, has_bad, src, "support_components", old, "",
                 "unknown_component_ignored")
    return result


def _drop_duplicate_districts(out: pd.DataFrame, cleaner: Cleaner, file: str,
                              flow: Flow | None) -> pd.DataFrame:
    order = out.sort_values(["submitted_at", ROW_COLUMN])
    dup = order.duplicated("district_id", keep="last") & (order["district_id"] != "")
    flow = flow or Flow("districts", len(order))
    kept = flow.drop("duplicate_district_kept_last", ~dup, order, cleaner, file, "district_id")
    return kept.sort_values("district_id", ignore_index=True)


# ---------------------------------------------------------------------------
# Teachers
# ---------------------------------------------------------------------------
class Flow:
    """Counts in, dropped and out at each rule, in order.

    ``drop`` returns the rows kept (a copy); ``exclude`` only marks rows as out
    (``alive``), so that a long chain of rules on a large table copies it once.
    """

    def __init__(self, table: str, n: int):
        self.table = table
        self.rows = [{"table": table, "step": 0, "rule": "read", "n_in": n, "n_dropped": 0,
                      "n_out": n}]
        self.alive = np.ones(n, dtype=bool)

    def exclude(self, rule: str, out, data: pd.DataFrame, cleaner: Cleaner, file: str,
                id_col: str) -> None:
        """Mark the rows in ``out`` (aligned with ``data``) that are still in as dropped."""
        out = np.asarray(pd.Series(out).fillna(False), dtype=bool) & self.alive
        gone = np.flatnonzero(out)
        cleaner.log.add(source_file=file, rows=data[ROW_COLUMN].to_numpy()[gone],
                        record_ids=data[id_col].iloc[gone].to_numpy(), column="", old="",
                        new="row dropped", rule=rule)
        n_in = int(self.alive.sum())
        self.alive &= ~out
        self.rows.append({"table": self.table, "step": len(self.rows), "rule": rule,
                          "n_in": n_in, "n_dropped": len(gone),
                          "n_out": int(self.alive.sum())})

    def drop(self, rule: str, keep: pd.Series, data: pd.DataFrame, cleaner: Cleaner, file: str,
             id_col: str) -> pd.DataFrame:
        n_in = len(data)
        keep = keep.fillna(False).astype(bool)
        gone = data.loc[~keep]
        cleaner.log.add(source_file=file, rows=gone[ROW_COLUMN], record_ids=gone[id_col],
                        column="", old="", new="row dropped", rule=rule)
        self.rows.append({"table": self.table, "step": len(self.rows), "rule": rule,
                          "n_in": n_in, "n_dropped": int((~keep).sum()),
                          "n_out": int(keep.sum())})
        return data.loc[keep]

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


def clean_teachers(raw: RawStudy, cleaner: Cleaner) -> pd.DataFrame:
    """Teacher survey -> typed answers (codes and numbers), personal columns dropped."""
    export = raw.exports.get("teacher_survey") or _bare_export(raw, "teacher_survey",
                                                               raw.teachers)
    src = _source(export, "response_id")
    df = raw.teachers
    if "response_id" in df:
        df = df.assign(response_id=df["response_id"].astype("str").str.strip())
    derived_from = {v for c in cleaner.cb.columns("teacher_survey") if c.variable not in df
                    for v in c.derive_from}
    # platform metadata the processed table does not keep (and nothing is derived from)
    unused = {c.variable for c in cleaner.cb.columns("teacher_survey")
              if c.type in ("datetime", "text") and not c.required
              and c.variable not in derived_from}
    out = _typed(cleaner, df, "teacher_survey", src, skip=unused)
    _derive_metadata(out, cleaner, src)
    # personal columns needed by the duplicate rule stay only as in-memory keys
    out["_email_key"] = (df["recipient_email"].astype("str").str.strip().str.lower()
                         if "recipient_email" in df else "")
    out["_ip_key"] = df["ip_address"].astype("str").str.strip() if "ip_address" in df else ""
    return out


def _derive_metadata(out: pd.DataFrame, cleaner: Cleaner, src: Source) -> None:
    """Fill platform metadata an export lacks from what it has (logged per column)."""
    for col in cleaner.cb.columns("teacher_survey"):
        if col.variable in out or not col.derive_from:
            continue
        if not all(v in out for v in col.derive_from):
            continue
        if len(col.derive_from) == 2:
            start, end = (out[v] for v in col.derive_from)
            out[col.variable] = (end - start).dt.total_seconds()
        else:
            out[col.variable] = out[col.derive_from[0]]
        cleaner.log.note(source_file=src.file, column=col.variable,
                         new="derived from " + " and ".join(col.derive_from),
                         rule="derived_from_platform_metadata")


def apply_quality_rules(t: pd.DataFrame, cleaner: Cleaner, *, file: str,
                        frame_districts: pd.DataFrame, districts: pd.DataFrame,
                        frame_schools: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The response-quality rules of the instrument, in order, each logged with counts."""
    cb = cleaner.cb
    rules = cb.quality_rules
    flow = Flow("teachers", len(t))
    t = t.reset_index(drop=True)

    def out(rule, mask):
        flow.exclude(rule, mask, t, cleaner, file, "response_id")

    out("not_consented", t["consent"] != 1)

    outcome_items = list(cb.samr_items()) + ["samr_self"]
    has_outcomes = t[outcome_items].notna().all(axis=1)
    complete = _complete(t, cleaner, file)
    out("partial_without_outcomes", ~(complete | has_outcomes))
    partial = ~complete

    duration = t["duration_seconds"]
    median = duration[flow.alive].median()
    out("speeder", duration < median * rules["speeder_fraction_of_median"])

    items = t[rules["straightline_items"]].to_numpy(dtype=float)
    out("straight_lining", ~np.isnan(items).any(axis=1) & (items == items[:, :1]).all(axis=1))

    passed = cb.scale("agreement")[rules["attention_check_pass"]]
    check = t["attention_check"]
    out("failed_attention_check", (check.notna() & (check != passed))
        | (check.isna() & ~partial))

    out("duplicate_response", _duplicates(t, rules["duplicate_window_minutes"],
                                          rows=np.flatnonzero(flow.alive)))

    out("unknown_district_id", ~t["district_id"].isin(frame_districts["district_id"]))
    out("district_did_not_answer", ~t["district_id"].isin(districts["district_id"]))
    out("unknown_school_id", ~t["school_id"].isin(frame_schools["school_id"]))
    # the rows kept, in the order of the processed table (one take for filter and sort)
    alive = np.flatnonzero(flow.alive)
    rows = alive[sort_order(t, ["district_id", "school_id", "response_id"], rows=alive)]
    kept = t.drop(columns=["_email_key", "_ip_key"]).take(rows).reset_index(drop=True)
    kept.insert(len(kept.columns), "partial", partial.to_numpy()[rows])
    return kept, flow.frame()


def _complete(t: pd.DataFrame, cleaner: Cleaner, file: str) -> pd.Series:
    """Complete responses: Progress 100 and Finished, as far as the export says; in an
    export without either (SurveyMonkey), every question answered."""
    complete = pd.Series(True, index=t.index)
    if "progress" in t:
        complete &= t["progress"] >= 100
    if "finished" in t:
        complete &= t["finished"].eq(True)
    if "progress" not in t and "finished" not in t:
        items = [c.variable for c in cleaner.cb.columns("teacher_survey")
                 if c.question and not c.import_id and c.type != "id" and not c.pii
                 and not c.free_text and c.variable in t]
        cleaner.log.note(source_file=file, column="progress",
                         new="no Progress or Finished in the export: a response counts as "
                             "complete when every question is answered",
                         rule="completion_from_answers")
        complete = t[items].notna().all(axis=1)
    return complete.fillna(False).astype(bool)


def _duplicates(t: pd.DataFrame, window_minutes: float, *, rows=None) -> pd.Series:
    """Earlier submissions of the same person: same e-mail, or same district, school
    and IP within the window. The last one (by recorded date, then row) is kept.

    Only the rows at positions ``rows`` (all by default) take part. Vectorised: the
    keys are factorised to integers once and the rows sorted with ``numpy.lexsort``.
    """
    rows = np.arange(len(t)) if rows is None else np.asarray(rows)
    n = len(rows)
    missing = np.iinfo(np.int64).min
    when = t["recorded_date"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
    when = np.where(t["recorded_date"].isna().to_numpy(), missing, when)[rows]
    source_row = t[ROW_COLUMN].to_numpy()[rows]
    email = np.where((t["_email_key"] == "").to_numpy(), -1,
                     factorize(t["_email_key"].astype("str"))[0])[rows]
    # district, school and IP in one code (only equal or not matters, not its value)
    place, bound = np.zeros(n, dtype=np.int64), 1
    for key in ("district_id", "school_id", "_ip_key"):
        codes, uniques = factorize(t[key].astype("str"))
        if bound * (len(uniques) + 1) >= 2**62:         # renumber first: stays < n
            place, bound = pd.factorize(place)[0], max(n, 1)
        place = place * (len(uniques) + 1) + codes[rows] + 1
        bound *= len(uniques) + 1
    has_ip = (t["_ip_key"] != "").to_numpy()[rows]
    dup = np.zeros(n, dtype=bool)
    # rows in file order (the usual case): a stable sort keeps ties in row order already
    in_file_order = bool((np.diff(source_row) > 0).all())
    # same e-mail: every submission but the last
    order = (np.argsort(when, kind="stable") if in_file_order     # by date, then row
             else np.lexsort((source_row, when)))
    by_email = order[email[order] >= 0]
    later = pd.Series(email[by_email]).duplicated(keep="last").to_numpy()
    dup[by_email[later]] = True
    # same district, school and IP: a submission followed by another within the window
    grouped = (np.lexsort((when, place)) if in_file_order
               else np.lexsort((source_row, when, place)))
    first, second = grouped[:-1], grouped[1:]
    window = int(pd.Timedelta(minutes=window_minutes).value)
    soon = (place[first] == place[second]) & (when[second] - when[first] <= window)
    dup[first[soon & has_ip[first] & (when[first] != missing)]] = True
    out = np.zeros(len(t), dtype=bool)
    out[rows] = dup
    return pd.Series(out, index=t.index, copy=False)


# ---------------------------------------------------------------------------
# Frame
# ---------------------------------------------------------------------------
def _frame_districts(raw: RawStudy, cleaner: Cleaner) -> pd.DataFrame:
    cb = cleaner.cb
    src = Source(raw.files["frame_districts"].name, raw.files["frame_districts"], ROW_COLUMN)
    df = raw.frame_districts.copy()
    df["district_id"] = cleaner.ids(df, "district_id", 7, src=src)
    src.id_col = "district_id"
    out = pd.DataFrame({ROW_COLUMN: df[ROW_COLUMN], "district_id": df["district_id"],
                        "state": df["state"], "stratum": df["stratum"].str.strip()})
    for col in cb.columns("frame_districts"):
        if col.scale:
            out[col.variable] = cleaner.labels(df, col.variable, cb.scale(col.scale),
                                               codes=cb.scale_codes(col.scale), src=src)
        elif col.type in ("number", "integer"):
            out[col.variable] = cleaner.number(df, col.variable, src=src, check_range=False)
    schemas.validate_raw(out, schemas.raw_frame_districts_schema(cb), src.path)
    return out.drop(columns=[ROW_COLUMN])


def _frame_schools(raw: RawStudy, cleaner: Cleaner) -> pd.DataFrame:
    path = raw.files["frame_schools"]
    src = Source(path.name, path, ROW_COLUMN)
    schools = raw.frame_schools.copy()
    schools["school_id"] = cleaner.ids(schools, "school_id", 12, src=src)
    src.id_col = "school_id"
    schools["district_id"] = cleaner.ids(schools, "district_id", 7, src=src)
    schools["n_teachers"] = cleaner.number(schools, "n_teachers", src=src, check_range=False)
    schemas.validate_raw(schools, schemas.raw_frame_schools_schema(cleaner.cb), path)
    return schools


# ---------------------------------------------------------------------------
# Assemble
# ---------------------------------------------------------------------------
@dataclass
class CleanResult:
    teachers: pd.DataFrame
    districts: pd.DataFrame
    flow: pd.DataFrame
    log: pd.DataFrame
    raw_files: dict[str, Path]
    unknown_columns: list
    exports: dict[str, SurveyExport] = field(default_factory=dict)


def clean_study(raw_dir: Path, cb: Codebook | None = None, *,
                formats: dict[str, str] | None = None) -> CleanResult:
    """Read and clean the raw study in ``raw_dir`` (nothing is written).

    Parameters
    ----------
    raw_dir : Path
        Folder of the raw exports.
    formats : dict, optional
        Export format to force per survey (``teacher_survey``, ``district_survey``);
        ``auto`` (the default) detects it from the file.
    """
    cb = cb or load_codebook()
    cleaner = Cleaner(cb, CleaningLog())
    raw = read_raw(raw_dir, cb, formats=formats)
    for source, id_col in (("district_survey", "district_id"), ("teacher_survey",
                                                                "response_id")):
        _log_reading(cleaner, raw.exports[source], id_col)
    frame = _frame_districts(raw, cleaner)
    schools = _frame_schools(raw, cleaner)

    dflow = Flow("districts", len(raw.districts))
    dist = clean_districts(raw, cleaner, dflow)
    file_d = raw.files["district_survey"].name
    schemas.validate_raw(dist, schemas.raw_districts_schema(cb), raw.files["district_survey"],
                         headers=raw.exports["district_survey"].headers)
    dist = dflow.drop("district_not_in_frame", dist["district_id"].isin(frame["district_id"]),
                      dist, cleaner, file_d, "district_id")
    sampled_ids = frame.loc[frame["sampled"] == 1, "district_id"]
    dist = dflow.drop("district_not_sampled", dist["district_id"].isin(sampled_ids), dist,
                      cleaner, file_d, "district_id")
    dw = weights.district_weights(frame, responding=dist["district_id"])
    fpc = frame.groupby("stratum")["district_id"].size().rename("fpc_districts")
    frame_cols = frame.drop(columns=["sampled"])
    districts = _categoricals(dist.merge(frame_cols, on="district_id", how="left")
                              .merge(dw.drop(columns=["stratum"]), on="district_id", how="left")
                              .join(fpc, on="stratum"), cb)

    teachers = clean_teachers(raw, cleaner)
    schemas.validate_raw(teachers, schemas.raw_teachers_schema(cb), raw.files["teacher_survey"],
                         headers=raw.exports["teacher_survey"].headers)
    teachers, tflow = apply_quality_rules(
        teachers, cleaner, file=raw.files["teacher_survey"].name, frame_districts=frame,
        districts=districts, frame_schools=schools)
    teachers = _assemble_teachers(teachers, districts, schools, cb)
    districts = _assemble_districts(districts, cb)
    flow = pd.concat([dflow.frame(), tflow], ignore_index=True)
    return CleanResult(teachers, districts, flow, cleaner.log.frame(), raw.files,
                       raw.unknown_columns, raw.exports)


def _assemble_teachers(t, districts, schools, cb: Codebook) -> pd.DataFrame:
    t = t.drop(columns=["status", "distribution_channel", "user_language", "start_date",
                        "end_date"], errors="ignore")
    # the rows come sorted from apply_quality_rules; the merges keep the left table's order
    t = pd.concat([t, derive.samr_outcomes(t, cb=cb)], axis=1)
    district_cols = [c for c in districts.columns if c not in (ROW_COLUMN, "submitted_at",
                                                                "district_name")]
    t = lookup_join(t, districts[district_cols], on="district_id")
    t = lookup_join(t, schools[["school_id", "n_teachers"]], on="school_id")
    t["weight"] = weights.teacher_weights(t)
    return _categoricals(t, cb)


def lookup_join(left: pd.DataFrame, right: pd.DataFrame, *, on: str) -> pd.DataFrame:
    """``left`` with the columns of ``right`` whose key ``on`` matches (a many-to-one left
    join that keeps ``left`` as it is and only takes from ``right``).

    Examples
    --------
    >>> left = pd.DataFrame({"k": ["a", "b", "a", "c"], "x": [1, 2, 3, 4]})
    >>> right = pd.DataFrame({"k": ["a", "b"], "y": [10.0, 20.0]})
    >>> lookup_join(left, right, on="k")["y"].tolist()
    [10.0, 20.0, 10.0, nan]
    """
    if not right[on].is_unique:
        raise ValueError(f"lookup_join: {on!r} is not unique in the right table")
    # reindex once per distinct key (a few thousand), then one take per column: the
    # same values and dtypes as reindexing by every row's key
    codes, uniques = pd.factorize(left[on], use_na_sentinel=False)
    looked_up = right.set_index(on).reindex(np.asarray(uniques, dtype=object)).take(codes)
    looked_up.index = left.index
    return pd.concat([left, looked_up], axis=1)


def sort_rows(data: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Rows sorted by text columns ``by`` (Arrow's multi-key sort), index reset.

    Examples
    --------
    >>> sort_rows(pd.DataFrame({"a": ["b", "a", "a"], "n": [1, 2, 3]}), ["a"])["n"].tolist()
    [2, 3, 1]
    """
    return data.take(sort_order(data, by)).reset_index(drop=True)


def sort_order(data: pd.DataFrame, by: list[str], *, rows=None) -> np.ndarray:
    """Positions that sort ``data`` (or its rows at positions ``rows``) by the text
    columns ``by`` (stable); positions into ``rows`` when given.

    Examples
    --------
    >>> sort_order(pd.DataFrame({"a": ["b", "a", "a"], "b": ["x", "z", "y"]}), ["a", "b"])
    array([2, 1, 0])
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    rows = np.arange(len(data)) if rows is None else np.asarray(rows)
    # one stable sort per key, last key first (so the first key decides): Arrow's sort
    # of the text for a mostly distinct key, a sort of small integer codes otherwise
    order = np.arange(len(rows))
    for k in reversed(by):
        values = data[k].astype("str")
        head = values.iloc[:1000]
        if head.nunique() > len(head) // 2:              # mostly distinct: Arrow's sort
            taken = pa.array(values).take(pa.array(rows[order]))
            step = pc.sort_indices(taken).to_numpy()         # nulls last, as pc.rank
        else:
            codes = factorize(values, sort=True)[0]
            step = np.argsort(codes[rows[order]], kind="stable")
        order = order[step]
    return order


def _categoricals(df: pd.DataFrame, cb: Codebook) -> pd.DataFrame:
    df = df.copy(deep=False)
    cats = {"support_model": cb.support_model_codes() + [cb.other_model_code],
            "support_model_derived": cb.support_model_codes(),
            "locale": cb.scale_values("locale"), "size_stratum": cb.scale_values("size_stratum"),
            "grade_band": cb.scale_values("grade_band"), "subject": cb.scale_values("subject"),
            "respondent_role": cb.scale_values("respondent_role"),
            "position_cut": cb.scale_values("yes_no_not_sure")}
    for col, levels in cats.items():
        if col not in df:
            continue
        dtype = df[col].dtype
        if not (isinstance(dtype, pd.CategoricalDtype) and list(dtype.categories) == levels):
            df[col] = pd.Categorical(df[col], categories=levels)
    if "samr_self" in df:
        df = df.drop(columns=["samr_self"])
    return df


def _assemble_districts(d: pd.DataFrame, cb: Codebook) -> pd.DataFrame:
    d = d.drop(columns=[ROW_COLUMN, "submitted_at", "district_name", "support_model_other"],
               errors="ignore")
    return _categoricals(d, cb).sort_values("district_id", ignore_index=True)


def run_clean(raw_dir: Path, processed_dir: Path, *,
              formats: dict[str, str] | None = None) -> str:
    """Clean ``raw_dir`` into ``processed_dir``; all-or-nothing.

    Outputs are written to a temporary folder and moved into place only when
    every step and schema check has passed, so a failed run leaves
    ``processed_dir`` as it was.

    Parameters
    ----------
    formats : dict, optional
        Export format to force per survey (see :func:`clean_study`).

    Returns
    -------
    str
        A one-paragraph summary for the terminal.
    """
    cb = load_codebook()
    raw_dir, processed_dir = Path(raw_dir), Path(processed_dir)
    result = clean_study(raw_dir, cb, formats=formats)
    teachers = schemas.validate_teachers(result.teachers)
    districts = schemas.validate_districts(result.districts)
    processed_dir.mkdir(parents=True, exist_ok=True)
    outputs = [config.TEACHERS_FILE, config.DISTRICTS_FILE, config.FLOW_FILE,
               config.CLEANING_LOG_FILE]
    with tempfile.TemporaryDirectory(dir=processed_dir.parent, prefix=".clean-") as tmp:
        tmp = Path(tmp)
        teachers.to_parquet(tmp / config.TEACHERS_FILE, index=False)
        districts.to_parquet(tmp / config.DISTRICTS_FILE, index=False)
        result.flow.to_csv(tmp / config.FLOW_FILE, index=False, lineterminator="\n")
        result.log.to_csv(tmp / config.CLEANING_LOG_FILE, index=False, lineterminator="\n")
        manifest = _manifest(result, cb, raw_dir, {name: sha256_file(tmp / name)
                                                    for name in outputs})
        (tmp / config.MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True)
                                                + "\n")
        for name in outputs + [config.MANIFEST_FILE]:
            shutil.move(tmp / name, processed_dir / name)
    return _summary(result, raw_dir, processed_dir, teachers, districts)


def _manifest(result: CleanResult, cb: Codebook, raw_dir: Path, processed: dict) -> dict:
    version, _, mapping_sha = cb.other_mapping()
    return {
        "package_version": analysis.__version__,
        "codebook_version": cb.version,
        "codebook_sha256": cb.sha256,
        "other_mapping_version": version,
        "other_mapping_sha256": mapping_sha,
        "raw": {p.name: sha256_file(p) for p in result.raw_files.values()},
        "read_as": {e.path.name: e.describe() for e in result.exports.values()},
        "processed": processed,
        "synthetic": (raw_dir / config.TRUTH_FILE).exists(),
        "unknown_columns": [{"file": Path(f).name, "header": h, "closest": c}
                            for f, h, c in result.unknown_columns],
    }


def _summary(result: CleanResult, raw_dir, processed_dir, teachers, districts) -> str:
    f = result.flow
    dropped = f.loc[(f["table"] == "teachers") & (f["n_dropped"] > 0), ["rule", "n_dropped"]]
    lines = [f"cleaned {raw_dir} -> {processed_dir}"]
    lines += [f"  read {e.path.name} as {e.describe()}" for e in result.exports.values()]
    lines += [f"  teachers: {int(f.loc[f['table'] == 'teachers', 'n_in'].iloc[0])} read, "
              f"{len(teachers)} kept; districts: {len(districts)} kept",
              *(f"  dropped by {r}: {n}" for r, n in dropped.itertuples(index=False)),
              f"  cleaning log: {len(result.log)} changes"]
    for f_, h, c in result.unknown_columns:
        lines.append(f"  warning: {Path(f_).name}: column {h!r} is not in the codebook"
                     + (f" (closest known header: {c!r})" if c else "") + "; it was not used")
    return "\n".join(lines)

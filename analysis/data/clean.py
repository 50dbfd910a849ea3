"""Cleaning pipeline: raw exports -> processed tables, with an audit trail.

``run_clean(raw_dir, processed_dir)`` reads the four raw sources through the
codebook, normalises labels, parses numbers (out-of-range values become
missing, never dropped), applies the response-quality rules of the
instrument in order, derives outcomes and scale scores, computes the weights
and writes ``teachers.parquet``, ``districts.parquet``, ``flow.csv``,
``cleaning_log.csv`` and ``manifest.json``. Personal data (names, e-mails,
IP addresses, locations, external references, free text) is dropped before
anything is written and never copied into the log.

Examples
--------
>>> from pathlib import Path
>>> from analysis.data.clean import clean_study
>>> result = clean_study(Path("data/raw"))
>>> result.flow["rule"].iloc[4]
'not_consented'
>>> bool((result.teachers["weight"] > 0).all())
True
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import analysis
from analysis import config
from analysis.data import derive, schemas, weights
from analysis.data.ingest import ROW_COLUMN, RawStudy, read_raw
from analysis.errors import InputError
from analysis.study.codebook import Codebook, load_codebook
from analysis.study.simulate import sha256_file

LOG_COLUMNS = ["source_file", "source_row", "record_id", "column", "old_value", "new_value",
               "rule"]
REDACTED = "<redacted>"
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
                         "\u00a0": " "})


class CleaningLog:
    """One row per change the cleaner makes (vectorised appends)."""

    def __init__(self):
        self._parts: list[pd.DataFrame] = []

    def add(self, *, source_file: str, rows: pd.Series, record_ids: pd.Series, column: str,
            old, new, rule: str, pii: bool = False) -> None:
        """Log a change for each row in ``rows`` (aligned Series)."""
        if len(rows) == 0:
            return
        n = len(rows)
        old_values = [REDACTED] * n if pii else _as_text(old, n)
        self._parts.append(pd.DataFrame({
            "source_file": source_file, "source_row": np.asarray(rows),
            "record_id": np.asarray(record_ids, dtype=object), "column": column,
            "old_value": old_values, "new_value": _as_text(new, n), "rule": rule,
        }))

    def frame(self) -> pd.DataFrame:
        if not self._parts:
            return pd.DataFrame(columns=LOG_COLUMNS)
        return pd.concat(self._parts, ignore_index=True)[LOG_COLUMNS]


def _as_text(values, n) -> list[str]:
    if isinstance(values, str) or values is None or np.isscalar(values):
        return ["" if values is None else str(values)] * n
    return ["" if (v is None or (isinstance(v, float) and np.isnan(v))) else str(v)
            for v in values]


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


@dataclass
class Cleaner:
    """State shared by the cleaning steps of one run."""

    cb: Codebook
    log: CleaningLog

    def labels(self, df, column, mapping, *, file, id_col, rule="normalise_label"):
        """Map text labels through ``mapping`` (label -> value), normalising variants."""
        exact = df[column].map(lambda v: mapping.get(v) if isinstance(v, str) else None)
        norm_map = {normalise_label(k): v for k, v in mapping.items()}
        norm = df[column].map(normalise_label)
        loose = norm.map(norm_map)
        value = exact.where(exact.notna(), loose)
        changed = exact.isna() & loose.notna()
        self.log.add(source_file=file, rows=df.loc[changed, ROW_COLUMN],
                     record_ids=df.loc[changed, id_col], column=column,
                     old=df.loc[changed, column], new=value[changed], rule=rule)
        unknown = value.isna() & (norm != "")
        self.log.add(source_file=file, rows=df.loc[unknown, ROW_COLUMN],
                     record_ids=df.loc[unknown, id_col], column=column,
                     old=df.loc[unknown, column], new="", rule="unknown_label_set_missing")
        return value

    def number(self, df, column, *, file, id_col, lo=None, hi=None, lo_exclusive=False):
        """Parse numbers; non-numbers and out-of-range values become missing (logged)."""
        raw = df[column]
        text = raw.map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v))
                       else str(v).strip())
        value = pd.to_numeric(text.where(text != ""), errors="coerce").astype(float)
        bad = value.isna() & (text != "")
        self.log.add(source_file=file, rows=df.loc[bad, ROW_COLUMN],
                     record_ids=df.loc[bad, id_col], column=column, old=raw[bad], new="",
                     rule="not_a_number_set_missing")
        out = pd.Series(False, index=df.index)
        if lo is not None:
            out |= (value <= lo) if lo_exclusive else (value < lo)
        if hi is not None:
            out |= value > hi
        self.log.add(source_file=file, rows=df.loc[out, ROW_COLUMN],
                     record_ids=df.loc[out, id_col], column=column, old=raw[out], new="",
                     rule="out_of_range_set_missing")
        return value.where(~out)

    def ids(self, df, column, digits, *, file, id_col):
        """IDs as zero-padded digit strings; restores leading zeros lost by spreadsheets."""
        text = df[column].map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v))
                              else str(v).strip())
        text = text.str.replace(r"\.0$", "", regex=True)
        padded = text.where(~text.str.fullmatch(r"\d+") | (text.str.len() >= digits),
                            text.str.zfill(digits))
        changed = padded != text
        self.log.add(source_file=file, rows=df.loc[changed, ROW_COLUMN],
                     record_ids=df.loc[changed, id_col], column=column, old=text[changed],
                     new=padded[changed], rule="restore_leading_zeros")
        return padded


def _typed(cleaner: Cleaner, df: pd.DataFrame, source: str, *, file: str, id_col: str,
           skip=()) -> pd.DataFrame:
    """Type every codebook column of a survey source (labels -> codes, text -> numbers)."""
    cb = cleaner.cb
    out = pd.DataFrame({ROW_COLUMN: df[ROW_COLUMN]})
    for col in cb.columns(source):
        v = col.variable
        if v not in df or v in skip or col.pii or col.free_text:
            continue
        if col.scale:
            out[v] = cleaner.labels(df, v, cb.scale(col.scale), file=file, id_col=id_col)
        elif col.type in ("number", "integer"):
            out[v] = cleaner.number(df, v, file=file, id_col=id_col, lo=col.min, hi=col.max,
                                    lo_exclusive=col.min_exclusive)
        elif col.type == "id":
            out[v] = cleaner.ids(df, v, col.digits, file=file, id_col=id_col)
        elif col.type == "datetime":
            out[v] = pd.to_datetime(df[v], errors="coerce")
        elif col.type == "boolean":
            out[v] = df[v].map(normalise_label).map({"true": True, "false": False, "1": True,
                                                     "0": False})
        else:
            out[v] = df[v]
    return out


# ---------------------------------------------------------------------------
# Districts
# ---------------------------------------------------------------------------
def clean_districts(raw: RawStudy, cleaner: Cleaner) -> pd.DataFrame:
    """District survey -> typed district answers with derived variables."""
    cb = cleaner.cb
    file = raw.files["district_survey"].name
    df = raw.districts.copy()
    df["district_id"] = cleaner.ids(df, "district_id", 7, file=file, id_col=ROW_COLUMN)
    out = _typed(cleaner, df, "district_survey", file=file, id_col="district_id",
                 skip=("district_id", "support_model", "support_components"))
    out["district_id"] = df["district_id"]
    mapping = dict(cb.support_model_labels())
    mapping[cb.other_model_label] = cb.other_model_code
    out["support_model"] = cleaner.labels(df, "support_model", mapping, file=file,
                                          id_col="district_id").fillna(cb.other_model_code)
    out["support_components"] = _components(df["support_components"], cb)
    out = _drop_duplicate_districts(out, cleaner, file)
    derived = derive.derived_support_model(out, cb=cb)
    out["support_model_derived"] = derived
    bad = out["support_model"].isin(cb.support_model_codes()) & (out["support_model"] != derived)
    cleaner.log.add(source_file=file, rows=out.loc[bad, ROW_COLUMN],
                    record_ids=out.loc[bad, "district_id"], column="support_model",
                    old=out.loc[bad, "support_model"], new=out.loc[bad, "support_model"],
                    rule="d1_d2_inconsistent_kept_self_report")
    out = pd.concat([out, derive.district_derived(out, cb)], axis=1)
    out["support_components"] = out["support_components"].map(lambda cs: ";".join(cs))
    return out


def _components(values: pd.Series, cb: Codebook) -> pd.Series:
    lookup = {normalise_label(c["label"]): c["code"] for c in cb.support_components()}

    def parse(cell):
        parts = re.split(r"[;,]", cell) if isinstance(cell, str) else []
        return [lookup[p] for p in map(normalise_label, parts) if p in lookup]

    return values.map(parse)


def _drop_duplicate_districts(out: pd.DataFrame, cleaner: Cleaner, file: str) -> pd.DataFrame:
    order = out.sort_values(["submitted_at", ROW_COLUMN])
    dup = order.duplicated("district_id", keep="last")
    gone = order.loc[dup]
    cleaner.log.add(source_file=file, rows=gone[ROW_COLUMN], record_ids=gone["district_id"],
                    column="", old="", new="row dropped", rule="duplicate_district_kept_last")
    return order.loc[~dup].sort_values("district_id", ignore_index=True)


# ---------------------------------------------------------------------------
# Teachers
# ---------------------------------------------------------------------------
class Flow:
    """Counts in, dropped and out at each rule, in order."""

    def __init__(self, table: str, n: int):
        self.table = table
        self.rows = [{"table": table, "step": 0, "rule": "read", "n_in": n, "n_dropped": 0,
                      "n_out": n}]

    def drop(self, rule: str, keep: pd.Series, data: pd.DataFrame, cleaner: Cleaner, file: str,
             id_col: str) -> pd.DataFrame:
        n_in = len(data)
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
    file = raw.files["teacher_survey"].name
    df = raw.teachers.copy()
    out = _typed(cleaner, df, "teacher_survey", file=file, id_col="response_id")
    # personal columns needed by the duplicate rule stay only as in-memory keys
    out["_email_key"] = df["recipient_email"].map(normalise_label) if "recipient_email" in df \
        else ""
    out["_ip_key"] = df["ip_address"].fillna("") if "ip_address" in df else ""
    return out


def apply_quality_rules(t: pd.DataFrame, cleaner: Cleaner, *, file: str,
                        frame_districts: pd.DataFrame, districts: pd.DataFrame,
                        frame_schools: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The response-quality rules of the instrument, in order, each logged with counts."""
    cb = cleaner.cb
    rules = cb.quality_rules
    flow = Flow("teachers", len(t))
    idc = "response_id"
    t = flow.drop("not_consented", t["consent"] == 1, t, cleaner, file, idc)

    outcome_items = list(cb.samr_items()) + ["samr_self"]
    complete = (t["progress"] >= 100) & (t["finished"] == True)  # noqa: E712
    has_outcomes = t[outcome_items].notna().all(axis=1)
    t = flow.drop("partial_without_outcomes", complete | has_outcomes, t, cleaner, file, idc)
    t = t.assign(partial=~complete.reindex(t.index).astype(bool))

    median = t["duration_seconds"].median()
    speeder = t["duration_seconds"] < median * rules["speeder_fraction_of_median"]
    t = flow.drop("speeder", ~speeder, t, cleaner, file, idc)

    items = t[rules["straightline_items"]]
    straight = items.notna().all(axis=1) & (items.nunique(axis=1) == 1)
    t = flow.drop("straight_lining", ~straight, t, cleaner, file, idc)

    passed = cb.scale("agreement")[rules["attention_check_pass"]]
    fail = (t["attention_check"].notna() & (t["attention_check"] != passed)) | (
        t["attention_check"].isna() & ~t["partial"])
    t = flow.drop("failed_attention_check", ~fail, t, cleaner, file, idc)

    t = flow.drop("duplicate_response", ~_duplicates(t, rules["duplicate_window_minutes"]), t,
                  cleaner, file, idc)

    in_frame = t["district_id"].isin(frame_districts["district_id"])
    t = flow.drop("unknown_district_id", in_frame, t, cleaner, file, idc)
    answered = t["district_id"].isin(districts["district_id"])
    t = flow.drop("district_did_not_answer", answered, t, cleaner, file, idc)
    known_school = t["school_id"].isin(frame_schools["school_id"])
    t = flow.drop("unknown_school_id", known_school, t, cleaner, file, idc)
    return t.drop(columns=["_email_key", "_ip_key"]), flow.frame()


def _duplicates(t: pd.DataFrame, window_minutes: float) -> pd.Series:
    """Earlier submissions of the same person: same e-mail, or same district, school
    and IP within the window. The last one is kept."""
    order = t.sort_values(["recorded_date", ROW_COLUMN])
    by_email = order["_email_key"] != ""
    dup = pd.Series(False, index=order.index)
    dup[by_email] = order.loc[by_email].duplicated("_email_key", keep="last")
    key = order["district_id"] + "|" + order["school_id"] + "|" + order["_ip_key"]
    nxt = order.groupby(key)["recorded_date"].shift(-1)
    soon = (nxt - order["recorded_date"]) <= pd.Timedelta(minutes=window_minutes)
    dup |= soon.fillna(False) & (order["_ip_key"] != "")
    return dup.reindex(t.index)


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


def _frame_districts(raw: RawStudy, cleaner: Cleaner) -> pd.DataFrame:
    cb = cleaner.cb
    file = raw.files["frame_districts"].name
    df = raw.frame_districts.copy()
    df["district_id"] = cleaner.ids(df, "district_id", 7, file=file, id_col=ROW_COLUMN)
    out = pd.DataFrame({"district_id": df["district_id"], "state": df["state"],
                        "stratum": df["stratum"]})
    for col in cb.columns("frame_districts"):
        if col.scale:
            out[col.variable] = cleaner.labels(df, col.variable, cb.scale(col.scale), file=file,
                                               id_col="district_id")
        elif col.type in ("number", "integer"):
            out[col.variable] = cleaner.number(df, col.variable, file=file, id_col="district_id",
                                               lo=col.min, hi=col.max)
    _require_complete(out, ["selection_prob", "sampled", "stratum"], raw.files["frame_districts"],
                      df[ROW_COLUMN])
    return out


def _require_complete(df, columns, path, rows):
    for col in columns:
        bad = df[col].isna() | (df[col].astype(str) == "")
        if bad.any():
            k = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(path, "a design column has a missing or invalid value",
                             row=int(rows.iloc[k]), column=col,
                             hint="every row of the frame needs this value")


def clean_study(raw_dir: Path, cb: Codebook | None = None) -> CleanResult:
    """Read and clean the raw study in ``raw_dir`` (nothing is written)."""
    cb = cb or load_codebook()
    cleaner = Cleaner(cb, CleaningLog())
    raw = read_raw(raw_dir, cb)
    frame = _frame_districts(raw, cleaner)
    file_s = raw.files["frame_schools"].name
    schools = raw.frame_schools.copy()
    schools["school_id"] = cleaner.ids(schools, "school_id", 12, file=file_s, id_col=ROW_COLUMN)
    schools["district_id"] = cleaner.ids(schools, "district_id", 7, file=file_s,
                                         id_col="school_id")
    schools["n_teachers"] = cleaner.number(schools, "n_teachers", file=file_s, id_col="school_id",
                                           lo=1)
    _require_complete(schools, ["n_teachers"], raw.files["frame_schools"], schools[ROW_COLUMN])

    dist = clean_districts(raw, cleaner)
    file_d = raw.files["district_survey"].name
    dflow = Flow("districts", len(dist))
    dist = dflow.drop("district_not_in_frame", dist["district_id"].isin(frame["district_id"]),
                      dist, cleaner, file_d, "district_id")
    sampled_ids = frame.loc[frame["sampled"] == 1, "district_id"]
    dist = dflow.drop("district_not_sampled", dist["district_id"].isin(sampled_ids), dist,
                      cleaner, file_d, "district_id")
    dw = weights.district_weights(frame, responding=dist["district_id"])
    fpc = frame.groupby("stratum")["district_id"].size().rename("fpc_districts")
    frame_cols = frame.drop(columns=["sampled"]).rename(columns={"n_schools": "n_schools"})
    districts = (dist.merge(frame_cols, on="district_id", how="left")
                 .merge(dw.drop(columns=["stratum"]), on="district_id", how="left")
                 .join(fpc, on="stratum"))

    teachers = clean_teachers(raw, cleaner)
    teachers, tflow = apply_quality_rules(
        teachers, cleaner, file=raw.files["teacher_survey"].name, frame_districts=frame,
        districts=districts, frame_schools=schools)
    teachers = _assemble_teachers(teachers, districts, schools, cb)
    districts = _assemble_districts(districts, cb)
    flow = pd.concat([dflow.frame(), tflow], ignore_index=True)
    return CleanResult(teachers, districts, flow, cleaner.log.frame(), raw.files,
                       raw.unknown_columns)


def _assemble_teachers(t, districts, schools, cb: Codebook) -> pd.DataFrame:
    t = t.drop(columns=["status", "distribution_channel", "user_language", "start_date",
                        "end_date"], errors="ignore")
    t = pd.concat([t, derive.samr_outcomes(t, cb=cb)], axis=1)
    district_cols = [c for c in districts.columns if c not in (ROW_COLUMN, "submitted_at",
                                                                "district_name")]
    t = t.merge(districts[district_cols], on="district_id", how="left", validate="many_to_one")
    t = t.merge(schools[["school_id", "n_teachers"]], on="school_id", how="left",
                validate="many_to_one")
    t["weight"] = weights.teacher_weights(t)
    t = _categoricals(t, cb)
    t = t.sort_values(["district_id", "school_id", "response_id"], ignore_index=True)
    return t


def _categoricals(df: pd.DataFrame, cb: Codebook) -> pd.DataFrame:
    df = df.copy()
    cats = {"support_model": cb.support_model_codes() + [cb.other_model_code],
            "support_model_derived": cb.support_model_codes(),
            "locale": cb.scale_values("locale"), "size_stratum": cb.scale_values("size_stratum"),
            "grade_band": cb.scale_values("grade_band"), "subject": cb.scale_values("subject"),
            "respondent_role": cb.scale_values("respondent_role"),
            "position_cut": cb.scale_values("yes_no_not_sure")}
    for col, levels in cats.items():
        if col in df:
            df[col] = pd.Categorical(df[col], categories=levels)
    if "samr_self" in df:
        df = df.drop(columns=["samr_self"])
    return df


def _assemble_districts(d: pd.DataFrame, cb: Codebook) -> pd.DataFrame:
    d = d.drop(columns=[ROW_COLUMN, "submitted_at", "district_name", "support_model_other"],
               errors="ignore")
    return _categoricals(d, cb).sort_values("district_id", ignore_index=True)


def run_clean(raw_dir: Path, processed_dir: Path) -> str:
    """Clean ``raw_dir`` into ``processed_dir``; all-or-nothing.

    Outputs are written to a temporary folder and moved into place only when
    every step and schema check has passed, so a failed run leaves
    ``processed_dir`` as it was.

    Returns
    -------
    str
        A one-paragraph summary for the terminal.
    """
    cb = load_codebook()
    raw_dir, processed_dir = Path(raw_dir), Path(processed_dir)
    result = clean_study(raw_dir, cb)
    teachers = schemas.validate_teachers(result.teachers)
    districts = schemas.validate_districts(result.districts)
    processed_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=processed_dir.parent, prefix=".clean-") as tmp:
        tmp = Path(tmp)
        teachers.to_parquet(tmp / config.TEACHERS_FILE, index=False)
        districts.to_parquet(tmp / config.DISTRICTS_FILE, index=False)
        result.flow.to_csv(tmp / config.FLOW_FILE, index=False, lineterminator="\n")
        result.log.to_csv(tmp / config.CLEANING_LOG_FILE, index=False, lineterminator="\n")
        outputs = [config.TEACHERS_FILE, config.DISTRICTS_FILE, config.FLOW_FILE,
                   config.CLEANING_LOG_FILE]
        manifest = {
            "package_version": analysis.__version__,
            "codebook_version": cb.version,
            "codebook_sha256": cb.sha256,
            "raw": {p.name: sha256_file(p) for p in result.raw_files.values()},
            "processed": {name: sha256_file(tmp / name) for name in outputs},
            "synthetic": (raw_dir / config.TRUTH_FILE).exists(),
            "unknown_columns": [{"file": Path(f).name, "header": h, "closest": c}
                                for f, h, c in result.unknown_columns],
        }
        (tmp / config.MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True)
                                                + "\n")
        for name in outputs + [config.MANIFEST_FILE]:
            shutil.move(tmp / name, processed_dir / name)
    f = result.flow
    dropped = f.loc[(f["table"] == "teachers") & (f["n_dropped"] > 0), ["rule", "n_dropped"]]
    lines = [f"cleaned {raw_dir} -> {processed_dir}",
             f"  teachers: {int(f.loc[f['table'] == 'teachers', 'n_in'].iloc[0])} read, "
             f"{len(teachers)} kept; districts: {len(districts)} kept",
             *(f"  dropped by {r}: {n}" for r, n in dropped.itertuples(index=False)),
             f"  cleaning log: {len(result.log)} changes"]
    for f_, h, c in result.unknown_columns:
        lines.append(f"  warning: {Path(f_).name}: column {h!r} is not in the codebook"
                     + (f" (closest known header: {c!r})" if c else "") + "; it was not used")
    return "\n".join(lines)

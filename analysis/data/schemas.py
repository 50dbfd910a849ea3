"""pandera schemas at both ends of the cleaner.

*Raw side* (after reading and typing, before any rule): what the cleaner
needs of the inputs to do its work at all: identifiable responses (a unique
ResponseId), IDs that are digits of the right length, a sampling frame with a
valid selection probability, stratum and counts on every row. A failure here
is the user's to fix; every failure of a file is reported at once, with the
rows (as numbered in the file) and the column (as headed in the file).

*Processed side* (before anything is written): the contract of instrument
section 6. A failure there is a bug in the cleaner or an input it let
through; it stops the run and nothing is written.

Validation is lazy: one run reports every failure at once.

Examples
--------
>>> from analysis.data.schemas import teachers_schema, raw_teachers_schema
>>> "weight" in teachers_schema().columns
True
>>> raw_teachers_schema().columns["response_id"].unique
True
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from analysis.data.ingest import ROW_COLUMN
from analysis.errors import InputError
from analysis.study.codebook import Codebook, load_codebook

#: Columns that must never reach data/processed (personal data).
FORBIDDEN = {"ip_address", "recipient_last_name", "recipient_first_name", "recipient_email",
             "external_reference", "location_latitude", "location_longitude", "comments",
             "email", "respondent_name", "support_model_other"}


def _no_personal_columns() -> pa.Check:
    return pa.Check(lambda df: not (set(df.columns) & FORBIDDEN),
                    error="no personal column (names, e-mails, IPs, locations, free text)")


def _in(levels):
    return pa.Check.isin(list(levels))


def _digits(n: int, *, optional: bool = False) -> pa.Check:
    pattern = rf"^(\d{{{n}}})?$" if optional else rf"^\d{{{n}}}$"
    return pa.Check.str_matches(pattern, error=f"{n} digits" + (" or empty" if optional else ""))


# ---------------------------------------------------------------------------
# Raw side
# ---------------------------------------------------------------------------
def raw_teachers_schema(cb: Codebook | None = None) -> pa.DataFrameSchema:
    """The teacher survey after reading and typing (before the quality rules)."""
    cb = cb or load_codebook()
    digits = {c.variable: c.digits for c in cb.columns("teacher_survey") if c.type == "id"}
    cols = {
        "response_id": pa.Column(str, pa.Check.str_length(min_value=1, error="not empty"),
                                 unique=True, report_duplicates="exclude_first"),
        # checked as categories (once per distinct ID): see validate_raw
        "district_id": pa.Column(None, _digits(digits["district_id"], optional=True)),
        "school_id": pa.Column(None, _digits(digits["school_id"], optional=True)),
    }
    return pa.DataFrameSchema(cols, strict=False)


def raw_districts_schema(cb: Codebook | None = None) -> pa.DataFrameSchema:
    """The district survey after reading and typing."""
    cb = cb or load_codebook()
    n = cb.column("district_survey", "district_id").digits
    return pa.DataFrameSchema({"district_id": pa.Column(str, _digits(n, optional=True))},
                              strict=False)


def raw_frame_districts_schema(cb: Codebook | None = None) -> pa.DataFrameSchema:
    """The district frame: every design value present and valid on every row."""
    cb = cb or load_codebook()
    cols = {
        "district_id": pa.Column(str, _digits(cb.column("frame_districts", "district_id").digits),
                                 unique=True, report_duplicates="exclude_first"),
        "stratum": pa.Column(str, pa.Check.str_length(min_value=1, error="not empty")),
        "selection_prob": pa.Column(float, pa.Check.in_range(0, 1, include_min=False,
                                                             error="a probability in (0, 1]")),
        "sampled": pa.Column(float, pa.Check.isin([0.0, 1.0], error="0 or 1")),
        "locale": pa.Column(None, _in(cb.scale_values("locale"))),
        "size_stratum": pa.Column(None, _in(cb.scale_values("size_stratum"))),
        "enrollment": pa.Column(float, pa.Check.ge(1, error="a number >= 1")),
        "n_schools": pa.Column(float, pa.Check.ge(1, error="a number >= 1")),
        "frl_pct": pa.Column(float, pa.Check.in_range(0, 100, error="a number in 0-100")),
    }
    return pa.DataFrameSchema(cols, strict=False)


def raw_frame_schools_schema(cb: Codebook | None = None) -> pa.DataFrameSchema:
    """The school frame: unique school IDs, a district and a teacher count on every row."""
    cb = cb or load_codebook()
    cols = {
        "school_id": pa.Column(str, _digits(cb.column("frame_schools", "school_id").digits),
                               unique=True, report_duplicates="exclude_first"),
        "district_id": pa.Column(str, _digits(cb.column("frame_schools", "district_id").digits)),
        "n_teachers": pa.Column(float, pa.Check.ge(1, error="a number >= 1")),
    }
    return pa.DataFrameSchema(cols, strict=False)


def validate_raw(df: pd.DataFrame, schema: pa.DataFrameSchema, path: Path, *,
                 headers: dict[str, str] | None = None, max_lines: int = 20) -> pd.DataFrame:
    """Validate a typed raw table lazily; report every failure of the file at once.

    Raises
    ------
    InputError
        One error for the file, one line per failing column and check, naming
        the rows (as numbered in the file) and the column (as headed in the file).

    Examples
    --------
    >>> df = pd.DataFrame({"source_row": [4, 5, 6], "response_id": ["R_1", "R_1", ""],
    ...                    "district_id": ["0412345", "12", ""], "school_id": ["", "", ""]})
    >>> try:
    ...     validate_raw(df, raw_teachers_schema(), Path("t.csv"))
    ... except InputError as err:
    ...     print(err.details[0])
    column response_id, row 5: expected unique values; found 'R_1'
    """
    headers = headers or {}
    columns = [c for c in [ROW_COLUMN, *schema.columns] if c in df]
    checked = df[columns]
    # text columns without a dtype in the schema are checked once per distinct value
    loose = [c for c in columns if c in schema.columns and schema.columns[c].dtype is None
             and pd.api.types.is_string_dtype(checked[c])]
    if loose:
        checked = checked.astype({c: "category" for c in loose})
    try:
        schema.validate(checked, lazy=True, inplace=True)
        return df
    except SchemaErrors as err:
        cases = err.failure_cases
        lines = []
        for (column, check), group in cases.groupby(["column", "check"], sort=False,
                                                    dropna=False):
            rows = _rows(df, group["index"])
            shown = ", ".join(map(repr, group["failure_case"].astype(str).unique()[:3]))
            what = "unique values" if str(check).startswith("field_uniqueness") else \
                "a value" if str(check) == "not_nullable" else str(check)
            lines.append(f"column {headers.get(column, column)}, {rows}: expected {what}; "
                         f"found {shown}")
        total = len(lines)
        raise InputError(path, f"the data failed {total} check(s) of the raw schema",
                         details=lines[:max_lines],
                         hint="fix the export at its source (the survey platform or the "
                              "frame) and export it again; every failing row is listed "
                              "above") from None


def _rows(df: pd.DataFrame, index: pd.Series) -> str:
    positions = pd.to_numeric(index, errors="coerce").dropna().astype(int)
    if ROW_COLUMN in df and len(positions):
        numbers = df[ROW_COLUMN].reindex(positions).dropna().astype(int).tolist()
    else:
        numbers = []
    if not numbers:
        return "every row"
    shown = ", ".join(map(str, numbers[:8])) + (f" and {len(numbers) - 8} more"
                                                 if len(numbers) > 8 else "")
    return ("row " if len(numbers) == 1 else "rows ") + shown


# ---------------------------------------------------------------------------
# Processed side
# ---------------------------------------------------------------------------

def teachers_schema(cb: Codebook | None = None) -> pa.DataFrameSchema:
    """Schema of ``teachers.parquet`` (instrument section 6)."""
    cb = cb or load_codebook()
    prob = pa.Check.in_range(0, 1)
    cols = {
        "response_id": pa.Column(str, unique=True),
        "district_id": pa.Column(str, pa.Check.str_matches(r"^\d{7}$")),
        "school_id": pa.Column(str, pa.Check.str_matches(r"^\d{12}$")),
        "stratum": pa.Column(str),
        "weight": pa.Column(float, pa.Check.gt(0)),
        "fpc_districts": pa.Column("int64", pa.Check.ge(1)),
        "support_model": pa.Column("category", _in(cb.support_model_codes()
                                                   + [cb.other_model_code])),
        "samr_level": pa.Column("category", _in(cb.samr_levels), nullable=True),
        "non_substitutive": pa.Column(float, pa.Check.isin([0.0, 1.0]), nullable=True),
        "transformative": pa.Column(float, pa.Check.isin([0.0, 1.0]), nullable=True),
        "nonsub_share": pa.Column(float, prob, nullable=True),
        "samr_index": pa.Column(float, pa.Check.in_range(1, 4), nullable=True),
        "locale": pa.Column("category", _in(cb.scale_values("locale"))),
        "grade_band": pa.Column("category", _in(cb.scale_values("grade_band")), nullable=True),
        "subject": pa.Column("category", _in(cb.scale_values("subject")), nullable=True),
        "years_teaching": pa.Column(float, pa.Check.in_range(0, 60), nullable=True),
        "frl_pct": pa.Column(float, pa.Check.in_range(0, 100)),
        "enrollment": pa.Column(float, pa.Check.ge(1)),
        "partial": pa.Column(bool),
    }
    return pa.DataFrameSchema(cols, strict=False, checks=[
        _no_personal_columns(),
    ])


def districts_schema(cb: Codebook | None = None) -> pa.DataFrameSchema:
    """Schema of ``districts.parquet``: one row per responding district."""
    cb = cb or load_codebook()
    cols = {
        "district_id": pa.Column(str, pa.Check.str_matches(r"^\d{7}$"), unique=True),
        "stratum": pa.Column(str),
        "district_weight": pa.Column(float, pa.Check.gt(0)),
        "support_model": pa.Column("category", _in(cb.support_model_codes()
                                                   + [cb.other_model_code])),
        "support_model_derived": pa.Column("category", _in(cb.support_model_codes())),
        "campuses_per_director": pa.Column(float, pa.Check.gt(0), nullable=True),
        "it_control": pa.Column(float, pa.Check.in_range(1, 5), nullable=True),
        "vision": pa.Column(float, pa.Check.in_range(1, 5), nullable=True),
    }
    return pa.DataFrameSchema(cols, strict=False, checks=[
        _no_personal_columns(),
    ])


def _validate(df: pd.DataFrame, schema: pa.DataFrameSchema, name: str) -> pd.DataFrame:
    try:
        return schema.validate(df, lazy=True)
    except SchemaErrors as err:
        cases = err.failure_cases
        lines = [f"{r.column}: {r.check} (e.g. {r.failure_case!r})"
                 for r in cases.drop_duplicates(["column", "check"]).head(20).itertuples()]
        raise InputError(name, "the processed table failed its schema checks: "
                         + "; ".join(lines),
                         hint="check the raw inputs named in cleaning_log.csv, or report "
                              "this as a bug") from None


def validate_teachers(df: pd.DataFrame) -> pd.DataFrame:
    return _validate(df, teachers_schema(), "teachers.parquet")


def validate_districts(df: pd.DataFrame) -> pd.DataFrame:
    return _validate(df, districts_schema(), "districts.parquet")

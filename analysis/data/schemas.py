"""pandera schemas of the processed tables (the boundary before anything is written).

Validation is lazy: one run reports every failure at once. A failure is a bug
in the cleaner or an input the cleaner let through; it stops the run with a
message listing each failing column and check, and nothing is written.

Examples
--------
>>> from analysis.data.schemas import teachers_schema
>>> "weight" in teachers_schema().columns
True
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

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

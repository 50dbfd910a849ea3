"""The study instrument as Python objects, read from ``codebook.yaml``.

``codebook.yaml`` is the only place that knows question IDs, headers, labels
and codes. This module loads it once and answers the questions that readers,
cleaners, schemas, the simulator and the models ask of it.

Examples
--------
>>> from analysis.study.codebook import load_codebook
>>> cb = load_codebook()
>>> cb.support_model_codes()[:2]
['pay_and_pray', 'tech_support_only']
>>> cb.reference_model
'tech_support_only'
>>> cb.samr_items()["samr_freq_5"]
'M'
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

CODEBOOK_FILE = "codebook.yaml"
#: Columns of the versioned "Other (please specify)" mapping table.
OTHER_MAPPING_COLUMNS = ("mapping_version", "other_text", "support_model", "note")

#: The three raw survey sources that have question columns in the codebook.
SURVEY_SOURCES = ("district_survey", "teacher_survey")
#: Frame sources, whose columns are already variable names.
FRAME_SOURCES = ("frame_districts", "frame_schools")


@dataclass(frozen=True)
class Column:
    """One column of a raw source, as the codebook describes it."""

    variable: str
    header: str
    type: str
    source: str
    question: str | None = None
    scale: str | None = None
    construct: str | None = None
    reverse: bool = False
    samr: str | None = None
    pii: bool = False
    free_text: bool = False
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    digits: int | None = None
    attention_check: str | None = None
    import_id: str | None = None
    #: other headers the same column has in other platforms' exports
    aliases: tuple[str, ...] = ()
    #: a column an export may lack (platform metadata that some platforms do not write)
    required: bool = True
    #: variables this one is computed from when the export lacks it
    derive_from: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, source: str, entry: dict[str, Any]) -> Column:
        entry = dict(entry)
        entry.setdefault("header", entry["variable"])
        for key in ("aliases", "derive_from"):
            entry[key] = tuple(entry.get(key, ()))
        return cls(source=source, **entry)


class Codebook:
    """Read-only view of ``codebook.yaml``.

    Parameters
    ----------
    raw : dict
        The parsed YAML document.
    text : str
        The YAML text, kept for hashing into the provenance record.
    """

    def __init__(self, raw: dict[str, Any], text: str):
        self.raw = raw
        self.version: str = raw["codebook_version"]
        self.sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
        self._columns = {
            source: [Column.from_dict(source, c) for c in raw[source]["columns"]]
            for source in SURVEY_SOURCES + FRAME_SOURCES
        }

    # -- support models ---------------------------------------------------
    @property
    def reference_model(self) -> str:
        """The reference support model of every model (``tech_support_only``)."""
        return self.raw["support_models"]["reference"]

    @property
    def focus_models(self) -> list[str]:
        """The models the essay singles out (coaching, director)."""
        return list(self.raw["support_models"]["focus"])

    @property
    def other_model_label(self) -> str:
        return self.raw["support_models"]["other_label"]

    @property
    def other_model_code(self) -> str:
        return self.raw["support_models"]["other_code"]

    def support_models(self) -> list[dict[str, Any]]:
        """The six support models in grade order (F first, A+ last)."""
        return sorted(self.raw["support_models"]["levels"], key=lambda m: m["grade_rank"])

    def support_model_codes(self) -> list[str]:
        return [m["code"] for m in self.support_models()]

    def support_model_labels(self) -> dict[str, str]:
        """Export label (D1) -> code."""
        return {m["label"]: m["code"] for m in self.support_models()}

    def support_model_short(self) -> dict[str, str]:
        """Code -> short name used in outputs."""
        return {m["code"]: m["short"] for m in self.support_models()}

    def support_model_recodes(self) -> dict[int, str]:
        """Numeric code of D1 in numeric exports -> support-model code (``other`` included)."""
        out = {m["recode"]: m["code"] for m in self.support_models()}
        out[self.raw["support_models"]["other_recode"]] = self.other_model_code
        return out

    def support_components(self) -> list[dict[str, Any]]:
        return list(self.raw["support_components"]["levels"])

    @property
    def component_separator(self) -> str:
        return self.raw["support_components"]["separator"]

    @property
    def component_separators(self) -> list[str]:
        """Separators a checkbox (D2) answer may be joined with."""
        return list(self.raw["support_components"]["separators"])

    def other_mapping(self) -> tuple[str, dict[str, str], str]:
        """The versioned "Other (please specify)" mapping table.

        Returns
        -------
        (version, mapping, sha256)
            The table's version, answer text -> support-model code, and the
            SHA-256 of the file (for the manifest).

        Examples
        --------
        >>> version, mapping, digest = load_codebook().other_mapping()
        >>> set(mapping.values()) <= set(load_codebook().support_model_codes())
        True
        """
        name = self.raw["support_models"]["other_mapping_file"]
        data = resources.files("analysis.study").joinpath(name).read_bytes()
        rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
        if not rows or tuple(rows[0]) != OTHER_MAPPING_COLUMNS:
            raise ValueError(f"{name} must have the columns {', '.join(OTHER_MAPPING_COLUMNS)}")
        versions = {r["mapping_version"] for r in rows}
        unknown = {r["support_model"] for r in rows} - set(self.support_model_codes())
        if len(versions) != 1 or unknown:
            raise ValueError(f"{name}: one mapping_version for every row and support-model "
                             f"codes of the codebook are required (found {sorted(unknown)})")
        mapping = {r["other_text"]: r["support_model"] for r in rows}
        return versions.pop(), mapping, hashlib.sha256(data).hexdigest()

    # -- scales -----------------------------------------------------------
    def scale(self, name: str) -> dict[str, Any]:
        """Label -> value mapping of a response scale, in scale order."""
        return {item["label"]: item["value"] for item in self.raw["scales"][name]}

    def scale_labels(self, name: str) -> list[str]:
        return [item["label"] for item in self.raw["scales"][name]]

    def scale_values(self, name: str) -> list[Any]:
        return [item["value"] for item in self.raw["scales"][name]]

    def scale_codes(self, name: str) -> dict[float, Any]:
        """Numeric code in numeric exports -> value: the ``recode`` of each label, or
        the value itself where the value is a number.

        Examples
        --------
        >>> load_codebook().scale_codes("agreement")[4.0]
        4
        >>> load_codebook().scale_codes("grade_band")[1.0]
        'elementary'
        """
        out = {}
        for item in self.raw["scales"][name]:
            if "recode" in item:
                out[float(item["recode"])] = item["value"]
            elif isinstance(item["value"], int | float) and not isinstance(item["value"], bool):
                out[float(item["value"])] = item["value"]
        return out

    @property
    def samr_levels(self) -> list[str]:
        return list(self.raw["samr"]["levels"])

    @property
    def samr_numeric(self) -> dict[str, int]:
        return dict(self.raw["samr"]["numeric"])

    # -- columns ----------------------------------------------------------
    def columns(self, source: str) -> list[Column]:
        """Columns of a raw source in export order."""
        return list(self._columns[source])

    def column(self, source: str, variable: str) -> Column:
        for col in self._columns[source]:
            if col.variable == variable:
                return col
        raise KeyError(f"{variable!r} is not a column of {source!r} in the codebook")

    def headers(self, source: str) -> dict[str, str]:
        """Export header -> variable name."""
        return {c.header: c.variable for c in self._columns[source]}

    def pii_variables(self, source: str) -> list[str]:
        return [c.variable for c in self._columns[source] if c.pii]

    def construct_items(self, construct: str) -> list[Column]:
        """Items of a multi-item scale (``it_control``, ``vision``, ...)."""
        return [
            c for source in SURVEY_SOURCES for c in self._columns[source] if c.construct == construct
        ]

    def constructs(self) -> list[str]:
        seen: list[str] = []
        for source in SURVEY_SOURCES:
            for c in self._columns[source]:
                if c.construct and c.construct not in seen:
                    seen.append(c.construct)
        return seen

    def reverse_items(self) -> list[str]:
        return [c.variable for s in SURVEY_SOURCES for c in self._columns[s] if c.reverse]

    def samr_items(self) -> dict[str, str]:
        """T6 item variable -> its SAMR level tag."""
        return {c.variable: c.samr for c in self._columns["teacher_survey"] if c.samr}

    def file_name(self, source: str) -> str:
        return self.raw[source]["file"]

    def file_names(self, source: str) -> list[str]:
        """Every file name a raw source may have (exactly one must be present)."""
        return list(self.raw[source].get("files", [self.file_name(source)]))

    @property
    def export_formats(self) -> dict[str, Any]:
        """How exports are laid out: header rows per format, delimiters, encodings."""
        return dict(self.raw["export_formats"])

    @property
    def cleaning(self) -> dict[str, Any]:
        """Thresholds of the cleaner (unknown-label share, longest logged text)."""
        return dict(self.raw["cleaning"])

    # -- design and models ------------------------------------------------
    @property
    def design(self) -> dict[str, str]:
        return dict(self.raw["design"])

    def model_formula(self, name: str) -> str:
        return " ".join(self.raw["models"][name]["formula"].split())

    def model_spec(self, name: str) -> dict[str, Any]:
        return dict(self.raw["models"][name])

    @property
    def quality_rules(self) -> dict[str, Any]:
        return dict(self.raw["quality_rules"])


@lru_cache(maxsize=1)
def load_codebook() -> Codebook:
    """Load the packaged codebook (cached).

    Returns
    -------
    Codebook

    Examples
    --------
    >>> load_codebook().version
    '1.0.0'
    """
    text = resources.files("analysis.study").joinpath(CODEBOOK_FILE).read_text(encoding="utf-8")
    return Codebook(yaml.safe_load(text), text)

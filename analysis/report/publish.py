"""Processed tables -> results.json (the citable contract) and the figures.

``results.json`` is the file blog posts cite: its keys are a contract
(later versions add keys, never rename or remove one), it carries its
provenance, and the same inputs give the same bytes (sorted keys, rounded
floats, no wall-clock time).

Examples
--------
>>> from pathlib import Path
>>> from analysis.report.publish import run_report
>>> run_report(Path("data/processed"), Path("reports"))     # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import config
from analysis.errors import InputError
from analysis.report import figures
from analysis.report.provenance import provenance, stamp
from analysis.stats.hypotheses import (
    evaluate_hypotheses,
    fit_models,
    load_hypotheses,
    model_spec,
)
from analysis.stats.models import ModelFit
from analysis.study.codebook import load_codebook

SCHEMA_VERSION = 1
SIGNIFICANT_DIGITS = 10


def _round(x):
    """Round floats to 10 significant digits (stable bytes); NaN -> None."""
    if isinstance(x, dict):
        return {k: _round(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_round(v) for v in x]
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, float | np.floating):
        x = float(x)
        if math.isnan(x) or math.isinf(x):
            return None
        return float(f"{x:.{SIGNIFICANT_DIGITS}g}")
    return x


def load_processed(processed_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Read teachers, districts and the manifest, or explain what to run first."""
    processed_dir = Path(processed_dir)
    paths = [processed_dir / n for n in (config.TEACHERS_FILE, config.DISTRICTS_FILE,
                                         config.MANIFEST_FILE)]
    for p in paths:
        if not p.exists():
            raise InputError(p, "not found",
                             hint="run `make data` (python -m analysis clean) first")
    manifest = json.loads(paths[2].read_text())
    return pd.read_parquet(paths[0]), pd.read_parquet(paths[1]), manifest


def model_entry(fit: ModelFit, *, outcome: str, label: str | None = None) -> dict:
    coefs = fit.tidy()[["term", "estimate", "std_error", "ci_low", "ci_high", "p_value"]]
    return {
        "formula": fit.formula, "outcome": outcome, "label": label, "family": fit.family.name,
        "estimator": "design-based GLM (Taylor linearisation, strata, PSUs, FPC)",
        "variance": fit.variance, "n": fit.n, "df_residual": int(fit.df_resid),
        "n_psu": int(fit.design.n_psu), "n_strata": int(fit.design.n_strata),
        "coefficients": coefs.to_dict(orient="records"),
    }


def ame_entries(ame: pd.DataFrame, *, scale: float = 100.0, units: str = "pp") -> list[dict]:
    """AME rows; on the percentage-point scale (``_pp`` keys) for probabilities and shares,
    else with plain keys and a ``units`` field."""
    rows = []
    for r in ame.itertuples():
        if units == "pp":
            rows.append({"support_model": r.level, "estimate_pp": scale * r.estimate,
                         "std_error_pp": scale * r.std_error, "ci_low_pp": scale * r.ci_low,
                         "ci_high_pp": scale * r.ci_high, "p_value": r.p_value, "n": int(r.n)})
        else:
            rows.append({"support_model": r.level, "estimate": r.estimate,
                         "std_error": r.std_error, "ci_low": r.ci_low, "ci_high": r.ci_high,
                         "p_value": r.p_value, "n": int(r.n), "units": units})
    return rows


#: AME units by outcome: probabilities and shares in percentage points.
AME_UNITS = {"non_substitutive": "pp", "transformative": "pp", "nonsub_share": "pp",
             "samr_index": "SAMR index points (1-4)"}


def _records(df: pd.DataFrame) -> list[dict]:
    return df.to_dict(orient="records")


def build_results(teachers: pd.DataFrame, districts: pd.DataFrame, manifest: dict
                  ) -> tuple[dict, dict]:
    """results.json content, and the intermediate tables the figures need."""
    cb = load_codebook()
    spec = load_hypotheses()
    fits = fit_models(teachers, None, spec)
    hyp = evaluate_hypotheses(teachers, spec=spec, fits=fits)
    m1 = fits["M1"]
    rates = m1.predicted_rates("support_model")
    models, ames = {}, {}
    for name, fit in fits.items():
        m = model_spec(name, spec)
        models[name] = model_entry(fit, outcome=m["outcome"], label=spec["models"][name].get(
            "label"))
        if name in ("M1", "M2", "M3", "M4"):
            units = AME_UNITS[m["outcome"]]
            ames[name] = ame_entries(fit.ame("support_model", reference=cb.reference_model),
                                     units=units)
    pairwise = hyp.pairwise.assign(**{c: hyp.pairwise[c] * 100 for c in
                                      ("estimate", "std_error", "ci_low", "ci_high")})
    results = {
        "schema_version": SCHEMA_VERSION,
        "provenance": provenance(manifest["raw"]),
        "data": {"synthetic": bool(manifest.get("synthetic", False)),
                 "n_teachers": int(len(teachers)),
                 "n_districts": int(districts["district_id"].nunique()),
                 "n_schools": int(teachers["school_id"].nunique())},
        "design": {"weights": "weight", "strata": "stratum", "psu": "district_id",
                   "fpc": "fpc_districts", "variance": "Taylor linearisation",
                   "n_strata": int(m1.design.n_strata), "n_psu": int(m1.design.n_psu),
                   "degrees_of_freedom": int(m1.design.degrees_of_freedom)},
        "models": models,
        "ame": ames,
        "predicted_rates": {"M1": [
            {"support_model": r.level, "estimate_pct": 100 * r.estimate,
             "ci_low_pct": 100 * r.ci_low, "ci_high_pct": 100 * r.ci_high, "n": int(r.n)}
            for r in rates.itertuples()]},
        "contrasts": {"M1": [dict(r, units="pp") for r in _records(
            pairwise[["level_a", "level_b", "estimate", "std_error", "ci_low", "ci_high",
                      "p_value", "p_adjusted"]])]},
        "hypotheses": _records(hyp.table),
        "hypothesis_verdicts": hyp.summary,
        "moderation": _records(hyp.moderation),
        "grade_trend": _records(hyp.trend)[0],
        "cost_effectiveness": _records(hyp.cost_effectiveness),
    }
    return _round(results), {"fit": m1, "rates": rates, "hypotheses": hyp}


def run_report(processed_dir: Path, reports_dir: Path) -> Path:
    """Fit M1 and write ``results.json`` and the headline figure into ``reports_dir``."""
    teachers, districts, manifest = load_processed(processed_dir)
    results, parts = build_results(teachers, districts, manifest)
    reports_dir = Path(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    out = reports_dir / config.RESULTS_FILE
    out.write_text(json.dumps(results, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    _headline_figure(parts, teachers, results, reports_dir / "figures")
    return out


def _headline_figure(parts, teachers, results, fig_dir: Path):
    cb = load_codebook()
    fit = parts["fit"]
    used = fit.design.data.loc[fit.used]
    n_dist = used.groupby("support_model", observed=False)["district_id"].nunique()
    short = cb.support_model_short()
    grades = {m["code"]: m["grade"] for m in cb.support_models()}
    rates = parts["rates"].set_index("level").loc[list(reversed(cb.support_model_codes()))]
    table = pd.DataFrame({
        "label": [f"{short[c]} ({grades[c]})" for c in rates.index],
        "estimate": rates["estimate"], "ci_low": rates["ci_low"], "ci_high": rates["ci_high"],
        "n_teachers": rates["n"], "n_districts": [int(n_dist.get(c, 0)) for c in rates.index],
    })
    figures.adjusted_rates_figure(
        table, fig_dir / "adjusted_rates_by_model", synthetic=results["data"]["synthetic"],
        stamp=stamp(results["provenance"]), n_teachers=fit.n,
        n_districts=int(used["district_id"].nunique()))

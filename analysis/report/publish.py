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
import os
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from analysis import config
from analysis.errors import InputError
from analysis.report import figures, tables
from analysis.report.provenance import provenance, stamp
from analysis.stats.hypotheses import (
    evaluate_hypotheses,
    fit_models,
    load_hypotheses,
    model_spec,
)
from analysis.stats.models import ModelFit, model_data, study_design
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


def load_results(reports_dir: Path) -> dict:
    """results.json of a previous ``run_report``, or explain what to run first."""
    path = Path(reports_dir) / config.RESULTS_FILE
    if not path.exists():
        raise InputError(path, "not found", hint="run `make analysis` (python -m analysis "
                                                 "report) first")
    return json.loads(path.read_text())


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


def _other_model_entry(fit, *, outcome: str, label: str, family: str, estimator: str,
                       variance: str) -> dict:
    coefs = fit.tidy()[["term", "estimate", "std_error", "ci_low", "ci_high", "p_value"]]
    return {"formula": fit.formula, "outcome": outcome, "label": label, "family": family,
            "estimator": estimator, "variance": variance, "n": int(fit.n),
            "coefficients": coefs.to_dict(orient="records")}


def alternative_models(teachers: pd.DataFrame, districts: pd.DataFrame) -> tuple[dict, dict]:
    """M9 (design-based proportional odds), M10 (unweighted, cluster-robust CR2), M11 and
    M12 (multilevel, unweighted and pseudo-likelihood weighted, with ICCs) and the scale
    reliabilities."""
    from analysis.stats.multilevel import fit_study_multilevel
    from analysis.stats.ordinal import fit_study_svyolr
    from analysis.stats.reliability import study_reliability
    from analysis.stats.robust import fit_glm_cluster

    cb = load_codebook()
    ref = cb.reference_model
    models, ames = {}, {}
    olr = fit_study_svyolr(teachers)
    models["M9"] = _other_model_entry(
        olr, outcome="samr_level", label="SAMR level S < A < M < R (proportional odds)",
        family="cumulative logit",
        estimator="design-based proportional-odds model (as R's svyolr), Taylor variance",
        variance="taylor")
    models["M9"]["df_residual"] = int(olr.df_resid)
    ames["M9"] = ame_entries(olr.ame("support_model", reference=ref, at_least="A"))
    robust = fit_glm_cluster(cb.model_formula("M1"), model_data(teachers),
                             cluster="district_id", family="binomial", vcov="CR2")
    models["M10"] = _other_model_entry(
        robust, outcome="non_substitutive", label="M1 without survey weights",
        family="binomial",
        estimator="unweighted GLM, cluster-robust CR2 (Bell-McCaffrey) by district, "
                  "Satterthwaite df", variance="CR2")
    ames["M10"] = ame_entries(robust.ame("support_model", reference=ref))
    reliability = study_reliability(teachers, districts)
    icc = []
    for name, weighted in (("M11", False), ("M12", True)):
        ml = fit_study_multilevel(teachers, weighted=weighted)
        models[name] = _other_model_entry(
            ml, outcome="non_substitutive",
            label="three-level random-intercept logit (teachers in schools in districts), "
                  + ("pseudo-likelihood with scaled level weights" if weighted
                     else "unweighted"),
            family="binomial (logit), random intercepts",
            estimator=("pseudo-maximum likelihood (Laplace), scaled weights as Stata's "
                       "melogit pweights; robust SEs by district" if weighted else
                       "maximum likelihood (Laplace, as lme4 glmer nAGQ=1); model-based SEs"),
            variance="robust" if weighted else "model")
        ames[name] = ame_entries(ml.ame("support_model", reference=ref))
        icc += [dict(r, model=name) for r in _records(ml.icc())]
    return {"models": models, "ame": ames}, {"reliability": reliability, "icc": icc}


def _records(df: pd.DataFrame) -> list[dict]:
    return df.to_dict(orient="records")


def build_results(teachers: pd.DataFrame, districts: pd.DataFrame, manifest: dict
                  ) -> tuple[dict, dict]:
    """results.json content, and the intermediate tables the figures need."""
    with _background(teachers) as pending, threadpool_limits(1):
        results, parts = _main_results(teachers, districts, manifest)
        results.update(robustness_and_power(teachers, **{k: f.result()
                                                         for k, f in pending.items()}))
    return results, parts


@contextmanager
def _background(teachers: pd.DataFrame, workers: int | None = None):
    """Start the two long robustness parts (multiple imputation, multiverse) in worker
    processes while the caller fits the models; yields ``{"mi": future, "curve":
    future}`` (empty with one CPU: they then run in ``robustness_results``)."""
    from analysis.stats.robustness import multiple_imputation_task, multiverse

    workers = workers or min(2, os.cpu_count() or 1)
    if workers < 2:
        yield {}
        return
    with ProcessPoolExecutor(max_workers=2, mp_context=get_context("spawn")) as pool:
        yield {"mi": pool.submit(multiple_imputation_task, teachers, 20, config.SEED),
               "curve": pool.submit(multiverse, teachers)}


def _main_results(teachers: pd.DataFrame, districts: pd.DataFrame, manifest: dict
                  ) -> tuple[dict, dict]:
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
    alt, alt_parts = alternative_models(teachers, districts)
    models.update(alt["models"])
    ames.update(alt["ame"])
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
        "reliability": _records(alt_parts["reliability"]),
        "icc": alt_parts["icc"],
    }
    return results, {"fit": m1, "rates": rates, "hypotheses": hyp}


def robustness_and_power(teachers: pd.DataFrame, **done) -> dict:
    """The ``robustness`` and ``power`` keys of results.json (sensitivity of the
    support-model associations, and analytic power for the bundled design);
    ``done`` passes parts computed elsewhere on to ``robustness_results``."""
    from analysis.stats.power import power_results
    from analysis.stats.robustness import robustness_results

    return {"robustness": robustness_results(teachers, seed=config.SEED, **done),
            "power": power_results(teachers)}


# ---------------------------------------------------------------------------
# Small cells
# ---------------------------------------------------------------------------
def model_cells(fit: ModelFit) -> pd.DataFrame:
    """Unweighted teachers and districts behind each support model in a fit."""
    used = fit.design.data.loc[fit.used]
    g = used.groupby(used["support_model"].astype(object))
    return pd.DataFrame({"n_teachers": g.size(), "n_districts": g["district_id"].nunique()})


def small_levels(cells: pd.DataFrame, rules: tables.Suppression | None = None) -> set[str]:
    """Support models whose estimates rest on too few teachers or districts."""
    rules = rules or tables.Suppression()
    bad = (cells["n_teachers"] < rules.min_teachers) | (cells["n_districts"] < rules.min_districts)
    return set(cells.index[bad])


def _mentions(text: str, levels: set[str]) -> bool:
    return any(f"[T.{lv}]" in text or f'"{lv}"' in text for lv in levels)


def suppress_results(results: dict, levels: set[str]) -> dict:
    """Blank every number of results.json that rests on a small support-model cell."""
    if not levels:
        return results
    note = {"note": tables.SUPPRESSED}

    def blank(row, keys):
        return dict(row, **{k: None for k in keys if k in row}, **note)

    for model in results["models"].values():
        model["coefficients"] = [
            blank(c, ("estimate", "std_error", "ci_low", "ci_high", "p_value"))
            if _mentions(c["term"], levels) else c for c in model["coefficients"]]
    num = ("estimate_pp", "std_error_pp", "ci_low_pp", "ci_high_pp", "p_value", "estimate",
           "std_error", "ci_low", "ci_high", "estimate_pct", "ci_low_pct", "ci_high_pct",
           "p_adjusted", "ame_pp", "spending_difference", "spending_mean", "n")
    for key in ("ame", "predicted_rates"):
        for name, rows in results[key].items():
            results[key][name] = [blank(r, num) if r["support_model"] in levels else r
                                  for r in rows]
    results["contrasts"] = {name: [blank(r, num) if {r["level_a"], r["level_b"]} & levels
                                   else r for r in rows]
                            for name, rows in results["contrasts"].items()}
    for key in ("moderation", "cost_effectiveness"):
        results[key] = [blank(r, num) if r["support_model"] in levels else r
                        for r in results[key]]
    spec = {h["id"]: h for h in load_hypotheses()["hypotheses"]}
    for k, h in enumerate(results["hypotheses"]):
        e = spec.get(h["id"], {}).get("estimand", {})
        involved = {e.get("level"), e.get("versus")} | (
            set(load_codebook().support_model_codes()) if e.get("type") == "trend" else set())
        involved |= {lv for lv in levels if _mentions(str(e.get("terms", "")), {lv})}
        if involved & levels:
            results["hypotheses"][k] = dict(blank(h, num), verdict="inconclusive")
    if any(lv in levels for lv in load_codebook().support_model_codes()):
        results["grade_trend"] = blank(results["grade_trend"], num + (
            "spearman_rho", "spearman_ci_low", "spearman_ci_high"))
    def walk(node):
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, dict):
            if node.get("support_model") in levels:
                return {k: (None if isinstance(v, int | float) and not isinstance(v, bool)
                            else v) for k, v in node.items()} | note
            return {k: walk(v) for k, v in node.items()}
        return node

    if "robustness" in results:
        results["robustness"] = walk(results["robustness"])
    results["suppressed_support_models"] = sorted(levels)
    return results


# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------
def samr_distribution(teachers: pd.DataFrame) -> pd.DataFrame:
    """Weighted SAMR level shares by support model (design-based CIs), with cell counts."""
    cb = load_codebook()
    design = study_design(teachers)
    props = design.proportion("samr_level", by="support_model")
    data = design.data
    cells = data.groupby([data["support_model"].astype(object),
                          data["samr_level"].astype(object)]).agg(
        n_teachers=("response_id", "size"), n_districts=("district_id", "nunique"))
    props = props.join(cells, on=["support_model", "level"])
    by_model = data.groupby(data["support_model"].astype(object))["district_id"].nunique()
    props["model_districts"] = props["support_model"].map(by_model)
    props[["n_teachers", "n_districts"]] = props[["n_teachers", "n_districts"]].fillna(0)
    short = dict(cb.support_model_short(), **{cb.other_model_code: "Other (unmapped)"})
    props["label"] = props["support_model"].map(short)
    return props


def run_report(processed_dir: Path, reports_dir: Path) -> Path:
    """Fit the models, test the hypotheses and write everything into ``reports_dir``:
    results.json, tables/, figures/, summary.md and report.html."""
    from analysis.report import document

    teachers, districts, manifest = load_processed(processed_dir)
    results, parts = build_results(teachers, districts, manifest)
    cells = model_cells(parts["fit"])
    results = _round(suppress_results(results, small_levels(cells)))
    reports_dir = Path(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    out = reports_dir / config.RESULTS_FILE
    out.write_text(json.dumps(results, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    flow = pd.read_csv(Path(processed_dir) / config.FLOW_FILE)
    samr = samr_distribution(teachers)
    write_tables(results, cells, samr, flow, reports_dir / "tables")
    write_figures(results, cells, samr, flow, reports_dir / "figures")
    document.write_summary(results, reports_dir / "summary.md")
    document.write_html(results, reports_dir)
    return out


def _label(code: str) -> str:
    cb = load_codebook()
    short = cb.support_model_short()
    grades = {m["code"]: m["grade"] for m in cb.support_models()}
    return f"{short[code]} ({grades[code]})" if code in short else code


def _ame_table(results, cells) -> pd.DataFrame:
    rows = []
    for r in results["ame"]["M1"]:
        c = cells.loc[r["support_model"]] if r["support_model"] in cells.index else None
        rows.append({
            "Support model": _label(r["support_model"]),
            "AME (pp)": r["estimate_pp"], "95% CI": tables.apa_ci(r["ci_low_pp"],
                                                                   r["ci_high_pp"])
            if r["estimate_pp"] is not None else "",
            "p": tables.apa_p(r["p_value"]) if r["p_value"] is not None else "",
            "Teachers": None if c is None else int(c["n_teachers"]),
            "Districts": None if c is None else int(c["n_districts"]),
            "Note": r.get("note", "")})
    return pd.DataFrame(rows)


def write_tables(results: dict, cells: pd.DataFrame, samr: pd.DataFrame, flow: pd.DataFrame,
                 out_dir: Path) -> list[Path]:
    """Every table of the report as CSV, Markdown and LaTeX (small cells suppressed)."""
    note = tables.design_note(results)
    written = []
    ame = tables.suppress(_ame_table(results, cells), value_columns=["AME (pp)"],
                          n_teachers="Teachers", n_districts="Districts")
    ame["Note"] = ame["Note"].where(ame["Note"] != "", ame.pop("note"))
    written += tables.publish_table(
        ame, name="ame_m1", out_dir=out_dir,
        title="Adjusted association of each support model with non-substitutive use (M1)",
        notes=[note, "AME: average marginal effect against Tech Support Only, in percentage "
                     "points; design-based delta-method CIs."], digits=1)
    hyp = pd.DataFrame([{
        "ID": h["id"], "Hypothesis": h["statement"], "Estimate": h["estimate"],
        "95% CI": tables.apa_ci(h["ci_low"], h["ci_high"], 2) if h["estimate"] is not None
        else "", "p": tables.apa_p(h["p_value"]) if h["p_value"] is not None else "",
        "p (Holm)": tables.apa_p(h["p_adjusted"]) if h["p_adjusted"] is not None else "",
        "Units": h["units"], "Verdict": h["verdict"]} for h in results["hypotheses"]])
    written += tables.publish_table(
        hyp, name="hypotheses", out_dir=out_dir, title="Hypotheses H1-H8: verdicts",
        notes=[note, "p (Holm): Holm-adjusted within the confirmatory family. Verdict rules in "
                     "analysis/stats/hypotheses.yaml."], digits=2)
    pw = pd.DataFrame([{
        "Model A": _label(r["level_a"]), "Model B": _label(r["level_b"]),
        "Difference (pp)": r["estimate"],
        "95% CI": tables.apa_ci(r["ci_low"], r["ci_high"]) if r["estimate"] is not None
        else "", "p (Holm)": tables.apa_p(r["p_adjusted"]) if r["p_adjusted"] is not None
        else "", "Note": r.get("note", "")} for r in results["contrasts"]["M1"]])
    written += tables.publish_table(
        pw, name="pairwise_contrasts", out_dir=out_dir,
        title="Pairwise differences in adjusted rates of non-substitutive use (M1)",
        notes=[note, "Holm-adjusted p-values over the 15 pairs."], digits=1)
    coef = pd.DataFrame([{
        "Term": c["term"], "b": c["estimate"], "SE": c["std_error"],
        "95% CI": tables.apa_ci(c["ci_low"], c["ci_high"], 3) if c["estimate"] is not None
        else "", "p": tables.apa_p(c["p_value"]) if c["p_value"] is not None else "",
        "Note": c.get("note", "")} for c in results["models"]["M1"]["coefficients"]])
    written += tables.publish_table(
        coef, name="m1_coefficients", out_dir=out_dir,
        title="M1: design-based logistic regression of non-substitutive use",
        notes=[note, results["models"]["M1"]["formula"]], digits=3)
    s = samr.assign(share=100 * samr["estimate"], lo=100 * samr["ci_low"],
                    hi=100 * samr["ci_high"])
    s = tables.suppress(s, value_columns=["share", "lo", "hi"], n_teachers="n_teachers",
                        n_districts="model_districts", cv="cv")
    samr_table = pd.DataFrame({
        "Support model": s["label"], "SAMR level": s["level"], "Share (%)": s["share"],
        "95% CI": [tables.apa_ci(lo, hi) for lo, hi in zip(s["lo"], s["hi"], strict=True)],
        "Teachers": s["n_teachers"], "Note": s["note"]})
    written += tables.publish_table(
        samr_table, name="samr_distribution", out_dir=out_dir,
        title="SAMR level (T7) by support model, weighted",
        notes=[note, "Estimates with a CV of 30-50% are flagged; with fewer than "
                     f"{tables.Suppression().min_teachers} teachers or "
                     f"{tables.Suppression().min_districts} districts, or a CV of 50% or "
                     "more, suppressed."], digits=1)
    ce = pd.DataFrame([{
        "Support model": _label(r["support_model"]), "pp per 100 USD": r["estimate"],
        "95% CI": tables.apa_ci(r["ci_low"], r["ci_high"]) if r["estimate"] is not None else "",
        "AME (pp)": r["ame_pp"], "Extra USD per pupil": r["spending_difference"],
        "Note": r.get("note", "")} for r in results["cost_effectiveness"]])
    written += tables.publish_table(
        ce, name="cost_effectiveness", out_dir=out_dir,
        title="H8: adjusted gain per 100 USD of per-pupil support spending",
        notes=[note, "Gain over Tech Support Only divided by the difference in mean per-pupil "
                     "support spending; delta-method CIs."], digits=1)
    mod = pd.DataFrame([{
        "ID": r["id"], "Support model": _label(r["support_model"]),
        "Moderator": r["moderator"], "Value": r["moderator_label"], "AME (pp)": r["estimate"],
        "95% CI": tables.apa_ci(r["ci_low"], r["ci_high"]) if r["estimate"] is not None else "",
        "Note": r.get("note", "")} for r in results["moderation"]])
    written += tables.publish_table(
        mod, name="moderation", out_dir=out_dir,
        title="Conditional associations at moderator values (H4-H7)",
        notes=[note, "AME against Tech Support Only with the moderator set to the value shown "
                     "for every teacher."], digits=1)
    compare = []
    for name, rows in results["ame"].items():
        model = results["models"][name]
        for r in rows:
            est = r.get("estimate_pp", r.get("estimate"))
            lo, hi = r.get("ci_low_pp", r.get("ci_low")), r.get("ci_high_pp", r.get("ci_high"))
            compare.append({"Model": name, "Estimator": model["estimator"],
                            "Outcome": model["outcome"], "Support model": _label(r["support_model"]),
                            "AME": est, "95% CI": tables.apa_ci(lo, hi) if est is not None else "",
                            "Units": r.get("units", "pp"), "Note": r.get("note", "")})
    written += tables.publish_table(
        pd.DataFrame(compare), name="ame_all_models", out_dir=out_dir,
        title="The support-model associations under every model and estimator",
        notes=[note, "M1-M8 and M9 design-based; M10 unweighted with cluster-robust CR2 SEs; "
                     "M11 and M12 multilevel (population-averaged AMEs). AMEs against Tech "
                     "Support Only."], digits=1)
    icc = pd.DataFrame([{"Model": r["model"], "Level": r["level"], "ICC": r["estimate"],
                         "95% CI": tables.apa_ci(r["ci_low"], r["ci_high"], 3)}
                        for r in results["icc"]])
    written += tables.publish_table(
        icc, name="icc", out_dir=out_dir, title="Intraclass correlations (latent scale)",
        notes=["From the three-level random-intercept logits M11 (unweighted) and M12 "
               "(pseudo-likelihood); district: share of latent variance between districts; "
               "school: between schools (district and school together)."], digits=3)
    rel = pd.DataFrame([{
        "Scale": r["scale"], "Items": r["n_items"], "n": r["n"], "alpha": r["alpha"],
        "alpha 95% CI": tables.apa_ci(r["alpha_ci_low"], r["alpha_ci_high"], 2),
        "omega": r["omega"], "omega 95% CI": tables.apa_ci(r["omega_ci_low"],
                                                           r["omega_ci_high"], 2),
        "Note": "alpha below .70" if r["flag"] else ""} for r in results["reliability"]])
    written += tables.publish_table(
        rel, name="reliability", out_dir=out_dir, title="Scale reliability",
        notes=["Cronbach's alpha with Feldt's CI; McDonald's omega from a one-factor ML model "
               "with a percentile bootstrap CI; unweighted; IT control and vision over "
               "districts, the teacher scales over teachers. Scales with alpha below .70 are "
               "flagged."], digits=2)
    t = flow[flow["table"] == "teachers"]
    written += tables.publish_table(
        t.rename(columns={"rule": "Rule", "n_in": "In", "n_dropped": "Dropped",
                          "n_out": "Out"})[["Rule", "In", "Dropped", "Out"]],
        name="cleaning_flow", out_dir=out_dir, title="Teacher responses at each quality rule",
        notes=["Rules of the instrument, applied in this order; see cleaning_log.csv."])
    return written


def write_figures(results: dict, cells: pd.DataFrame, samr: pd.DataFrame, flow: pd.DataFrame,
                  fig_dir: Path) -> list[Path]:
    """Every figure of the report (PNG, SVG, alt text)."""
    cb = load_codebook()
    synthetic = results["data"]["synthetic"]
    st = stamp(results["provenance"])
    written = []
    order = list(reversed(cb.support_model_codes()))
    rates = {r["support_model"]: r for r in results["predicted_rates"]["M1"]}
    table = pd.DataFrame({
        "label": [_label(c) for c in order],
        "estimate": [_pct(rates[c]["estimate_pct"]) for c in order],
        "ci_low": [_pct(rates[c]["ci_low_pct"]) for c in order],
        "ci_high": [_pct(rates[c]["ci_high_pct"]) for c in order],
        "n_teachers": [int(cells["n_teachers"].get(c, 0)) for c in order],
        "n_districts": [int(cells["n_districts"].get(c, 0)) for c in order]})
    m1 = results["models"]["M1"]
    written += figures.adjusted_rates_figure(
        table, fig_dir / "adjusted_rates_by_model", synthetic=synthetic, stamp=st,
        n_teachers=m1["n"], n_districts=int(cells["n_districts"].sum()))
    written += figures.flow_figure(flow, fig_dir / "cleaning_flow", synthetic=synthetic, stamp=st)
    s = tables.suppress(samr, value_columns=["estimate", "ci_low", "ci_high"],
                        n_teachers="n_teachers", n_districts="model_districts", cv="cv")
    written += figures.samr_distribution_figure(s, fig_dir / "samr_by_model",
                                                synthetic=synthetic, stamp=st)
    pw = pd.DataFrame([{"label": f"{_label(r['level_a'])} - {_label(r['level_b'])}",
                        "estimate": r["estimate"], "ci_low": r["ci_low"],
                        "ci_high": r["ci_high"],
                        "p": "" if r["p_adjusted"] is None else
                        f"p(Holm) {tables.apa_p(r['p_adjusted'])}"}
                       for r in results["contrasts"]["M1"]])
    written += figures.forest_figure(
        pw, fig_dir / "pairwise_contrasts", title="Pairwise differences between support models",
        subtitle="Difference in adjusted rate of non-substitutive use (pp), 95% CIs, M1",
        xlabel="Difference in percentage points (first minus second)", note_column="p",
        alt="Forest plot of the 15 pairwise differences in adjusted rates of non-substitutive "
            "use between support models, with 95% confidence intervals and Holm-adjusted "
            "p-values.", synthetic=synthetic, stamp=st)
    spec = load_hypotheses()
    titles = {}
    for h in spec["hypotheses"]:
        if "conditional" in h:
            cond = h["conditional"]
            what = "each model" if isinstance(cond["level"], list) else \
                load_codebook().support_model_short()[cond["level"]]
            mod = spec["moderators"][cond["moderator"]].get("label", cond["moderator"])
            titles[h["id"]] = f"{h['id']}: {what} by {mod}"
    mod = pd.DataFrame(results["moderation"]).dropna(subset=["estimate"])
    if len(mod):
        written += figures.moderation_figure(mod, fig_dir / "moderation", titles=titles,
                                             synthetic=synthetic, stamp=st)
    labels = {c: _label(c) for c in cb.support_model_codes()}
    rob = results.get("robustness", {}).get("multiverse", {}).get("specifications")
    if rob:
        written += figures.specification_curve_figure(
            pd.DataFrame(rob), fig_dir / "specification_curve", models=cb.focus_models,
            labels=labels, synthetic=synthetic, stamp=st)
    if results.get("power", {}).get("parameters"):
        written += figures.power_curve_figure(
            power_curve(results["power"]["parameters"],
                        grid=_district_grid(int(results["power"]["parameters"]["n_districts"]))),
            fig_dir / "power_curve",
            current=int(results["power"]["parameters"]["n_districts"]), labels=labels,
            synthetic=synthetic, stamp=st)
    ce = pd.DataFrame([{"label": _cost_label(r), "estimate": r["estimate"],
                        "ci_low": r["ci_low"], "ci_high": r["ci_high"]}
                       for r in results["cost_effectiveness"]])
    written += figures.forest_figure(
        ce, fig_dir / "cost_effectiveness", title="Cost-effectiveness (H8)",
        subtitle="Adjusted gain in non-substitutive use per 100 USD of per-pupil support "
                 "spending, against Tech Support Only",
        xlabel="Percentage points per 100 USD per pupil",
        alt="Forest plot of the adjusted gain in non-substitutive use per 100 USD of per-pupil "
            "support spending for each support model against Tech Support Only, with 95% CIs; "
            "each label gives the gain and the spending difference behind the ratio (a model "
            "that spends less and does worse also has a positive ratio).",
        synthetic=synthetic, stamp=st)
    return written


def _cost_label(r: dict) -> str:
    """A model's label with the gain and the spending behind its ratio: a model that
    spends less and does worse has a positive ratio too (points lost per 100 USD saved)."""
    label = _label(r["support_model"])
    if r.get("ame_pp") is None or r.get("spending_difference") is None:
        return label
    return (f"{label}\n{r['ame_pp']:+.1f} pp for {r['spending_difference']:+.0f} USD "
            "per pupil")


def _district_grid(current: int, step: int = 20) -> range:
    """Numbers of districts for the power curve: from 60 to well past this study's."""
    top = max(1000, int(math.ceil(1.5 * current / 100.0)) * 100)
    return range(60, top + 1, step)


def power_curve(p: dict, grid=range(60, 1001, 20)) -> pd.DataFrame:
    """Analytic MDES (pp) of each model's comparison over numbers of districts, with the
    design parameters stored in results.json."""
    from analysis.stats.power import allocation_table

    kw = dict(allocation=p["allocation"], reference=p["reference"],
              cluster_size=p["cluster_size"], icc=p["icc"], r2_cluster=p["r2_cluster"],
              r2_individual=p["r2_individual"], covariates=p["district_covariates"],
              strata=p["strata"], base_rate=p["base_rate"])
    parts = [allocation_table(n_districts=n, **kw).assign(n_districts=n) for n in grid]
    return pd.concat(parts, ignore_index=True)[["support_model", "n_districts", "mdes_pp"]]


def _pct(v):
    return None if v is None else v / 100

"""The blog kit (summary.md) and the self-contained HTML report, from results.json only.

Every number in both documents is read from the results dictionary (the
content of results.json), so what a blog post quotes and what the report shows
cannot drift apart. Wording is associational throughout.

Examples
--------
>>> finding_sentence({"support_model": "coaching", "estimate_pp": 14.2, "ci_low_pp": 8.1,
...                   "ci_high_pp": 20.3, "p_value": 0.0001})[:60]
'Teachers in districts with 1:1 Coaching were 14 percentage p'
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from analysis.report.tables import apa_p
from analysis.study.codebook import load_codebook

FIGURES = [
    ("adjusted_rates_by_model", "Adjusted rate of non-substitutive use by support model"),
    ("samr_by_model", "SAMR level by support model"),
    ("pairwise_contrasts", "Pairwise differences between support models"),
    ("moderation", "Conditional associations (H4-H7)"),
    ("cost_effectiveness", "Cost-effectiveness (H8)"),
    ("cleaning_flow", "From responses to the analysed sample"),
    ("specification_curve", "Specification curve (robustness)"),
    ("power_curve", "Minimum detectable effect by number of districts"),
]


def _short(code: str) -> str:
    return load_codebook().support_model_short().get(code, code)


def _num(v: float, digits: int = 0) -> str:
    return f"{abs(v):.{digits}f}" if digits else f"{abs(round(v)):.0f}"


def finding_sentence(ame: dict) -> str:
    """One plain-language sentence for an AME row of results.json (M1)."""
    if ame.get("estimate_pp") is None:
        return (f"Estimates for {_short(ame['support_model'])} districts are suppressed: too "
                "few teachers or districts to publish.")
    est, lo, hi = ame["estimate_pp"], ame["ci_low_pp"], ame["ci_high_pp"]
    more = "more" if est >= 0 else "less"
    return (f"Teachers in districts with {_short(ame['support_model'])} were {_num(est)} "
            f"percentage points (95% CI {lo:.0f} to {hi:.0f}) {more} likely than teachers in "
            f"Tech Support Only districts to say their students use technology beyond "
            f"substitution, after adjustment (p {_p_words(ame['p_value'])}).")


def _p_words(p) -> str:
    text = apa_p(p)
    return text if text.startswith("<") else f"= {text}"


def citation_line(results: dict) -> str:
    prov = results["provenance"]
    commit = (prov.get("git_commit") or "uncommitted")[:10]
    data = prov["data_sha256"].get("teacher_survey.csv", "")[:12]
    synthetic = "; synthetic data" if results["data"]["synthetic"] else ""
    return (f"Source: support-models {prov['package_version']} (commit {commit}), teacher "
            f"survey sha256 {data}{synthetic}. See CITATION.cff.")


def write_summary(results: dict, path: Path) -> Path:
    """summary.md: short findings for a blog post, each sentence built from results.json."""
    data = results["data"]
    lines = ["# Which support model goes with beyond-substitution technology use?", ""]
    if data["synthetic"]:
        lines += ["> **SYNTHETIC DATA.** These numbers come from the project's simulated "
                  "study, not from real districts. Do not cite them as findings.", ""]
    lines += [f"Survey of {data['n_teachers']:,} teachers in {data['n_districts']:,} districts "
              f"({data['n_schools']:,} schools), weighted to the population and analysed "
              "with design-based methods. All results are associations, not causal effects.",
              "", "## Findings", ""]
    ames = sorted(results["ame"]["M1"], key=lambda a: -(a["estimate_pp"] or -1e9))
    lines += [f"- {finding_sentence(a)}" for a in ames]
    trend = results.get("grade_trend", {})
    if trend.get("estimate") is not None:
        lines += [f"- Across the six models, the adjusted rate rose by {trend['estimate']:.1f} "
                  f"percentage points per step of the blog's grade scale (95% CI "
                  f"{trend['ci_low']:.1f} to {trend['ci_high']:.1f}); Spearman's rank "
                  f"correlation with the grades was {trend['spearman_rho']:.2f} (95% CI "
                  f"{trend['spearman_ci_low']:.2f} to {trend['spearman_ci_high']:.2f})."]
    lines += ["", "## The hypotheses", ""]
    for hyp, verdict in results["hypothesis_verdicts"].items():
        parts = [h for h in results["hypotheses"] if h["hypothesis"] == hyp]
        desc = "; ".join(
            f"{h['id']}: {h['estimate']:.2f} {h['units']} (95% CI {h['ci_low']:.2f} to "
            f"{h['ci_high']:.2f}, Holm p {_p_words(h['p_adjusted'])})"
            if h["estimate"] is not None else f"{h['id']}: suppressed" for h in parts)
        lines.append(f"- **{hyp}: {verdict}.** {desc}")
    lines += ["", "## Figure to embed", "",
              "![Adjusted rate of non-substitutive technology use by support model]"
              "(figures/adjusted_rates_by_model.png)", "",
              "Alt text: see `figures/adjusted_rates_by_model.txt`.", "", "## Cite", "",
              citation_line(results), ""]
    Path(path).write_text("\n".join(lines))
    return Path(path)


# ---------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------
CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:960px;margin:2em auto;
padding:0 1em;color:#1d1d1d;line-height:1.5}
h1{font-size:1.7em;margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:1.8em} table{border-collapse:collapse;margin:1em 0;font-size:.88em;width:100%}
th,td{border-bottom:1px solid #e3e3e3;padding:.35em .5em;text-align:left;vertical-align:top}
th{background:#f4f6f8} td.num{text-align:right;font-variant-numeric:tabular-nums}
.synthetic{background:#fff0f0;border:2px solid #b00000;color:#7a0000;padding:.8em 1em;
font-weight:600;border-radius:6px} figure{margin:1.5em 0} figure img{max-width:100%;
border:1px solid #eee} figcaption{font-size:.85em;color:#555} .verdict-supported{color:#0a6b2d;
font-weight:600} .verdict-not{color:#9b1c1c;font-weight:600} .muted{color:#666;font-size:.9em}
code{background:#f4f4f4;padding:0 .2em} .ci{white-space:nowrap}
"""


def _table(header: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    out = ["<table><thead><tr>", *(f"<th>{html.escape(h)}</th>" for h in header),
           "</tr></thead><tbody>"]
    for row in rows:
        out.append("<tr>" + "".join(
            f"<td class=\"num\">{html.escape(str(v))}</td>" if k in numeric
            else f"<td>{v}</td>" for k, v in enumerate(row)) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _fmt(v, digits=1) -> str:
    return "suppressed" if v is None else f"{v:.{digits}f}"


def _figure_html(fig_dir: Path, name: str, caption: str) -> str:
    png = fig_dir / f"{name}.png"
    if not png.exists():
        return ""
    alt = (fig_dir / f"{name}.txt").read_text().strip() if (fig_dir / f"{name}.txt").exists() \
        else caption
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    style = ' style="max-width:75%"' if name == "cleaning_flow" else ""
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}"{style}>'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def write_html(results: dict, reports_dir: Path) -> Path:
    """reports/report.html: one self-contained page (figures embedded)."""
    reports_dir = Path(reports_dir)
    fig_dir = reports_dir / "figures"
    figs = {name: _figure_html(fig_dir, name, cap) for name, cap in FIGURES}
    data, design, m1 = results["data"], results["design"], results["models"]["M1"]
    parts = ["<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
             "<title>Technology support models and beyond-substitution use</title>",
             f"<style>{CSS}</style></head><body>",
             "<h1>Which way of supporting teachers with technology goes with better "
             "teaching?</h1>"]
    if data["synthetic"]:
        parts.append("<p class=\"synthetic\">SYNTHETIC DATA: every number on this page comes "
                     "from the project's simulated study with planted effects, not from real "
                     "districts.</p>")
    parts += [
        "<h2>The question</h2>",
        "<p>Districts support technology integration in six ways, graded F to A+ by a widely "
        "read essay. Are teachers in districts with 1:1 coaching or a full-time director more "
        "likely to report that their students use technology beyond substitution (SAMR level "
        "A or higher), and under which conditions (hypotheses H1-H8)?</p>",
        "<h2>Data</h2>",
        f"<p>{data['n_teachers']:,} teachers in {data['n_schools']:,} schools of "
        f"{data['n_districts']:,} districts answered; the district survey, the teacher survey "
        "and the sampling frame were cleaned with an audited pipeline.</p>",
        figs["cleaning_flow"],
        "<h2>Methods</h2>",
        f"<p>Design-based logistic regression (M1) of non-substitutive use on the support "
        f"model, adjusted for district poverty, size, locale, technology spending and device "
        f"ratio, and teacher experience, grade band and subject; survey weights (column "
        f"<code>{design['weights']}</code>), {design['n_strata']} strata, "
        f"{design['n_psu']:,} district PSUs, finite-population correction, Taylor "
        f"linearisation, t-based inference on {m1['df_residual']:,} residual "
        f"degrees of freedom (n = {m1['n']:,}). Average marginal effects (AMEs) compare each "
        "model with Tech Support Only in percentage points; pairwise contrasts and the "
        "confirmatory hypotheses are Holm-adjusted. Coefficients agree with R's "
        "<code>survey::svyglm</code> to six significant digits.</p>",
        "<h2>Results</h2>", figs["adjusted_rates_by_model"]]
    rows = [[html.escape(_short(a["support_model"])), _fmt(a["estimate_pp"]),
             "" if a["estimate_pp"] is None else f"[{a['ci_low_pp']:.1f}, {a['ci_high_pp']:.1f}]",
             "" if a["p_value"] is None else apa_p(a["p_value"]),
             f"{a['n']:,}" if a["n"] else ""]
            for a in results["ame"]["M1"]]
    parts.append(_table(["Support model", "AME (pp)", "95% CI", "p", "Teachers"], rows,
                        numeric={1, 3, 4}))
    hyp_rows = []
    for h in results["hypotheses"]:
        cls = "verdict-supported" if h["verdict"] == "supported" else (
            "verdict-not" if h["verdict"] == "not supported" else "")
        hyp_rows.append([h["id"], html.escape(h["statement"]), _fmt(h["estimate"], 2),
                         html.escape(str(h.get("units") or "")),
                         "" if h["estimate"] is None else
                         f"<span class=\"ci\">[{h['ci_low']:.2f}, {h['ci_high']:.2f}]</span>",
                         "" if h["p_adjusted"] is None else apa_p(h["p_adjusted"]),
                         f"<span class=\"{cls}\">{html.escape(h['verdict'])}</span>"])
    parts += ["<h3>Hypotheses</h3>",
              _table(["ID", "Hypothesis", "Estimate", "Units", "95% CI", "p (Holm)",
                      "Verdict"], hyp_rows, numeric={2, 5}),
              figs["samr_by_model"], figs["pairwise_contrasts"], figs["moderation"],
              figs["cost_effectiveness"],
              "<p class=\"muted\">A ratio is positive both for a model that spends more "
              "and gains and for one that spends less and loses (Pay and Pray): each label "
              "gives the gain and the spending difference behind it.</p>"]
    if results.get("reliability"):
        rel_rows = [[html.escape(r["scale"].replace("_", " ")), f"{r['alpha']:.2f}",
                     f"{r['omega']:.2f}",
                     "<strong>alpha below .70</strong>" if r["flag"] else "ok"]
                    for r in results["reliability"]]
        parts += ["<h3>Scale reliability</h3>",
                  _table(["Scale", "alpha", "omega", "Flag"], rel_rows, numeric={1, 2})]
    if "robustness" in results:
        mv = results["robustness"].get("multiverse", {}).get("summary", {})
        text = "; ".join(
            f"{_short(m)}: positive in {100 * mv[m]['share_positive']:.0f}% and positive and "
            f"significant in {100 * mv[m]['share_positive_significant']:.0f}% of "
            f"{mv.get('n_specifications', '')} specifications"
            for m in load_codebook().focus_models if isinstance(mv.get(m), dict))
        parts += ["<h2>Robustness</h2>",
                  f"<p>{html.escape(text)}. Multiple imputation, E-values, propensity "
                  "weighting and leave-one-out estimates are in <code>results.json</code> "
                  "(key <code>robustness</code>) and the robustness notebook.</p>",
                  figs.get("specification_curve", ""),
                  "<h2>Planning the next survey</h2>", figs.get("power_curve", "")]
    parts += [
        "<h2>Limitations</h2>",
        "<ul><li>All results are associations between a district's support model and what "
        "its teachers report, adjusted for measured differences between districts; districts "
        "choose their model, and unmeasured differences (leadership, budgets, history) may "
        "explain part of any association. They are not causal effects.</li>"
        "<li>SAMR levels are self-reported by teachers.</li>"
        "<li>Estimates resting on fewer than 10 teachers or 3 districts are suppressed.</li>"
        + ("<li>The data are synthetic.</li>" if data["synthetic"] else "") + "</ul>",
        "<h2>How to cite</h2>", f"<p>{html.escape(citation_line(results))}</p>",
        "</body></html>"]
    out = reports_dir / "report.html"
    out.write_text("\n".join(p for p in parts if p))
    return out

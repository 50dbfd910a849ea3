"""The report's files: tables, figures, summary.md, report.html; safety and reproducibility."""

import json
import re

import pandas as pd
import pytest

from analysis.report import tables
from analysis.report.publish import run_report

TABLES = ["ame_m1", "hypotheses", "pairwise_contrasts", "m1_coefficients", "samr_distribution",
          "reliability", "ame_all_models", "icc",
          "cost_effectiveness", "moderation", "cleaning_flow"]
FIGURES = ["adjusted_rates_by_model", "cleaning_flow", "samr_by_model", "pairwise_contrasts",
           "moderation", "cost_effectiveness", "specification_curve", "power_curve"]


def test_every_table_in_three_formats(reports_dir):
    for name in TABLES:
        for ext in ("csv", "md", "tex"):
            assert (reports_dir / "tables" / f"{name}.{ext}").stat().st_size > 50, (name, ext)
    tex = (reports_dir / "tables" / "ame_m1.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and "Note." in tex
    md = (reports_dir / "tables" / "hypotheses.md").read_text()
    assert "design degrees of freedom" in md and "Unweighted n" in md


def test_every_figure_with_alt_text_and_marks(reports_dir):
    for name in FIGURES:
        base = reports_dir / "figures" / name
        assert base.with_suffix(".png").stat().st_size > 10_000
        svg = base.with_suffix(".svg").read_text()
        assert "SYNTHETIC DATA" in svg and "support-models" in svg       # mark and stamp
        assert len(base.with_suffix(".txt").read_text()) > 80


def test_summary_sentences_come_from_results(reports_dir):
    results = json.loads((reports_dir / "results.json").read_text())
    summary = (reports_dir / "summary.md").read_text()
    assert "SYNTHETIC DATA" in summary
    coaching = next(a for a in results["ame"]["M1"] if a["support_model"] == "coaching")
    expected = (f"{abs(round(coaching['estimate_pp'])):.0f} percentage points (95% CI "
                f"{coaching['ci_low_pp']:.0f} to {coaching['ci_high_pp']:.0f})")
    assert expected in summary
    assert "figures/adjusted_rates_by_model.png" in summary
    assert results["provenance"]["data_sha256"]["teacher_survey.csv"][:12] in summary
    assert "cause" not in summary.lower().replace("because", "")


def test_html_is_self_contained(reports_dir):
    html = (reports_dir / "report.html").read_text()
    assert "SYNTHETIC DATA" in html
    assert html.count("data:image/png;base64,") >= len(FIGURES)
    assert not re.search(r'(src|href)="(http|//|figures/)', html)
    for section in ("The question", "Data", "Methods", "Results", "Limitations", "How to cite"):
        assert f"<h2>{section}</h2>" in html
    assert "not causal effects" in html


def test_same_inputs_same_bytes_for_every_output(processed_dir, reports_dir, tmp_path):
    run_report(processed_dir, tmp_path)
    names = ["results.json", "summary.md", "report.html"]
    names += [f"tables/{t}.{e}" for t in TABLES for e in ("csv", "md", "tex")]
    names += [f"figures/{f}.svg" for f in FIGURES]
    for name in names:
        assert (tmp_path / name).read_bytes() == (reports_dir / name).read_bytes(), name


def test_csv_cells_are_neutralised(tmp_path):
    df = pd.DataFrame({"label": ["=HYPERLINK(\"http://x\")", "+1", "@SUM(A1)", "plain"],
                       "value": [-1.5, 2.0, 3.0, 4.0]})
    tables.publish_table(df, name="t", out_dir=tmp_path, title="T", notes=["n"])
    text = (tmp_path / "t.csv").read_text()
    assert "'=HYPERLINK" in text and "'+1" in text and "'@SUM" in text
    assert "\n=" not in text and ",-1.5" in text        # numbers stay numbers


def test_apa_formats():
    assert tables.apa_p(0.0004) == "< .001"
    assert tables.apa_p(0.05) == ".050"
    assert tables.apa_ci(-1.25, 3.0) == "[-1.2, 3.0]" or tables.apa_ci(-1.25, 3.0) == \
        "[-1.3, 3.0]"


# -- small cells -------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_cells(processed_dir, teachers, tmp_path_factory):
    """The bundled study with all but two vanguard districts removed (a small cell)."""
    import shutil

    out = tmp_path_factory.mktemp("tiny")
    proc = out / "processed"
    shutil.copytree(processed_dir, proc)
    vg = teachers.loc[teachers["support_model"] == "vanguard", "district_id"].unique()
    drop = set(vg[2:])
    t = teachers[~teachers["district_id"].isin(drop)]
    d = pd.read_parquet(processed_dir / "districts.parquet")
    d = d[~d["district_id"].isin(drop)]
    t.to_parquet(proc / "teachers.parquet", index=False)
    d.to_parquet(proc / "districts.parquet", index=False)
    from analysis.stats.models import fit_study_model

    raw_fit = fit_study_model(t)
    ame = raw_fit.ame("support_model", reference="tech_support_only").set_index("level")
    run_report(proc, out / "reports")
    return out / "reports", ame.loc["vanguard"], raw_fit


def test_small_cells_never_reach_any_output(tiny_cells):
    reports, vanguard, raw_fit = tiny_cells
    results = json.loads((reports / "results.json").read_text())
    assert results["suppressed_support_models"] == ["vanguard"]
    row = next(a for a in results["ame"]["M1"] if a["support_model"] == "vanguard")
    assert row["estimate_pp"] is None and row["note"] == "suppressed"
    # two and three decimals: one-decimal numbers can coincide with other estimates
    secret = [f"{100 * vanguard['estimate']:.{k}f}" for k in (2, 3)]
    secret += [f"{100 * vanguard['ci_low']:.2f}", f"{100 * vanguard['ci_high']:.2f}"]
    coef = raw_fit.coef['C(support_model, Treatment("tech_support_only"))[T.vanguard]']
    secret += [f"{coef:.3f}", f"{coef:.4f}"]
    for path in reports.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".md", ".csv", ".tex", ".html", ".txt",
                                              ".svg"):
            text = path.read_text(errors="ignore")
            for s in secret:
                assert not re.search(rf"(?<![\d.]){re.escape(s)}(?!\d)", text), (path.name, s)
    hyp = (reports / "tables" / "ame_m1.csv").read_text()
    assert "suppressed" in hyp

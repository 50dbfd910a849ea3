"""Figures: colour-blind-safe, labelled, with n, provenance and a synthetic-data mark.

Every figure is written as PNG (300 dpi) and SVG, byte-identical for the same
inputs (fixed SVG hash salt, no dates in metadata), with a ``.txt`` sidecar
holding its alt text.

Examples
--------
>>> from analysis.report.figures import SYNTHETIC_MARK
>>> SYNTHETIC_MARK
'SYNTHETIC DATA'
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

PALETTE = sns.color_palette("colorblind")
SYNTHETIC_MARK = "SYNTHETIC DATA"


def _style():
    plt.rcParams.update({"svg.hashsalt": "support-models", "font.family": "DejaVu Sans",
                         "font.size": 10, "axes.spines.top": False,
                         "axes.spines.right": False})


def save_figure(fig, out_base: Path, alt_text: str) -> list[Path]:
    """Write ``out_base``.png, .svg and .txt (alt text)."""
    out_base.parent.mkdir(parents=True, exist_ok=True)
    png, svg, txt = (out_base.with_suffix(s) for s in (".png", ".svg", ".txt"))
    fig.savefig(png, dpi=300, metadata={"Software": None})
    fig.savefig(svg, metadata={"Date": None, "Creator": None})
    txt.write_text(alt_text.strip() + "\n")
    plt.close(fig)
    return [png, svg, txt]


def _marks(fig, *, synthetic: bool, stamp: str):
    if synthetic:
        fig.text(0.5, 0.5, SYNTHETIC_MARK, fontsize=44, color="grey", alpha=0.18,
                 ha="center", va="center", rotation=20, weight="bold")
        fig.text(0.99, 0.01, SYNTHETIC_MARK, fontsize=9, color="#b00000", ha="right",
                 va="bottom", weight="bold")
    fig.text(0.01, 0.01, stamp, fontsize=6.5, color="#555555", ha="left", va="bottom")


def adjusted_rates_figure(rates: pd.DataFrame, out_base: Path, *, synthetic: bool, stamp: str,
                          n_teachers: int, n_districts: int) -> list[Path]:
    """The headline figure: adjusted rate of non-substitutive use by support model.

    Parameters
    ----------
    rates : DataFrame
        ``label, estimate, ci_low, ci_high, n_teachers, n_districts`` (rates as
        proportions), one row per support model, in the order to draw (top first).
    """
    _style()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    y = range(len(rates))[::-1]
    pct = rates[["estimate", "ci_low", "ci_high"]] * 100
    ax.hlines(list(y), pct["ci_low"], pct["ci_high"], color=PALETTE[0], lw=2.2)
    ax.plot(pct["estimate"], list(y), "o", color=PALETTE[0], ms=7)
    ax.set_yticks(list(y))
    ax.set_yticklabels([f"{r.label}\n(n = {r.n_teachers:,} teachers, {r.n_districts} districts)"
                        for r in rates.itertuples()], fontsize=8.5)
    ax.set_xlabel("Teachers whose students use technology beyond substitution (%, adjusted)")
    ax.set_xlim(0, 100)
    ax.grid(axis="x", color="#dddddd", lw=0.6)
    fig.text(0.01, 0.965, "Adjusted rate of non-substitutive technology use, by support model",
             fontsize=11.5, weight="bold", ha="left", va="top")
    fig.text(0.01, 0.905, f"Model M1, design-based 95% confidence intervals; {n_teachers:,} "
                          f"teachers in {n_districts} districts", fontsize=8.5,
             color="#444444", ha="left", va="top")
    fig.tight_layout(rect=(0, 0.04, 1, 0.87))
    _marks(fig, synthetic=synthetic, stamp=stamp)
    top = rates.sort_values("estimate", ascending=False).iloc[0]
    alt = ("Dot-and-interval chart of the adjusted percentage of teachers whose students use "
           "technology beyond substitution (SAMR level A or higher), for each of the six "
           "district support models, with 95% confidence intervals. "
           + "; ".join(f"{r.label}: {100 * r.estimate:.0f}% (95% CI {100 * r.ci_low:.0f} to "
                       f"{100 * r.ci_high:.0f})" for r in rates.itertuples())
           + f". Highest: {top.label}. Associations, not causal effects."
           + (" The data are synthetic." if synthetic else ""))
    return save_figure(fig, out_base, alt)

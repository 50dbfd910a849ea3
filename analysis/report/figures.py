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
import numpy as np  # noqa: E402
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
    y = np.arange(len(rates))[::-1]
    pct = rates[["estimate", "ci_low", "ci_high"]].astype(float) * 100
    ok = pct["estimate"].notna().to_numpy()
    ax.hlines(y[ok], pct["ci_low"][ok], pct["ci_high"][ok], color=PALETTE[0], lw=2.2)
    ax.plot(pct["estimate"][ok], y[ok], "o", color=PALETTE[0], ms=7)
    for yy in y[~ok]:
        ax.text(50, yy, "suppressed (too few teachers or districts)", fontsize=7.5,
                ha="center", va="center", color="grey")
    ax.set_yticks(list(y))
    ax.set_yticklabels([f"{r.label}\n(n = {r.n_teachers:,} teachers, {r.n_districts:,} districts)"
                        for r in rates.itertuples()], fontsize=8.5)
    ax.set_xlabel("Teachers whose students use technology beyond substitution (%, adjusted)")
    ax.set_xlim(0, 100)
    ax.grid(axis="x", color="#dddddd", lw=0.6)
    fig.text(0.01, 0.965, "Adjusted rate of non-substitutive technology use, by support model",
             fontsize=11.5, weight="bold", ha="left", va="top")
    fig.text(0.01, 0.905, f"Model M1, design-based 95% confidence intervals; {n_teachers:,} "
                          f"teachers in {n_districts:,} districts", fontsize=8.5,
             color="#444444", ha="left", va="top")
    fig.tight_layout(rect=(0, 0.04, 1, 0.87))
    _marks(fig, synthetic=synthetic, stamp=stamp)
    shown = rates.dropna(subset=["estimate"])
    top = shown.sort_values("estimate", ascending=False).iloc[0]
    alt = ("Dot-and-interval chart of the adjusted percentage of teachers whose students use "
           "technology beyond substitution (SAMR level A or higher), for each of the six "
           "district support models, with 95% confidence intervals. "
           + "; ".join(f"{r.label}: {100 * r.estimate:.0f}% (95% CI {100 * r.ci_low:.0f} to "
                       f"{100 * r.ci_high:.0f})" for r in shown.itertuples())
           + f". Highest: {top.label}. Associations, not causal effects."
           + (" The data are synthetic." if synthetic else ""))
    return save_figure(fig, out_base, alt)


# ---------------------------------------------------------------------------
# The other figures of the report
# ---------------------------------------------------------------------------
def _figure(title: str, subtitle: str, size=(7.5, 4.2), ncols: int = 1, nrows: int = 1,
            sharey=False):
    _style()
    fig, axes = plt.subplots(nrows, ncols, figsize=size, sharey=sharey, squeeze=False)
    fig.text(0.01, 0.975, title, fontsize=11.5, weight="bold", ha="left", va="top")
    fig.text(0.01, 0.915, subtitle, fontsize=8.5, color="#444444", ha="left", va="top")
    return fig, axes


def _finish(fig, out_base, alt, *, synthetic, stamp, top=0.87):
    fig.tight_layout(rect=(0, 0.04, 1, top))
    _marks(fig, synthetic=synthetic, stamp=stamp)
    return save_figure(fig, out_base, alt + (" The data are synthetic." if synthetic else ""))


def flow_figure(flow: pd.DataFrame, out_base: Path, *, synthetic: bool, stamp: str):
    """Cleaning flow diagram: responses in, dropped at each rule, out (teachers)."""
    t = flow[flow["table"] == "teachers"].reset_index(drop=True)
    fig, axes = _figure("From survey responses to the analysed sample",
                        "Teacher responses kept and dropped at each quality rule, in order",
                        size=(7.5, 0.55 * len(t) + 1.8))
    ax = axes[0, 0]
    ax.set_axis_off()
    n = len(t)
    for k, r in enumerate(t.itertuples()):
        y = n - k
        label = "Responses read" if r.rule == "read" else f"after: {r.rule.replace('_', ' ')}"
        ax.add_patch(plt.Rectangle((0.02, y - 0.35), 0.42, 0.7, facecolor="#e8f1fa",
                                   edgecolor=PALETTE[0]))
        ax.text(0.23, y, f"{label}\nn = {r.n_out:,}", ha="center", va="center", fontsize=7.5)
        if r.n_dropped:
            ax.annotate("", xy=(0.56, y), xytext=(0.44, y),
                        arrowprops={"arrowstyle": "->", "color": PALETTE[3]})
            ax.text(0.57, y, f"dropped: {r.n_dropped:,} ({r.rule.replace('_', ' ')})",
                    va="center", fontsize=7.5, color="#7a2e00")
        if k < n - 1:
            ax.annotate("", xy=(0.23, y - 0.65), xytext=(0.23, y - 0.35),
                        arrowprops={"arrowstyle": "->", "color": "#555555"})
    ax.set_xlim(0, 1)
    ax.set_ylim(0.4, n + 0.6)
    first, last = t["n_out"].iloc[0], t["n_out"].iloc[-1]
    alt = (f"Flow diagram of the teacher survey cleaning: {first:,} responses read, "
           f"{last:,} kept for analysis. Dropped at each rule: "
           + "; ".join(f"{r.rule.replace('_', ' ')} {r.n_dropped:,}" for r in t.itertuples()
                       if r.n_dropped) + ".")
    return _finish(fig, out_base, alt, synthetic=synthetic, stamp=stamp, top=0.86)


def samr_distribution_figure(props: pd.DataFrame, out_base: Path, *, synthetic: bool,
                             stamp: str):
    """Weighted SAMR level distribution by support model, with 95% CIs (one panel per level).

    ``props``: ``label, level, estimate, ci_low, ci_high`` (proportions); suppressed rows
    have a missing estimate.
    """
    levels = list(dict.fromkeys(props["level"]))
    labels = list(dict.fromkeys(props["label"]))
    fig, axes = _figure("How students use technology, by district support model",
                        "Weighted share of teachers at each SAMR level (T7), 95% CIs",
                        size=(8.5, 4.2), ncols=len(levels), sharey=True)
    for ax, (lv, color) in zip(axes[0], zip(levels, PALETTE, strict=False), strict=False):
        part = props[props["level"] == lv].set_index("label").reindex(labels)
        y = np.arange(len(labels))[::-1]
        ok = part["estimate"].notna().to_numpy()
        ax.hlines(y[ok], 100 * part["ci_low"][ok], 100 * part["ci_high"][ok], color=color, lw=2)
        ax.plot(100 * part["estimate"][ok], y[ok], "o", color=color, ms=5)
        for yy in y[~ok]:
            ax.text(50, yy, "suppressed", fontsize=6.5, ha="center", va="center", color="grey")
        ax.set_title({"S": "Substitution", "A": "Augmentation", "M": "Modification",
                      "R": "Redefinition"}.get(lv, lv), fontsize=9)
        ax.set_xlim(0, 100)
        ax.set_xlabel("% of teachers")
        ax.grid(axis="x", color="#dddddd", lw=0.6)
        ax.set_yticks(y)
        ax.set_yticklabels(labels, fontsize=8)
    alt = ("Four-panel dot-and-interval chart of the weighted share of teachers whose students "
           "mostly use technology at each SAMR level (substitution, augmentation, "
           "modification, redefinition), for each support model, with 95% CIs.")
    return _finish(fig, out_base, alt, synthetic=synthetic, stamp=stamp)


def forest_figure(rows: pd.DataFrame, out_base: Path, *, title: str, subtitle: str,
                  xlabel: str, alt: str, synthetic: bool, stamp: str, note_column: str | None = None):
    """Forest plot: ``label, estimate, ci_low, ci_high`` (drawn top to bottom), a zero line."""
    fig, axes = _figure(title, subtitle, size=(7.5, 0.32 * len(rows) + 2.2))
    ax = axes[0, 0]
    y = np.arange(len(rows))[::-1]
    ok = rows["estimate"].notna().to_numpy()
    ax.axvline(0, color="#888888", lw=0.8)
    ax.hlines(y[ok], rows["ci_low"][ok], rows["ci_high"][ok], color=PALETTE[0], lw=2)
    ax.plot(rows["estimate"][ok], y[ok], "o", color=PALETTE[0], ms=5)
    for yy in y[~ok]:
        ax.text(0, yy, "suppressed (small cell)", fontsize=7, va="center", color="grey")
    labels = rows["label"].tolist()
    if note_column:
        labels = [f"{lab}  {note}" if note else lab
                  for lab, note in zip(labels, rows[note_column], strict=True)]
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", color="#dddddd", lw=0.6)
    return _finish(fig, out_base, alt, synthetic=synthetic, stamp=stamp)


def moderation_figure(mod: pd.DataFrame, out_base: Path, *, titles: dict[str, str],
                      synthetic: bool, stamp: str):
    """Conditional AMEs (pp) against tech support only at moderator values, one panel per
    hypothesis (H4-H7)."""
    ids = list(dict.fromkeys(mod["id"]))
    ncols = 3
    nrows = int(np.ceil(len(ids) / ncols))
    fig, axes = _figure("When do the associations change? Conditional associations (H4-H7)",
                        "AME vs tech support only (percentage points) at moderator values, "
                        "95% CIs", size=(10, 3.1 * nrows + 1.2), ncols=ncols, nrows=nrows)
    flat = axes.ravel()
    for ax, hid in zip(flat, ids, strict=False):
        part = mod[mod["id"] == hid]
        models = list(dict.fromkeys(part["support_model"]))
        for k, m in enumerate(models):
            p = part[part["support_model"] == m].reset_index(drop=True)
            x = np.arange(len(p)) + (k - (len(models) - 1) / 2) * 0.12
            ax.errorbar(x, p["estimate"], yerr=[p["estimate"] - p["ci_low"],
                                                p["ci_high"] - p["estimate"]],
                        fmt="o-", color=PALETTE[k % len(PALETTE)], ms=4, lw=1.2, capsize=2,
                        label=m.replace("_", " "))
        ax.axhline(0, color="#888888", lw=0.8)
        labels = list(dict.fromkeys(part["moderator_label"]))
        ax.set_xticks(np.arange(len(labels)))
        ax.set_xticklabels(labels, fontsize=7, rotation=15)
        ax.set_title(titles.get(hid, hid), fontsize=8.5)
        ax.set_ylabel("AME (pp)", fontsize=8)
        if len(models) > 1:                 # below the panel, clear of the points
            ax.legend(fontsize=6.5, frameon=False, loc="upper center", ncol=3,
                      bbox_to_anchor=(0.5, -0.2), columnspacing=1.0, handlelength=1.5)
    for ax in flat[len(ids):]:
        ax.set_axis_off()
    alt = ("Panels of conditional average marginal effects (percentage points, against tech "
           "support only) at low, average and high values of each moderator: "
           + "; ".join(titles.get(i, i) for i in ids) + ".")
    return _finish(fig, out_base, alt, synthetic=synthetic, stamp=stamp, top=0.9)


def specification_curve_figure(specs: pd.DataFrame, out_base: Path, *, models: list[str],
                               labels: dict[str, str], synthetic: bool, stamp: str):
    """Specification curve: each specification's AME (pp) with its 95% CI, sorted, one
    panel per support model; filled points are significant at 5%."""
    fig, axes = _figure("How much do the associations depend on the analyst's choices?",
                        f"Specification curve over {len(specs)} analyses (outcome, covariates, "
                        "variance, weights, flagged responses); AME vs Tech Support Only",
                        size=(8.5, 2.6 * len(models) + 1.4), nrows=len(models))
    for ax, m in zip(axes[:, 0], models, strict=True):
        s = specs.sort_values(f"{m}_estimate_pp").reset_index(drop=True)
        x = np.arange(len(s))
        sig = (s[f"{m}_p_value"] < 0.05).to_numpy()
        ax.vlines(x, s[f"{m}_ci_low_pp"], s[f"{m}_ci_high_pp"], color="#c8d6e5", lw=0.8)
        ax.plot(x[sig], s[f"{m}_estimate_pp"][sig], "o", color=PALETTE[0], ms=2.5,
                label="p < .05")
        ax.plot(x[~sig], s[f"{m}_estimate_pp"][~sig], "o", mfc="white", color=PALETTE[0],
                ms=2.5, label="p >= .05")
        ax.axhline(0, color="#888888", lw=0.8)
        share = float(np.mean(sig & (s[f"{m}_estimate_pp"] > 0).to_numpy()))
        ax.set_title(f"{labels.get(m, m)}: positive and significant in {100 * share:.0f}% "
                     "of specifications", fontsize=9, loc="left")
        ax.set_ylabel("AME (pp)")
        ax.legend(fontsize=7, frameon=False, loc="upper left")
    axes[-1, 0].set_xlabel("Specifications, sorted by estimate")
    alt = ("Specification curve: for each support model shown, the average marginal effect "
           "against Tech Support Only in every one of the analyst's defensible specifications, "
           "sorted, with 95% confidence intervals, marking the significant ones.")
    return _finish(fig, out_base, alt, synthetic=synthetic, stamp=stamp, top=0.9)


def power_curve_figure(curve: pd.DataFrame, out_base: Path, *, current: int,
                       labels: dict[str, str], synthetic: bool, stamp: str):
    """Minimum detectable effect (pp) against the number of districts, one line per model;
    ``curve``: ``support_model, n_districts, mdes_pp``."""
    fig, axes = _figure("Planning the next survey: how many districts?",
                        "Minimum detectable effect vs Tech Support Only (80% power, alpha .05), "
                        "this study's ICC and teachers per district",
                        size=(7.5, 4.2))
    ax = axes[0, 0]
    for k, (m, part) in enumerate(curve.groupby("support_model", sort=False)):
        ax.plot(part["n_districts"], part["mdes_pp"], color=PALETTE[k % len(PALETTE)],
                label=labels.get(m, m), lw=1.6)
    ax.axvline(current, color="#888888", lw=0.8, ls="--")
    ax.text(current, ax.get_ylim()[1] * 0.95, f" this study: {current:,} districts", fontsize=7.5,
            va="top")
    ax.set_xlabel("Responding districts (all models together)")
    ax.set_ylabel("Minimum detectable AME (percentage points)")
    ax.grid(color="#eeeeee", lw=0.6)
    ax.legend(fontsize=7.5, frameon=False)
    alt = ("Line chart of the minimum detectable average marginal effect, in percentage "
           "points, against the number of responding districts, for each support model "
           f"compared with Tech Support Only; the current study has {current} districts.")
    return _finish(fig, out_base, alt, synthetic=synthetic, stamp=stamp)

"""Publication tables: CSV, Markdown and LaTeX (booktabs), APA numbers, safe cells.

Every published table goes through :func:`publish_table`, which

- suppresses estimates based on fewer than ``min_teachers`` teachers or
  ``min_districts`` districts (and, where a table shows a total, a second cell
  so that the suppressed one cannot be recovered by subtraction),
- flags estimates whose coefficient of variation is 30-50% ("interpret with
  caution") and suppresses those at 50% or more,
- neutralises CSV cells that a spreadsheet would execute (leading ``=``, ``+``,
  ``-`` or ``@`` on text cells),
- writes the same table as CSV, Markdown and LaTeX with notes stating the
  weights, the variance method, the design degrees of freedom and the
  unweighted n.

Examples
--------
>>> apa_p(0.0004), apa_p(0.0123), apa_ci(1.234, 5.678)
('< .001', '.012', '[1.2, 5.7]')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import config

SUPPRESSED = "suppressed"
CAUTION = "interpret with caution"
UNSAFE_PREFIXES = ("=", "+", "-", "@")


def apa_p(p: float) -> str:
    """p-value in APA style: three decimals without the leading zero, ``< .001`` below."""
    if p is None or (isinstance(p, float) and np.isnan(p)):
        return ""
    if p < 0.001:
        return "< .001"
    return f"{p:.3f}".replace("0.", ".", 1) if p < 1 else "1.000"


def apa_ci(low: float, high: float, digits: int = 1) -> str:
    """95% CI as ``[LL, UL]``."""
    if low is None or high is None or np.isnan(low) or np.isnan(high):
        return ""
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


@dataclass
class Suppression:
    """Publishing thresholds (defaults from ``analysis.config``)."""

    min_teachers: int = config.MIN_CELL_TEACHERS
    min_districts: int = config.MIN_CELL_DISTRICTS
    cv_caution: float = 0.30
    cv_suppress: float = 0.50


def suppress(table: pd.DataFrame, *, value_columns: list[str], n_teachers: str | None = None,
             n_districts: str | None = None, cv: str | None = None, total_row: str | None = None,
             label_column: str | None = None, rules: Suppression | None = None) -> pd.DataFrame:
    """Blank out estimates that rest on too few teachers or districts or are too unstable.

    Parameters
    ----------
    table : DataFrame
        One row per estimate.
    value_columns : list of str
        Columns blanked (set to missing) in a suppressed row.
    n_teachers, n_districts, cv : str, optional
        Columns with the unweighted teacher count, district count and CV.
    total_row : str, optional
        Label (in ``label_column``) of a row that is the total of the others;
        when exactly one other row is suppressed, the next smallest is
        suppressed too (complementary suppression).

    Returns
    -------
    DataFrame
        The table with ``note`` ("suppressed", "interpret with caution" or "")
        and the suppressed values set to missing.

    Examples
    --------
    >>> t = pd.DataFrame({"model": ["a", "b"], "est": [1.0, 2.0], "n": [50, 4]})
    >>> suppress(t, value_columns=["est"], n_teachers="n")["est"].tolist()
    [1.0, nan]
    """
    rules = rules or Suppression()
    out = table.copy()
    hide = pd.Series(False, index=out.index)
    if n_teachers:
        hide |= out[n_teachers] < rules.min_teachers
    if n_districts:
        hide |= out[n_districts] < rules.min_districts
    caution = pd.Series(False, index=out.index)
    if cv:
        hide |= out[cv].abs() >= rules.cv_suppress
        caution = (out[cv].abs() >= rules.cv_caution) & ~hide
    if total_row is not None and label_column is not None:
        others = out[label_column] != total_row
        if (hide & others).sum() == 1 and n_teachers:
            candidates = out.loc[others & ~hide, n_teachers]
            if len(candidates):
                hide[candidates.idxmin()] = True
    out["note"] = np.where(hide, SUPPRESSED, np.where(caution, CAUTION, ""))
    for col in value_columns:
        out[col] = out[col].astype(float).where(~hide)
    if n_teachers:
        # the count itself would reveal a small cell
        out[n_teachers] = out[n_teachers].astype("Int64").where(~hide)
    if n_districts:
        out[n_districts] = out[n_districts].astype("Int64").where(~hide)
    return out


def safe_csv_cell(value):
    """Prefix a text cell a spreadsheet would run as a formula with a single quote.

    Examples
    --------
    >>> safe_csv_cell("=HYPERLINK(1)"), safe_csv_cell("-3"), safe_csv_cell(-3.0)
    ("'=HYPERLINK(1)", "'-3", -3.0)
    """
    if isinstance(value, str) and value.startswith(UNSAFE_PREFIXES):
        return "'" + value
    return value


def _formatted(df: pd.DataFrame, digits: int) -> pd.DataFrame:
    out = df.copy()
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col]):
            out[col] = out[col].map(lambda v: "" if pd.isna(v) else f"{v:.{digits}f}")
        else:
            out[col] = out[col].map(lambda v: "" if pd.isna(v) else str(v))
    return out


def _markdown(df: pd.DataFrame, title: str, notes: list[str]) -> str:
    cols = list(df.columns)
    lines = [f"**{title}**", "", "| " + " | ".join(cols) + " |",
             "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |")
    lines += ["", *(f"*Note.* {n}" if k == 0 else n for k, n in enumerate(notes))]
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    repl = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
            "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
            "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}"}
    return "".join(repl.get(ch, ch) for ch in str(text))


def _latex(df: pd.DataFrame, title: str, notes: list[str], label: str) -> str:
    cols = list(df.columns)
    align = "l" + "r" * (len(cols) - 1)
    lines = [r"\begin{table}[htbp]", r"\centering", rf"\caption{{{_latex_escape(title)}}}",
             rf"\label{{tab:{label}}}", rf"\begin{{tabular}}{{{align}}}", r"\toprule",
             " & ".join(_latex_escape(c) for c in cols) + r" \\", r"\midrule"]
    for row in df.itertuples(index=False):
        lines.append(" & ".join(_latex_escape(v) for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", "",
              r"\par\smallskip\footnotesize\textit{Note.} "
              + _latex_escape(" ".join(notes)), r"\end{table}"]
    return "\n".join(lines) + "\n"


def publish_table(table: pd.DataFrame, *, name: str, out_dir: Path, title: str,
                  notes: list[str], digits: int = 2) -> list[Path]:
    """Write ``name``.csv, .md and .tex into ``out_dir``.

    The CSV keeps full precision (unsafe text cells neutralised); Markdown and
    LaTeX show ``digits`` decimals. Notes go under the table (APA style).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv = table.map(safe_csv_cell) if hasattr(table, "map") else table.applymap(safe_csv_cell)
    paths = [out_dir / f"{name}.csv", out_dir / f"{name}.md", out_dir / f"{name}.tex"]
    csv.to_csv(paths[0], index=False, lineterminator="\n", float_format="%.10g")
    shown = _formatted(table, digits)
    paths[1].write_text(_markdown(shown, title, notes))
    paths[2].write_text(_latex(shown, title, notes, name.replace("_", "-")))
    return paths


def design_note(results: dict) -> str:
    """The note every table carries: weights, variance method, design df, unweighted n."""
    d = results["design"]
    data = results["data"]
    synthetic = " Synthetic data." if data.get("synthetic") else ""
    return (f"Estimates weighted with the final teacher weight; design-based standard errors "
            f"by Taylor linearisation ({d['n_strata']} strata, {d['n_psu']} district PSUs, "
            f"finite-population correction); t-based 95% CIs on {d['degrees_of_freedom']} "
            f"design degrees of freedom. Unweighted n = {data['n_teachers']:,} teachers in "
            f"{data['n_districts']} districts. Associations, not causal effects.{synthetic}")

"""Hypotheses H1-H8 as data (``hypotheses.yaml``) and the one function that tests them.

``evaluate_hypotheses(teachers)`` fits every model the file names on the survey
design, computes each estimand with design-based standard errors and t-based
inference on the model's residual degrees of freedom, adjusts p-values within
each multiplicity family (Holm by default) and returns the verdict table
(``id, hypothesis, statement, estimate, std_error, ci_low, ci_high, p_value,
p_adjusted, direction, units, verdict``), together with the fitted models and
the tables behind the moderation, trend and cost-effectiveness figures.

Examples
--------
>>> spec = load_hypotheses()
>>> [h["id"] for h in spec["hypotheses"]][:3]
['H1a', 'H1b', 'H2']
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd
import yaml
from scipy import stats
from statsmodels.stats.multitest import multipletests

from analysis.stats.models import ModelFit, fit_svyglm, model_data, study_design
from analysis.study.codebook import load_codebook

HYPOTHESES_FILE = "hypotheses.yaml"
VERDICTS = ("supported", "not supported", "inconclusive")
TABLE_COLUMNS = ["id", "hypothesis", "statement", "model", "estimate", "std_error", "ci_low",
                 "ci_high", "df", "p_value", "p_adjusted", "direction", "units", "verdict"]


def load_hypotheses(text: str | None = None) -> dict[str, Any]:
    """The hypotheses file (packaged, or the YAML ``text`` given)."""
    if text is None:
        text = resources.files("analysis.stats").joinpath(HYPOTHESES_FILE).read_text("utf-8")
    return yaml.safe_load(text)


# ---------------------------------------------------------------------------
# Data and models
# ---------------------------------------------------------------------------
def add_moderators(teachers: pd.DataFrame, spec: dict) -> pd.DataFrame:
    """Add the moderator columns the hypotheses file defines (z-scores across districts,
    centred log2 ratios, indicators).

    Examples
    --------
    >>> t = pd.DataFrame({"district_id": ["a", "a", "b"], "vision": [2.0, 2.0, 4.0]})
    >>> spec = {"moderators": {"vision_z": {"column": "vision", "transform": "z"}}}
    >>> add_moderators(t, spec)["vision_z"].round(4).tolist()
    [-0.7071, -0.7071, 0.7071]
    """
    out = teachers.copy()
    districts = out.drop_duplicates("district_id")
    for name, m in spec.get("moderators", {}).items():
        col = out[m["column"]]
        if m["transform"] == "z":
            d = districts[m["column"]].astype(float)
            out[name] = (col.astype(float) - d.mean()) / d.std(ddof=1)
        elif m["transform"] == "log2_ratio":
            out[name] = np.log2(col.astype(float) / m["centre"]).fillna(0.0)
        elif m["transform"] == "indicator":
            out[name] = (col.astype(object) == m["value"]).astype(float).where(col.notna())
        else:
            raise ValueError(f"unknown moderator transform {m['transform']!r}")
    return out


def model_spec(name: str, spec: dict) -> dict:
    """Formula, outcome and family of a model of the hypotheses file."""
    cb = load_codebook()
    m = spec["models"][name]
    if "codebook" in m:
        c = cb.model_spec(m["codebook"])
        return {"formula": cb.model_formula(m["codebook"]), "outcome": c["outcome"],
                "family": c["family"]}
    rhs = cb.model_formula("M1").split("~", 1)[1].strip()
    return {"formula": " ".join(m["formula"].replace("{M1_rhs}", rhs).split()),
            "outcome": m["outcome"], "family": m["family"]}


def fit_models(teachers: pd.DataFrame, names: list[str] | None = None,
               spec: dict | None = None) -> dict[str, ModelFit]:
    """Fit the named models of the hypotheses file (all by default) on the study design."""
    spec = spec or load_hypotheses()
    data = add_moderators(model_data(teachers), spec)
    design = study_design(data)
    fits = {}
    for name in names or list(spec["models"]):
        m = model_spec(name, spec)
        fits[name] = fit_svyglm(m["formula"], design=design, family=m["family"])
        fits[name].extra.update(outcome=m["outcome"], name=name)
    return fits


# ---------------------------------------------------------------------------
# Estimands
# ---------------------------------------------------------------------------
def _row(est, se, df, level=0.95) -> dict:
    q = stats.t.ppf(0.5 + level / 2, df)
    p = 2 * stats.t.sf(abs(est / se), df) if se > 0 else np.nan
    return {"estimate": float(est), "std_error": float(se), "ci_low": float(est - q * se),
            "ci_high": float(est + q * se), "df": int(df), "p_value": float(p)}


def _levels(spec) -> list[str]:
    return load_codebook().support_model_codes()


def _margin_contrast(fit: ModelFit, settings: list[dict], weights, scale=1.0) -> dict:
    est, infl = fit.margins(settings)
    w = np.asarray(weights, dtype=float)
    value = scale * float(w @ est)
    se = scale * float(np.sqrt(fit.design.variance(infl @ w)[0, 0]))
    return _row(value, se, fit.df_resid)


def estimand_value(h: dict, fits: dict[str, ModelFit], spec: dict) -> dict:
    """Estimate, SE, CI, df and two-sided p-value of one hypothesis part."""
    e = h["estimand"]
    fit = fits[h["model"]]
    ref = spec.get("reference_model", load_codebook().reference_model)
    kind = e["type"]
    if kind == "ame":
        return _margin_contrast(fit, [{e["variable"]: e["level"]}, {e["variable"]: ref}],
                                [1, -1], scale=100)
    if kind == "ame_difference":
        return _margin_contrast(fit, [{e["variable"]: e["level"]}, {e["variable"]: e["versus"]}],
                                [1, -1], scale=100)
    if kind == "trend":
        return grade_trend(fit, e["variable"], spec).iloc[0][
            ["estimate", "std_error", "ci_low", "ci_high", "df", "p_value"]].to_dict()
    if kind == "coefficient":
        c = fit.contrast(e["terms"]).iloc[0]
        return _row(c["estimate"], c["std_error"], fit.df_resid)
    if kind == "cost_effectiveness":
        ce = cost_effectiveness(fit, variable=e["variable"], spending=e["spending"],
                                per=e["per"], reference=ref).set_index("support_model")
        return ce.loc[e["level"], ["estimate", "std_error", "ci_low", "ci_high", "df",
                                   "p_value"]].to_dict()
    raise ValueError(f"unknown estimand type {kind!r} in {h['id']}")


def grade_trend(fit: ModelFit, variable: str, spec: dict, *, level: float = 0.95
                ) -> pd.DataFrame:
    """H3: slope of the adjusted rates on the blog's grade rank (pp per grade step), and
    Spearman's rank correlation of the rates with the grades, with a Monte Carlo CI
    drawn from the rates' design-based sampling distribution.
    """
    cb = load_codebook()
    models = cb.support_models()
    codes = [m["code"] for m in models]
    rank = np.array([m["grade_rank"] for m in models], dtype=float)
    c = rank - rank.mean()
    weights = c / np.sum(c ** 2)
    row = _margin_contrast(fit, [{variable: code} for code in codes], weights, scale=100)
    est, infl = fit.margins([{variable: code} for code in codes])
    cov = fit.design.variance(infl)
    rng = np.random.default_rng(spec.get("seed", 0))
    draws = rng.multivariate_normal(est, cov, size=spec.get("spearman_draws", 4000),
                                    method="cholesky")
    ranks = stats.rankdata(draws, axis=1)
    rc = ranks - ranks.mean(axis=1, keepdims=True)
    rho_draws = (rc @ c) / np.sqrt(np.sum(rc ** 2, axis=1) * np.sum(c ** 2))
    rho = float(stats.spearmanr(est, rank).statistic)
    lo, hi = np.quantile(rho_draws, [(1 - level) / 2, (1 + level) / 2])
    row.update(spearman_rho=rho, spearman_ci_low=float(lo), spearman_ci_high=float(hi))
    return pd.DataFrame([row])


def cost_effectiveness(fit: ModelFit, *, variable: str, spending: str, per: float = 100,
                       reference: str) -> pd.DataFrame:
    """H8: adjusted gain (pp) per ``per`` USD of the spending difference from the reference.

    For each model m: AME_m (pp) / ((mean spending in m - mean in the reference) / per),
    the means teacher-weighted over the model's analysed rows; the CI comes from the
    delta method on the joint design-based influence of the AME and the two means.
    """
    levels = fit._levels(variable)
    est, infl = fit.margins([{variable: lv} for lv in levels])
    frame = fit._frame()
    w = fit._weights()
    x = frame[spending].to_numpy(dtype=float)
    rows = np.flatnonzero(fit.used)
    n_design = len(fit.design.data)
    out = []
    r = levels.index(reference)

    def domain_mean(level):
        inside = (frame[variable].astype(object) == level).to_numpy() & ~np.isnan(x)
        wd = np.where(inside, w, 0.0)
        mean = np.sum(wd * np.nan_to_num(x)) / wd.sum()
        z = np.zeros(n_design)
        z[rows] = wd * (np.nan_to_num(x) - mean) / wd.sum()
        return mean, z

    ref_mean, ref_z = domain_mean(reference)
    for j, lv in enumerate(levels):
        if j == r:
            continue
        ame = 100 * (est[j] - est[r])
        ame_z = 100 * (infl[:, j] - infl[:, r])
        m, z = domain_mean(lv)
        diff = (m - ref_mean) / per
        diff_z = (z - ref_z) / per
        ratio = ame / diff
        ratio_z = (ame_z - ratio * diff_z) / diff
        se = float(np.sqrt(fit.design.variance(ratio_z)[0, 0]))
        row = _row(ratio, se, fit.df_resid)
        row.update(support_model=lv, ame_pp=ame, spending_difference=m - ref_mean,
                   spending_mean=m)
        out.append(row)
    cols = ["support_model", "estimate", "std_error", "ci_low", "ci_high", "df", "p_value",
            "ame_pp", "spending_difference", "spending_mean"]
    return pd.DataFrame(out)[cols]


def conditional_effects(h: dict, fit: ModelFit, spec: dict) -> pd.DataFrame:
    """AMEs (pp) of the hypothesis' model level(s) against the reference at each value
    of its moderator: the data of the moderation figures."""
    cond = h["conditional"]
    ref = spec.get("reference_model", load_codebook().reference_model)
    levels = cond["level"] if isinstance(cond["level"], list) else [cond["level"]]
    rows = []
    for lv in levels:
        for label, value in cond["values"].items():
            settings = [{"support_model": lv, cond["moderator"]: value},
                        {"support_model": ref, cond["moderator"]: value}]
            r = _margin_contrast(fit, settings, [1, -1], scale=100)
            r.update(id=h["id"], support_model=lv, moderator=cond["moderator"],
                     moderator_label=label, moderator_value=float(value))
            rows.append(r)
    cols = ["id", "support_model", "moderator", "moderator_label", "moderator_value",
            "estimate", "std_error", "ci_low", "ci_high", "df", "p_value"]
    return pd.DataFrame(rows)[cols]


# ---------------------------------------------------------------------------
# Verdicts
# ---------------------------------------------------------------------------
def verdict(row: dict, *, direction: str, alpha: float, sesoi: float) -> str:
    """supported / not supported / inconclusive for one part (see hypotheses.yaml).

    Examples
    --------
    >>> verdict({"estimate": 5.0, "ci_low": 2.0, "ci_high": 8.0, "p_adjusted": 0.01},
    ...         direction="positive", alpha=0.05, sesoi=2.0)
    'supported'
    >>> verdict({"estimate": 0.1, "ci_low": -1.0, "ci_high": 1.0, "p_adjusted": 0.9},
    ...         direction="positive", alpha=0.05, sesoi=2.0)
    'not supported'
    """
    sign = 1.0 if direction == "positive" else -1.0
    est = sign * row["estimate"]
    upper = max(sign * row["ci_low"], sign * row["ci_high"])
    significant = row["p_adjusted"] < alpha
    if significant and est > 0:
        return "supported"
    if (significant and est < 0) or upper < sesoi:
        return "not supported"
    return "inconclusive"


def combine_verdicts(verdicts: list[str]) -> str:
    """A hypothesis is supported when every part is, not supported when any part is."""
    if all(v == "supported" for v in verdicts):
        return "supported"
    if any(v == "not supported" for v in verdicts):
        return "not supported"
    return "inconclusive"


@dataclass
class HypothesisResults:
    table: pd.DataFrame
    fits: dict[str, ModelFit]
    moderation: pd.DataFrame
    trend: pd.DataFrame
    cost_effectiveness: pd.DataFrame
    pairwise: pd.DataFrame
    summary: dict[str, str] = field(default_factory=dict)


def evaluate_hypotheses(teachers: pd.DataFrame, *, spec: dict | None = None,
                        fits: dict[str, ModelFit] | None = None) -> HypothesisResults:
    """Test every hypothesis of the file on the processed teacher table.

    Returns
    -------
    HypothesisResults
        ``table`` (one row per tested part, columns ``TABLE_COLUMNS``),
        ``summary`` (hypothesis -> combined verdict), the fitted models, and the
        moderation, trend, cost-effectiveness and pairwise-contrast tables.
    """
    spec = spec or load_hypotheses()
    needed = sorted({h["model"] for h in spec["hypotheses"]} | {"M1"})
    fits = dict(fits or {})
    missing = [m for m in needed if m not in fits]
    if missing:
        fits.update(fit_models(teachers, missing, spec))
    rows = []
    for h in spec["hypotheses"]:
        r = estimand_value(h, fits, spec)
        r.update(id=h["id"], hypothesis=h["hypothesis"], statement=" ".join(h["statement"].split()),
                 model=h["model"], direction=h["direction"], units=h["units"],
                 family=h.get("family", h["id"]), sesoi=h.get("sesoi", 0.0))
        rows.append(r)
    table = pd.DataFrame(rows)
    table["p_adjusted"] = np.nan
    for family, idx in table.groupby("family").groups.items():
        method = spec.get("families", {}).get(family, {}).get("method", "holm")
        table.loc[idx, "p_adjusted"] = multipletests(table.loc[idx, "p_value"],
                                                     method=method)[1]
    alpha = spec.get("alpha", 0.05)
    table["verdict"] = [verdict(r, direction=r["direction"], alpha=alpha, sesoi=r["sesoi"])
                        for r in table.to_dict(orient="records")]
    summary = {hyp: combine_verdicts(list(g["verdict"]))
               for hyp, g in table.groupby("hypothesis", sort=False)}
    moderation = pd.concat([conditional_effects(h, fits[h["model"]], spec)
                            for h in spec["hypotheses"] if "conditional" in h],
                           ignore_index=True)
    m1 = fits["M1"]
    ref = spec.get("reference_model", load_codebook().reference_model)
    return HypothesisResults(
        table=table[TABLE_COLUMNS], fits=fits, moderation=moderation,
        trend=grade_trend(m1, "support_model", spec),
        cost_effectiveness=cost_effectiveness(m1, variable="support_model",
                                              spending="support_spend_pp", per=100,
                                              reference=ref),
        pairwise=m1.pairwise("support_model"), summary=summary)


# ---------------------------------------------------------------------------
# Checking verdicts against a simulated study's planted truth
# ---------------------------------------------------------------------------
_TERM = re.compile(r'support_model\s*==\s*"(?P<model>\w+)"\)\s*\*\s*(?P<moderator>\w+)')


def planted_direction(h: dict, truth: dict, spec: dict) -> str:
    """The direction ("positive", "negative" or "none") a simulator planted for one part.

    ``truth`` is the simulator's ``truth.json``: population AMEs (``ame_pp``), per-pupil
    support spending by model and the planted moderators. Moderation coefficients get the
    sign of the planted moderator effect on the named model (the vision multiplier times
    the model's planted log-odds effect); AME-based estimands get the sign of the
    population AME, trend or cost ratio.

    Examples
    --------
    >>> truth = {"ame_pp": {"coaching": 9.0, "director": 6.0}, "reference_model": "r"}
    >>> h = {"estimand": {"type": "ame_difference", "level": "coaching", "versus": "director"}}
    >>> planted_direction(h, truth, {})
    'positive'
    """
    e = h["estimand"]
    ame = dict(truth["ame_pp"], **{truth["reference_model"]: 0.0})
    kind = e["type"]
    if kind == "ame":
        value = ame[e["level"]]
    elif kind == "ame_difference":
        value = ame[e["level"]] - ame[e["versus"]]
    elif kind == "trend":
        models = load_codebook().support_models()
        rank = np.array([m["grade_rank"] for m in models], dtype=float)
        value = float(np.polyfit(rank, [ame[m["code"]] for m in models], 1)[0])
    elif kind == "cost_effectiveness":
        spend = truth["support_spend_pp"]
        value = ame[e["level"]] * np.sign(spend[e["level"]] - spend[truth["reference_model"]])
    elif kind == "coefficient":
        value = 0.0
        planted = truth["planted_moderators"]
        for term, weight in e["terms"].items():
            m = _TERM.search(term)
            if m is None:
                raise ValueError(f"{h.get('id')}: cannot read the model and moderator of {term!r}")
            column = spec["moderators"][m["moderator"]]["column"]
            p = planted.get(column, {"effect": 0.0, "models": []})
            if m["model"] not in p["models"]:
                continue
            size = p["effect"]
            if p.get("kind") == "multiplier":
                size *= truth["log_odds_effects"][m["model"]]
            value += weight * size
    else:
        raise ValueError(f"{h.get('id')}: no planted truth for estimand type {kind!r}")
    return "positive" if value > 0 else "negative" if value < 0 else "none"


def truth_agreement(table: pd.DataFrame, truth: dict, spec: dict | None = None) -> pd.DataFrame:
    """Compare each part's verdict with the direction the simulator planted.

    A verdict agrees when a part planted in the hypothesised direction is "supported",
    and a part planted as no effect (or the opposite effect) is not "supported".

    Returns
    -------
    pandas.DataFrame
        ``id, verdict, planted, expected, agrees`` (``expected`` is "supported" or
        "not supported or inconclusive").
    """
    spec = spec or load_hypotheses()
    rows = []
    verdicts = dict(zip(table["id"], table["verdict"], strict=True))
    for h in spec["hypotheses"]:
        planted = planted_direction(h, truth, spec)
        true = planted == h["direction"]
        v = verdicts[h["id"]]
        rows.append({"id": h["id"], "verdict": v, "planted": planted,
                     "expected": "supported" if true else "not supported or inconclusive",
                     "agrees": (v == "supported") == true})
    return pd.DataFrame(rows)

"""Synthetic study generator with planted effects: the project's ground truth.

The simulator draws a population of districts, schools and teachers, a
stratified sample of districts, district and teacher nonresponse, each
district's support model (confounded by size and poverty), and each teacher's
SAMR level from a multilevel proportional-odds model with planted support-model
effects and moderators. It then writes the raw exports exactly as the
instrument (``codebook.yaml``) describes them, with the mess real exports have,
and the true population average marginal effects (``truth.json``).

Everything is vectorised NumPy; the same scenario and seed give byte-identical
files.

Examples
--------
>>> from analysis.study.simulate import simulate_study
>>> study = simulate_study("default", seed=1, n_districts=300, teacher_respondents=2000)
>>> sorted(study.truth["ame_pp"])[:2]
['coaching', 'consultant']
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from analysis.study.codebook import Codebook, load_codebook

SCENARIO_FILE = "scenarios.yaml"
#: State FIPS codes, which begin every NCES district ID (some with a zero).
STATE_FIPS = {"AZ": "04", "CO": "08", "GA": "13", "IL": "17", "MI": "26", "NC": "37",
              "OH": "39", "OR": "41", "PA": "42", "TX": "48"}
SURVEY_START = pd.Timestamp("2026-03-02 07:00:00")
SURVEY_DAYS = 55
FIRST_NAMES = ["Alex", "Sam", "Jordan", "Taylor", "Morgan", "Casey", "Riley", "Jamie", "Avery",
               "Quinn", "Parker", "Drew", "Rowan", "Emery", "Skyler", "Reese", "Harper", "Logan"]
LAST_NAMES = ["Fakename", "Testperson", "Placeholder", "Synthetic", "Madeup", "Notreal",
              "Sampleton", "Examplar", "Dummyson", "Fictive", "Inventa", "Pretendo"]


# ---------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------
def _deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def scenario_names() -> list[str]:
    """Names of the scenarios in ``scenarios.yaml``."""
    return list(_scenario_file())


def _scenario_file() -> dict[str, Any]:
    text = resources.files("analysis.study").joinpath(SCENARIO_FILE).read_text(encoding="utf-8")
    return yaml.safe_load(text)


def load_scenario(name: str = "default", overrides: dict | None = None) -> dict[str, Any]:
    """Parameters of a scenario, with inheritance resolved and overrides applied.

    Examples
    --------
    >>> load_scenario("null")["outcome"]["model_effects"]["coaching"]
    0.0
    """
    scenarios = _scenario_file()
    if name not in scenarios:
        raise KeyError(f"unknown scenario {name!r}; known: {', '.join(scenarios)}")
    params = scenarios[name]
    if "inherit" in params:
        parent = load_scenario(params["inherit"])
        params = _deep_merge(parent, {k: v for k, v in params.items() if k != "inherit"})
    return _deep_merge(params, overrides or {})


# ---------------------------------------------------------------------------
# The data-generating process
# ---------------------------------------------------------------------------
def _yes_code():
    return load_codebook().scale("yes_no_not_sure")["Yes"]


def _logistic(x):
    return 1.0 / (1.0 + np.exp(-x))


def _likert(rng, latent, n_items, loading=0.9, noise=0.8, reverse=()):
    """Draw 1-5 agreement items from a latent z-score."""
    raw = 3.0 + loading * latent[:, None] + rng.normal(0, noise, (latent.size, n_items))
    items = np.clip(np.rint(raw), 1, 5).astype(int)
    for k in reverse:
        items[:, k] = 6 - items[:, k]
    return items


def _population_districts(p: dict, rng: np.random.Generator, n: int) -> pd.DataFrame:
    pop = p["population"]
    locales = list(pop["locale_probs"])
    locale = rng.choice(locales, size=n, p=np.array(list(pop["locale_probs"].values())))
    median = np.array([pop["enrollment_median"][loc] for loc in locale], dtype=float)
    enrollment = np.maximum(60, np.rint(median * np.exp(rng.normal(0, pop["enrollment_sigma"], n))))
    lo, hi = pop["size_cutoffs"]
    small, medium, large = load_codebook().scale_values("size_stratum")
    size = np.where(enrollment < lo, small, np.where(enrollment < hi, medium, large))
    frl_mean = np.array([pop["frl_mean"][loc] for loc in locale])
    frl = np.clip(frl_mean + rng.normal(0, 16, n), 2, 98).round(1)
    n_schools = np.maximum(1, np.rint(enrollment / pop["students_per_school"]
                                      * np.exp(rng.normal(0, 0.25, n)))).astype(int)
    states = pop["states"]
    state = rng.choice(states, size=n)
    # Unique 7-digit NCES-style IDs: state FIPS + 5 digits.
    serial = rng.permutation(np.arange(10000, 10000 + n * 7))[:n]
    district_id = [STATE_FIPS[s] + f"{k % 100000:05d}" for s, k in zip(state, serial, strict=True)]
    df = pd.DataFrame({
        "district_id": district_id, "state": state, "locale": locale, "size_stratum": size,
        "enrollment": enrollment.astype(int), "n_schools": n_schools, "frl_pct": frl,
    })
    df = df.drop_duplicates("district_id").sort_values("district_id", ignore_index=True)
    df["stratum"] = df["locale"] + "_" + df["size_stratum"]
    return df


def _adopt_support_models(p, rng, districts, codes):
    ad = p["adoption"]
    log_enr = np.log(districts["enrollment"].to_numpy()) - np.log(2000)
    frl = districts["frl_pct"].to_numpy() - 50
    util = np.column_stack([
        ad["intercept"][c] + ad["log_enrollment"][c] * log_enr + ad["frl"][c] * frl for c in codes
    ])
    util += rng.gumbel(size=util.shape)
    return np.array(codes)[util.argmax(axis=1)]


def _district_characteristics(p, rng, d: pd.DataFrame) -> pd.DataFrame:
    """District survey answers that do not depend on the sample (all population districts)."""
    n = len(d)
    d = d.copy()
    model = d["support_model"].to_numpy()
    d["n_campuses"] = d["n_schools"]
    big = d["n_campuses"].to_numpy()
    # potential FTEs: the value the district has, or would have, under each model
    director_if = np.where(big >= 40, 3.0, np.where(big >= 15, 2.0, 1.0))
    director_if = director_if * rng.choice([1.0, 0.5], size=n, p=[0.85, 0.15])
    coach_if = np.round(big * rng.uniform(0.6, 1.2, n) * 2) / 2
    d["director_fte_if_director"] = director_if
    staff = p["district"]
    share = np.array([staff["director_share"].get(m, 0.0) for m in model])
    also_director = rng.uniform(size=n) < share
    d["director_fte"] = np.where(np.isin(model, staff["director_models"]), director_if,
                                 np.where(also_director, 1.0, 0.0))
    d["coach_fte"] = np.where(np.isin(model, staff["coach_models"]), np.maximum(coach_if, 0.5),
                              0.0)
    d["model_years"] = np.round(rng.gamma(2.0, 2.5, n), 1)
    cut_probs = staff["position_cut_probs"]
    d["position_cut"] = rng.choice(list(cut_probs), size=n, p=list(cut_probs.values()))
    d["title_has_tech"] = rng.choice([1, 0], size=n, p=[0.7, 0.3])
    d["it_control_z"] = rng.normal(0, 1, n)
    d["vision_z"] = rng.normal(0, 1, n)
    d["role_fidelity_z"] = rng.normal(0, 1, n)
    frl = d["frl_pct"].to_numpy()
    d["tech_spend_pp"] = np.round(np.exp(rng.normal(np.log(320) - 0.004 * (frl - 50), 0.35)), 0)
    support_mean = np.array([staff["support_spend_pp"][m] for m in model], dtype=float)
    d["support_spend_pp"] = np.round(support_mean * np.exp(rng.normal(0, 0.3, n)), 0)
    d["students_per_device"] = np.round(np.clip(rng.gamma(4.0, 0.35, n) + 0.5
                                                + 0.006 * (frl - 50), 0.8, 6.0), 1)
    return d


def _population_schools(p, rng, districts: pd.DataFrame) -> pd.DataFrame:
    pop = p["population"]
    reps = districts["n_schools"].to_numpy()
    district_id = np.repeat(districts["district_id"].to_numpy(), reps)
    index = np.concatenate([np.arange(1, k + 1) for k in reps])
    school_id = [f"{did}{k:05d}" for did, k in zip(district_id, index, strict=True)]
    students = np.repeat(districts["enrollment"].to_numpy() / reps, reps)
    students = students * np.exp(rng.normal(0, 0.3, students.size))
    n_teachers = np.maximum(3, np.rint(students / pop["students_per_teacher"])).astype(int)
    return pd.DataFrame({"school_id": school_id, "district_id": district_id,
                         "n_teachers": n_teachers})


def _model_effect_terms(p, districts: pd.DataFrame, codes) -> np.ndarray:
    """District x model matrix of the support-model part of the linear predictor.

    Column j is what the district's teachers would get if the district ran
    model ``codes[j]``: the model effect scaled by leadership vision, plus the
    moderators that apply to that model.
    """
    out = p["outcome"]
    mod = out["moderators"]
    vz = districts["vision_z"].to_numpy()
    mult = np.maximum(0.0, 1.0 + mod["vision_multiplier"] * vz)
    itz = districts["it_control_z"].to_numpy()
    fid = districts["role_fidelity_z"].to_numpy()
    cut = (districts["position_cut"].to_numpy() == _yes_code()).astype(float)
    cpd = districts["n_campuses"].to_numpy() / districts["director_fte_if_director"].to_numpy()
    cpd_mod = mod["campuses_per_director"]
    moderators = {
        "campuses_per_director": np.log2(cpd / cpd_mod.get("centre", 8)),
        "it_control": itz, "role_fidelity": fid, "position_cut": cut,
    }
    terms = np.empty((len(districts), len(codes)))
    for j, code in enumerate(codes):
        t = out["model_effects"][code] * mult
        for name, value in moderators.items():
            if code in mod[name].get("models", []):
                t = t + mod[name]["effect"] * value
        terms[:, j] = t
    return terms + mod["vision_main"] * vz[:, None]


def _teachers(p, rng, districts, schools, n_per_school) -> pd.DataFrame:
    """Teachers of the given schools, with covariates and the linear predictor."""
    cov = p["outcome"]["covariates"]
    n = int(n_per_school.sum())
    school_idx = np.repeat(np.arange(len(schools)), n_per_school)
    t = pd.DataFrame({
        "school_id": schools["school_id"].to_numpy()[school_idx],
        "district_id": schools["district_id"].to_numpy()[school_idx],
    })
    t["years_teaching"] = np.clip(np.rint(rng.gamma(2.2, 6.0, n)), 0, 45).astype(int)
    bands = list(cov["grade_band"])
    t["grade_band"] = rng.choice(bands, size=n, p=[0.45, 0.22, 0.28, 0.05])
    subjects = list(cov["subject"])
    t["subject"] = rng.choice(subjects, size=n,
                              p=[0.2, 0.17, 0.12, 0.1, 0.08, 0.07, 0.12, 0.14])
    return t


def _teacher_eta(p, t: pd.DataFrame, d: pd.DataFrame, school_re, district_re):
    """Linear predictor of each teacher, excluding the support-model part."""
    cov = p["outcome"]["covariates"]
    di = d.set_index("district_id").loc[t["district_id"]]
    eta = (cov["frl"] * (di["frl_pct"].to_numpy() - 50)
           + cov["log_enrollment"] * (np.log(di["enrollment"].to_numpy()) - np.log(2000))
           + cov["tech_spend_per_100"] * (di["tech_spend_pp"].to_numpy() - 300) / 100
           + cov["students_per_device"] * (di["students_per_device"].to_numpy() - 1.5)
           + cov["years_teaching"] * (t["years_teaching"].to_numpy() - 12)
           + t["grade_band"].map(cov["grade_band"]).to_numpy()
           + t["subject"].map(cov["subject"]).to_numpy())
    return eta + school_re + district_re


@dataclass
class SimulatedStudy:
    """A simulated study: raw tables in variable names, plus the truth."""

    scenario: str
    seed: int
    params: dict[str, Any]
    frame_districts: pd.DataFrame
    frame_schools: pd.DataFrame
    district_survey: pd.DataFrame
    teacher_survey: pd.DataFrame
    truth: dict[str, Any] = field(default_factory=dict)


def simulate_study(scenario: str = "default", *, seed: int = 20261130,
                   n_districts: int | None = None, teacher_respondents: int | None = None,
                   overrides: dict | None = None, mess: bool = True) -> SimulatedStudy:
    """Simulate a whole study: population, sample, responses and truth.

    Parameters
    ----------
    scenario : str
        A scenario of ``scenarios.yaml`` (``"default"`` or ``"null"``).
    seed : int
        Seed of every random draw; the same seed gives the same study.
    n_districts : int, optional
        Population size in districts (overrides the scenario).
    teacher_respondents : int, optional
        Expected number of responding teachers (overrides the scenario).
    overrides : dict, optional
        Nested parameter overrides, merged into the scenario.
    mess : bool
        Whether to add the quality problems of real exports.

    Returns
    -------
    SimulatedStudy
    """
    cb = load_codebook()
    p = load_scenario(scenario, overrides)
    if n_districts is not None:
        p["population"]["n_districts"] = n_districts
    if teacher_respondents is not None:
        p["sample"]["teacher_respondents_target"] = teacher_respondents
    rng = np.random.default_rng(seed)
    codes = cb.support_model_codes()

    d = _population_districts(p, rng, p["population"]["n_districts"])
    d["support_model"] = _adopt_support_models(p, rng, d, codes)
    d = _district_characteristics(p, rng, d)
    d = _draw_district_sample(p, rng, d)
    schools = _population_schools(p, rng, d)

    # Random effects for every population district and school.
    district_re = pd.Series(rng.normal(0, p["outcome"]["district_sd"], len(d)),
                            index=d["district_id"])
    school_re = rng.normal(0, p["outcome"]["school_sd"], len(schools))
    terms = _model_effect_terms(p, d, codes)

    truth = _population_truth(p, rng, d, schools, school_re, district_re, terms, codes)

    # Teachers who answer: schools of responding districts only.
    responding = d.loc[d["responded"] == 1, "district_id"]
    in_sample = schools["district_id"].isin(responding).to_numpy()
    s_resp = schools.loc[in_sample].reset_index(drop=True)
    total = s_resp["n_teachers"].sum()
    mean_rate = min(0.9, p["sample"]["teacher_respondents_target"] / max(total, 1))
    conc = p["sample"]["teacher_response_concentration"]
    rate = rng.beta(mean_rate * conc, (1 - mean_rate) * conc, len(s_resp))
    n_resp = rng.binomial(s_resp["n_teachers"].to_numpy(), rate)
    t = _teachers(p, rng, d, s_resp, n_resp)
    eta = _teacher_eta(p, t, d, np.repeat(school_re[in_sample], n_resp),
                       district_re.loc[t["district_id"]].to_numpy())
    col = {c: j for j, c in enumerate(codes)}
    didx = pd.Index(d["district_id"]).get_indexer(t["district_id"])
    model_j = d["support_model"].map(col).to_numpy()[didx]
    eta = eta + terms[didx, model_j]
    t = _teacher_answers(p, rng, t, eta, d, didx)
    t = t.drop(columns=["_level"])

    district_survey = _district_answers(p, rng, d.loc[d["responded"] == 1].copy(), cb)
    teacher_survey = _respondent_metadata(p, rng, t)
    if mess:
        teacher_survey = _add_teacher_mess(p, rng, teacher_survey, cb,
                                           d.loc[d["sampled"] == 1, "district_id"])

    frame_d = d[["district_id", "state", "locale", "size_stratum", "stratum", "enrollment",
                 "n_schools", "frl_pct", "sampled", "selection_prob"]].copy()
    frame_s = schools.loc[schools["district_id"].isin(d.loc[d["sampled"] == 1, "district_id"]),
                          ["school_id", "district_id", "n_teachers"]].reset_index(drop=True)
    truth["n_population_districts"] = int(len(d))
    truth["n_sampled_districts"] = int(d["sampled"].sum())
    truth["n_responding_districts"] = int(d["responded"].sum())
    return SimulatedStudy(scenario, seed, p, frame_d, frame_s, district_survey, teacher_survey,
                          truth)


def _draw_district_sample(p, rng, d: pd.DataFrame) -> pd.DataFrame:
    s = p["sample"]
    d = d.copy()
    sampled = np.zeros(len(d), dtype=int)
    prob = np.zeros(len(d))
    for stratum, idx in d.groupby("stratum", sort=True).indices.items():
        size = stratum.split("_")[1]
        n_h = min(len(idx), max(s["min_per_stratum"], round(s["fraction"][size] * len(idx))))
        chosen = rng.choice(idx, size=n_h, replace=False)
        sampled[chosen] = 1
        prob[idx] = n_h / len(idx)
    d["sampled"] = sampled
    d["selection_prob"] = prob
    r = s["district_response"]
    lin = (r["intercept"] + r["log_enrollment"] * (np.log(d["enrollment"]) - np.log(2000))
           + r["frl"] * (d["frl_pct"] - 50))
    d["responded"] = ((rng.uniform(size=len(d)) < _logistic(lin)) & (sampled == 1)).astype(int)
    return d


def _population_truth(p, rng, d, schools, school_re, district_re, terms, codes):
    """True population AMEs of each model against the reference (percentage points)."""
    cut = p["outcome"]["cutpoints"]
    t = _teachers(p, rng, d, schools, schools["n_teachers"].to_numpy())
    eta = _teacher_eta(p, t, d, np.repeat(school_re, schools["n_teachers"].to_numpy()),
                       district_re.loc[t["district_id"]].to_numpy())
    didx = pd.Index(d["district_id"]).get_indexer(t["district_id"])
    prob = _logistic(eta[:, None] + terms[didx, :] - cut[0])   # P(non-substitutive) per model
    rates = prob.mean(axis=0)
    ref = codes.index(load_codebook().reference_model)
    return {
        "estimand": "population average marginal effect on P(non_substitutive), "
                    "each model against tech_support_only, over every teacher of the population",
        "n_population_teachers": int(len(t)),
        "rate_pct": {c: round(float(100 * rates[j]), 6) for j, c in enumerate(codes)},
        "ame_pp": {c: round(float(100 * (rates[j] - rates[ref])), 6)
                   for j, c in enumerate(codes) if j != ref},
    }


def _teacher_answers(p, rng, t, eta, d, didx):
    """Teacher answers (variable names, codes) given the linear predictor."""
    n = len(t)
    cut = np.asarray(p["outcome"]["cutpoints"])
    latent = eta + rng.logistic(size=n)
    level = 1 + (latent[:, None] > cut[None, :]).sum(axis=1)       # 1..4
    t = t.copy()
    t["_level"] = level
    cb = load_codebook()
    t["samr_self"] = np.array(cb.samr_levels)[level - 1]
    intensity = rng.normal(0, 1, n)
    t["use_freq"] = np.clip(np.rint(2.2 + 0.9 * intensity + 0.3 * (level - 1)
                                    + rng.normal(0, 0.6, n)), 0, 4).astype(int)
    item_levels = cb.samr_numeric
    for item, tag in cb.samr_items().items():
        lj = item_levels[tag]
        mean = 1.4 + 0.6 * intensity + 1.3 * (level >= lj) - 0.35 * (lj - 1)
        t[item] = np.clip(np.rint(mean + rng.normal(0, 0.7, n)), 0, 4).astype(int)
    model = d["support_model"].to_numpy()[didx]
    tp = p["teacher"]
    sq = np.array([tp["support_quality"][m] for m in model]) + rng.normal(0, 0.8, n)
    shape = np.array([tp["coaching_hours_shape"][m] for m in model])
    t["coaching_hours"] = np.round(rng.gamma(shape, 2.0), 1)
    t["pd_hours"] = np.round(rng.gamma(2.0, 4.0, n), 1)
    for k, col in enumerate(_items(cb, "support_quality")):
        t[col] = _likert(rng, sq, 1)[:, 0] if k < 3 else _likert(rng, sq * 0.5, 1)[:, 0]
    t["attention_check"] = cb.scale("agreement")[cb.quality_rules["attention_check_pass"]]
    se = 0.3 * (level - 2) + rng.normal(0, 0.9, n)
    for col in _items(cb, "self_efficacy"):
        t[col] = _likert(rng, se, 1)[:, 0]
    t["minutes_lost"] = np.round(rng.gamma(1.5, 20.0, n))
    t["consent"] = 1
    return t


def _items(cb: Codebook, construct: str) -> list[str]:
    return [c.variable for c in cb.construct_items(construct)]


def _district_answers(p, rng, d: pd.DataFrame, cb: Codebook) -> pd.DataFrame:
    """District survey answers in variable names and codes, one row per responding district."""
    n = len(d)
    mess = p["mess"]
    d = d.reset_index(drop=True)
    out = pd.DataFrame({"district_id": d["district_id"]})
    out["submitted_at"] = (SURVEY_START + pd.to_timedelta(rng.uniform(0, 30 * 86400, n).round(),
                                                          unit="s"))
    first = rng.choice(FIRST_NAMES, n)
    last = rng.choice(LAST_NAMES, n)
    out["email"] = [f"{a}.{b}{k}@district.example.org".lower()
                    for k, (a, b) in enumerate(zip(first, last, strict=True))]
    out["respondent_name"] = [f"{a} {b}" for a, b in zip(first, last, strict=True)]
    out["respondent_role"] = rng.choice(cb.scale_values("respondent_role"), n,
                                        p=[0.25, 0.2, 0.3, 0.2, 0.05])
    out["district_name"] = [f"Synthetic District {k:04d}" for k in range(1, n + 1)]
    model = d["support_model"].to_numpy().astype(object)
    out["support_model"] = model
    out["support_model_other"] = ""
    other = rng.uniform(size=n) < mess["d1_other"]
    out.loc[other, "support_model"] = cb.other_model_code
    out.loc[other, "support_model_other"] = "We share staff with a regional service center"
    # D2 components consistent with the model, plus some extras
    # D2: each model's own component; IT staff in every model above the lowest; a director
    # component wherever there is director FTE; some extra stipended leaders. Inconsistent
    # districts: the top model without its component, the lowest model with IT staff.
    codes = cb.support_model_codes()
    lowest, second, third, top = codes[0], codes[1], codes[2], codes[-1]
    comp = {c["implies"]: c["code"] for c in cb.support_components()}
    has = {code: np.zeros(n, dtype=bool) for code in comp.values()}
    for m, code in comp.items():
        has[code] |= model == m
    has[comp[second]] |= model != lowest
    fte_component = {c["fte"]: c["code"] for c in cb.support_components() if c.get("fte")}
    for fte_col, code in fte_component.items():
        has[code] |= d[fte_col].to_numpy() > 0
    has[comp[third]] |= rng.uniform(size=n) < p["district"]["extra_stipended_leaders"]
    bad = rng.uniform(size=n) < mess["d1_d2_inconsistent"]
    top_fte = next(c["fte"] for c in cb.support_components() if c["implies"] == top)
    has[comp[top]] &= ~(bad & (model == top))
    has[comp[second]] |= bad & (model == lowest)
    order = [c["code"] for c in cb.support_components()]
    out["support_components"] = [
        [code for code in order if has[code][i]] for i in range(n)
    ]
    out["n_campuses"] = d["n_campuses"].to_numpy()
    out["enrollment_reported"] = np.rint(d["enrollment"] * rng.uniform(0.97, 1.03, n)).astype(int)
    out["coach_fte"] = d["coach_fte"].to_numpy()
    out["director_fte"] = d["director_fte"].to_numpy()
    out[top_fte] = np.where(bad & (model == top), 0.0, out[top_fte])
    out["model_years"] = d["model_years"].to_numpy()
    out["position_cut"] = d["position_cut"].to_numpy()
    out["title_has_tech"] = d["title_has_tech"].to_numpy()
    itc = _likert(rng, d["it_control_z"].to_numpy(), 3, reverse=(1,))
    vis = _likert(rng, d["vision_z"].to_numpy(), 4)
    for k in range(3):
        out[f"it_control_{k + 1}"] = itc[:, k]
    for k in range(4):
        out[f"vision_{k + 1}"] = vis[:, k]
    out["role_fidelity"] = _likert(rng, d["role_fidelity_z"].to_numpy(), 1, loading=1.1)[:, 0]
    for col in ("tech_spend_pp", "support_spend_pp", "students_per_device"):
        out[col] = d[col].to_numpy()
    out = out.sort_values("submitted_at", ignore_index=True)
    return out


def _respondent_metadata(p, rng, t: pd.DataFrame) -> pd.DataFrame:
    n = len(t)
    t = t.sample(frac=1.0, random_state=rng.integers(2**31)).reset_index(drop=True)
    start = SURVEY_START + pd.to_timedelta(np.sort(rng.uniform(0, SURVEY_DAYS * 86400, n)).round(),
                                           unit="s")
    duration = np.rint(np.exp(rng.normal(np.log(720), 0.45, n))).astype(int)
    t["start_date"] = start
    t["end_date"] = start + pd.to_timedelta(duration, unit="s")
    t["recorded_date"] = t["end_date"]
    t["duration_seconds"] = duration
    t["status"] = "IP Address"
    t["progress"] = 100
    t["finished"] = True
    alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"))
    ids = rng.choice(alphabet, size=(n, 15))
    t["response_id"] = ["R_" + "".join(row) for row in ids]
    first = rng.choice(FIRST_NAMES, n)
    last = rng.choice(LAST_NAMES, n)
    t["recipient_first_name"] = first
    t["recipient_last_name"] = last
    t["recipient_email"] = [f"{a}.{b}.{k}@school.example.org".lower()
                            for k, (a, b) in enumerate(zip(first, last, strict=True))]
    t["external_reference"] = [f"EXT{k:07d}" for k in rng.permutation(n)]
    # documentation-only address ranges (RFC 5737): never a real person's address
    t["ip_address"] = [f"{a}.{b}" for a, b in zip(
        rng.choice(["192.0.2", "198.51.100", "203.0.113"], n), rng.integers(1, 255, n),
        strict=True)]
    t["location_latitude"] = np.round(rng.uniform(30, 45, n), 4)
    t["location_longitude"] = np.round(rng.uniform(-120, -75, n), 4)
    t["distribution_channel"] = "email"
    t["user_language"] = "EN"
    t["comments"] = ""
    has_comment = rng.uniform(size=n) < 0.05
    t.loc[has_comment, "comments"] = [
        f"Please ask {a} in our library about the new laptops." for a in first[has_comment]]
    return t


def _add_teacher_mess(p, rng, t, cb: Codebook, sampled_ids) -> pd.DataFrame:
    """Add the quality problems of real exports to the teacher responses."""
    m = p["mess"]
    n = len(t)
    t = t.copy()
    question_cols = [c.variable for c in cb.columns("teacher_survey")
                     if c.header.startswith("T") and c.variable not in ("consent", "comments")]
    u = rng.uniform(size=(n, 6))
    no_consent = u[:, 0] < m["not_consented"]
    t.loc[no_consent, "consent"] = 0
    t.loc[no_consent, question_cols] = np.nan
    partial = (u[:, 1] < m["partial"]) & ~no_consent
    keeps_outcomes = rng.uniform(size=n) < m["partial_with_outcomes"]
    outcome_cols = list(cb.samr_items()) + ["samr_self"]
    late_cols = [c for c in question_cols if c not in outcome_cols]
    tail_start = {c: k for k, c in enumerate(question_cols)}
    drop_tail = partial & ~keeps_outcomes
    t.loc[drop_tail, [c for c in question_cols if tail_start[c] >= 4]] = np.nan
    t.loc[partial & keeps_outcomes, late_cols[-6:]] = np.nan
    t.loc[partial, "progress"] = rng.integers(20, 95, int(partial.sum()))
    t.loc[partial, "finished"] = False
    clean = ~no_consent & ~partial
    speeder = clean & (u[:, 2] < m["speeders"])
    t.loc[speeder, "duration_seconds"] = rng.integers(40, 200, int(speeder.sum()))
    straight = clean & (u[:, 3] < m["straightliners"])
    sl_items = cb.quality_rules["straightline_items"]
    value = rng.integers(1, 6, int(straight.sum()))
    for col in sl_items:
        t.loc[straight, col] = value
    attention = clean & (u[:, 4] < m["failed_attention"])
    t.loc[attention, "attention_check"] = rng.choice([1, 2, 3, 5], int(attention.sum()))
    t["end_date"] = t["start_date"] + pd.to_timedelta(t["duration_seconds"], unit="s")
    t["recorded_date"] = t["end_date"]
    # Duplicates: the same person submits again later; the later one is complete.
    dup = clean & (u[:, 5] < m["duplicates"])
    first_try = t.loc[dup].copy()
    first_try["progress"] = 100
    alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"))
    first_try["response_id"] = ["R_" + "".join(r)
                                for r in rng.choice(alphabet, size=(len(first_try), 15))]
    shift = pd.to_timedelta(rng.integers(600, 5 * 86400, len(first_try)), unit="s")
    first_try["start_date"] = first_try["start_date"] - shift
    first_try["end_date"] = first_try["start_date"] + pd.to_timedelta(
        first_try["duration_seconds"], unit="s")
    first_try["recorded_date"] = first_try["end_date"]
    first_try["samr_self"] = rng.choice(cb.samr_levels, len(first_try))
    t = pd.concat([t, first_try], ignore_index=True)
    return t.sort_values(["recorded_date", "response_id"], ignore_index=True)


# ---------------------------------------------------------------------------
# Writing the raw exports
# ---------------------------------------------------------------------------
def _labels(cb: Codebook, scale: str) -> dict[Any, str]:
    return {v: k for k, v in cb.scale(scale).items()}


def to_teacher_export(study: SimulatedStudy, cb: Codebook | None = None) -> pd.DataFrame:
    """The teacher responses as the Qualtrics export shows them (headers, choice text)."""
    cb = cb or load_codebook()
    t = study.teacher_survey
    out = {}
    for col in cb.columns("teacher_survey"):
        values = t[col.variable] if col.variable in t else pd.Series("", index=t.index)
        if col.scale:
            labels = _labels(cb, col.scale)
            values = values.map(lambda v, lab=labels: lab.get(v, "") if pd.notna(v) else "")
        elif col.type == "datetime":
            values = values.dt.strftime("%Y-%m-%d %H:%M:%S")
        elif col.type == "boolean":
            values = values.map({True: "True", False: "False"})
        elif col.type in ("number",):
            values = values.map(_format_number)
        out[col.header] = values
    return pd.DataFrame(out)


def _format_number(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    f = float(v)
    return str(int(f)) if f.is_integer() else repr(round(f, 4))


def write_qualtrics_csv(export: pd.DataFrame, path: Path, cb: Codebook | None = None) -> None:
    """Write a Qualtrics-style CSV: three header rows, UTF-8 with a byte-order mark."""
    cb = cb or load_codebook()
    columns = {c.header: c for c in cb.columns("teacher_survey")}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(export.columns)
    w.writerow([columns[h].question or h if h in columns else h for h in export.columns])
    w.writerow([json.dumps({"ImportId": _import_id(columns[h]) if h in columns else h},
                           separators=(",", ":")) for h in export.columns])
    w.writerows(export.itertuples(index=False, name=None))
    path.write_bytes(("\ufeff" + buf.getvalue()).encode("utf-8"))


def _import_id(col) -> str:
    """Qualtrics ImportId of a column: the codebook's, or QID<n>[_<k>] for question T<n>[_<k>]."""
    if col.import_id:
        return col.import_id
    q, _, sub = col.header[1:].partition("_")
    if col.header.startswith("T") and q.isdigit():
        return f"QID{q}" + (f"_{sub}" if sub else "")
    return col.header


def to_district_export(study: SimulatedStudy, cb: Codebook | None = None) -> pd.DataFrame:
    """The district responses as the web form exports them (question-text headers, labels)."""
    cb = cb or load_codebook()
    d = study.district_survey
    model_labels = {code: label for label, code in cb.support_model_labels().items()}
    model_labels[cb.other_model_code] = cb.other_model_label
    comp_labels = {c["code"]: c["label"] for c in cb.support_components()}
    sep = cb.component_separator + " "
    out = {}
    for col in cb.columns("district_survey"):
        values = d[col.variable]
        if col.type == "support_model":
            values = values.map(model_labels)
        elif col.type == "multi_select":
            values = values.map(lambda codes: sep.join(comp_labels[c] for c in codes))
        elif col.scale:
            labels = _labels(cb, col.scale)
            values = values.map(labels)
        out[col.header] = values
    return pd.DataFrame(out)


def write_form_xlsx(export: pd.DataFrame, path: Path) -> None:
    """Write a one-sheet form-style workbook, byte-identical for identical content."""
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.title = "Form Responses 1"
    ws.append(list(export.columns))
    for row in export.itertuples(index=False, name=None):
        ws.append([_xlsx_value(v) for v in row])
    for cell in ws["A"][1:]:
        cell.number_format = "yyyy-mm-dd hh:mm:ss"
    fixed = pd.Timestamp("2026-01-01").to_pydatetime()
    wb.properties.created = fixed
    wb.properties.modified = fixed
    wb.properties.creator = "analysis.study.simulate"
    buf = io.BytesIO()
    wb.save(buf)
    path.write_bytes(_normalise_zip(buf.getvalue()))


def _xlsx_value(v):
    if isinstance(v, pd.Timestamp):
        return v.to_pydatetime()
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    return v


def _normalise_zip(data: bytes) -> bytes:
    """Rewrite a zip (xlsx) with fixed entry timestamps and core dates, for byte identity."""
    import re

    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            body = src.read(info.filename)
            if info.filename == "docProps/core.xml":
                body = re.sub(rb"(<dcterms:(created|modified)[^>]*>)[^<]*(<)",
                              rb"\g<1>2026-01-01T00:00:00Z\g<3>", body)
            zi = zipfile.ZipInfo(info.filename, date_time=(2026, 1, 1, 0, 0, 0))
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.external_attr = 0o600 << 16
            dst.writestr(zi, body)
    return out.getvalue()


def to_frame_exports(study: SimulatedStudy, cb: Codebook | None = None):
    """Frame tables as written to CSV (locale and size labels as the frame ships them)."""
    cb = cb or load_codebook()
    fd = study.frame_districts.copy()
    fd["locale"] = fd["locale"].map(_labels(cb, "locale"))
    fd["size_stratum"] = fd["size_stratum"].map(_labels(cb, "size_stratum"))
    return fd, study.frame_schools.copy()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_raw(study: SimulatedStudy, out_dir: Path) -> dict[str, str]:
    """Write the four raw exports, ``truth.json`` and ``README.md`` into ``out_dir``.

    Returns
    -------
    dict
        File name -> SHA-256 of each written data file.
    """
    cb = load_codebook()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, fs = to_frame_exports(study, cb)
    fd.to_csv(out_dir / cb.file_name("frame_districts"), index=False, lineterminator="\n")
    fs.to_csv(out_dir / cb.file_name("frame_schools"), index=False, lineterminator="\n")
    write_form_xlsx(to_district_export(study, cb), out_dir / cb.file_name("district_survey"))
    write_qualtrics_csv(to_teacher_export(study, cb), out_dir / cb.file_name("teacher_survey"), cb)
    truth = dict(study.truth, scenario=study.scenario, seed=study.seed, synthetic=True)
    (out_dir / "truth.json").write_text(json.dumps(truth, indent=2, sort_keys=True) + "\n")
    files = [cb.file_name(s) for s in ("frame_districts", "frame_schools", "district_survey",
                                       "teacher_survey")] + ["truth.json"]
    hashes = {f: sha256_file(out_dir / f) for f in files}
    (out_dir / "README.md").write_text(_raw_readme(study, hashes))
    return hashes


def _raw_readme(study: SimulatedStudy, hashes: dict[str, str]) -> str:
    t = study.truth
    lines = [
        "# data/raw: SYNTHETIC study data",
        "",
        "**Every file in this folder is synthetic.** No real district, school or teacher is in it.",
        "It was generated by the project's own simulator (`analysis/study/simulate.py`) with",
        "",
        "```",
        f"python -m analysis simulate --scenario {study.scenario} --seed {study.seed} --out data/raw",
        "```",
        "",
        "(`make data-raw`). The same command gives byte-identical files; a test checks the hashes",
        "below. Names, e-mail addresses and IP addresses in the raw exports are fake (IP",
        "addresses come from the documentation-only ranges of RFC 5737).",
        "",
        "Raw files are immutable: no command of the package modifies them.",
        "",
        "## Files",
        "",
        "| file | what it is | SHA-256 |",
        "|---|---|---|",
    ]
    what = {
        "frame_districts.csv": "sampling frame, one row per district of the population",
        "frame_schools.csv": "every school of a sampled district, with its number of teachers",
        "district_survey.xlsx": "district survey, form-style Excel export (one header row)",
        "teacher_survey.csv": "teacher survey, Qualtrics CSV export (three header rows, BOM, "
                              "choice text)",
        "truth.json": "the simulator's true population values (average marginal effects)",
    }
    for f, h in hashes.items():
        lines.append(f"| `{f}` | {what.get(f, '')} | `{h}` |")
    lines += [
        "",
        "## Size",
        "",
        f"- population districts: {t['n_population_districts']}; sampled: "
        f"{t['n_sampled_districts']}; responding: {t['n_responding_districts']}",
        f"- teacher survey rows (including duplicates and unusable responses): "
        f"{len(study.teacher_survey)}",
        f"- population teachers (for the truth): {t['n_population_teachers']}",
        "",
        "## Planted truth",
        "",
        "True population average marginal effects on the probability of non-substitutive use,",
        "each support model against `tech_support_only`, in percentage points:",
        "",
        "| support model | true AME (pp) |",
        "|---|---|",
    ]
    for code, v in t["ame_pp"].items():
        lines.append(f"| `{code}` | {v:.2f} |")
    lines += [
        "",
        "## Every parameter of the data-generating process",
        "",
        f"Scenario `{study.scenario}` of `analysis/study/scenarios.yaml`, seed {study.seed}:",
        "",
        "```yaml",
        yaml.safe_dump(study.params, sort_keys=True, default_flow_style=None, width=100).rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)

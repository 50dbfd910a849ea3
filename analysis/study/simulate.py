"""Synthetic study generator with planted effects: the project's ground truth.

The simulator draws a whole study in the order a real one happens, every
number coming from a scenario of ``scenarios.yaml``:

1. **Population.** Districts across several states (unequal state shares):
   locale; log-normal, heavy-tailed enrollment by locale; size stratum;
   number of schools; poverty (``frl_pct``, logit-normal around a locale mean
   with a state offset); technology spending (log-normal, lower with poverty,
   with a state offset) and students per device. Schools with a grade span
   and a number of teachers. Teachers with experience, grade band (mostly
   their school's) and subject (by grade band).
2. **Support models.** A multinomial logit of district size and poverty:
   larger and richer districts adopt coaching and directors more often, so a
   naive comparison is confounded, and adjusting for enrollment and poverty
   removes the confounding. Staffing (coach and director FTE), D2 components
   and support spending follow from the model. Leadership vision, IT control
   and role fidelity are latent district traits drawn independently of the
   adoption.
3. **Sample.** A stratified sample of districts (locale x size), district
   nonresponse from a logistic model of observed size and poverty, every
   school of a sampled district, every teacher invited; school response rates
   are Beta-distributed around a logistic mean of poverty and school size.
4. **Outcome.** A multilevel proportional-odds model: the latent use
   ``y* = eta + e`` (``e`` logistic) with ``eta`` = district and school random
   intercepts + district and teacher covariates + the support-model term, and
   SAMR level = 1 + the number of cutpoints below ``y*``. The support-model
   term is the planted effect scaled by leadership vision (H6) and shifted by
   the moderators: campuses per director (H4), IT control (H5), role fidelity
   and position cuts (H7). T7 is the level; T5 and the T6 item frequencies
   follow from a latent intensity of use and the level.
5. **Truth.** For every teacher of the population, the probability of
   non-substitutive use under each support model (random effects, covariates
   and moderators kept), averaged over the population: the true average
   marginal effects of ``truth.json``.
6. **Mess.** Refusals, partial responses, speeders, straight-liners, failed
   attention checks, duplicate submissions (by e-mail and by IP), survey
   previews, item nonresponse (growing with survey length and related to
   covariates), out-of-range numbers and text in number fields, label
   variants, IDs that lost their leading zeros, D1 answers contradicted by
   D2, duplicate and unsolicited district submissions, and fake personal data
   where the platforms put it.

The population (1, 2 and the random effects of 4, hence the truth) and the
survey (3, the answers of 4, and 6) come from separate random streams, so one
population can be surveyed again (``sample_seed``). Everything is vectorised
NumPy and Arrow (no loop over teachers); the same scenario and seeds give
byte-identical files.

Examples
--------
>>> from analysis.study.simulate import simulate_study
>>> study = simulate_study("default", seed=1, n_districts=300, teacher_respondents=2000)
>>> sorted(study.truth["ame_pp"])[:2]
['coaching', 'consultant']
>>> study.truth["ame_pp"]["coaching"] > study.truth["ame_pp"]["vanguard"] > 0
True
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import yaml
from tqdm.auto import tqdm

from analysis.study.codebook import Codebook, load_codebook

SCENARIO_FILE = "scenarios.yaml"
CHOICE_FORMATS = ("text", "numeric")
#: State FIPS codes, which begin every NCES district ID (some with a zero).
STATE_FIPS = {"AL": "01", "AK": "02", "AZ": "04", "AR": "05", "CA": "06", "CO": "08",
              "CT": "09", "FL": "12", "GA": "13", "IL": "17", "IN": "18", "KY": "21",
              "MI": "26", "MN": "27", "MO": "29", "NC": "37", "NY": "36", "OH": "39",
              "OR": "41", "PA": "42", "TN": "47", "TX": "48", "VA": "51", "WA": "53",
              "WI": "55"}
SURVEY_START = pd.Timestamp("2026-03-02 07:00:00")
#: Fake personal data (names, streets, towns); e-mail domains are the reserved
#: example.org, IP addresses the documentation ranges of RFC 5737, phone numbers
#: the fictional 555-01xx range.
FIRST_NAMES = ["Alex", "Sam", "Jordan", "Taylor", "Morgan", "Casey", "Riley", "Jamie", "Avery",
               "Quinn", "Parker", "Drew", "Rowan", "Emery", "Skyler", "Reese", "Harper", "Logan",
               "Dana", "Robin", "Kendall", "Blair", "Shawn", "Lane", "Sasha", "Jules", "Noel",
               "Ari", "Remy", "Marlo", "Toby", "Kit", "Frankie", "Jessie", "Lee", "Micah"]
LAST_NAMES = ["Fakename", "Testperson", "Placeholder", "Synthetic", "Madeup", "Notreal",
              "Sampleton", "Examplar", "Dummyson", "Fictive", "Inventa", "Pretendo",
              "Mockwell", "Fabrico", "Stubbs-Nil", "Imagino", "Nullberg", "Ficticia",
              "Proxyman", "Simulato", "Surrogat", "Hypothet"]
STREETS = ["Placeholder Lane", "Example Avenue", "Fictional Road", "Sample Street",
           "Imaginary Way", "Pretend Court"]
TOWNS = ["Exampleton", "Notreal Falls", "Madeup Springs", "Fakeville"]
PLACE_WORDS = ["Maple", "Cedar", "Willow", "Granite", "Silver", "Prairie", "Pine", "Harbor",
               "Juniper", "Aspen", "Copper", "Falcon", "Meadow", "Summit", "Clear", "Elm",
               "Oak", "Sandy", "Stone", "Bright", "Red Rock", "Blue Heron", "Fox", "Iron"]
PLACE_SUFFIXES = ["Valley", "Creek", "Ridge", "Springs", "Hollow", "Lake", "Grove", "Point",
                  "Crossing", "Bluff", "Plains", "Hills", "Bend", "Park"]
DISTRICT_KINDS = ["School District", "Unified School District", "Public Schools",
                  "Independent School District", "Community Schools", "County Schools",
                  "Area School District"]
COMMENTS = [
    "Please ask {first} in our library about the new laptops.",
    "Send the results to {first} {last}, {num} {street}, {town}.",
    "Call me at 555-01{nn} if you have questions. {first}",
    "Our building at {num} {street} still has no wifi in the portables.",
    "Our coach, {first} {last}, has been great this year.",
    "Too many surveys this spring.",
]
OTHER_MODEL_TEXTS = ["We share staff with a regional service center",
                     "Our librarian helps when she can, {first} {last}",
                     "Mix of consultant and teacher leaders"]
#: Text that respondents type into number fields.
TEACHER_NUMBER_TEXT = ["10+", "n/a", "twelve", "about 5", "?", "idk", "5-10"]
DISTRICT_NUMBER_TEXT = ["unknown", "n/a", "1:1", "about 300", "TBD", "see attached"]
#: Respondents who type their age into "years teaching".
OUT_OF_RANGE_YEARS = (61, 99)


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
    """Names of the scenarios in ``scenarios.yaml``.

    Examples
    --------
    >>> scenario_names()[:2]
    ['default', 'null']
    """
    return list(_scenario_file())


def _scenario_file() -> dict[str, Any]:
    text = resources.files("analysis.study").joinpath(SCENARIO_FILE).read_text(encoding="utf-8")
    return yaml.safe_load(text)


def load_scenario(name: str = "default", overrides: dict | None = None) -> dict[str, Any]:
    """Parameters of a scenario, with inheritance resolved and overrides applied.

    Parameters
    ----------
    name : str
        A scenario of ``scenarios.yaml``.
    overrides : dict, optional
        Nested values that replace the scenario's (e.g.
        ``{"sample": {"teacher_respondents_target": 60000}}``).

    Examples
    --------
    >>> load_scenario("null")["outcome"]["model_effects"]["coaching"]
    0.0
    >>> load_scenario("default", {"population": {"n_districts": 10}})["population"]["n_districts"]
    10
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
# Small vectorised helpers
# ---------------------------------------------------------------------------
def _logistic(x):
    return 1.0 / (1.0 + np.exp(-x))


def _shares(mapping: dict, keys) -> np.ndarray:
    """Probabilities of ``keys`` from a mapping, normalised to sum to one."""
    p = np.array([float(mapping.get(k, 0.0)) for k in keys])
    return p / p.sum()


def _draw_by_group(rng, group: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """One categorical draw per row, with the probabilities of its group (row of ``probs``)."""
    cum = np.cumsum(probs, axis=1)
    cum[:, -1] = 1.0
    u = rng.uniform(size=group.size)
    out = np.empty(group.size, dtype=np.int8)
    for g in range(probs.shape[0]):
        rows = group == g
        out[rows] = np.searchsorted(cum[g], u[rows], side="right")
    return out


def _likert(rng, latent, n_items, *, loading=0.9, noise=0.8, reverse=()):
    """1-5 agreement items from a latent z-score (one column per item)."""
    raw = 3.0 + loading * latent[:, None] + rng.normal(0, noise, (latent.size, n_items))
    items = np.clip(np.rint(raw), 1, 5).astype(np.int8)
    for k in reverse:
        items[:, k] = 6 - items[:, k]
    return items


def _calibrate_intercept(x: np.ndarray, size: np.ndarray, target: float) -> float:
    """Intercept ``a`` with sum(size * logistic(a + x)) = target (bisection)."""
    lo, hi = -20.0, 20.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if float(np.sum(size * _logistic(mid + x))) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _text(value: str) -> pa.Scalar:
    return pa.scalar(value, pa.large_string())


def _from_bytes(chars: np.ndarray) -> pa.Array:
    """Rows of a fixed-width byte matrix (n, w) as an Arrow string array."""
    n, w = chars.shape
    offsets = np.arange(n + 1, dtype=np.int64) * w
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets),
                                            pa.py_buffer(np.ascontiguousarray(chars)))


def _digits_text(values: np.ndarray, width: int | None = None) -> pa.Array:
    """Non-negative integers as text, zero-padded to ``width`` when given."""
    values = np.asarray(values, dtype=np.int64)
    if width is None:
        return pc.cast(pa.array(values), pa.large_string())
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return _from_bytes((values[:, None] // powers % 10 + ord("0")).astype(np.uint8))


def _join(*parts) -> pa.Array:
    """Element-wise concatenation of Arrow string arrays and constant strings."""
    parts = [_text(x) if isinstance(x, str) else x for x in parts]
    return pc.binary_join_element_wise(*parts, _text(""))


def _random_strings(rng, n: int, length: int) -> np.ndarray:
    """``n`` random alphanumeric strings as a (n, length) byte matrix."""
    alphabet = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                             dtype=np.uint8)
    return alphabet[rng.integers(0, alphabet.size, size=(n, length))]


def _pandas_text(arr, index=None) -> pd.Series:
    """An Arrow (or NumPy) string array as a pandas string column (no copy of the text)."""
    if not isinstance(arr, pa.Array | pa.ChunkedArray):
        arr = pa.array(arr)
    return pd.Series(pd.array(arr.cast(pa.large_string()), dtype="str"), index=index)


def _decode(codes: np.ndarray, labels) -> pa.Array:
    """``labels[codes]`` as an Arrow string array, ``""`` where a code is negative.

    ``labels`` is a list of strings or an Arrow string array.
    """
    labels = pa.concat_arrays([pa.array(labels, pa.large_string()) if isinstance(labels, list)
                               else labels.cast(pa.large_string()),
                               pa.array([""], pa.large_string())])
    codes = np.where(np.asarray(codes) < 0, len(labels) - 1, codes).astype(np.int32)
    return pa.DictionaryArray.from_arrays(pa.array(codes), labels).cast(pa.large_string())


# ---------------------------------------------------------------------------
# 1. Population
# ---------------------------------------------------------------------------
def _population_districts(p: dict, rng: np.random.Generator, cb: Codebook) -> pd.DataFrame:
    """Every district of the population, sorted by NCES ID (positions are used as indexes)."""
    pop = p["population"]
    n = int(pop["n_districts"])
    states = list(pop["states"])
    share = rng.dirichlet(np.full(len(states), float(pop["state_concentration"])))
    state = rng.choice(len(states), size=n, p=share)
    state_frl = rng.normal(0, pop["state_frl_sd"], len(states))
    state_spend = rng.normal(0, pop["state_spend_sd"], len(states))
    locales = cb.scale_values("locale")
    loc = rng.choice(len(locales), size=n, p=_shares(pop["locale_probs"], locales))
    median = np.array([pop["enrollment_median"][c] for c in locales], dtype=float)[loc]
    enrollment = np.maximum(pop["enrollment_min"], np.rint(
        median * np.exp(rng.normal(0, pop["enrollment_sigma"], n)))).astype(np.int64)
    mean = np.array([pop["frl_mean"][c] for c in locales], dtype=float)[loc] / 100
    frl = 100 * _logistic(np.log(mean / (1 - mean)) + state_frl[state]
                          + rng.normal(0, pop["frl_sd"], n))
    n_schools = np.maximum(1, np.rint(enrollment / pop["students_per_school"] * np.exp(
        rng.normal(0, pop["schools_sd"], n)))).astype(np.int64)
    # NCES-style IDs: state FIPS + 5 digits, unique within the state.
    serial = np.empty(n, dtype=np.int64)
    for k in range(len(states)):
        rows = np.flatnonzero(state == k)
        serial[rows] = rng.choice(100_000, size=rows.size, replace=False)
    fips = np.array([STATE_FIPS[s] for s in states])[state]
    district_id = np.strings.add(fips, np.strings.zfill(serial.astype(str), 5))
    lo, hi = pop["size_cutoffs"]
    sizes = cb.scale_values("size_stratum")
    size = np.where(enrollment < lo, 0, np.where(enrollment < hi, 1, 2))
    d = pd.DataFrame({
        "district_id": district_id, "state": np.array(states)[state],
        "locale": np.array(locales)[loc], "size_stratum": np.array(sizes)[size],
        "enrollment": enrollment, "n_schools": n_schools,
        "frl_pct": np.clip(np.round(frl, 1), 0.5, 99.5), "state_spend": state_spend[state],
    })
    d["stratum"] = d["locale"] + "_" + d["size_stratum"]
    return d.sort_values("district_id", ignore_index=True)


def _adopt_support_models(p, rng, d: pd.DataFrame, codes: list[str]) -> np.ndarray:
    """Multinomial logit of size and poverty: the index of each district's support model."""
    ad = p["adoption"]
    log_enr = np.log(d["enrollment"].to_numpy()) - np.log(2000)
    frl = d["frl_pct"].to_numpy() - 50
    util = np.column_stack([ad["intercept"][c] + ad["log_enrollment"][c] * log_enr
                            + ad["frl"][c] * frl for c in codes])
    util += rng.gumbel(size=util.shape)
    return util.argmax(axis=1)


def _district_characteristics(p, rng, d: pd.DataFrame, cb: Codebook) -> pd.DataFrame:
    """Spending, devices, support model, staffing and latent traits of every district."""
    dp = p["district"]
    n = len(d)
    d = d.copy()
    codes = cb.support_model_codes()
    frl = d["frl_pct"].to_numpy()
    d["tech_spend_pp"] = np.round(np.exp(
        np.log(dp["tech_spend_median"]) + d["state_spend"].to_numpy()
        + dp["tech_spend_frl"] * (frl - 50) + rng.normal(0, dp["tech_spend_sd"], n)))
    spd = dp["students_per_device"]
    d["students_per_device"] = np.round(np.clip(
        rng.gamma(spd["shape"], spd["scale"], n) + spd["offset"] + spd["frl"] * (frl - 50),
        spd["min"], spd["max"]), 1)
    model_idx = _adopt_support_models(p, rng, d, codes)
    model = np.array(codes)[model_idx]
    d["support_model"] = model
    d["model_index"] = model_idx
    campuses = d["n_schools"].to_numpy()
    d["n_campuses"] = campuses
    # potential FTEs: what the district has, or would have, under each model
    steps = sorted(dp["director_fte_steps"])
    director_if = np.ones(n)
    for campuses_at_least, fte in steps:
        director_if = np.where(campuses >= campuses_at_least, float(fte), director_if)
    half = rng.uniform(size=n) < dp["director_half_time"]
    director_if = np.where(half, director_if / 2, director_if)
    lo, hi = dp["coach_fte_per_campus"]
    coach_if = np.maximum(0.5, np.round(campuses * rng.uniform(lo, hi, n) * 2) / 2)
    d["director_fte_if_director"] = director_if
    also = rng.uniform(size=n) < np.array([dp["director_share"].get(m, 0.0) for m in model])
    d["director_fte"] = np.where(np.isin(model, dp["director_models"]), director_if,
                                 np.where(also, 1.0, 0.0))
    d["coach_fte"] = np.where(np.isin(model, dp["coach_models"]), coach_if, 0.0)
    my = dp["model_years"]
    d["model_years"] = np.round(rng.gamma(my["shape"], my["scale"], n), 1)
    cut = dp["position_cut_probs"]
    d["position_cut"] = rng.choice(list(cut), size=n, p=_shares(cut, list(cut)))
    yes, no = cb.scale("yes_no")["Yes"], cb.scale("yes_no")["No"]
    d["title_has_tech"] = np.where(rng.uniform(size=n) < dp["title_has_tech"], yes, no)
    for trait in ("it_control_z", "vision_z", "role_fidelity_z"):
        d[trait] = rng.normal(0, 1, n)
    mean = np.array([dp["support_spend_pp"][m] for m in model], dtype=float)
    d["support_spend_pp"] = np.round(mean * np.exp(rng.normal(0, dp["support_spend_sd"], n)))
    return d


def _population_schools(p, rng, d: pd.DataFrame, cb: Codebook) -> pd.DataFrame:
    """Every school of every population district, with grade span and teachers."""
    pop = p["population"]
    reps = d["n_schools"].to_numpy()
    district = np.repeat(np.arange(len(d)), reps)
    start = np.cumsum(reps) - reps
    number = np.arange(reps.sum()) - np.repeat(start, reps) + 1
    school_id = np.strings.add(np.repeat(d["district_id"].to_numpy().astype(str), reps),
                               np.strings.zfill(number.astype(str), 5))
    bands = cb.scale_values("grade_band")
    level = rng.choice(len(bands), size=district.size,
                       p=_shares(pop["school_level_probs"], bands)).astype(np.int8)
    level[reps[district] == 1] = bands.index(pop["one_school_district_level"])
    students = np.repeat(d["enrollment"].to_numpy() / reps, reps) * np.exp(
        rng.normal(0, pop["school_size_sd"], district.size))
    n_teachers = np.maximum(pop["min_teachers_per_school"],
                            np.rint(students / pop["students_per_teacher"])).astype(np.int64)
    return pd.DataFrame({"school_id": school_id, "district": district,
                         "district_id": d["district_id"].to_numpy()[district],
                         "level": level, "n_teachers": n_teachers})


def _population_teachers(p, rng, schools: pd.DataFrame, cb: Codebook) -> dict[str, np.ndarray]:
    """Every teacher of the population as arrays (school order; no strings)."""
    tp = p["teacher"]
    school = np.repeat(np.arange(len(schools)), schools["n_teachers"].to_numpy())
    n = school.size
    yt = tp["years_teaching"]
    years = np.minimum(yt["max"], np.rint(rng.gamma(yt["shape"], yt["scale"], n))).astype(
        np.int16)
    bands = cb.scale_values("grade_band")
    own = schools["level"].to_numpy()[school]
    other = rng.choice(len(bands), size=n, p=_shares(p["population"]["school_level_probs"],
                                                      bands)).astype(np.int8)
    band = np.where(rng.uniform(size=n) < tp["grade_band_matches_school"], own, other)
    subjects = cb.scale_values("subject")
    probs = np.array([_shares(tp["subject_probs"][b], subjects) for b in bands])
    subject = _draw_by_group(rng, band, probs)
    return {"school": school, "district": schools["district"].to_numpy()[school],
            "years_teaching": years, "grade_band": band.astype(np.int8), "subject": subject}


# ---------------------------------------------------------------------------
# 2. Sample and nonresponse
# ---------------------------------------------------------------------------
def _draw_district_sample(p, rng, d: pd.DataFrame) -> pd.DataFrame:
    """Stratified sample, district nonresponse and follow-up of thin strata."""
    s = p["sample"]
    d = d.copy()
    n = len(d)
    sampled = np.zeros(n, dtype=np.int64)
    prob = np.zeros(n)
    for _stratum, idx in d.groupby("stratum", sort=True).indices.items():
        size = d["size_stratum"].iat[idx[0]]
        n_h = min(len(idx), max(s["min_per_stratum"], round(s["fraction"][size] * len(idx))))
        sampled[rng.choice(idx, size=n_h, replace=False)] = 1
        prob[idx] = n_h / len(idx)
    d["sampled"] = sampled
    d["selection_prob"] = prob
    r = s["district_response"]
    propensity = _logistic(r["intercept"] + r["log_enrollment"] * (
        np.log(d["enrollment"].to_numpy()) - np.log(2000)) + r["frl"] * (
        d["frl_pct"].to_numpy() - 50))
    u = rng.uniform(size=n)
    responded = (u < propensity) & (sampled == 1)
    # nonresponse follow-up: the most willing nonrespondents of a thin stratum answer
    for _stratum, idx in d.groupby("stratum", sort=True).indices.items():
        idx = idx[sampled[idx] == 1]
        short = min(s["min_responding_per_stratum"], idx.size) - int(responded[idx].sum())
        if short > 0:
            waiting = idx[~responded[idx]]
            order = np.argsort(u[waiting] - propensity[waiting], kind="stable")
            responded[waiting[order[:short]]] = True
    d["responded"] = responded.astype(np.int64)
    nonresp = (sampled == 1) & ~responded
    d["teachers_surveyed"] = (responded | (nonresp & (
        rng.uniform(size=n) < s["nonresponding_districts_surveyed"]))).astype(np.int64)
    return d


def _teacher_respondents(p, rng, d: pd.DataFrame, schools: pd.DataFrame,
                         teachers: dict) -> np.ndarray:
    """Indexes of the population teachers who answer (school response rates vary)."""
    s = p["sample"]
    tr = s["teacher_response"]
    district = schools["district"].to_numpy()
    n_t = schools["n_teachers"].to_numpy()
    responding = d["responded"].to_numpy()[district] == 1
    surveyed = d["teachers_surveyed"].to_numpy()[district] == 1
    x = (tr["frl_per_10"] * (d["frl_pct"].to_numpy()[district] - 50) / 10
         + tr["log_school_size"] * np.log(n_t / 30))
    target = min(float(s["teacher_respondents_target"]), 0.98 * n_t[responding].sum())
    a = _calibrate_intercept(x[responding], n_t[responding], target)
    mean = np.clip(_logistic(a + x), 1e-4, 1 - 1e-4)
    conc = tr["concentration"]
    rate = rng.beta(mean * conc, (1 - mean) * conc)
    rate = np.where(responding, rate,
                    np.where(surveyed, rate * s["nonresponding_teacher_rate"], 0.0))
    n_resp = rng.binomial(n_t, rate)
    # teachers of a school are exchangeable: the first n_resp of each school answer
    start = np.cumsum(n_t) - n_t
    school = teachers["school"]
    rank = np.arange(school.size) - start[school]
    return np.flatnonzero(rank < n_resp[school])


# ---------------------------------------------------------------------------
# 3. Outcome model and truth
# ---------------------------------------------------------------------------
def _district_eta(p, d: pd.DataFrame, district_re: np.ndarray) -> np.ndarray:
    """District part of the linear predictor (covariates and random intercept)."""
    cov = p["outcome"]["covariates"]
    return (cov["frl"] * (d["frl_pct"].to_numpy() - 50)
            + cov["log_enrollment"] * (np.log(d["enrollment"].to_numpy()) - np.log(2000))
            + cov["tech_spend_per_100"] * (d["tech_spend_pp"].to_numpy() - 300) / 100
            + cov["students_per_device"] * (d["students_per_device"].to_numpy() - 1.5)
            + cov["vision"] * d["vision_z"].to_numpy()
            + d["locale"].map(cov["locale"]).to_numpy(dtype=float)
            + district_re)


def _teacher_eta(p, teachers: dict, district_eta, school_re, cb: Codebook) -> np.ndarray:
    """Linear predictor of every population teacher, without the support-model term."""
    cov = p["outcome"]["covariates"]
    band = np.array([cov["grade_band"][b] for b in cb.scale_values("grade_band")])
    subject = np.array([cov["subject"][s] for s in cb.scale_values("subject")])
    return (district_eta[teachers["district"]] + school_re[teachers["school"]]
            + cov["years_teaching"] * (teachers["years_teaching"] - 12.0)
            + band[teachers["grade_band"]] + subject[teachers["subject"]])


def _model_terms(p, d: pd.DataFrame, codes: list[str], cb: Codebook) -> np.ndarray:
    """District x model matrix of the support-model part of the linear predictor.

    Column j is what the district's teachers would get if the district ran
    model ``codes[j]``: the planted effect scaled by leadership vision (H6),
    plus the moderators that apply to that model (H4, H5, H7).
    """
    out = p["outcome"]
    mod = out["moderators"]
    vision = mod["vision"]
    mult = (np.maximum(0.0, 1.0 + vision["multiplier"] * d["vision_z"].to_numpy())
            if vision["on"] else np.ones(len(d)))
    yes = cb.scale("yes_no_not_sure")["Yes"]
    cpd = d["n_campuses"].to_numpy() / d["director_fte_if_director"].to_numpy()
    values = {
        "campuses_per_director": np.log2(cpd / mod["campuses_per_director"]["centre"]),
        "it_control": d["it_control_z"].to_numpy(),
        "role_fidelity": d["role_fidelity_z"].to_numpy(),
        "position_cut": (d["position_cut"].to_numpy() == yes).astype(float),
    }
    terms = np.empty((len(d), len(codes)))
    for j, code in enumerate(codes):
        t = out["model_effects"][code] * mult
        for name, value in values.items():
            if mod[name]["on"] and code in mod[name]["models"]:
                t = t + mod[name]["effect"] * value
        terms[:, j] = t
    return terms


def _population_truth(p, eta, district, terms, model_index, codes, cb: Codebook,
                      chunk: int = 1 << 20) -> dict[str, Any]:
    """True population AMEs (percentage points) of each model against the reference.

    Every population teacher's probability of each outcome under each model is
    averaged, in chunks of teachers to bound memory.
    """
    cuts = p["outcome"]["cutpoints"]
    k = len(codes)
    sums = np.zeros((2, k))
    obs_sum, obs_n = np.zeros(k), np.zeros(k)
    for lo in range(0, eta.size, chunk):
        e, dist = eta[lo:lo + chunk], district[lo:lo + chunk]
        for j in range(k):
            lin = e + terms[dist, j]
            sums[0, j] += _logistic(lin - cuts[0]).sum()
            sums[1, j] += _logistic(lin - cuts[1]).sum()
        own = model_index[dist]
        prob = _logistic(e + terms[dist, own] - cuts[0])
        obs_sum += np.bincount(own, weights=prob, minlength=k)
        obs_n += np.bincount(own, minlength=k)
    rates = sums / eta.size
    observed = obs_sum / np.maximum(obs_n, 1)
    ref = codes.index(cb.reference_model)

    def pp(values):
        return {c: round(float(100 * (values[j] - values[ref])), 6)
                for j, c in enumerate(codes) if j != ref}

    return {
        "estimand": "population average marginal effect on P(non_substitutive): the mean over "
                    "every teacher of the population of P(use >= A | model m) - "
                    "P(use >= A | reference model), in percentage points",
        "reference_model": cb.reference_model,
        "n_population_teachers": int(eta.size),
        "rate_pct": {c: round(float(100 * rates[0, j]), 6) for j, c in enumerate(codes)},
        "ame_pp": pp(rates[0]),
        "ame_pp_transformative": pp(rates[1]),
        "naive_difference_pp": pp(observed),
        "log_odds_effects": {c: float(p["outcome"]["model_effects"][c]) for c in codes},
        "planted_moderators": _planted_moderators(p),
        "support_spend_pp": {c: float(p["district"]["support_spend_pp"][c]) for c in codes},
    }


def _planted_moderators(p) -> dict[str, dict[str, Any]]:
    """Each planted moderator's effect (log-odds; 0 when switched off) and the models it acts on.

    The vision moderator (H6) multiplies every model's effect, so its models are all of them
    and its ``effect`` is the multiplier.
    """
    out = {}
    for name, spec in p["outcome"]["moderators"].items():
        size = spec.get("effect", spec.get("multiplier", 0.0))
        models = spec.get("models", sorted(p["outcome"]["model_effects"]))
        out[name] = {"effect": float(size) if spec["on"] else 0.0,
                     "kind": "multiplier" if "multiplier" in spec else "additive",
                     "models": list(models)}
    return out


# ---------------------------------------------------------------------------
# 4. Teacher answers
# ---------------------------------------------------------------------------
#: Text columns of the teacher table kept as codes until the end (-1 is blank).
STATUS = ["IP Address", "Survey Preview"]
CHANNELS = ["email", "anonymous", "preview"]
LANGUAGES = ["EN", "ES"]
IP_PREFIXES = ["192.0.2.", "198.51.100.", "203.0.113."]
IP_HOSTS = 254


def _categories(cb: Codebook) -> dict[str, list]:
    """Teacher columns held as category codes, with their categories."""
    return {"grade_band": cb.scale_values("grade_band"), "subject": cb.scale_values("subject"),
            "samr_self": cb.samr_levels}


def _teacher_answers(p, rng, cb: Codebook, d, teachers, resp, eta, terms
                     ) -> dict[str, np.ndarray]:
    """Answers of the responding teachers as arrays of numbers (NaN for blank) and
    category codes (-1 for blank), one entry per column."""
    tp = p["teacher"]
    n = resp.size
    # response times first: teachers enter the table in the order they answered, so the
    # export's sort by date (after the mess) moves few rows
    start, duration = _response_times(p, rng, n)
    order = np.argsort(start + duration, kind="stable")
    resp = resp[order]
    district = teachers["district"][resp]
    model = d["model_index"].to_numpy()[district]
    cuts = np.asarray(p["outcome"]["cutpoints"])
    latent = eta[resp] + terms[district, model] + rng.logistic(size=n)
    level = 1 + (latent[:, None] > cuts[None, :]).sum(axis=1)        # 1..4 = S, A, M, R
    agree = np.asarray(cb.scale_values("agreement"), dtype=float)
    cols = {"school": teachers["school"][resp].astype(np.int64),
            "start": start[order], "duration_seconds": duration[order],
            "consent": np.full(n, float(cb.scale("yes_no")["Yes"])),
            "years_teaching": teachers["years_teaching"][resp].astype(float),
            "grade_band": teachers["grade_band"][resp].astype(np.int8),
            "subject": teachers["subject"][resp].astype(np.int8)}
    # use: a latent intensity, higher at higher SAMR levels; T5 and T6 follow from it
    uf, si = tp["use_freq"], tp["samr_items"]
    intensity = rng.normal(0, 1, n) + tp["use_intensity_per_level"] * (level - 1)
    freq_values = np.array(cb.scale_values("use_freq"), dtype=float)
    use = np.clip(np.rint(uf["intercept"] + uf["slope"] * intensity), 0,
                  freq_values.size - 1).astype(int)
    cols["use_freq"] = freq_values[use]
    item_values = np.array(cb.scale_values("frequency"), dtype=float)
    for item, tag in cb.samr_items().items():
        lj = cb.samr_numeric[tag]
        mean = (si["intercept"] + si["per_use_freq"] * use + si["at_or_below_level"] * (lj <= level)
                + si["per_level_above"] * np.maximum(0, lj - level))
        k = np.clip(np.rint(mean + rng.normal(0, si["noise"], n)), 0, item_values.size - 1)
        cols[item] = np.where(use == 0, item_values[0], item_values[k.astype(int)])
    cols["samr_self"] = (level - 1).astype(np.int8)
    codes = cb.support_model_codes()
    per_model = {name: np.array([tp[name][c] for c in codes], dtype=float)[model]
                 for name in ("coaching_hours_zero", "coaching_hours_shape", "minutes_lost_scale",
                              "support_quality")}
    hours = np.round(rng.gamma(per_model["coaching_hours_shape"], tp["coaching_hours_scale"]), 1)
    cols["coaching_hours"] = np.where(rng.uniform(size=n) < per_model["coaching_hours_zero"],
                                      0.0, hours)
    cols["pd_hours"] = np.round(rng.gamma(tp["pd_hours"]["shape"], tp["pd_hours"]["scale"], n), 1)
    quality = per_model["support_quality"] + rng.normal(0, tp["support_quality_sd"], n)
    sq_items = _items(cb, "support_quality")
    sq = np.column_stack([_likert(rng, quality, len(sq_items) - 1),
                          _likert(rng, quality * tp["repair_item_loading"], 1)])
    for k, col in enumerate(sq_items):
        cols[col] = agree[sq[:, k] - 1]
    cols["attention_check"] = np.full(n, float(
        cb.scale("agreement")[cb.quality_rules["attention_check_pass"]]))
    ef = tp["self_efficacy"]
    efficacy = ef["per_level"] * (level - 2) + rng.normal(0, ef["sd"], n)
    se_items = _items(cb, "self_efficacy")
    se = _likert(rng, efficacy, len(se_items))
    for k, col in enumerate(se_items):
        cols[col] = agree[se[:, k] - 1]
    cols["minutes_lost"] = np.round(rng.gamma(tp["minutes_lost_shape"],
                                              per_model["minutes_lost_scale"]))
    return cols


def _items(cb: Codebook, construct: str) -> list[str]:
    return [c.variable for c in cb.construct_items(construct)]


def _question_columns(cb: Codebook) -> list[str]:
    """Teacher question variables in survey order (no metadata, no embedded data)."""
    return [c.variable for c in cb.columns("teacher_survey")
            if c.import_id is None and c.type != "id"]


def _response_times(p, rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Start (seconds after the survey opened) and duration of each response: waves after
    the invitation and each reminder, answered in the afternoon and evening mostly."""
    tp = p["teacher"]
    waves = np.asarray(tp["invitation_days"], dtype=float)
    wave = rng.choice(waves.size, size=n, p=_shares(dict(enumerate(tp["wave_shares"])),
                                                    range(waves.size)))
    day = np.minimum(tp["survey_days"] - 1,
                     waves[wave] + np.floor(rng.exponential(tp["days_to_respond"], n)))
    rh = tp["response_hour"]
    hour = np.clip(rng.normal(rh["mean"], rh["sd"], n), *rh["range"]) - SURVEY_START.hour
    start = np.rint(day * 86400 + hour * 3600 + rng.uniform(0, 60, n))
    dur = tp["duration"]
    duration = np.rint(np.exp(rng.normal(np.log(dur["median_seconds"]), dur["sd_log"], n)))
    return start, duration


def _respondent_metadata(p, rng, cols: dict, d: pd.DataFrame, schools: pd.DataFrame
                         ) -> list[str]:
    """Add Qualtrics metadata to ``cols``: status, IDs and fake personal data.
    Returns the texts that the ``comments`` codes point to."""
    tp = p["teacher"]
    n = cols["school"].size
    cols["status"] = np.zeros(n, dtype=np.int8)
    cols["progress"] = np.full(n, 100.0)
    cols["finished"] = np.ones(n, dtype=bool)
    cols["response_id"] = _random_strings(rng, n, 15)
    anonymous = rng.uniform(size=n) < tp["anonymous_link"]
    cols["recipient_first_name"] = np.where(anonymous, -1, rng.integers(0, len(FIRST_NAMES), n))
    cols["recipient_last_name"] = np.where(anonymous, -1, rng.integers(0, len(LAST_NAMES), n))
    cols["recipient_email"] = np.where(anonymous, -1, rng.permutation(n))
    cols["external_reference"] = np.where(anonymous, -1, rng.permutation(n))
    cols["distribution_channel"] = anonymous.astype(np.int8)
    # documentation-only address ranges (RFC 5737): never a real person's address
    cols["ip_address"] = rng.integers(0, len(IP_PREFIXES) * IP_HOSTS, n)
    # location near the district's (fake) centre
    district = schools["district"].to_numpy()[cols["school"]]
    centre = np.column_stack([rng.uniform(30, 45, len(d)), rng.uniform(-120, -75, len(d))])
    cols["location_latitude"] = np.round(centre[district, 0] + rng.normal(0, 0.05, n), 4)
    cols["location_longitude"] = np.round(centre[district, 1] + rng.normal(0, 0.05, n), 4)
    cols["user_language"] = (rng.uniform(size=n) < tp["spanish"]).astype(np.int8)
    cols["comments"], texts = _comments(rng, n, tp["comments"], cols["recipient_first_name"],
                                        cols["recipient_last_name"])
    return texts


def _comments(rng, n: int, share: float, first: np.ndarray, last: np.ndarray):
    """T13 comments as codes into a list of texts, a few with fake names, addresses and
    phone numbers."""
    rows = np.flatnonzero(rng.uniform(size=n) < share)
    template = rng.integers(0, len(COMMENTS), rows.size)
    num = rng.integers(10, 999, rows.size)
    street = rng.integers(0, len(STREETS), rows.size)
    town = rng.integers(0, len(TOWNS), rows.size)
    nn = rng.integers(0, 100, rows.size)
    first_name = np.array(FIRST_NAMES)[np.maximum(first[rows], 0)]
    last_name = np.array(LAST_NAMES)[np.maximum(last[rows], 0)]
    texts = [COMMENTS[k].format(first=first_name[j], last=last_name[j], num=num[j],
                                street=STREETS[street[j]], town=TOWNS[town[j]],
                                nn=f"{nn[j]:02d}") for j, k in enumerate(template)]
    code = np.full(n, -1, dtype=np.int64)
    code[rows] = np.arange(rows.size)
    return code, texts


def _take(cols: dict, rows) -> dict:
    return {k: v[rows] for k, v in cols.items()}


def _blank(cols: dict, rows: np.ndarray, names, cb: Codebook) -> None:
    """Set answers to blank: NaN for numbers, -1 for codes."""
    for name in names:
        cols[name][rows] = -1 if name in _categories(cb) or name == "comments" else np.nan


# ---------------------------------------------------------------------------
# 5. The mess of real responses (teacher survey)
# ---------------------------------------------------------------------------
def _teacher_mess(p, rng, cb: Codebook, cols: dict) -> dict:
    """Respondent behaviour real exports show; each case is one the cleaner must handle."""
    m = p["mess"]
    n = cols["school"].size
    questions = _question_columns(cb)
    consent, answers = questions[0], questions[1:]
    outcome = list(cb.samr_items()) + ["samr_self"]
    agree_pass = float(cb.scale("agreement")[cb.quality_rules["attention_check_pass"]])
    u = rng.uniform(size=(n, 6))

    no_consent = u[:, 0] < m["not_consented"]
    cols[consent][no_consent] = cb.scale("yes_no")["No"]
    _blank(cols, no_consent, answers, cb)

    # partial responses: break off at a question; some after the outcome items
    partial = (u[:, 1] < m["partial"]) & ~no_consent
    last_outcome = max(questions.index(c) for c in outcome)
    after = rng.uniform(size=n) < m["partial_with_outcomes"]
    stop = np.where(after, rng.integers(last_outcome + 1, len(questions), n),
                    rng.integers(1, last_outcome + 1, n))
    for k, col in enumerate(questions):
        _blank(cols, partial & (stop <= k), [col], cb)
    cols["progress"][partial] = np.floor(100 * stop[partial] / len(questions))
    cols["finished"][partial] = False
    complete = ~no_consent & ~partial

    # item nonresponse: grows along the survey, and related to covariates
    inr = m["item_nonresponse"]
    check = cb.quality_rules["straightline_items"]
    forced = set(m["forced_response"])
    skippable = [c for c in answers if c not in forced]
    for k, col in enumerate(skippable):
        rate = inr["base"] + inr["fatigue"] * k / max(1, len(skippable) - 1)
        _blank(cols, complete & (rng.uniform(size=n) < rate), [col], cb)
    spec = m["years_missing"]
    prob = _logistic(spec["intercept"] + spec["per_10_years"] * np.nan_to_num(
        cols["years_teaching"]) / 10)
    _blank(cols, complete & (rng.uniform(size=n) < prob), ["years_teaching"], cb)
    spec = m["subject_missing"]
    multiple = cols["grade_band"] == len(cb.scale_values("grade_band")) - 1
    prob = _logistic(spec["intercept"] + spec["multiple_levels"] * multiple)
    _blank(cols, complete & (rng.uniform(size=n) < prob), ["subject"], cb)

    # out-of-range numbers: age typed for experience, negative minutes
    bad = complete & (rng.uniform(size=n) < m["out_of_range"])
    cols["years_teaching"][bad] = rng.integers(*OUT_OF_RANGE_YEARS, int(bad.sum()))
    bad = complete & (rng.uniform(size=n) < m["out_of_range"] / 3)
    cols["minutes_lost"][bad] = -rng.integers(1, 30, int(bad.sum()))

    # careless respondents: speeders and attention failers, some answering at random
    speeder = complete & (u[:, 2] < m["speeders"])
    cols["duration_seconds"][speeder] = np.rint(cols["duration_seconds"][speeder] * rng.uniform(
        0.06, 0.25, int(speeder.sum())))
    attention = complete & (u[:, 4] < m["failed_attention"])
    wrong = [v for v in cb.scale_values("agreement") if v != agree_pass]
    cols["attention_check"][attention] = rng.choice(wrong, int(attention.sum()))
    careless = (speeder | attention) & (rng.uniform(size=n) < m["careless_random"])
    _random_answers(rng, cb, cols, careless)
    straight = complete & ~careless & (u[:, 3] < m["straightliners"])
    value = rng.choice(cb.scale_values("agreement"), int(straight.sum()))
    for col in check + ["attention_check"]:
        cols[col][straight] = value

    email = cols["recipient_email"] >= 0
    extra = [
        _duplicates(rng, cb, cols, complete & email & (u[:, 5] < m["duplicates"]),
                    minutes=(10, 5 * 1440)),
        _duplicates(rng, cb, cols, complete & ~email & (
            rng.uniform(size=n) < m["anonymous_duplicates"]), minutes=(1, 9)),
        _previews(rng, cols, int(m["survey_previews"])),
    ]
    return {k: np.concatenate([cols[k]] + [e[k] for e in extra]) for k in cols}


def _random_answers(rng, cb: Codebook, cols: dict, rows: np.ndarray) -> None:
    """Overwrite the answers of careless respondents with uniform random choices."""
    k = int(rows.sum())
    for item in cb.samr_items():
        cols[item][rows] = rng.choice(cb.scale_values("frequency"), k)
    cols["samr_self"][rows] = rng.integers(0, len(cb.samr_levels), k)
    for col in cb.quality_rules["straightline_items"]:
        cols[col][rows] = rng.choice(cb.scale_values("agreement"), k)


def _duplicates(rng, cb: Codebook, cols: dict, rows: np.ndarray, *, minutes) -> dict:
    """Earlier submissions of the same people, ``minutes`` (a range) before the kept one.

    Only people who answered late enough for the earlier submission to fall in
    the fieldwork are copied.
    """
    rows = np.flatnonzero(rows & (cols["start"] > minutes[0] * 60))
    first = _take(cols, rows)
    k = rows.size
    first["response_id"] = _random_strings(rng, k, 15)
    hi = np.minimum(minutes[1] * 60, first["start"])
    first["start"] = first["start"] - np.rint(minutes[0] * 60 + rng.uniform(size=k) * (
        hi - minutes[0] * 60))
    first["samr_self"] = rng.integers(0, len(cb.samr_levels), k).astype(np.int8)
    return first


def _previews(rng, cols: dict, k: int) -> dict:
    """The researcher's test responses (checking the live survey in the first days of
    fieldwork): no district, no IP, no recipient."""
    rows = _take(cols, rng.choice(cols["school"].size, size=k, replace=False))
    rows["status"][:] = STATUS.index("Survey Preview")
    rows["distribution_channel"][:] = CHANNELS.index("preview")
    for col in ("school", "ip_address", "recipient_email", "recipient_first_name",
                "recipient_last_name", "external_reference"):
        rows[col][:] = -1
    rows["response_id"] = _random_strings(rng, k, 15)
    days = rng.integers(1, 8, k)
    office = rng.uniform(9 * 3600, 17 * 3600, k)
    rows["start"] = np.rint(days * 86400 + office - SURVEY_START.hour * 3600)
    return rows


def _teacher_table(cols: dict, comments: list[str], schools: pd.DataFrame,
                   cb: Codebook) -> pd.DataFrame:
    """The teacher survey in export order (by recorded date), with text built once."""
    recorded = cols["start"] + cols["duration_seconds"]
    tiebreak = np.ascontiguousarray(cols["response_id"][:, :8]).view(">u8").ravel()
    cols = _take(cols, np.lexsort((tiebreak, recorded)))
    n = cols["school"].size
    start = SURVEY_START + pd.to_timedelta(cols["start"], unit="s")
    end = start + pd.to_timedelta(cols["duration_seconds"], unit="s")
    has_school = pa.array(cols["school"] >= 0)
    school = pa.array(np.maximum(cols["school"], 0))
    first = _decode(cols["recipient_first_name"], FIRST_NAMES)
    last = _decode(cols["recipient_last_name"], LAST_NAMES)
    email = pc.utf8_lower(_join(first, ".", last, _digits_text(np.maximum(
        cols["recipient_email"], 0)), "@school.example.org"))
    ext = _join("EXT", _digits_text(np.maximum(cols["external_reference"], 0), width=7))
    host = cols["ip_address"]
    ip = _join(_decode(np.maximum(host, 0) // IP_HOSTS, IP_PREFIXES),
               _digits_text(np.maximum(host, 0) % IP_HOSTS + 1))
    prefix = np.broadcast_to(np.frombuffer(b"R_", dtype=np.uint8), (n, 2))

    def where(mask, values):
        return pc.if_else(pa.array(mask), values, _text(""))

    text = {
        "status": _decode(cols["status"], STATUS),
        "response_id": _from_bytes(np.hstack([prefix, cols["response_id"]])),
        "recipient_first_name": first, "recipient_last_name": last,
        "recipient_email": where(cols["recipient_email"] >= 0, email),
        "external_reference": where(cols["external_reference"] >= 0, ext),
        "distribution_channel": _decode(cols["distribution_channel"], CHANNELS),
        "ip_address": where(host >= 0, ip),
        "user_language": _decode(cols["user_language"], LANGUAGES),
        "comments": _decode(cols["comments"], comments),
        "district_id": where(has_school, pa.array(schools["district_id"].to_numpy().astype(
            str)).take(school)),
        "school_id": where(has_school, pa.array(schools["school_id"].to_numpy().astype(
            str)).take(school)),
    }
    categories = _categories(cb)
    out = {}
    for col in cb.columns("teacher_survey"):
        v = col.variable
        if v in text:
            out[v] = _pandas_text(text[v])
        elif v in categories:
            out[v] = pd.Categorical.from_codes(cols[v], categories[v])
        elif v == "start_date":
            out[v] = start
        elif v in ("end_date", "recorded_date"):
            out[v] = end
        else:
            out[v] = cols[v]
    return pd.DataFrame(out)


# ---------------------------------------------------------------------------
# 6. District answers
# ---------------------------------------------------------------------------
def _district_answers(p, rng, cb: Codebook, d: pd.DataFrame, mess: bool) -> pd.DataFrame:
    """District survey answers in variable names and codes, one row per submission."""
    m = p["mess"]
    rows = np.flatnonzero(d["responded"].to_numpy() == 1)
    k_fwd = int(m["forwarded_not_sampled"]) if mess else 0
    pool = np.flatnonzero(d["sampled"].to_numpy() == 0)
    if k_fwd and pool.size:
        rows = np.concatenate([rows, np.sort(rng.choice(pool, min(k_fwd, pool.size),
                                                        replace=False))])
    x = d.iloc[rows].reset_index(drop=True)
    n = len(x)
    out = pd.DataFrame({"district_id": x["district_id"].to_numpy()})
    day = rng.integers(0, p["district"]["survey_days"], n)
    sh = p["district"]["submission_hour"]
    hour = np.clip(rng.normal(sh["mean"], sh["sd"], n), *sh["range"]) - SURVEY_START.hour
    out["submitted_at"] = SURVEY_START + pd.to_timedelta(
        np.rint(day * 86400 + hour * 3600 + rng.uniform(0, 60, n)), unit="s")
    first = np.array(FIRST_NAMES)[rng.integers(0, len(FIRST_NAMES), n)]
    last = np.array(LAST_NAMES)[rng.integers(0, len(LAST_NAMES), n)]
    out["email"] = [f"{a}.{b}{k}@district.example.org".lower()
                    for k, (a, b) in enumerate(zip(first, last, strict=True))]
    out["respondent_name"] = [f"{a} {b}" for a, b in zip(first, last, strict=True)]
    roles = cb.scale_values("respondent_role")
    out["respondent_role"] = rng.choice(roles, n, p=_shares(
        dict(zip(roles, p["district"]["respondent_role_shares"], strict=True)), roles))
    out["district_name"] = _district_names(rng, n)
    model = x["support_model"].to_numpy().astype(object)
    out["support_model"] = model
    out["support_model_other"] = ""
    other = mess & (rng.uniform(size=n) < m["d1_other"])
    out.loc[other, "support_model"] = cb.other_model_code
    texts = [OTHER_MODEL_TEXTS[k].format(first=first[i], last=last[i])
             for i, k in zip(np.flatnonzero(other),
                             rng.integers(0, len(OTHER_MODEL_TEXTS), int(other.sum())),
                             strict=True)]
    out.loc[other, "support_model_other"] = texts
    bad = mess & (rng.uniform(size=n) < m["d1_d2_inconsistent"])
    out["support_components"], fte = _components(p, rng, cb, x, model, bad)
    out["n_campuses"] = x["n_campuses"].to_numpy().astype(float)
    out["enrollment_reported"] = np.rint(x["enrollment"] * rng.uniform(0.97, 1.03, n))
    out["coach_fte"] = fte["coach_fte"]
    out["director_fte"] = fte["director_fte"]
    out["model_years"] = x["model_years"].to_numpy()
    out["position_cut"] = x["position_cut"].to_numpy()
    out["title_has_tech"] = x["title_has_tech"].to_numpy()
    itc = _likert(rng, x["it_control_z"].to_numpy(), 3, reverse=(1,))
    vis = _likert(rng, x["vision_z"].to_numpy(), 4)
    for k, col in enumerate(_items(cb, "it_control")):
        out[col] = itc[:, k].astype(float)
    for k, col in enumerate(_items(cb, "vision")):
        out[col] = vis[:, k].astype(float)
    out["role_fidelity"] = _likert(rng, x["role_fidelity_z"].to_numpy(), 1,
                                   loading=1.1)[:, 0].astype(float)
    for col in ("tech_spend_pp", "support_spend_pp", "students_per_device"):
        out[col] = x[col].to_numpy().astype(float)
    if mess:
        out = _district_mess(p, rng, cb, out, x)
    return out.sort_values(["submitted_at", "district_id"], ignore_index=True)


def _district_names(rng, n: int) -> list[str]:
    place = rng.integers(0, len(PLACE_WORDS), n)
    suffix = rng.integers(0, len(PLACE_SUFFIXES), n)
    kind = rng.integers(0, len(DISTRICT_KINDS), n)
    return [f"{PLACE_WORDS[a]} {PLACE_SUFFIXES[b]} {DISTRICT_KINDS[c]}"
            for a, b, c in zip(place, suffix, kind, strict=True)]


def _components(p, rng, cb: Codebook, x: pd.DataFrame, model: np.ndarray, bad: np.ndarray):
    """D2 components and reported FTEs, consistent with D1 except for ``bad`` districts.

    Each model's own component; IT staff in every model above the lowest; a
    component wherever its FTE is positive; some extra stipended leaders.
    Inconsistent districts: the top model without its component or coaches,
    the second-highest without director FTE, the lowest with IT staff.
    """
    n = len(x)
    codes = cb.support_model_codes()
    comp = {c["implies"]: c["code"] for c in cb.support_components()}
    fte_of = {c["implies"]: c["fte"] for c in cb.support_components() if c.get("fte")}
    fte = {col: x[col].to_numpy().astype(float).copy() for col in fte_of.values()}
    lowest, second, third, top, next_top = codes[0], codes[1], codes[2], codes[-1], codes[-2]
    fte[fte_of[top]] = np.where(bad & (model == top), 0.0, fte[fte_of[top]])
    fte[fte_of[next_top]] = np.where(bad & (model == next_top), 0.0, fte[fte_of[next_top]])
    has = {code: model == m for m, code in comp.items()}
    has[comp[second]] |= model != lowest
    for m_, col in fte_of.items():
        has[comp[m_]] |= fte[col] > 0
    has[comp[third]] |= rng.uniform(size=n) < p["district"]["extra_stipended_leaders"]
    has[comp[top]] &= ~(bad & (model == top))
    has[comp[second]] |= bad & (model == lowest)
    order = [c["code"] for c in cb.support_components()]
    matrix = np.column_stack([has[c] for c in order])
    lists = [[order[j] for j in np.flatnonzero(row)] for row in matrix]
    return lists, fte


def _district_mess(p, rng, cb: Codebook, out: pd.DataFrame, x: pd.DataFrame) -> pd.DataFrame:
    """Item nonresponse and out-of-range answers in the optional questions (the form
    requires the others), and a second submission of the same district by a colleague."""
    m = p["mess"]
    n = len(out)
    optional = list(m["district_optional_items"])
    sm = m["spending_missing"]
    blank = rng.uniform(size=n) < _logistic(sm["intercept"] + sm["log_enrollment"] * (
        np.log(x["enrollment"].to_numpy()) - np.log(2000)))
    out.loc[blank, [c for c in optional if c.endswith("spend_pp")]] = np.nan
    for col in optional:
        out.loc[rng.uniform(size=n) < m["district_item_nonresponse"], col] = np.nan
    for col in m["district_out_of_range_items"]:
        out.loc[rng.uniform(size=n) < m["district_out_of_range"], col] = 0.0
    first = out.loc[rng.uniform(size=n) < m["district_duplicates"]].copy()
    k = len(first)
    if k:
        first["submitted_at"] = first["submitted_at"] - pd.to_timedelta(
            rng.integers(3600, 10 * 86400, k), unit="s")
        a = np.array(FIRST_NAMES)[rng.integers(0, len(FIRST_NAMES), k)]
        b = np.array(LAST_NAMES)[rng.integers(0, len(LAST_NAMES), k)]
        first["respondent_name"] = [f"{u} {v}" for u, v in zip(a, b, strict=True)]
        first["email"] = [f"{u}.{v}.2@district.example.org".lower()
                          for u, v in zip(a, b, strict=True)]
        first["respondent_role"] = rng.choice(cb.scale_values("respondent_role"), k)
        first[optional] = np.nan
    return pd.concat([out, first], ignore_index=True)


# ---------------------------------------------------------------------------
# The study
# ---------------------------------------------------------------------------
@dataclass
class SimulatedStudy:
    """A simulated study: raw tables in variable names and codes, plus the truth.

    ``teacher_survey`` and ``district_survey`` hold what respondents answered
    (codes, with the respondent-made mess); the export functions turn them into
    the files real platforms write, adding the export-made mess (label
    variants, lost leading zeros, text in number fields) when ``mess`` is true.
    """

    scenario: str
    seed: int
    params: dict[str, Any]
    frame_districts: pd.DataFrame
    frame_schools: pd.DataFrame
    district_survey: pd.DataFrame
    teacher_survey: pd.DataFrame
    truth: dict[str, Any] = field(default_factory=dict)
    mess: bool = True


def simulate_study(scenario: str = "default", *, seed: int = 20261130,
                   n_districts: int | None = None, teacher_respondents: int | None = None,
                   overrides: dict | None = None, mess: bool = True,
                   sample_seed: int | None = None, progress: bool = False) -> SimulatedStudy:
    """Simulate a whole study: population, sample, responses and truth.

    The population (districts, schools, teachers, support models, random
    effects, hence the truth) and the survey (sample, nonresponse, answers,
    mess) are drawn from two independent random streams, so a fixed
    population can be surveyed again with another ``sample_seed``.

    Parameters
    ----------
    scenario : str
        A scenario of ``scenarios.yaml`` (``"default"``, ``"null"``, ...).
    seed : int
        Seed of every random draw; the same seed gives the same study.
    sample_seed : int, optional
        Seed of the survey stream only (``seed`` when omitted): the same
        population and truth, another sample and other answers.
    n_districts : int, optional
        Population size in districts (overrides the scenario).
    teacher_respondents : int, optional
        Expected number of responding teachers in responding districts
        (overrides the scenario).
    overrides : dict, optional
        Nested parameter overrides, merged into the scenario.
    mess : bool
        Whether to add the quality problems of real exports.
    progress : bool
        Show a progress bar of the steps.

    Returns
    -------
    SimulatedStudy

    Examples
    --------
    >>> s = simulate_study("null", seed=2, n_districts=300, teacher_respondents=1000)
    >>> set(s.truth["ame_pp"].values())
    {0.0}
    >>> int(s.frame_districts["sampled"].sum()) >= s.truth["n_responding_districts"]
    True
    """
    cb = load_codebook()
    p = load_scenario(scenario, overrides)
    if n_districts is not None:
        p["population"]["n_districts"] = int(n_districts)
    if teacher_respondents is not None:
        p["sample"]["teacher_respondents_target"] = int(teacher_respondents)
    pop_rng = np.random.default_rng([seed, 0])
    rng = np.random.default_rng([seed if sample_seed is None else sample_seed, 1])
    codes = cb.support_model_codes()
    bar = tqdm(total=6, desc="simulate", unit="step", disable=not progress)

    d = _population_districts(p, pop_rng, cb)
    d = _district_characteristics(p, pop_rng, d, cb)
    schools = _population_schools(p, pop_rng, d, cb)
    teachers = _population_teachers(p, pop_rng, schools, cb)
    district_re = pop_rng.normal(0, p["outcome"]["district_sd"], len(d))
    school_re = pop_rng.normal(0, p["outcome"]["school_sd"], len(schools))
    d = _draw_district_sample(p, rng, d)
    bar.update()
    eta = _teacher_eta(p, teachers, _district_eta(p, d, district_re), school_re, cb)
    terms = _model_terms(p, d, codes, cb)
    truth = _population_truth(p, eta, teachers["district"], terms, d["model_index"].to_numpy(),
                              codes, cb)
    bar.update()
    resp = _teacher_respondents(p, rng, d, schools, teachers)
    n_answering = int(d["responded"].to_numpy()[teachers["district"][resp]].sum())
    cols = _teacher_answers(p, rng, cb, d, teachers, resp, eta, terms)
    del teachers, eta
    bar.update()
    comments = _respondent_metadata(p, rng, cols, d, schools)
    bar.update()
    if mess:
        cols = _teacher_mess(p, rng, cb, cols)
    t = _teacher_table(cols, comments, schools, cb)
    del cols
    bar.update()
    district_survey = _district_answers(p, rng, cb, d, mess)
    frame_d = d[["district_id", "state", "locale", "size_stratum", "stratum", "enrollment",
                 "n_schools", "frl_pct", "sampled", "selection_prob"]].copy()
    sampled = d["sampled"].to_numpy()[schools["district"].to_numpy()] == 1
    frame_s = schools.loc[sampled, ["school_id", "district_id", "n_teachers"]].reset_index(
        drop=True)
    truth.update({
        "n_population_districts": int(len(d)),
        "n_population_schools": int(len(schools)),
        "n_sampled_districts": int(d["sampled"].sum()),
        "n_responding_districts": int(d["responded"].sum()),
        "n_teacher_respondents": n_answering,
        "n_teacher_rows": int(len(t)),
    })
    bar.update()
    bar.close()
    if sample_seed is not None:
        truth["sample_seed"] = int(sample_seed)
    return SimulatedStudy(scenario, seed, p, frame_d, frame_s, district_survey, t, truth, mess)


# ---------------------------------------------------------------------------
# Writing the raw exports
# ---------------------------------------------------------------------------
def _labels(cb: Codebook, scale: str) -> dict[Any, str]:
    return {v: k for k, v in cb.scale(scale).items()}


def _curly(text: str) -> str:
    return text.replace("'", "\u2019").replace('"', "\u201c")


#: Label variants seen in real exports (survey copies, hand edits, other platforms).
LABEL_STYLES = [str.upper, str.lower, lambda s: _curly(s.title()), lambda s: s + " ",
                lambda s: "  " + s.replace(" ", "  "), lambda s: s.replace(" ", "\u00a0")]


def _export_rng(study: SimulatedStudy, stream: int) -> np.random.Generator:
    """Random stream of the export-made mess of one file."""
    return np.random.default_rng([study.truth.get("sample_seed", study.seed), 2, stream])


def _choice_format(study: SimulatedStudy, choice_format: str | None) -> str:
    fmt = choice_format or study.params.get("export", {}).get("choice_format", "text")
    if fmt not in CHOICE_FORMATS:
        raise ValueError(f"choice_format must be one of {CHOICE_FORMATS}, not {fmt!r}")
    return fmt


def numeric_codes(cb: Codebook, scale: str) -> list[str]:
    """Numeric export codes of a scale, in scale order.

    The scale's ``value`` where it is a number; otherwise the 1-based position
    in the scale (for SAMR levels this equals the codebook's SAMR number).

    Examples
    --------
    >>> cb = load_codebook()
    >>> numeric_codes(cb, "frequency")
    ['0', '1', '2', '3', '4']
    >>> numeric_codes(cb, "samr_self")
    ['1', '2', '3', '4']
    """
    values = cb.scale_values(scale)
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return [_format_number(v) for v in values]
    return [str(k + 1) for k in range(len(values))]


def _scale_positions(values: pd.Series, scale_values: list) -> np.ndarray:
    """Position of each value in the scale (-1 for missing or unknown)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        pos = pd.Index(scale_values).get_indexer(values.cat.categories)
        codes = values.cat.codes.to_numpy()
        return np.where(codes >= 0, pos[np.maximum(codes, 0)], -1)
    return pd.Index(scale_values).get_indexer(values)


def _choice_column(values: pd.Series, cb: Codebook, scale: str, fmt: str,
                   style: np.ndarray | None) -> pa.Array:
    pos = _scale_positions(values, cb.scale_values(scale))
    if fmt == "numeric":
        return _decode(pos, numeric_codes(cb, scale))
    labels = cb.scale_labels(scale)
    if style is None:
        return _decode(pos, labels)
    variants = labels + [f(label) for f in LABEL_STYLES for label in labels]
    code = np.where((pos >= 0) & (style >= 0), pos + (style + 1) * len(labels), pos)
    return _decode(code, variants)


def _format_number(v) -> str:
    """A number as export text: integers without a decimal point, others to 4 decimals.

    Examples
    --------
    >>> [_format_number(v) for v in (12.0, 0.25, float("nan"))]
    ['12', '0.25', '']
    """
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    f = float(v)
    return str(int(f)) if f.is_integer() else repr(round(f, 4))


def _number_column(values: pd.Series) -> pa.Array:
    """Numbers as export text, vectorised (as :func:`_format_number`, ``""`` for missing).

    Arrow writes a double as its shortest round-trip decimal, as Python's
    ``repr`` does, and integers without ``.0``; values are rounded to 4 decimals.
    """
    x = np.round(pd.to_numeric(values, errors="coerce").to_numpy(dtype=float), 4) + 0.0
    codes, uniques = pd.factorize(x)
    return _decode(codes, pc.cast(pa.array(uniques), pa.large_string()))


def _datetime_text(values: pd.Series) -> pa.Array:
    """Datetimes as ``YYYY-MM-DD HH:MM:SS`` text, built from bytes (``""`` for missing)."""
    stamp = values.to_numpy("datetime64[s]")
    missing = np.isnat(stamp)
    sec = np.where(missing, 0, stamp.astype(np.int64))
    day, second = np.divmod(sec, 86400)
    day_code, days = pd.factorize(day)
    dates = np.frombuffer("".join(str(np.datetime64(int(k), "D")) for k in days).encode(),
                          dtype=np.uint8).reshape(len(days), 10)
    hms = np.column_stack([second // 3600, second // 60 % 60, second % 60])
    digits = (hms[:, :, None] // np.array([10, 1]) % 10 + ord("0")).astype(np.uint8)
    colon = np.full((sec.size, 3, 1), ord(":"), dtype=np.uint8)
    clock = np.concatenate([digits, colon], axis=2).reshape(sec.size, 9)[:, :8]
    space = np.full((sec.size, 1), ord(" "), dtype=np.uint8)
    text = _from_bytes(np.hstack([dates[day_code], space, clock]))
    return pc.if_else(pa.array(missing), _text(""), text) if missing.any() else text


def _district_style(rng, district_ids: pd.Series, share: float, eligible=None) -> pd.Series:
    """A random subset of districts (``share`` of the eligible ones), each with a label style."""
    ids = np.sort(np.asarray(pd.unique(district_ids), dtype=str))
    ids = ids[ids != ""]
    if eligible is not None:
        ids = ids[eligible(ids)]
    chosen = ids[rng.uniform(size=ids.size) < share]
    return pd.Series(rng.integers(0, len(LABEL_STYLES), chosen.size), index=chosen)


def to_teacher_export(study: SimulatedStudy, cb: Codebook | None = None, *,
                      choice_format: str | None = None) -> pd.DataFrame:
    """The teacher responses as the Qualtrics export shows them (headers, text cells).

    Parameters
    ----------
    study : SimulatedStudy
    cb : Codebook, optional
    choice_format : {"text", "numeric"}, optional
        Choice text (the labels) or numeric codes (see :func:`numeric_codes`);
        the scenario's ``export.choice_format`` by default.

    Returns
    -------
    DataFrame
        One string column per codebook column, headed as in the export.

    Examples
    --------
    >>> s = simulate_study("default", seed=3, n_districts=200, teacher_respondents=300)
    >>> text = to_teacher_export(s)
    >>> num = to_teacher_export(s, choice_format="numeric")
    >>> set(num[text.columns[-3]].unique()) <= {"", "1", "2", "3", "4", "5"}
    True
    """
    columns = _teacher_export_columns(study, cb or load_codebook(), choice_format)
    return pd.DataFrame({h: pd.array(a, dtype="str") for h, a in columns.items()},
                        index=study.teacher_survey.index)


def _teacher_export_columns(study: SimulatedStudy, cb: Codebook, choice_format: str | None
                            ) -> dict[str, pa.Array]:
    """Export header -> Arrow text column, with the export-made mess when ``study.mess``."""
    fmt = _choice_format(study, choice_format)
    t = study.teacher_survey
    m = study.params["mess"]
    rng = _export_rng(study, 1)
    row_style = lost = None
    if study.mess:
        styles = _district_style(rng, t["district_id"], m["label_variant_districts"])
        row_style = t["district_id"].map(styles).fillna(-1).to_numpy(dtype=np.int64)
        lost = _district_style(rng, t["district_id"], m["lost_zero_districts"],
                               eligible=lambda ids: np.strings.startswith(ids, "0"))
    out = {}
    for col in cb.columns("teacher_survey"):
        values = t[col.variable] if col.variable in t else pd.Series("", index=t.index)
        if col.scale:
            text = _choice_column(values, cb, col.scale, fmt, row_style)
        elif col.type == "datetime":
            text = _datetime_text(values)
        elif col.type == "boolean":
            labels = ["0", "1"] if fmt == "numeric" else ["False", "True"]
            text = _decode(values.to_numpy(bool).astype(np.int8), labels)
        elif col.type == "number":
            text = _number_column(values)
            if study.mess and col.import_id is None:
                text = _typed_text(rng, text, m["text_in_numbers"], TEACHER_NUMBER_TEXT)
        else:
            text = _arrow_text(values)
            if col.type == "id" and lost is not None:
                gone = pa.array(t["district_id"].isin(lost.index).to_numpy())
                text = pc.if_else(gone, pc.utf8_ltrim(text, "0"), text)
        out[col.header] = text
    return out


def _typed_text(rng, text: pa.Array, share: float, choices: list[str]) -> pa.Array:
    """Replace a ``share`` of the answered cells with text typed into a number field."""
    answered = pc.not_equal(text, "").to_numpy(zero_copy_only=False)
    hit = answered & (rng.uniform(size=len(text)) < share)
    typed = _decode(rng.integers(0, len(choices), len(text)), choices)
    return pc.if_else(pa.array(hit), typed, text)


def _arrow_text(values: pd.Series) -> pa.Array:
    """A column as an Arrow string array with ``""`` for missing values."""
    if isinstance(values.dtype, pd.StringDtype):
        arr = pa.array(values.array)
    else:
        arr = pa.array(values.map(lambda v: None if v is None or (
            isinstance(v, float) and np.isnan(v)) else str(v)).to_numpy(object),
            type=pa.large_string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return pc.fill_null(arr.cast(pa.large_string()), "")


def _needs_quotes(a: pa.Array) -> bool:
    """Whether any value holds a comma, quote or line break (a scan of the data buffer)."""
    data = a.buffers()[2]
    if data is None or data.size == 0:
        return False
    raw = data.to_pybytes()
    return any(c in raw for c in (b",", b'"', b"\r", b"\n"))


def _csv_quote(a: pa.Array) -> pa.Array:
    """Quote the values that need it, as Python's csv module does (minimal quoting)."""
    if not _needs_quotes(a):
        return a
    q = pa.scalar('"', pa.large_string())
    quoted = pc.binary_join_element_wise(q, pc.replace_substring(a, '"', '""'), q,
                                         pa.scalar("", pa.large_string()))
    return pc.if_else(pc.match_substring_regex(a, '[,"\r\n]'), quoted, a)


def _csv_body(export: pd.DataFrame | dict[str, pa.Array]) -> memoryview:
    """The CSV rows of ``export`` as bytes (``\\r\\n`` line ends, minimal quoting as
    Python's csv module), joined column-wise in Arrow without a Python loop over rows."""
    def s(text):
        return pa.scalar(text, pa.large_string())

    cols = [_csv_quote(v if isinstance(v, pa.Array) else _arrow_text(v))
            for v in (export.values() if isinstance(export, dict) else
                      (export.iloc[:, k] for k in range(export.shape[1])))]
    lines = pc.binary_join_element_wise(*cols, s(","))
    lines = pc.binary_join_element_wise(lines, s(""), s("\r\n")).cast(pa.large_string())
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)
    start, end = offsets[lines.offset], offsets[lines.offset + len(lines)]
    return memoryview(lines.buffers()[2])[start:end]


def write_qualtrics_csv(export: pd.DataFrame | dict[str, pa.Array], path: Path,
                        cb: Codebook | None = None) -> None:
    """Write a Qualtrics-style CSV: three header rows, UTF-8 with a byte-order mark.

    ``export`` is the table of :func:`to_teacher_export` (or header -> Arrow text).

    Examples
    --------
    >>> import tempfile
    >>> s = simulate_study("default", seed=3, n_districts=200, teacher_respondents=300)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     write_qualtrics_csv(to_teacher_export(s), Path(tmp) / "t.csv")
    ...     (Path(tmp) / "t.csv").read_bytes()[:3] == b"\\xef\\xbb\\xbf"
    True
    """
    cb = cb or load_codebook()
    columns = {c.header: c for c in cb.columns("teacher_survey")}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    headers = list(export)
    w.writerow(headers)
    w.writerow([columns[h].question or h if h in columns else h for h in headers])
    w.writerow([json.dumps({"ImportId": _import_id(columns[h]) if h in columns else h},
                           separators=(",", ":")) for h in headers])
    with open(path, "wb") as fh:
        fh.write(("\ufeff" + buf.getvalue()).encode("utf-8"))
        if len(next(iter(export.values())) if isinstance(export, dict) else export):
            fh.write(_csv_body(export))


def _import_id(col) -> str:
    """Qualtrics ImportId of a column: the codebook's, or QID<n>[_<k>] for question T<n>[_<k>]."""
    if col.import_id:
        return col.import_id
    q, _, sub = col.header[1:].partition("_")
    if col.header.startswith("T") and q.isdigit():
        return f"QID{q}" + (f"_{sub}" if sub else "")
    return col.header


def to_district_export(study: SimulatedStudy, cb: Codebook | None = None) -> pd.DataFrame:
    """The district responses as the web form exports them (question-text headers, labels).

    Examples
    --------
    >>> s = simulate_study("default", seed=3, n_districts=400, teacher_respondents=300)
    >>> x = to_district_export(s)
    >>> list(x.columns[:2]) == [c.header for c in load_codebook().columns("district_survey")][:2]
    True
    """
    cb = cb or load_codebook()
    d = study.district_survey
    m = study.params["mess"]
    rng = _export_rng(study, 2)
    n = len(d)
    model_labels = {code: label for label, code in cb.support_model_labels().items()}
    model_labels[cb.other_model_code] = cb.other_model_label
    comp_labels = {c["code"]: c["label"] for c in cb.support_components()}
    sep = cb.component_separator + " "

    def variant(labels: pd.Series) -> pd.Series:
        if not study.mess:
            return labels
        hit = labels.notna().to_numpy() & (rng.uniform(size=n) < m["district_label_variants"])
        style = rng.integers(0, len(LABEL_STYLES), n)
        return pd.Series([LABEL_STYLES[s](v) if h else v
                          for v, h, s in zip(labels, hit, style, strict=True)],
                         index=labels.index, dtype=object)

    out = {}
    for col in cb.columns("district_survey"):
        values = d[col.variable]
        if col.type == "support_model":
            values = variant(values.map(model_labels))
        elif col.type == "multi_select":
            values = variant(values.map(lambda codes: sep.join(comp_labels[c] for c in codes)))
        elif col.scale:
            values = variant(values.map(_labels(cb, col.scale)))
        elif col.type == "id" and study.mess:
            drop = (values.str.startswith("0") & (rng.uniform(size=n) < m["district_lost_zeros"]))
            values = values.where(~drop, values.str.lstrip("0"))
        elif col.type in ("number", "integer"):
            values = values.astype(object).where(values.notna(), None)
            if study.mess and col.variable in m["district_optional_items"]:
                hit = values.notna().to_numpy() & (
                    rng.uniform(size=n) < m["district_text_in_numbers"])
                picks = rng.integers(0, len(DISTRICT_NUMBER_TEXT), n)
                values = values.where(~hit, pd.Series(np.array(DISTRICT_NUMBER_TEXT,
                                                               dtype=object)[picks]))
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
    if v is None:
        return None
    if isinstance(v, pd.Timestamp):
        return v.to_pydatetime()
    if isinstance(v, float | np.floating):
        if np.isnan(v):
            return None
        return int(v) if float(v).is_integer() else float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


def _normalise_zip(data: bytes) -> bytes:
    """Rewrite a zip (xlsx) with fixed entry timestamps and core dates, for byte identity."""
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


def write_raw(study: SimulatedStudy, out_dir: Path, *, choice_format: str | None = None
              ) -> dict[str, str]:
    """Write the four raw exports, ``truth.json`` and ``README.md`` into ``out_dir``.

    Parameters
    ----------
    study : SimulatedStudy
    out_dir : Path
    choice_format : {"text", "numeric"}, optional
        How the teacher export writes choices (see :func:`to_teacher_export`);
        the scenario's ``export.choice_format`` by default.

    Returns
    -------
    dict
        File name -> SHA-256 of each written data file.
    """
    cb = load_codebook()
    fmt = _choice_format(study, choice_format)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, fs = to_frame_exports(study, cb)
    fd.to_csv(out_dir / cb.file_name("frame_districts"), index=False, lineterminator="\n")
    fs.to_csv(out_dir / cb.file_name("frame_schools"), index=False, lineterminator="\n")
    write_form_xlsx(to_district_export(study, cb), out_dir / cb.file_name("district_survey"))
    write_qualtrics_csv(_teacher_export_columns(study, cb, fmt),
                        out_dir / cb.file_name("teacher_survey"), cb)
    truth = dict(study.truth, scenario=study.scenario, seed=study.seed, synthetic=True,
                 choice_format=fmt)
    (out_dir / "truth.json").write_text(json.dumps(truth, indent=2, sort_keys=True) + "\n")
    files = [cb.file_name(s) for s in ("frame_districts", "frame_schools", "district_survey",
                                       "teacher_survey")] + ["truth.json"]
    hashes = {f: sha256_file(out_dir / f) for f in files}
    (out_dir / "README.md").write_text(_raw_readme(study, hashes, fmt, cb))
    return hashes


MODERATOR_HYPOTHESES = {"campuses_per_director": "H4", "it_control": "H5", "vision": "H6",
                        "role_fidelity": "H7", "position_cut": "H7"}


def _raw_readme(study: SimulatedStudy, hashes: dict[str, str], fmt: str, cb: Codebook) -> str:
    t = study.truth
    p = study.params

    def q(variable, source="teacher_survey"):
        """A question's ID (its header up to the first dot) from the codebook."""
        return cb.column(source, variable).header.split(".")[0]

    forced = " and ".join(q(v) for v in p["mess"]["forced_response"])
    optional = ", ".join(q(v, "district_survey") for v in p["mess"]["district_optional_items"])
    command = f"python -m analysis simulate --scenario {study.scenario} --seed {study.seed}"
    lines = [
        "# data/raw: SYNTHETIC study data",
        "",
        "**Every file in this folder is synthetic.** No real district, school or teacher is in it.",
        "It was generated by the project's own simulator (`analysis/study/simulate.py`) with",
        "",
        "```",
        f"{command} --out data/raw",
        "```",
        "",
        "(`make data-raw`). The same command gives byte-identical files; a test checks the hashes",
        "below. Names, e-mail addresses, street addresses and phone numbers in the raw exports",
        "are fake (e-mail domains are the reserved `example.org`, IP addresses come from the",
        "documentation-only ranges of RFC 5737, phone numbers from the fictional 555-01xx range).",
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
                              + ("choice text)" if fmt == "text" else "numeric choice codes)"),
        "truth.json": "the simulator's true population values (average marginal effects)",
    }
    for f, h in hashes.items():
        lines.append(f"| `{f}` | {what.get(f, '')} | `{h}` |")
    lines += [
        "",
        "## Size",
        "",
        f"- population: {t['n_population_districts']} districts, {t['n_population_schools']} "
        f"schools, {t['n_population_teachers']} teachers",
        f"- sample: {t['n_sampled_districts']} districts sampled, "
        f"{t['n_responding_districts']} responding",
        f"- teachers answering in responding districts: {t['n_teacher_respondents']}; teacher "
        f"survey rows (with refusals, duplicates, previews, teachers of nonresponding districts "
        f"and unusable responses): {t['n_teacher_rows']}",
        f"- district survey rows (with duplicate and unsolicited submissions): "
        f"{len(study.district_survey)}",
        "",
        "## How the data were generated",
        "",
        "1. **Population.** Districts in the states listed below, with log-normal (heavy-tailed)",
        "   enrollment by locale, schools with a grade span and teachers, poverty (`frl_pct`,",
        "   logit-normal around a locale mean plus a state offset), technology spending",
        "   (log-normal, lower with poverty) and students per device.",
        "2. **Support models** from a multinomial logit of enrollment and poverty: larger and richer",
        "   districts adopt coaching and directors more often, so the naive comparison below is",
        "   confounded; M1's adjustment for enrollment and poverty removes the confounding.",
        "   Leadership vision, IT control and role fidelity are latent district traits drawn",
        "   independently of the support model.",
        "3. **Sample.** Stratified (locale x size) sample of districts; district response from a",
        "   logistic model of enrollment and poverty; all schools; school response rates",
        "   Beta-distributed around a logistic mean of poverty and school size.",
        "4. **Outcome.** Multilevel proportional-odds model of the SAMR level (S < A < M < R):",
        "   district and school random intercepts, district and teacher covariates, and the",
        "   planted support-model effect, the same on the log-odds of every level, scaled by",
        "   leadership vision and shifted by the moderators. T7 is the level; T5 and T6 follow",
        "   from a latent intensity of use and the level.",
        "5. **Truth.** Every population teacher's probability of non-substitutive use under each",
        "   support model, averaged over the population. A survey estimate targets what a census",
        "   of this population would show, which differs from the truth by the population's own",
        "   chance imbalance of district effects between the models (a point or two here).",
        "6. **Mess.** The rates of the `mess` parameters below: refusals, partial responses,",
        "   speeders, straight-liners, failed attention checks, duplicate submissions (same",
        "   e-mail, or same school and IP within minutes), survey previews, item nonresponse",
        f"   (rising along the survey; experienced teachers skip {q('years_teaching')} more,",
        f"   multi-level teachers {q('subject')}; {forced} are forced responses; the district",
        f"   form requires every question but {optional}), out-of-range",
        "   numbers and text in number fields, label variants (case, spacing, non-breaking",
        "   spaces) in some districts' exports, IDs without their leading zero, D1 answers",
        "   that D2 or the FTE counts contradict, duplicate and unsolicited district",
        "   submissions, and fake personal data in the platforms' personal columns.",
        "",
        "## Planted effects and the truth",
        "",
        "Log-odds effects of the support models on every SAMR level, and the true population",
        "average marginal effects on the probability of non-substitutive use (`>= A`) and of",
        "transformative use (`>= M`), each model against "
        f"`{t['reference_model']}`, in percentage points.",
        "The naive difference compares the population's teachers by the model their district",
        "actually runs (no adjustment).",
        "",
        "| support model | grade | log-odds effect | true AME (pp) | true AME, transformative "
        "(pp) | naive difference (pp) |",
        "|---|---|---|---|---|---|",
    ]
    for m in cb.support_models():
        c = m["code"]
        if c == t["reference_model"]:
            lines.append(f"| `{c}` (reference) | {m['grade']} | 0 | 0 | 0 | 0 |")
            continue
        lines.append(f"| `{c}` | {m['grade']} | {t['log_odds_effects'][c]:g} | "
                     f"{t['ame_pp'][c]:.2f} | {t['ame_pp_transformative'][c]:.2f} | "
                     f"{t['naive_difference_pp'][c]:.2f} |")
    lines += [
        "",
        "Moderators (planted in the log-odds of the listed models):",
        "",
        "| hypothesis | moderator | on | size | models |",
        "|---|---|---|---|---|",
    ]
    for name, spec in p["outcome"]["moderators"].items():
        size = (f"multiplier {spec['multiplier']:g} per SD" if name == "vision"
                else f"{spec['effect']:g}")
        models = ", ".join(f"`{c}`" for c in spec.get("models", [])) or "every model"
        lines.append(f"| {MODERATOR_HYPOTHESES.get(name, '')} | `{name}` | "
                     f"{'yes' if spec['on'] else 'no'} | {size} | {models} |")
    lines += [
        "",
        "## Every parameter of the data-generating process",
        "",
        f"Scenario `{study.scenario}` of `analysis/study/scenarios.yaml`, seed {study.seed}"
        + (f" (survey drawn with sample seed {t['sample_seed']})" if "sample_seed" in t else "")
        + f", teacher choices exported as {fmt}:",
        "",
        "```yaml",
        yaml.safe_dump(p, sort_keys=True, default_flow_style=None, width=100).rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)

"""The simulator: deterministic, documented, realistic, with the planted truth."""

import csv
import io
import json
import re

import numpy as np
import pandas as pd
import pytest
from helpers import RAW

from analysis.data.clean import normalise_label
from analysis.data.derive import derived_support_model
from analysis.study import simulate
from analysis.study.codebook import load_codebook
from analysis.study.simulate import (
    load_scenario,
    numeric_codes,
    scenario_names,
    sha256_file,
    simulate_study,
    to_district_export,
    to_teacher_export,
    write_raw,
)

cb = load_codebook()
RAW_NAMES = ("frame_districts.csv", "frame_schools.csv", "district_survey.xlsx",
             "teacher_survey.csv", "truth.json", "README.md")


@pytest.fixture(scope="module")
def study():
    """A mid-sized study (about 60 responding districts, 3,000 teachers)."""
    return simulate_study("default", seed=11, n_districts=800, teacher_respondents=3000)


@pytest.fixture(scope="module")
def large():
    """A population-sized study with few teachers (for district-level checks)."""
    return simulate_study("default", seed=5, n_districts=4000, teacher_respondents=500)


# -- determinism and the bundled files -----------------------------------------
def test_same_seed_same_bytes(tmp_path):
    for k in (1, 2):
        study = simulate_study("default", seed=7, n_districts=400, teacher_respondents=800)
        write_raw(study, tmp_path / str(k))
        write_raw(study, tmp_path / f"{k}n", choice_format="numeric")
    for name in RAW_NAMES:
        assert (tmp_path / "1" / name).read_bytes() == (tmp_path / "2" / name).read_bytes()
        assert (tmp_path / "1n" / name).read_bytes() == (tmp_path / "2n" / name).read_bytes()


def test_different_seed_different_data():
    a = simulate_study("default", seed=1, n_districts=400, teacher_respondents=800)
    b = simulate_study("default", seed=2, n_districts=400, teacher_respondents=800)
    assert not a.frame_districts.equals(b.frame_districts)
    assert a.truth["ame_pp"] != b.truth["ame_pp"]


def test_bundled_raw_data_is_what_the_simulator_writes(tmp_path):
    """`make data-raw` regenerates the committed files byte for byte."""
    readme = (RAW / "README.md").read_text()
    seed = int(re.search(r"--seed (\d+)", readme).group(1))
    scenario = re.search(r"--scenario (\w+)", readme).group(1)
    hashes = write_raw(simulate_study(scenario, seed=seed), tmp_path)
    for name, digest in hashes.items():
        assert sha256_file(RAW / name) == digest, name
        assert digest in readme
    assert (tmp_path / "README.md").read_text() == readme


def test_bundled_study_size_confounding_and_synthetic_label():
    truth = json.loads((RAW / "truth.json").read_text())
    assert truth["synthetic"] is True and truth["scenario"] == "default"
    assert 1800 <= truth["n_responding_districts"] <= 2400
    assert 17000 <= truth["n_teacher_respondents"] <= 23000
    # the naive comparison is confounded: it overstates coaching (larger, richer districts
    # adopt it). For director the planted H4 moderator pulls the other way (large adopters
    # spread their directors over many campuses), so there the two only differ.
    naive, ame = truth["naive_difference_pp"], truth["ame_pp"]
    assert naive["coaching"] > ame["coaching"] + 1
    assert abs(naive["director"] - ame["director"]) > 0.5
    readme = (RAW / "README.md").read_text()
    assert "SYNTHETIC" in readme and "synthetic" in readme


def test_readme_lists_every_parameter_and_the_truth():
    readme = (RAW / "README.md").read_text()
    params = load_scenario("default")

    def leaves(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from leaves(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", k

    for _path, key in leaves(params):
        assert re.search(rf"\b{re.escape(str(key))}\b", readme), key
    truth = json.loads((RAW / "truth.json").read_text())
    for model, value in truth["ame_pp"].items():
        assert f"| `{model}` |" in readme and f"{value:.2f}" in readme
    for hypothesis in ("H4", "H5", "H6", "H7"):
        assert f"| {hypothesis} |" in readme


# -- scenarios and truth -----------------------------------------------------------
def test_scenarios_file():
    assert {"default", "null", "numeric_codes", "benchmark"} <= set(scenario_names())
    with pytest.raises(KeyError, match="unknown scenario"):
        load_scenario("nope")
    p = load_scenario("benchmark")
    assert p["population"]["n_districts"] == 5000
    assert p["sample"]["teacher_respondents_target"] == 1_000_000


def test_default_truth_follows_the_blog_grades():
    truth = simulate_study("default", seed=3, n_districts=1500, teacher_respondents=500).truth
    ame = truth["ame_pp"]
    order = [ame.get(c, 0.0) for c in cb.support_model_codes()]   # reference is 0
    assert order == sorted(order)
    assert ame["coaching"] > 10 and ame["pay_and_pray"] < -5
    assert all(abs(v) < 25 for v in ame.values())   # sizes a real study could find
    tr = truth["ame_pp_transformative"]
    order = [tr.get(c, 0.0) for c in cb.support_model_codes()]
    assert order == sorted(order)


def test_null_scenario_has_zero_effects():
    p = load_scenario("null")
    assert all(v == 0 for v in p["outcome"]["model_effects"].values())
    mod = p["outcome"]["moderators"]
    assert mod["vision"]["multiplier"] == 0
    assert all(spec["effect"] == 0 for name, spec in mod.items() if name != "vision")
    truth = simulate_study("null", seed=3, n_districts=800, teacher_respondents=500).truth
    assert all(v == 0 for v in truth["ame_pp"].values())
    assert all(v == 0 for v in truth["ame_pp_transformative"].values())


def test_truth_is_the_population_average_of_the_model():
    """The AMEs are differences of population rates, and every population teacher counts."""
    s = simulate_study("default", seed=4, n_districts=600, teacher_respondents=500)
    t = s.truth
    ref = t["rate_pct"][cb.reference_model]
    for model, ame in t["ame_pp"].items():
        assert ame == pytest.approx(t["rate_pct"][model] - ref, abs=2e-6)
    assert t["n_population_teachers"] > 50 * t["n_population_districts"]


@pytest.mark.parametrize("moderator,model", [("campuses_per_director", "director"),
                                             ("it_control", "coaching"),
                                             ("role_fidelity", "coaching"),
                                             ("position_cut", "coaching")])
def test_moderators_are_planted_and_can_be_switched_off(moderator, model):
    """Each moderator shifts only its models' terms; `on: false` removes it."""
    codes = cb.support_model_codes()
    j = codes.index(model)
    p_on, p_off = load_scenario("default"), load_scenario(
        "default", {"outcome": {"moderators": {moderator: {"on": False}}}})
    d = _population(p_on)
    on, off = (simulate._model_terms(p, d, codes, cb) for p in (p_on, p_off))
    assert not np.allclose(on[:, j], off[:, j])
    others = [k for k, c in enumerate(codes) if c not in p_on["outcome"]["moderators"][moderator]
              ["models"]]
    assert np.allclose(on[:, others], off[:, others])


def _population(p):
    rng = np.random.default_rng(0)
    d = simulate._population_districts(dict(p, population=dict(p["population"], n_districts=500)),
                                       rng, cb)
    return simulate._district_characteristics(p, rng, d, cb)


def test_moderator_directions():
    """H4: more campuses per director, smaller director term; H5: IT control weakens
    director and coaching; H6: vision strengthens every model; H7: fidelity strengthens
    coaching, a cut weakens it."""
    p = load_scenario("default")
    d = _population(p)
    codes = cb.support_model_codes()
    terms = pd.DataFrame(simulate._model_terms(p, d, codes, cb), columns=codes)
    cpd = d["n_campuses"] / d["director_fte_if_director"]
    resid = terms["director"] - p["outcome"]["model_effects"]["director"] * np.maximum(
        0, 1 + p["outcome"]["moderators"]["vision"]["multiplier"] * d["vision_z"])
    it_control = p["outcome"]["moderators"]["it_control"]["effect"]
    assert np.corrcoef(np.log(cpd), resid - it_control * d["it_control_z"])[0, 1] < -0.9
    assert np.corrcoef(d["vision_z"], terms["vanguard"])[0, 1] > 0.9
    cut = d["position_cut"] == cb.scale("yes_no_not_sure")["Yes"]
    assert terms.loc[cut, "coaching"].mean() < terms.loc[~cut, "coaching"].mean()
    assert np.corrcoef(d["role_fidelity_z"], terms["coaching"])[0, 1] > 0.1
    assert np.corrcoef(d["it_control_z"], terms["coaching"])[0, 1] < -0.1


# -- population, sample and response ----------------------------------------------
def test_population_frame_is_realistic(large):
    fd = large.frame_districts
    enr = fd["enrollment"]
    assert enr.max() / enr.median() > 20 and enr.skew() > 3          # heavy right tail
    assert fd["frl_pct"].between(0, 100).all() and fd["frl_pct"].std() > 10
    assert (fd["n_schools"] >= 1).all() and (fd["n_schools"] == 1).mean() > 0.1
    assert fd["state"].nunique() >= 8 and fd["stratum"].nunique() >= 10
    assert fd["district_id"].str.fullmatch(r"\d{7}").all() and fd["district_id"].is_unique
    assert fd["district_id"].str.startswith("0").any()                 # states with FIPS 0x
    fs = large.frame_schools
    assert (fs["n_teachers"] >= 3).all() and fs["school_id"].str.fullmatch(r"\d{12}").all()
    assert set(fs["district_id"]) == set(fd.loc[fd["sampled"] == 1, "district_id"])


def test_stratified_sample_and_selection_probabilities(large):
    fd = large.frame_districts
    by = fd.groupby("stratum").agg(n=("sampled", "sum"), N=("sampled", "size"),
                                   p=("selection_prob", "first"))
    assert np.allclose(by["n"] / by["N"], by["p"])
    assert (by["n"] >= np.minimum(load_scenario("default")["sample"]["min_per_stratum"],
                                  by["N"])).all()
    assert fd.groupby("stratum")["selection_prob"].nunique().eq(1).all()
    large_p = fd.loc[fd["size_stratum"] == cb.scale_values("size_stratum")[2], "selection_prob"]
    assert large_p.mean() > fd["selection_prob"].median()              # oversampled


def test_district_nonresponse_depends_on_observed_characteristics():
    s = simulate_study("default", seed=8, n_districts=4000, teacher_respondents=500,
                       overrides={"sample": {"fraction": {"small": 1.0, "medium": 1.0,
                                                          "large": 1.0}}})
    fd = s.frame_districts
    answered = fd["district_id"].isin(s.district_survey["district_id"])
    big = fd["enrollment"] > fd["enrollment"].median()
    poor = fd["frl_pct"] > fd["frl_pct"].median()
    assert answered[big].mean() > answered[~big].mean() + 0.03
    assert answered[~poor].mean() > answered[poor].mean() + 0.03


def test_adoption_is_confounded_by_size_and_poverty(large):
    """Larger and richer districts adopt coaching and directors more often."""
    d = large.district_survey.drop_duplicates("district_id").merge(large.frame_districts,
                                                                   on="district_id")
    top = d["support_model"].isin(cb.support_model_codes()[-2:])
    big = d["enrollment"] > d["enrollment"].median()
    rich = d["frl_pct"] < d["frl_pct"].median()
    assert top[big].mean() > top[~big].mean() + 0.1
    assert top[rich].mean() > top[~rich].mean() + 0.05


def test_teacher_response_rates_vary_by_school(study):
    t = study.teacher_survey
    t = t[(t["status"] == "IP Address") & ~(t["recipient_email"].duplicated(keep="last")
                                            & (t["recipient_email"] != ""))]
    counts = t.groupby("school_id").size()
    fs = study.frame_schools.set_index("school_id")
    rate = (counts / fs.loc[counts.index, "n_teachers"]).clip(upper=1)
    assert rate.std() > 0.05
    assert study.truth["n_teacher_respondents"] == pytest.approx(3000, rel=0.15)


# -- the outcome ---------------------------------------------------------------------
def test_t6_items_and_t7_are_consistent():
    s = simulate_study("default", seed=12, n_districts=800, teacher_respondents=3000, mess=False)
    t = s.teacher_survey
    items = list(cb.samr_items())
    freq = t[items].to_numpy()
    tag = np.array([cb.samr_numeric[cb.samr_items()[c]] for c in items])
    index = (freq * tag).sum(axis=1) / np.where(freq.sum(axis=1) > 0, freq.sum(axis=1), np.nan)
    level = t["samr_self"].cat.codes.to_numpy() + 1
    means = pd.Series(index).groupby(level).mean()
    assert means.is_monotonic_increasing and means.iloc[-1] - means.iloc[0] > 0.4
    never = t["use_freq"] == cb.scale_values("use_freq")[0]
    assert never.any() and (t.loc[never, items] == 0).all().all()
    assert set(t["samr_self"].unique()) == set(cb.samr_levels)


def test_outcome_depends_on_the_support_model(study):
    t = study.teacher_survey
    d = study.district_survey.drop_duplicates("district_id").set_index("district_id")
    model = t["district_id"].map(d["support_model"])
    nonsub = t["samr_self"].isin(cb.samr_levels[1:])
    rate = nonsub.groupby(model).mean()
    assert rate[cb.support_model_codes()[-1]] > rate[cb.support_model_codes()[0]] + 0.1


# -- the mess ----------------------------------------------------------------------------
def test_respondent_mess_is_present(study):
    t = study.teacher_survey
    m = study.params["mess"]
    n = len(t)
    no = cb.scale("yes_no")["No"]
    assert (t["consent"] == no).mean() == pytest.approx(m["not_consented"], abs=0.01)
    assert (~t["finished"]).mean() == pytest.approx(m["partial"], abs=0.015)
    partial = t[~t["finished"]]
    assert partial["samr_self"].notna().any() and partial["samr_self"].isna().any()
    assert t.loc[t["finished"] & (t["consent"] != no), "samr_self"].notna().all()
    assert (t["duration_seconds"] < t["duration_seconds"].median() / 3).sum() > 0.01 * n
    emails = t.loc[t["recipient_email"] != "", "recipient_email"]
    assert emails.duplicated().sum() > 0
    anon = t[t["distribution_channel"] == "anonymous"]
    key = anon["school_id"] + anon["ip_address"]
    assert key.duplicated().sum() > 0
    assert (t["status"] == "Survey Preview").sum() == m["survey_previews"]
    items = cb.quality_rules["straightline_items"]
    assert (t[items].nunique(axis=1) == 1).sum() > 0
    passed = cb.scale("agreement")[cb.quality_rules["attention_check_pass"]]
    assert (t["attention_check"].notna() & (t["attention_check"] != passed)).sum() > 0
    assert (t["years_teaching"] > 60).sum() > 0
    complete = t[t["finished"] & (t["consent"] == cb.scale("yes_no")["Yes"])]
    assert complete["samr_freq_8"].isna().mean() > complete["samr_freq_1"].isna().mean()


def test_item_nonresponse_is_related_to_covariates():
    """Experienced teachers leave T2 blank more often, multi-level teachers T4; T7 is a
    forced response; small districts leave D13 blank more often."""
    kw = dict(seed=13, n_districts=1500, teacher_respondents=20000)
    clean = simulate_study("default", mess=False, **kw).teacher_survey
    messy = simulate_study("default", **kw).teacher_survey
    messy = messy[messy["finished"] & (messy["consent"] == cb.scale("yes_no")["Yes"])]
    truth = clean.drop_duplicates("response_id").set_index("response_id")
    known = messy["response_id"].isin(truth.index)       # not the copies made for duplicates
    blank = messy.loc[known & messy["years_teaching"].isna(), "response_id"]
    assert len(blank) > 30
    assert truth.loc[blank, "years_teaching"].mean() > truth["years_teaching"].mean() + 1
    blank = messy.loc[known & messy["subject"].isna(), "response_id"]
    multiple = cb.scale_values("grade_band")[-1]
    assert (truth.loc[blank, "grade_band"] == multiple).mean() > 2 * (
        truth["grade_band"] == multiple).mean()
    assert messy["samr_self"].notna().all()
    s = simulate_study("default", seed=13, n_districts=4000, teacher_respondents=500)
    sp = s.district_survey.merge(s.frame_districts, on="district_id")
    blank = sp["tech_spend_pp"].isna()
    assert sp.loc[blank, "enrollment"].median() < sp.loc[~blank, "enrollment"].median()
    required = [c for c in sp.columns if c in set(_items(cb, "vision"))]
    assert sp[required].notna().all().all()


def _items(cb, construct):
    return [c.variable for c in cb.construct_items(construct)]


def test_district_mess_is_present(large):
    d = large.district_survey
    assert d["district_id"].duplicated().sum() > 0
    assert (d["support_model"] == cb.other_model_code).sum() > 0
    sampled = large.frame_districts.loc[large.frame_districts["sampled"] == 1, "district_id"]
    forwarded = d.loc[~d["district_id"].isin(sampled), "district_id"].nunique()
    assert forwarded == large.params["mess"]["forwarded_not_sampled"]
    assert d["tech_spend_pp"].isna().sum() > 0
    assert (d["students_per_device"] == 0).sum() + (d["enrollment_reported"] == 0).sum() > 0
    six = d[d["support_model"].isin(cb.support_model_codes())]
    mismatch = six["support_model"] != derived_support_model(six, cb=cb)
    assert 0 < mismatch.mean() < 0.2


def test_export_mess_label_variants_lost_zeros_and_text(study):
    x = to_teacher_export(study)
    labels = set(cb.scale_labels("agreement"))
    answers = pd.concat([x[f"T9_{k}"] for k in range(1, 5)])
    answers = answers[answers != ""]
    variants = answers[~answers.isin(labels)]
    assert 0 < len(variants) < 0.3 * len(answers)
    # the cleaner maps them back
    assert set(variants.map(normalise_label)) <= {normalise_label(v) for v in labels}
    ids = x["district_id"][x["district_id"] != ""]
    assert (ids.str.len() == 6).any() and (ids.str.len() == 7).mean() > 0.5
    years = x["T2"][x["T2"] != ""]
    assert pd.to_numeric(years, errors="coerce").isna().sum() > 0
    d = to_district_export(study)
    assert d["District NCES ID"].str.fullmatch(r"\d{6,7}").all()


def test_personal_data_is_fake(study):
    t = study.teacher_survey
    emails = t.loc[t["recipient_email"] != "", "recipient_email"]
    assert emails.str.endswith("@school.example.org").all()
    ips = t.loc[t["ip_address"] != "", "ip_address"]
    assert ips.str.match(r"(192\.0\.2|198\.51\.100|203\.0\.113)\.\d+$").all()
    assert set(t["recipient_last_name"]) <= set(simulate.LAST_NAMES) | {""}
    d = study.district_survey
    assert d["email"].str.endswith("@district.example.org").all()
    comments = t.loc[t["comments"] != "", "comments"]
    assert comments.str.contains("555-01").any() or comments.str.contains(" Lane| Avenue").any()


def test_mess_can_be_switched_off():
    s = simulate_study("default", seed=14, n_districts=600, teacher_respondents=1500,
                       mess=False)
    t = s.teacher_survey
    assert t["finished"].all() and (t["consent"] == cb.scale("yes_no")["Yes"]).all()
    assert (t["status"] == "IP Address").all() and t["response_id"].is_unique
    x = to_teacher_export(s)
    assert x["T9_1"].isin(cb.scale_labels("agreement")).all()
    assert x["district_id"].str.fullmatch(r"\d{7}").all()


# -- the exports ---------------------------------------------------------------------------
def test_raw_exports_follow_the_instrument(tmp_path, study):
    write_raw(study, tmp_path)
    raw = (tmp_path / "teacher_survey.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    assert rows[0] == [c.header for c in cb.columns("teacher_survey")]
    assert rows[2][0] == '{"ImportId":"startDate"}'
    assert len(rows) == 3 + len(study.teacher_survey)
    assert {len(r) for r in rows} == {len(rows[0])}
    x = pd.read_excel(tmp_path / "district_survey.xlsx", dtype=str)
    assert list(x.columns) == [c.header for c in cb.columns("district_survey")]
    assert len(x) == len(study.district_survey)


def test_csv_writer_quotes_like_the_csv_module(tmp_path, study):
    x = to_teacher_export(study).head(50).copy()
    x.loc[x.index[0], "T13"] = 'He said "hi", then\nleft'
    x.loc[x.index[1], "T2"] = np.nan
    simulate.write_qualtrics_csv(x, tmp_path / "t.csv")
    body = (tmp_path / "t.csv").read_bytes().decode("utf-8-sig").split("\r\n", 3)[3]
    expected = io.StringIO()
    csv.writer(expected, lineterminator="\r\n").writerows(
        x.fillna("").astype(str).itertuples(index=False, name=None))
    assert body == expected.getvalue()


def test_numeric_choice_codes(tmp_path, study):
    """Numeric exports carry the codebook's codes (positions for text codes)."""
    assert numeric_codes(cb, "agreement") == ["1", "2", "3", "4", "5"]
    assert numeric_codes(cb, "frequency") == ["0", "1", "2", "3", "4"]
    assert numeric_codes(cb, "grade_band") == ["1", "2", "3", "4"]
    assert numeric_codes(cb, "samr_self") == [str(v) for v in cb.samr_numeric.values()]
    text, num = to_teacher_export(study), to_teacher_export(study, choice_format="numeric")
    assert list(text.columns) == list(num.columns)
    for col in cb.columns("teacher_survey"):
        if col.scale:
            codes = dict(zip(cb.scale_labels(col.scale), numeric_codes(cb, col.scale),
                             strict=True))
            plain = text[col.header].isin(codes)
            assert (num.loc[plain, col.header] == text.loc[plain, col.header].map(codes)).all()
            assert num[col.header].isin(list(codes.values()) + [""]).all()
    assert set(num["Finished"]) <= {"0", "1"}
    write_raw(study, tmp_path, choice_format="numeric")
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert truth["choice_format"] == "numeric"
    assert "numeric" in (tmp_path / "README.md").read_text()
    assert load_scenario("numeric_codes")["export"]["choice_format"] == "numeric"
    with pytest.raises(ValueError, match="choice_format"):
        to_teacher_export(study, choice_format="codes")


def test_numeric_code_export_cleans_like_the_text_export(tmp_path, study):
    """The same study exported with numeric choice codes gives the same cleaned tables."""
    from analysis.data.clean import clean_study

    write_raw(study, tmp_path / "text")
    write_raw(study, tmp_path / "numeric", choice_format="numeric")
    text, numeric = clean_study(tmp_path / "text"), clean_study(tmp_path / "numeric")
    pd.testing.assert_frame_equal(text.teachers, numeric.teachers)
    pd.testing.assert_frame_equal(text.districts, numeric.districts)


def test_number_formatting_matches_python():
    values = pd.Series([12.0, 0.5, 1e-4, 123456.0, -0.0, 7.25, np.nan, 33.3333333, 1.1])
    got = simulate._number_column(values).to_pylist()
    assert got == [simulate._format_number(v) for v in values]

"""The cleaning pipeline on the bundled study and on edited small studies."""

import hashlib
import json
import re

import numpy as np
import pandas as pd
import pytest
from helpers import RAW, write_study

from analysis.data.clean import clean_study, normalise_label, run_clean
from analysis.study.codebook import load_codebook

cb = load_codebook()

SECTION6_TEACHER_COLUMNS = [
    "weight", "stratum", "district_id", "school_id", "fpc_districts", "support_model",
    "locale", "grade_band", "subject", "samr_level", "non_substitutive", "transformative",
    "nonsub_share", "samr_index", "frl_pct", "enrollment", "tech_spend_pp",
    "students_per_device", "years_teaching", "consent", "use_freq", "coaching_hours",
    "pd_hours", "minutes_lost", "campuses_per_director", "coach_coverage", "it_control",
    "vision", "support_model_derived", "role_fidelity", "position_cut",
]


def test_processed_teachers_have_the_contract_columns(teachers):
    missing = [c for c in SECTION6_TEACHER_COLUMNS if c not in teachers]
    assert missing == []
    assert list(teachers["samr_level"].cat.categories) == ["S", "A", "M", "R"]
    assert teachers["samr_level"].cat.ordered
    assert set(teachers["locale"].cat.categories) == {"city", "suburb", "town", "rural"}
    assert set(teachers["support_model"].dropna().unique()) <= set(
        cb.support_model_codes() + ["other"])
    assert teachers["district_id"].str.fullmatch(r"\d{7}").all()


def test_processed_districts(processed_dir):
    d = pd.read_parquet(processed_dir / "districts.parquet")
    frame = pd.read_csv(RAW / "frame_districts.csv", dtype={"district_id": str})
    assert d["district_id"].is_unique
    # nonresponse adjustment within strata keeps the population count of districts
    assert d["district_weight"].sum() == pytest.approx(len(frame), rel=1e-12)
    per_stratum = d.groupby("stratum")["district_weight"].sum()
    assert per_stratum.to_dict() == pytest.approx(frame.groupby("stratum").size().to_dict())


def test_teacher_weights_follow_the_instrument(teachers):
    per_school = teachers.groupby("school_id").agg(w=("weight", "sum"),
                                                    dw=("district_weight", "first"),
                                                    nt=("n_teachers", "first"))
    assert np.allclose(per_school["w"], per_school["dw"] * per_school["nt"])


def test_outcomes_are_consistent(teachers):
    lvl = teachers["samr_level"]
    assert ((teachers["non_substitutive"] == 1) == lvl.isin(["A", "M", "R"])).all()
    assert ((teachers["transformative"] == 1) == lvl.isin(["M", "R"])).all()
    share = teachers["nonsub_share"].dropna()
    assert share.between(0, 1).all()
    assert teachers["samr_index"].dropna().between(1, 4).all()


def test_flow_is_a_consistent_chain(processed_dir, teachers):
    flow = pd.read_csv(processed_dir / "flow.csv")
    t = flow[flow["table"] == "teachers"].reset_index(drop=True)
    assert (t["n_out"] == t["n_in"] - t["n_dropped"]).all()
    assert (t["n_in"].iloc[1:].to_numpy() == t["n_out"].iloc[:-1].to_numpy()).all()
    assert t["n_out"].iloc[-1] == len(teachers)
    log = pd.read_csv(processed_dir / "cleaning_log.csv", dtype=str)
    dropped = log[log["new_value"] == "row dropped"].groupby("rule").size()
    for rule, n in t.set_index("rule")["n_dropped"].items():
        assert dropped.get(rule, 0) == n, rule
    assert list(t["rule"][:7]) == ["read", "not_consented", "partial_without_outcomes",
                                   "speeder", "straight_lining", "failed_attention_check",
                                   "duplicate_response"]


def test_manifest_hashes(processed_dir):
    m = json.loads((processed_dir / "manifest.json").read_text())
    for name, digest in m["raw"].items():
        assert hashlib.sha256((RAW / name).read_bytes()).hexdigest() == digest
    for name, digest in m["processed"].items():
        assert hashlib.sha256((processed_dir / name).read_bytes()).hexdigest() == digest
    assert m["synthetic"] is True and m["codebook_version"] == cb.version


def _personal_values():
    raw = pd.read_csv(RAW / "teacher_survey.csv", skiprows=[1, 2], dtype=str,
                      keep_default_na=False)
    names = set(raw["RecipientLastName"]) | set(raw["RecipientFirstName"])
    emails = set(raw["RecipientEmail"])
    ips = set(raw["IPAddress"])
    comments = {c for c in raw["T13"] if c}
    d = pd.read_excel(RAW / "district_survey.xlsx", dtype=str)
    names |= set(d["Your name"]) | {n for full in d["Your name"] for n in full.split()}
    emails |= set(d["Email Address"])
    return {v for v in names | emails | ips | comments if v}


def test_no_personal_data_reaches_processed(processed_dir):
    personal = _personal_values()
    assert len(personal) > 100
    email = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")
    ip = re.compile(r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b")
    for path in processed_dir.iterdir():
        if path.suffix == ".parquet":
            text = pd.read_parquet(path).astype(str).to_csv(index=False)
        else:
            text = path.read_text()
        assert not email.search(text), path.name
        assert not ip.search(text), path.name
        # whole words only: random IDs such as R_Y9cp9ie8Zdv3Ari hold name-like pieces
        words = set(re.findall(r"(?<!\w)[A-Za-z][A-Za-z.@'-]+(?!\w)", text))
        leaked = {v for v in personal if v in words or (" " in v and v in text)}
        assert leaked == set(), path.name


def test_raw_files_are_never_modified(tmp_path):
    raw = write_study(tmp_path / "raw")
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in raw.iterdir()}
    mtimes = {p.name: p.stat().st_mtime_ns for p in raw.iterdir()}
    run_clean(raw, tmp_path / "processed")
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in raw.iterdir()}
    assert before == after
    assert mtimes == {p.name: p.stat().st_mtime_ns for p in raw.iterdir()}


def test_cleaning_is_reproducible_to_the_byte(tmp_path):
    raw = write_study(tmp_path / "raw")
    run_clean(raw, tmp_path / "a")
    run_clean(raw, tmp_path / "b")
    for name in ("teachers.parquet", "districts.parquet", "flow.csv", "cleaning_log.csv",
                 "manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


# -- rules on edited exports -------------------------------------------------
def _clean(tmp_path, **edits):
    raw = write_study(tmp_path / "raw", **edits)
    return clean_study(raw)


def _first_complete(t):
    return t.index[(t["Finished"] == "True") & (t["T1"] == "Yes")][0]


def test_consent_no_is_dropped_and_logged(tmp_path):
    ids = {}

    def edit(t):
        i = _first_complete(t)
        t.loc[i, "T1"] = "No"
        ids["id"] = t.loc[i, "ResponseId"]
        return t

    r = _clean(tmp_path, teachers=edit)
    assert ids["id"] not in set(r.teachers["response_id"])
    hit = r.log[(r.log["record_id"] == ids["id"])]
    assert list(hit["rule"]) == ["not_consented"]


def test_out_of_range_and_non_numbers_become_missing_not_dropped(tmp_path):
    ids = {}

    def edit(t):
        idx = t.index[(t["Finished"] == "True") & (t["T1"] == "Yes")][:2]
        t.loc[idx[0], "T2"] = "75"
        t.loc[idx[1], "T2"] = "twelve"
        ids["a"], ids["b"] = t.loc[idx, "ResponseId"]
        return t

    r = _clean(tmp_path, teachers=edit)
    kept = r.teachers.set_index("response_id")
    # text typed into a number field is free text: it is never copied into the log
    for key, rule, old in (("a", "out_of_range_set_missing", "75"),
                           ("b", "not_a_number_set_missing", "<redacted>")):
        rid = ids[key]
        row = r.log[(r.log["record_id"] == rid) & (r.log["column"] == "years_teaching")]
        assert list(row["rule"]) == [rule] and list(row["old_value"]) == [old]
        if rid in kept.index:      # unless another rule dropped the response
            assert np.isnan(kept.loc[rid, "years_teaching"])


def test_label_variants_are_normalised_and_logged(tmp_path):
    def edit(t):
        i = _first_complete(t)
        t.loc[i, "T3"] = "  elementary   (k-5) "
        t.loc[i, "T9_5"] = "AGREE"
        return t

    r = _clean(tmp_path, teachers=edit)
    changes = r.log[r.log["rule"] == "normalise_label"]
    assert {"grade_band", "attention_check"} <= set(changes["column"])
    assert normalise_label("\u201cStrongly\u00a0Agree\u201d ") == '"strongly agree"'


def test_duplicate_submissions_keep_the_last(tmp_path):
    ids = {}

    def edit(t):
        i = _first_complete(t)
        first = t.loc[[i]].copy()
        first["ResponseId"] = "R_duplicatefirst"
        first["RecordedDate"] = "2026-01-02 08:00:00"
        ids["last"] = t.loc[i, "ResponseId"]
        return pd.concat([first, t], ignore_index=True)

    r = _clean(tmp_path, teachers=edit)
    kept = set(r.teachers["response_id"])
    assert "R_duplicatefirst" not in kept
    dropped = r.log[r.log["record_id"] == "R_duplicatefirst"]
    assert list(dropped["rule"]) == ["duplicate_response"]


def test_partial_with_outcomes_kept_and_flagged(tmp_path):
    r = _clean(tmp_path)
    part = r.teachers[r.teachers["partial"]]
    assert len(part) > 0
    assert part["samr_level"].notna().all()


def test_leading_zeros_restored(tmp_path):
    def edit(d):
        d["District NCES ID"] = d["District NCES ID"].str.lstrip("0")
        return d

    r = _clean(tmp_path, districts=edit)
    assert r.districts["district_id"].str.fullmatch(r"\d{7}").all()
    assert (r.log["rule"] == "restore_leading_zeros").sum() > 0


def test_unknown_district_is_reported(tmp_path):
    def edit(t):
        t.loc[_first_complete(t), "district_id"] = "9999999"
        return t

    r = _clean(tmp_path, teachers=edit)
    row = r.flow[r.flow["rule"] == "unknown_district_id"]
    assert int(row["n_dropped"].iloc[0]) >= 1


def test_d1_d2_inconsistency_logged_and_derived_model_kept(tmp_path):
    r = _clean(tmp_path)
    d = r.districts
    assert "support_model_derived" in d
    six = d["support_model"].isin(cb.support_model_codes())
    mismatch = six & (d["support_model"].astype(str) != d["support_model_derived"].astype(str))
    logged = r.log[r.log["rule"] == "d1_d2_inconsistent_kept_self_report"]
    assert set(logged["record_id"]) == set(d.loc[mismatch, "district_id"])

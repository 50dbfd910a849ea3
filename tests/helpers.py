"""Shared helpers of the test suite (no fixtures here; see conftest.py)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "reference"
RAW = ROOT / "data" / "raw"

#: Model variables of M1 (and design columns) as stored in tests/reference/m1_data.csv.gz.
M1_COLUMNS = ["response_id", "non_substitutive", "support_model", "frl_pct", "enrollment",
              "locale", "tech_spend_pp", "students_per_device", "years_teaching", "grade_band",
              "subject", "weight", "stratum", "district_id", "fpc_districts",
              # other outcomes (M2-M4) and the moderators (M5-M8)
              "transformative", "nonsub_share", "samr_index", "it_control", "vision",
              "role_fidelity", "campuses_per_director", "position_cut", "support_spend_pp"]


def small_study(seed: int = 101):
    """A small simulated study (about 60 districts, 1,500 teacher rows), cached per seed."""
    from analysis.study.simulate import simulate_study

    if seed not in _STUDIES:
        _STUDIES[seed] = simulate_study("default", seed=seed, n_districts=700,
                                        teacher_respondents=1500)
    return _STUDIES[seed]


_STUDIES: dict = {}


def write_study(out_dir, *, seed: int = 101, teachers=None, districts=None):
    """Write a small study's raw files, after optional edits of the export tables.

    ``teachers`` / ``districts``: functions that take the export DataFrame (headers and
    labels as the platform writes them) and return the edited one.
    """
    from analysis.study import simulate

    study = small_study(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, fs = simulate.to_frame_exports(study)
    fd.to_csv(out_dir / "frame_districts.csv", index=False)
    fs.to_csv(out_dir / "frame_schools.csv", index=False)
    d = simulate.to_district_export(study)
    t = simulate.to_teacher_export(study)
    if districts is not None:
        d = districts(d.copy())
    if teachers is not None:
        t = teachers(t.copy())
    simulate.write_form_xlsx(d, out_dir / "district_survey.xlsx")
    simulate.write_qualtrics_csv(t, out_dir / "teacher_survey.csv")
    return out_dir

#: Design variables of the bundled study as stored in tests/reference/design_data.csv.gz.
DESIGN_COLUMNS = ["response_id", "district_id", "school_id", "stratum", "fpc_districts",
                  "weight", "support_model", "samr_level", "non_substitutive", "frl_pct"]

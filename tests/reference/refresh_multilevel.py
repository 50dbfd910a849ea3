"""Regenerate the multilevel reference data of the bundled study and lme4's numbers for it.

    .venv/bin/python tests/reference/refresh_multilevel.py   (needs R with lme4)

1. cleans the bundled data/raw with the package's cleaner (``clean_study``) and
   writes M1's variables, the school and district IDs and the two weights of
   ``model_data(teachers)`` to tests/reference/multilevel_data.csv.gz (gzip with
   mtime 0, so an unchanged study gives an identical file);
2. runs tests/reference/multilevel_reference.R, which writes
   multilevel_reference.csv from R's lme4 (never from this package).

Rerun it whenever data/raw is regenerated (a test checks that the cleaner still
reproduces the stored data).
"""

import subprocess
from pathlib import Path

from analysis.data.clean import clean_study
from analysis.stats.models import model_data

ROOT = Path(__file__).resolve().parents[2]

#: Columns of multilevel_data.csv.gz (kept in step with tests/stats/test_multilevel.py).
COLUMNS = ["response_id", "district_id", "school_id", "non_substitutive", "support_model",
           "frl_pct", "enrollment", "locale", "tech_spend_pp", "students_per_device",
           "years_teaching", "grade_band", "subject", "weight", "district_weight"]


def main():
    teachers = clean_study(ROOT / "data/raw").teachers
    out = ROOT / "tests/reference/multilevel_data.csv.gz"
    model_data(teachers)[COLUMNS].to_csv(out, index=False, float_format="%.17g",
                                         compression={"method": "gzip", "mtime": 0})
    subprocess.run(["Rscript", "tests/reference/multilevel_reference.R"], cwd=ROOT, check=True)


if __name__ == "__main__":
    main()

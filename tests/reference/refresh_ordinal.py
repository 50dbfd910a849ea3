"""Regenerate the ordinal-model reference data of the bundled study and R's numbers.

    .venv/bin/python tests/reference/refresh_ordinal.py     (needs R with the survey package)

1. cleans the bundled data/raw with the package's cleaner (nothing is written there);
2. writes the variables of the proportional-odds model (``samr_level`` on M1's
   covariates) and the design columns to tests/reference/ordinal_data.csv.gz
   (gzip with mtime 0, so unchanged data give identical bytes);
3. runs tests/reference/ordinal_reference.R, which writes ordinal_reference.csv and
   ordinal_ame_reference.csv from R's survey package (never from this package).
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from analysis.data.clean import clean_study  # noqa: E402
from analysis.stats.models import model_data  # noqa: E402

#: Columns of ordinal_data.csv.gz (tests/stats/test_ordinal.py reads the same list).
ORDINAL_COLUMNS = ["response_id", "samr_level", "support_model", "frl_pct", "enrollment",
                   "locale", "tech_spend_pp", "students_per_device", "years_teaching",
                   "grade_band", "subject", "weight", "stratum", "district_id",
                   "fpc_districts"]


def main():
    teachers = clean_study(ROOT / "data/raw").teachers
    data = model_data(teachers)[ORDINAL_COLUMNS]
    data.to_csv(ROOT / "tests/reference/ordinal_data.csv.gz", index=False, float_format="%.17g",
                compression={"method": "gzip", "mtime": 0})
    subprocess.run(["Rscript", "tests/reference/ordinal_reference.R"], cwd=ROOT, check=True)


if __name__ == "__main__":
    main()

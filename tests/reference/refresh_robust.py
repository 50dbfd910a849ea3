"""Regenerate R's numbers for the cluster-robust GLMs (robust_reference.csv,
robust_ame_reference.csv).

    .venv/bin/python tests/reference/refresh_robust.py    (needs R: sandwich, clubSandwich)

The input is m1_data.csv.gz, which refresh_m1.py writes from the package's cleaner.
This script first checks that it still matches what the cleaner makes of data/raw
(if not, run refresh_m1.py first), then runs robust_reference.R.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from helpers import M1_COLUMNS  # noqa: E402

from analysis.data.clean import clean_study  # noqa: E402
from analysis.stats.models import model_data  # noqa: E402


def main():
    ours = model_data(clean_study(ROOT / "data/raw").teachers)[M1_COLUMNS]
    stored = pd.read_csv(ROOT / "tests/reference/m1_data.csv.gz",
                         dtype={"district_id": str, "response_id": str})
    same = list(stored["response_id"]) == list(ours["response_id"]) and all(
        np.allclose(ours[c].astype(float), stored[c], equal_nan=True, rtol=0, atol=0)
        if pd.api.types.is_numeric_dtype(stored[c])
        else (ours[c].astype(object).fillna("") == stored[c].fillna("")).all()
        for c in M1_COLUMNS)
    if not same:
        sys.exit("tests/reference/m1_data.csv.gz is out of date: run refresh_m1.py first")
    subprocess.run(["Rscript", "tests/reference/robust_reference.R"], cwd=ROOT, check=True)


if __name__ == "__main__":
    main()

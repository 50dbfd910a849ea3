"""Regenerate the reference data of the bundled study and R's numbers for it.

    .venv/bin/python tests/reference/refresh_m1.py     (needs R with the survey package)

1. cleans the bundled data/raw into a temporary folder with the package's cleaner;
2. writes the model variables to tests/reference/m1_data.csv.gz and the design
   variables to tests/reference/design_data.csv.gz;
3. runs tests/reference/m1_reference.R and design_reference.R, which write
   m1_reference.csv, m1_ame_reference.csv and design_reference.csv from R's survey
   package (never from this package).
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from helpers import DESIGN_COLUMNS, M1_COLUMNS  # noqa: E402

from analysis.data.clean import run_clean  # noqa: E402
from analysis.stats.models import model_data  # noqa: E402


def main():
    with tempfile.TemporaryDirectory() as tmp:
        run_clean(ROOT / "data/raw", Path(tmp))
        teachers = pd.read_parquet(Path(tmp) / "teachers.parquet")
    write_csv(model_data(teachers)[M1_COLUMNS], ROOT / "tests/reference/m1_data.csv.gz")
    write_csv(teachers[DESIGN_COLUMNS], ROOT / "tests/reference/design_data.csv.gz")
    for script in ("m1_reference.R", "design_reference.R"):
        subprocess.run(["Rscript", f"tests/reference/{script}"], cwd=ROOT, check=True)


def write_csv(df: pd.DataFrame, path: Path) -> None:
    df.to_csv(path, index=False, float_format="%.17g", compression={"method": "gzip", "mtime": 0})


if __name__ == "__main__":
    main()

"""Session fixtures: the bundled study cleaned and reported once, in temporary folders."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import RAW  # noqa: E402


@pytest.fixture(scope="session")
def processed_dir(tmp_path_factory):
    from analysis.data.clean import run_clean

    out = tmp_path_factory.mktemp("processed")
    run_clean(RAW, out)
    return out


@pytest.fixture(scope="session")
def reports_dir(processed_dir, tmp_path_factory):
    from analysis.report.publish import run_report

    out = tmp_path_factory.mktemp("reports")
    run_report(processed_dir, out)
    return out


@pytest.fixture(scope="session")
def teachers(processed_dir):
    import pandas as pd

    return pd.read_parquet(processed_dir / "teachers.parquet")

"""Every path and default of the project, and nothing else."""

from pathlib import Path

#: Default folders, relative to the working directory (the project root when
#: run through the Makefile).
RAW_DIR = Path("data/raw")
PROCESSED_DIR = Path("data/processed")
REPORTS_DIR = Path("reports")

#: Seed of the bundled synthetic study and of every random step.
SEED = 20261130

#: Scenario of the bundled synthetic study (see analysis/study/scenarios.yaml).
DEFAULT_SCENARIO = "default"

#: Publishing thresholds: estimates based on fewer teachers or districts are
#: suppressed in published tables and figures.
MIN_CELL_TEACHERS = 10
MIN_CELL_DISTRICTS = 3

#: Names of the processed outputs.
TEACHERS_FILE = "teachers.parquet"
DISTRICTS_FILE = "districts.parquet"
FLOW_FILE = "flow.csv"
CLEANING_LOG_FILE = "cleaning_log.csv"
MANIFEST_FILE = "manifest.json"
RESULTS_FILE = "results.json"
TRUTH_FILE = "truth.json"

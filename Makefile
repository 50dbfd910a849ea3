# support-models: make help lists every target.
# On a fresh machine `make report` and `make test` install what they need.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
RAW    := data/raw
PROC   := data/processed
REPORTS := reports

# the survey exports may be .csv, .xlsx, .sav or .dta (analysis/study/codebook.yaml `files`)
RAW_FILES  := $(RAW)/frame_districts.csv $(RAW)/frame_schools.csv $(wildcard $(RAW)/district_survey.* $(RAW)/teacher_survey.*)
CODE       := $(shell find analysis -name '*.py' -o -name '*.yaml' 2>/dev/null)
PROCESSED  := $(PROC)/teachers.parquet $(PROC)/districts.parquet $(PROC)/flow.csv $(PROC)/manifest.json

.DEFAULT_GOAL := help
NOTEBOOKS  := $(wildcard notebooks/[0-9][0-9]-*.ipynb)

.PHONY: help env data data-raw analysis report notebooks lab test bench lint clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

env: $(STAMP) ## create .venv from the lock file (when missing or stale)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e . \
	  || $(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

data: $(PROCESSED) ## clean data/raw into data/processed (teachers, districts, flow, log)

$(PROCESSED) &: $(STAMP) $(RAW_FILES) $(CODE)
	$(PY) -m analysis clean --raw $(RAW) --processed $(PROC)

data-raw: $(STAMP) ## regenerate the bundled synthetic raw data (byte-identical)
	$(PY) -m analysis simulate --out $(RAW)

analysis: $(REPORTS)/results.json ## fit the models and test the hypotheses (results.json, tables, figures)

report: $(REPORTS)/results.json $(REPORTS)/notebooks/.done ## the whole pipeline: results.json, tables, figures, report.html, summary.md, notebooks

$(REPORTS)/results.json: $(PROCESSED) $(CODE)
	$(PY) -m analysis report --processed $(PROC) --reports $(REPORTS)

notebooks: $(REPORTS)/notebooks/.done ## execute the notebooks into reports/notebooks/

$(REPORTS)/notebooks/.done: $(REPORTS)/results.json $(NOTEBOOKS)
	$(PY) -m analysis notebooks --raw $(RAW) --processed $(PROC) --reports $(REPORTS)
	@touch $@

lab: $(STAMP) ## open JupyterLab on the project's environment (kernel registered)
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (support-models)"
	cd notebooks && ../$(VENV)/bin/jupyter lab

test: $(STAMP) ## run the test suite
	$(PY) -m pytest -q

bench: $(STAMP) ## speed and memory benchmarks (reports/bench/bench.md), ratios to baselines
	$(PY) benchmarks/run_all.py

lint: $(STAMP) ## ruff
	$(VENV)/bin/ruff check analysis tests

clean: ## remove outputs (data/processed and reports), keep .venv and data/raw
	find $(PROC) -mindepth 1 ! -name README.md -delete 2>/dev/null || true
	find $(REPORTS) -mindepth 1 ! -name README.md -delete 2>/dev/null || true

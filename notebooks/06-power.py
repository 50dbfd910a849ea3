# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · Planning the next survey: power and the number of districts
#
# The analytic minimum detectable effect of a two-level design (teachers in districts)
# depends on the number of districts, teachers per district, the intraclass correlation
# and how much the covariates explain (Bloom; the PowerUp! formulas, checked in the tests
# against published values). The design parameters below are estimated from the processed
# study; `make report` stores the same analysis in `results.json` under `power`.
# Simulation-based power with the project's simulator: `python -m analysis power
# --simulate` (parallel with joblib, or on a Dask cluster).

# %% tags=["parameters"]
raw_dir = "../data/raw"
processed_dir = "../data/processed"
reports_dir = "../reports"
seed = 20261130

# %%
from pathlib import Path

import pandas as pd

from analysis.report.publish import load_processed, load_results
from analysis.stats.power import design_parameters

teachers, districts, manifest = load_processed(Path(processed_dir))
design_parameters(teachers)

# %% [markdown]
# ## What `make report` stored

# %%
power = load_results(Path(reports_dir))["power"]
pd.json_normalize(power["mdes"])

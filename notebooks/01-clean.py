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
# # 01 · Cleaning: from raw survey exports to the analysed sample
#
# The study has three raw sources in `data/raw/`: the district survey (a web-form Excel
# export), the teacher survey (a Qualtrics CSV export) and the sampling frame. This notebook
# runs the package's cleaning pipeline on them **in memory** (nothing is written) and shows
# what it did: how many responses each quality rule of the instrument removed, every change
# it logged, and the survey weights it computed.
#
# The bundled data are **synthetic** (see `data/raw/README.md`).

# %% tags=["parameters"]
raw_dir = "../data/raw"
processed_dir = "../data/processed"
reports_dir = "../reports"
seed = 20261130

# %%
from pathlib import Path

from analysis.data.clean import clean_study
from analysis.data.weights import weights_report

result = clean_study(Path(raw_dir))

# %% [markdown]
# ## Responses kept and dropped at each rule
#
# The rules run in the order of the instrument (section 3). Partial responses are kept only
# when every outcome item is answered; they stay flagged in the `partial` column.

# %%
result.flow

# %% [markdown]
# ## What the cleaner changed
#
# One row of `cleaning_log.csv` per change (personal values are never copied into it).
# Counted by rule:

# %%
result.log.groupby("rule").size().sort_values(ascending=False)

# %% [markdown]
# ## Weights
#
# District base weight = 1 / selection probability, adjusted for district nonresponse within
# strata; teacher weight = district weight × teachers in the school / responding teachers.
# The Kish effective sample size and the design effect due to weighting, by stratum:

# %%
weights_report(result.teachers, weights="weight", by="stratum")

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
# # 05 · Robustness: how much do the associations depend on the analyst's choices?
#
# `make report` computes the robustness analyses once (`analysis.stats.robustness`) and
# stores them in `results.json` under `robustness`: multiple imputation of missing answers
# (Rubin's rules), E-values for unmeasured confounding, propensity-score weighting with a
# balance table, a specification curve over many defensible analyses, and
# leave-one-state-out / leave-one-stratum-out estimates. This notebook reads them and
# recomputes the quick ones. Everything here is about associations, not causal effects.

# %% tags=["parameters"]
raw_dir = "../data/raw"
processed_dir = "../data/processed"
reports_dir = "../reports"
seed = 20261130

# %%
from pathlib import Path

import pandas as pd

from analysis.report.publish import load_processed, load_results
from analysis.stats.robustness import support_model_evalues

teachers, districts, manifest = load_processed(Path(processed_dir))
robustness = load_results(Path(reports_dir))["robustness"]
sorted(robustness)

# %% [markdown]
# ## Unmeasured confounding: E-values
#
# How strongly would an unmeasured confounder have to be associated with both the support
# model and the outcome (risk-ratio scale) to explain away each association?

# %%
support_model_evalues(teachers)

# %% [markdown]
# ## Multiple imputation (M imputations, Rubin's rules with Barnard-Rubin df)

# %%
pd.json_normalize(robustness["multiple_imputation"]["ame"])

# %% [markdown]
# ## Propensity-score weighting (overlap weights times survey weights)

# %%
pd.json_normalize(robustness["propensity"]["ame"])

# %%
pd.json_normalize(robustness["propensity"]["balance"])

# %% [markdown]
# ## The specification curve (multiverse)

# %%
pd.json_normalize(robustness["multiverse"]["summary"])

# %%
pd.DataFrame(robustness["multiverse"]["specifications"]).head(20)

# %% [markdown]
# ## Leave one state or stratum out

# %%
pd.json_normalize(robustness["leave_one_out"])

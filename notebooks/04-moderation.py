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
# # 04 · Moderation and the hypotheses H1-H8
#
# The hypotheses live in `analysis/stats/hypotheses.yaml`: each states its estimand, model,
# direction, smallest effect of interest and multiplicity family. Change a hypothesis by
# editing that file; this notebook only runs the one function that tests them all.

# %% tags=["parameters"]
raw_dir = "../data/raw"
processed_dir = "../data/processed"
reports_dir = "../reports"
seed = 20261130

# %%
from pathlib import Path

from analysis.report.publish import load_processed
from analysis.stats.hypotheses import evaluate_hypotheses

teachers, districts, manifest = load_processed(Path(processed_dir))
results = evaluate_hypotheses(teachers)
results.summary

# %% [markdown]
# ## The verdict table (as in results.json)

# %%
results.table[["id", "estimate", "ci_low", "ci_high", "p_value", "p_adjusted", "units",
               "verdict"]]

# %% [markdown]
# ## Conditional associations (H4-H7)
#
# AMEs against Tech Support Only with the moderator set to each value for every teacher.

# %%
results.moderation

# %% [markdown]
# ## The grade order (H3) and cost-effectiveness (H8)

# %%
results.trend

# %%
results.cost_effectiveness

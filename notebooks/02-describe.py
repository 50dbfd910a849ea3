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
# # 02 · Describe: how teachers' students use technology, by support model
#
# Weighted, design-based descriptions of the processed data (`make data` writes them):
# the SAMR level teachers report (T7) in each kind of district, and the unadjusted rate of
# non-substitutive use. These are descriptions, not adjusted comparisons: districts that
# choose coaching differ from those that do not (they are larger and richer), which the
# models in notebook 03 adjust for.

# %% tags=["parameters"]
raw_dir = "../data/raw"
processed_dir = "../data/processed"
reports_dir = "../reports"
seed = 20261130

# %%
from pathlib import Path

from analysis.report.publish import load_processed, samr_distribution
from analysis.stats.models import model_data, study_design

teachers, districts, manifest = load_processed(Path(processed_dir))
print(f"{len(teachers):,} teachers in {districts['district_id'].nunique()} districts; "
      f"synthetic data: {manifest['synthetic']}")

# %% [markdown]
# ## SAMR level by support model (weighted shares, 95% CIs)

# %%
samr_distribution(teachers)[["label", "level", "estimate", "ci_low", "ci_high", "cv",
                             "n_teachers"]]

# %% [markdown]
# ## Unadjusted rate of non-substitutive use, with design effects
#
# A design effect well above 1 says the clustering of teachers in districts makes the
# estimate much less precise than a simple random sample of the same size would be.

# %%
design = study_design(model_data(teachers))
design.mean("non_substitutive", by="support_model", deff=True)

# %% [markdown]
# ## Is the SAMR level associated with the support model?
#
# Rao-Scott corrected chi-square test of the two-way table (design-based).

# %%
design.chisq_test("support_model", "samr_level")

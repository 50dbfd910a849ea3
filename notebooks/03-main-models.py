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
# # 03 · The main model M1 and the other outcomes
#
# M1 is a design-based logistic regression of non-substitutive use (SAMR level A or higher)
# on the district's support model, adjusted for district poverty, size, locale, spending
# and device ratio, and teacher experience, grade band and subject (instrument section 6).
# Its coefficients and standard errors equal R's `survey::svyglm` to six significant digits
# (see `tests/reference/`). We report average marginal effects (AMEs): the difference in
# the adjusted rate of non-substitutive use between each model and Tech Support Only, in
# percentage points. These are associations, not causal effects.

# %% tags=["parameters"]
raw_dir = "../data/raw"
processed_dir = "../data/processed"
reports_dir = "../reports"
seed = 20261130

# %%
from pathlib import Path

from analysis.report.publish import load_processed
from analysis.stats.hypotheses import fit_models

teachers, districts, manifest = load_processed(Path(processed_dir))
fits = fit_models(teachers, ["M1", "M2", "M3", "M4"])
m1 = fits["M1"]
print(m1.summary())

# %% [markdown]
# ## Adjusted rates and AMEs (percentage points)

# %%
m1.predicted_rates("support_model").assign(
    estimate=lambda d: 100 * d["estimate"], ci_low=lambda d: 100 * d["ci_low"],
    ci_high=lambda d: 100 * d["ci_high"])

# %%
m1.ame("support_model", reference="tech_support_only")

# %% [markdown]
# ## All pairwise contrasts (Holm-adjusted)

# %%
m1.pairwise("support_model")

# %% [markdown]
# ## The other outcomes
#
# M2: transformative use (SAMR M or R); M3: share of T6 frequency on A, M and R items
# (fractional logit); M4: the frequency-weighted SAMR index (linear, index points).

# %%
{name: fit.ame("support_model", reference="tech_support_only")[["level", "estimate",
                                                                 "ci_low", "ci_high"]]
 for name, fit in fits.items() if name != "M1"}

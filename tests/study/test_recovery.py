"""Parameter recovery: M1, fitted on a simulated study's cleaned exports, finds the truth.

A large study (the default population of 8,000 districts, about 2,000 responding,
60,000 responding teachers) goes the whole way a real one does: the simulator
writes the raw exports, the cleaner reads and cleans them, M1 is fitted on the
survey design and its average marginal effects are compared with ``truth.json``
(the population AMEs: every population teacher under each model).

Variance. ``truth.json`` holds what each model does to the population's teachers, an
analytic (model) quantity. The instrument's design (section 6) puts a finite-population
correction on the district stage (35-40% of districts are sampled), which is right for
the census association of the finite population but leaves out the population's own
chance imbalance between models; the Monte Carlo study (``benchmarks/monte_carlo.py``,
100 replications) measured 86-91% coverage of the truth with it, and 93-97% with the
usual with-replacement (no-FPC) variance. So these tests compare the truth with intervals
from the same design without the FPC; the reported analyses keep the instrument's design.

Criteria. Whether one study's 95% intervals hold the truth is a coin flip, not a
regression test: five intervals that each cover 95% of the time all cover in only about
77% of studies. So the one large study is held to simultaneous (Bonferroni) intervals,
and the issue's 95% coverage and Holm type-I error are tested over 20 replications each
(seeds fixed in advance), with thresholds a calibrated procedure fails with probability
below 0.02. The full Monte Carlo (``benchmarks/monte_carlo.py``) gives the figures.

History, for honesty. Seeds of the single-study tests (the project seed + 1 for the
default scenario, + 2 for the null) were fixed before the tests were first run. A first
draft of the simulator missed ``coaching`` at 95% (seed + 1); a second draft missed
``director``. In this version, with 60,000 teachers, seed + 1 missed ``coaching`` at 95%
(inside its Bonferroni interval) and seed + 2 of the null scenario gave ``consultant`` a
Holm-adjusted p of 0.0049, with or without the FPC; 40 null replications of that size
(with-replacement variance) then gave a family-wise rate of 2.5% and standard errors
equal to the spread of the estimates (1.69 against 1.67 pp for coaching), so the
single-seed tests were replaced by the replication tests below.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from analysis import config
from analysis.data.clean import clean_study
from analysis.stats.design import SurveyDesign
from analysis.stats.models import fit_svyglm, model_data
from analysis.study.codebook import load_codebook
from analysis.study.simulate import simulate_study, write_raw

cb = load_codebook()
TEACHERS = 60_000
RECOVERY_SEED = config.SEED + 1
NULL_SEED = config.SEED + 2


def _fit_ames(tmp: Path, scenario: str, seed: int):
    """M1 on the cleaned study, with the with-replacement (no-FPC) design variance."""
    study = simulate_study(scenario, seed=seed, teacher_respondents=TEACHERS)
    write_raw(study, tmp)
    teachers = model_data(clean_study(tmp).teachers)
    d = cb.design
    design = SurveyDesign(teachers, weights=d["weight"], strata=d["strata"], psu=d["psu"],
                          lonely_psu="adjust")
    fit = fit_svyglm(cb.model_formula("M1"), design=design, family="quasibinomial")
    ame = fit.ame("support_model", reference=cb.reference_model).set_index("level")
    return study, fit, ame


@pytest.fixture(scope="module")
def recovery(tmp_path_factory):
    return _fit_ames(tmp_path_factory.mktemp("recovery"), "default", RECOVERY_SEED)


@pytest.mark.slow
def test_recovery_study_is_large(recovery):
    study, fit, _ = recovery
    assert 1800 <= study.truth["n_responding_districts"] <= 2400
    assert fit.n > 0.7 * TEACHERS


@pytest.mark.slow
def test_m1_recovers_every_true_ame_simultaneously(recovery):
    """Each true AME inside its Bonferroni-adjusted interval (95% for the five together)."""
    study, fit, ame = recovery
    level = 1 - 0.05 / len(ame)
    wide = fit.ame("support_model", reference=cb.reference_model, level=level).set_index("level")
    truth = pd.Series(study.truth["ame_pp"]) / 100
    missed = [f"{m}: {100 * wide.loc[m, 'estimate']:.2f} pp [{100 * wide.loc[m, 'ci_low']:.2f}, "
              f"{100 * wide.loc[m, 'ci_high']:.2f}], truth {100 * truth[m]:.2f}"
              for m in wide.index if not wide.loc[m, "ci_low"] <= truth[m] <= wide.loc[m, "ci_high"]]
    assert missed == []


# ---------------------------------------------------------------------------
# Coverage and type-I error over replications (small Monte Carlo in the suite)
# ---------------------------------------------------------------------------
REPLICATIONS = 20
MC_TEACHERS = 10_000
MC_SEEDS = [config.SEED + 100 + k for k in range(REPLICATIONS)]


def _replication(scenario: str, seed: int) -> pd.DataFrame:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="recovery-") as tmp:
        study = simulate_study(scenario, seed=seed, teacher_respondents=MC_TEACHERS)
        write_raw(study, Path(tmp))
        teachers = model_data(clean_study(Path(tmp)).teachers)
    d = cb.design
    design = SurveyDesign(teachers, weights=d["weight"], strata=d["strata"], psu=d["psu"],
                          lonely_psu="adjust")
    fit = fit_svyglm(cb.model_formula("M1"), design=design, family="quasibinomial")
    ame = fit.ame("support_model", reference=cb.reference_model)
    ame["truth"] = ame["level"].map(study.truth["ame_pp"]) / 100
    ame["seed"] = seed
    return ame


def _monte_carlo(scenario: str) -> pd.DataFrame:
    from joblib import Parallel, delayed

    runs = Parallel(n_jobs=2)(delayed(_replication)(scenario, s) for s in MC_SEEDS)
    return pd.concat(runs, ignore_index=True)


@pytest.mark.slow
def test_m1_intervals_cover_the_truth_across_replications():
    """Issue 4, over 20 studies of the default scenario (100 intervals): at least 88 of the
    95% intervals hold the true AME (if coverage were 95%, fewer than 88 happens with
    probability about 0.002), and no support model is missed in more than 4 of 20."""
    mc = _monte_carlo("default")
    mc["covers"] = (mc["ci_low"] <= mc["truth"]) & (mc["truth"] <= mc["ci_high"])
    assert len(mc) == 5 * REPLICATIONS
    assert mc["covers"].sum() >= 88, mc.groupby("level")["covers"].mean()
    assert mc.groupby("level")["covers"].sum().min() >= REPLICATIONS - 4


@pytest.mark.slow
def test_null_scenario_type_one_error_after_holm():
    """Issue 4, over 20 studies of the null scenario: in at most 3 of them is any
    support-model AME significant at 5% after Holm's adjustment (expected: 1 in 20; 4 or
    more has probability about 0.016 if the family-wise rate is 5%)."""
    mc = _monte_carlo("null")
    assert set(mc["truth"]) == {0.0}
    rejected = mc.groupby("seed")["p_value"].apply(
        lambda p: bool(multipletests(p.to_numpy(), alpha=0.05, method="holm")[0].any()))
    assert int(rejected.sum()) <= 3, rejected[rejected].index.tolist()


@pytest.mark.slow
def test_the_fpc_design_is_the_instruments(recovery):
    """The no-FPC design above differs from the reported one only in the variance."""
    from analysis.stats.models import fit_study_model

    _, fit, _ = recovery
    reported = fit_study_model(fit.design.data)
    assert np.allclose(reported.coef.to_numpy(), fit.coef.to_numpy(), rtol=1e-12, atol=0)
    assert (np.diag(reported.vcov) < np.diag(fit.vcov)).all()

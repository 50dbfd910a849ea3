"""Study planning: analytic MDES against PowerUp!'s published values and closed forms;
simulation-based power with joblib and on a local Dask cluster."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.stats import power as pw

# PowerUpR's cross-checks vignette (Bulus, Dong, Kelcey & Spybrook; PowerUp! formulas of
# Dong & Maynard 2013), inst/doc/cross_checks.html of the CRAN package:
#   mdes.cra2r2(power=.80, rho2=.17, n=15, J=20): MDES 0.629, 95% CI [0.183, 1.075],
#     df 18, standardized SE 0.212; mrss.cra2r2(es=<that MDES>, rho2=.17, n=15): J = 20
#   mdes.ira1r1(power=.80, n=250): MDES 0.356, CI [0.107, 0.605], df 248, SE 0.126
CRA2 = dict(mdes=0.629, ci=(0.183, 1.075), df=18, se=0.212)
IRA1 = dict(mdes=0.356, ci=(0.107, 0.605), df=248, se=0.126)


def test_powerup_cluster_randomised_design():
    m = pw.mdes(n_clusters=20, cluster_size=15, icc=0.17)
    assert round(m, 3) == CRA2["mdes"]
    se = m / float(pw.multiplier(CRA2["df"]))
    assert round(se, 3) == CRA2["se"]
    q = stats.t.ppf(0.975, CRA2["df"])
    assert (round(m - q * se, 3), round(m + q * se, 3)) == CRA2["ci"]
    assert pw.required_clusters(m, cluster_size=15, icc=0.17) == 20
    assert round(float(pw.power_for_effect(m, standard_error=se, df=18)), 2) == 0.80


def test_powerup_individual_design_is_the_one_teacher_cluster():
    m = pw.mdes(n_clusters=250, cluster_size=1, icc=0.0)
    se = m / float(pw.multiplier(IRA1["df"]))
    assert round(m, 3) == IRA1["mdes"] and round(se, 3) == IRA1["se"]


def test_closed_forms():
    # large J: M -> z_.975 + z_.80 and the SE is the square root of the variance formula
    J, n, rho, r2c, r2i, P = 100000, 30, 0.2, 0.5, 0.3, 0.25
    var = rho * (1 - r2c) / (P * (1 - P) * J) + (1 - rho) * (1 - r2i) / (P * (1 - P) * J * n)
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.80)
    got = pw.mdes(n_clusters=J, cluster_size=n, icc=rho, r2_cluster=r2c, r2_individual=r2i,
                  treated_share=P)
    assert got == pytest.approx(z * np.sqrt(var), rel=1e-4)
    # covariates cost degrees of freedom only; doubling J shrinks the MDES by about sqrt(2)
    assert pw.mdes(n_clusters=40, cluster_size=n, icc=rho, covariates=5) > pw.mdes(
        n_clusters=40, cluster_size=n, icc=rho)
    ratio = pw.mdes(n_clusters=4000, cluster_size=n, icc=rho) / pw.mdes(
        n_clusters=8000, cluster_size=n, icc=rho)
    assert ratio == pytest.approx(np.sqrt(2), rel=1e-3)


def test_allocation_table_and_required_districts():
    alloc = {"tech_support_only": 0.4, "coaching": 0.3, "director": 0.3}
    kw = dict(allocation=alloc, reference="tech_support_only", cluster_size=40, icc=0.13,
              r2_cluster=0.2, covariates=5, strata=12, base_rate=0.5)
    t = pw.allocation_table(n_districts=300, effects_pp=(10.0,), **kw).set_index(
        "support_model")
    # a pairwise comparison is the two-group design on its districts with the full df
    P = 0.3 / 0.7
    two_group = pw.mdes(n_clusters=0.7 * 300, cluster_size=40, icc=0.13, r2_cluster=0.2,
                        treated_share=P, df=300 - 12 - 2 - 5)
    assert t.loc["coaching", "mdes_sd"] == pytest.approx(two_group, rel=1e-12)
    assert t.loc["coaching", "mdes_pp"] == pytest.approx(100 * two_group * 0.5, rel=1e-12)
    need = pw.required_districts(8.0, **kw).set_index("support_model")
    j = need.loc["coaching", "n_districts"]
    at = pw.allocation_table(n_districts=j, **kw).set_index("support_model")
    below = pw.allocation_table(n_districts=j - 1, **kw).set_index("support_model")
    assert at.loc["coaching", "mdes_pp"] <= 8.0 < below.loc["coaching", "mdes_pp"]
    # power at the MDES is the planned 80% (noncentral t, as PowerUp!)
    row = t.loc["coaching"]
    se = row["mdes_sd"] / float(pw.multiplier(row["df"]))
    assert float(pw.power_for_effect(row["mdes_sd"], standard_error=se, df=row["df"])) == \
        pytest.approx(0.80, abs=0.005)
    assert (row["power_10pp"] > 0.80) == (row["mdes_pp"] < 10)


def test_design_parameters_of_the_bundled_study(teachers):
    p = pw.design_parameters(teachers)
    assert 0.01 < p["icc"] < 0.5 and 0 <= p["r2_cluster"] < 1 and 0 <= p["r2_individual"] < 1
    assert sum(p["allocation"].values()) == pytest.approx(1.0)
    assert p["n_districts"] > 200 and 5 < p["cluster_size"] < 80
    res = pw.power_results(teachers)
    assert {r["support_model"] for r in res["mdes"]} == {"pay_and_pray", "vanguard",
                                                          "consultant", "director", "coaching"}
    assert all(0 < r["mdes_pp"] < 30 for r in res["mdes"])


def test_anova_icc_recovers_a_known_icc():
    rng = np.random.default_rng(4)
    J, n, rho = 400, 25, 0.2
    y = np.repeat(rng.normal(0, np.sqrt(rho), J), n) + rng.normal(0, np.sqrt(1 - rho), J * n)
    icc, _, _ = pw._anova_icc(y, np.repeat(np.arange(J), n))
    assert icc == pytest.approx(rho, abs=0.03)


SMALL = dict(n_districts=500, teacher_respondents=1200)


def test_simulated_power_joblib_and_dask_agree():
    from dask.distributed import Client, LocalCluster

    summary, reps = pw.simulate_power(2, seed=7, workers=1, progress=False, **SMALL)
    assert len(reps) == 2 * 5 and set(reps["seed"]) == set(pw.replication_seeds(7, 2))
    assert summary["replications"].eq(2).all()
    assert ((reps["ci_low"] < reps["estimate"]) & (reps["estimate"] < reps["ci_high"])).all()
    assert reps["true_ame"].notna().all()
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        _, dask_reps = pw.simulate_power(2, seed=7, backend="dask", client=client,
                                         progress=False, **SMALL)
    pd.testing.assert_frame_equal(reps, dask_reps)


def test_summarise_power():
    reps = pd.DataFrame({"seed": [1, 2, 3, 4], "support_model": "coaching",
                         "estimate": [0.1, 0.2, 0.0, 0.1], "true_ame": 0.1,
                         "significant": [True, True, False, True],
                         "covers": [True, True, False, True]})
    s = pw.summarise_power(reps).iloc[0]
    assert s["power"] == 0.75 and s["mc_std_error"] == pytest.approx(np.sqrt(0.75 * 0.25 / 4))
    assert s["bias_pp"] == pytest.approx(0.0) and s["coverage"] == 0.75


def test_cli_power_prints_the_tables(tmp_path):
    import os
    import subprocess
    import sys

    from helpers import ROOT

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    args = [sys.executable, "-m", "analysis", "power", "--processed", str(tmp_path)]
    r = subprocess.run(args + ["--districts", "200", "--teachers-per-district", "30",
                               "--icc", "0.1", "--target-pp", "8"],
                       capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "coaching" in r.stdout and "Districts needed for an MDES of 8 pp" in r.stdout
    r = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "make data" in r.stderr

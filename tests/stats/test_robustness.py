"""Robustness checks: the fast engine against fit_svyglm and R, Rubin's rules against R's
mitools and the closed form, E-values against the published example, propensity
weighting, the multiverse and leave-one-out."""

from itertools import product

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from helpers import REFERENCE
from test_design import sig6

from analysis.stats import robustness as rb
from analysis.stats.design import SurveyDesign
from analysis.stats.models import BINOMIAL, fit_study_model, fit_svyglm, irls, model_data


@pytest.fixture(scope="module")
def m1_data():
    df = pd.read_csv(REFERENCE / "m1_data.csv.gz", dtype={"district_id": str,
                                                          "response_id": str})
    return df.assign(support_model=df["support_model"].astype("category"))


@pytest.fixture(scope="module")
def engine(m1_data):
    data = model_data(m1_data)
    design = rb._study_design(data, lonely_psu="fail")
    prob = rb.LogitProblem.build(rb._m1_formula(), data)
    return data, design, prob, prob.fit(design)


# -- the engine ------------------------------------------------------------------
def test_engine_equals_fit_svyglm_and_r(m1_data, engine):
    _, design, prob, fit = engine
    ref = fit_study_model(m1_data)
    coefs = prob.coefficients(fit, design)
    assert np.allclose(coefs["estimate"], ref.coef.to_numpy(), rtol=1e-12, atol=0)
    assert np.allclose(coefs["std_error"], np.sqrt(np.diag(ref.vcov.to_numpy())), rtol=1e-10)
    ame = prob.ame(fit, design, reference="tech_support_only").set_index("support_model")
    r = pd.read_csv(REFERENCE / "m1_ame_reference.csv").set_index("support_model")
    assert sorted(ame.index) == sorted(r.index)
    for model, row in ame.iterrows():            # R's svyglm + svyrecvar AMEs
        assert sig6(row["estimate"], r.loc[model, "estimate"]), model
        assert sig6(row["std_error"], r.loc[model, "std_error"]), model
    assert int(ame["df"].iloc[0]) == ref.df_resid


def test_replicate_refits_solve_each_replicates_score_equations():
    rng = np.random.default_rng(11)
    n = 1200
    df = pd.DataFrame({"psu": np.repeat(np.arange(60), 20), "g": rng.choice(["a", "b", "c"], n),
                       "x": rng.normal(size=n), "w": rng.uniform(1, 4, n)})
    df["h"] = df["psu"] % 4
    df["fpc"] = 40
    df["y"] = (rng.uniform(size=n) < 0.35 + 0.2 * (df["g"] == "c")).astype(float)
    design = SurveyDesign(df, weights="w", strata="h", psu="psu", fpc="fpc")
    prob = rb.LogitProblem.build("y ~ C(g) + x", df, variable="g")
    fit = prob.fit(design)
    rep = design.replicate("JKn")
    cov = prob.replicate_ame_variance(fit, rep, reference="a", tol=1e-12, method="exact")
    B = prob.extra["replicate_coef"]
    mult = rep._mult[rep._psu[fit.rows]]
    exact = []
    for r in range(rep.n_replicates):
        w = fit.weights * mult[:, r]
        keep = w > 0
        beta = irls(prob.X[keep], prob.y[keep], w[keep] / w[keep].mean(), BINOMIAL).coef
        assert np.allclose(B[:, r], beta, atol=1e-8)
        p = {lv: np.sum(w * BINOMIAL.linkinv(_eta(prob, beta, lv)))
             / w.sum() for lv in ("a", "b", "c")}
        exact.append([p["b"] - p["a"], p["c"] - p["a"]])
    full = prob.ame(fit, design, reference="a")["estimate"].to_numpy()
    ref_cov = rep.replicate_variance(full, np.array(exact))
    assert np.allclose(cov, ref_cov, rtol=1e-7)
    taylor = prob.ame(fit, design, reference="a")["std_error"].to_numpy()
    assert np.all(np.sqrt(np.diag(cov)) > 0.7 * taylor)
    assert np.all(np.sqrt(np.diag(cov)) < 1.4 * taylor)


def _jkn_problem(seed, n_psu=240, per_psu=25, small=None):
    rng = np.random.default_rng(seed)
    n = n_psu * per_psu
    df = pd.DataFrame({"psu": np.repeat(np.arange(n_psu), per_psu),
                       "g": rng.choice(["a", "b", "c", "d"], n, p=[0.4, 0.3, 0.2, 0.1]),
                       "x": rng.normal(size=n), "z": rng.gamma(2.0, 20.0, n),
                       "w": rng.uniform(1, 4, n)})
    df["h"] = df["psu"] % 6
    df["fpc"] = 3 * n_psu // 6
    if small is not None:                        # level "d" only in the PSUs listed
        df.loc[df["g"].eq("d") & ~df["psu"].isin(small), "g"] = "c"
    lin = -0.5 + 0.8 * df["g"].eq("c") + 0.4 * df["x"] + 0.01 * df["z"]
    df["y"] = (rng.uniform(size=n) < 1 / (1 + np.exp(-lin))).astype(float)
    design = SurveyDesign(df, weights="w", strata="h", psu="psu", fpc="fpc")
    prob = rb.LogitProblem.build("y ~ C(g) + x + z", df, variable="g")
    return prob, prob.fit(design), design.replicate("JKn")


@pytest.mark.parametrize("small", [None, [0, 6]])
def test_local_replicates_agree_with_exact_refits(small):
    """The expansion path (JKn: each replicate reweights one stratum) gives the exact
    refits' variance; with a level present in two PSUs of one stratum, the replicates
    that delete one of them are refitted exactly."""
    prob, fit, rep = _jkn_problem(5, small=small)
    exact = prob.replicate_ame_variance(fit, rep, reference="a", method="exact", tol=1e-10)
    B_exact = prob.extra["replicate_coef"].copy()
    local = prob.replicate_ame_variance(fit, rep, reference="a", method="local", tol=1e-10)
    B_local = prob.extra["replicate_coef"]
    refitted = prob.extra["replicates_refitted_exactly"]
    assert refitted < rep.n_replicates / 2
    assert np.allclose(np.sqrt(np.diag(local)), np.sqrt(np.diag(exact)), rtol=1e-5, atol=0)
    assert np.allclose(local, exact, rtol=1e-4, atol=1e-12)
    assert np.abs(B_local - B_exact).max() < 1e-4
    # what "auto" picks for JKn, and the same numbers
    auto = prob.replicate_ame_variance(fit, rep, reference="a")
    assert np.allclose(auto, prob.replicate_ame_variance(fit, rep, reference="a",
                                                         method="local"), rtol=1e-12)
    if small is not None:
        assert refitted >= 2           # the two singular replicates went the exact way


def test_local_replicates_need_delete_one_psu_multipliers():
    prob, fit, rep = _jkn_problem(6, n_psu=60)
    boot = SurveyDesign(rep.data, weights="w", strata="h", psu="psu", fpc="fpc").replicate(
        "bootstrap", replicates=20, seed=1)
    with pytest.raises(ValueError, match="delete-one-PSU"):
        prob.replicate_ame_variance(fit, boot, reference="a", method="local")
    cov = prob.replicate_ame_variance(fit, boot, reference="a")     # auto: exact
    assert prob.extra["replicates_refitted_exactly"] == 20
    assert np.all(np.diag(cov) > 0)


def _eta(prob, beta, level):
    """Linear predictor with every row set to ``level`` (columns switched by hand)."""
    X = prob.X.copy()
    for lv, c in prob.level_columns.items():
        X[:, c] = 1.0 if lv == level else 0.0
    return X @ beta


# -- Rubin's rules -----------------------------------------------------------------
RUBIN_EST = [[1, -.5, 2], [1.2, -.45, 2.6], [.9, -.55, 1.7], [1.1, -.4, 2.2], [1.05, -.52, 2.9]]
RUBIN_SE = np.array([[.2, .1, .5], [.22, .11, .45], [.19, .1, .55], [.21, .12, .5],
                     [.2, .1, .48]])


def test_rubin_matches_r_mitools():
    """R's mitools::MIcombine (robustness_rubin_reference.R): estimates, SEs; with an
    infinite complete-data df also Rubin's df and the fraction of missing information."""
    r = pd.read_csv(REFERENCE / "robustness_rubin_reference.csv")
    for dfc, g in r.groupby("df_complete"):
        ours = rb.pool_rubin(RUBIN_EST, RUBIN_SE ** 2, df_complete=dfc,
                             labels=["a", "b", "c"]).set_index("term")
        for _, row in g.iterrows():
            assert ours.loc[row["term"], "estimate"] == pytest.approx(row["estimate"], rel=1e-10)
            assert ours.loc[row["term"], "std_error"] == pytest.approx(row["std_error"],
                                                                       rel=1e-10)
            if np.isinf(dfc):
                assert ours.loc[row["term"], "df"] == pytest.approx(row["df"], rel=1e-10)
                assert ours.loc[row["term"], "fmi"] == pytest.approx(row["fmi"], rel=1e-10)


def test_rubin_closed_form_with_barnard_rubin_df():
    q = np.array([1.0, 2.0, 3.0])
    u = np.array([0.5, 0.5, 0.5])
    out = rb.pool_rubin(q[:, None], u[:, None], df_complete=10).iloc[0]
    b, ubar, m = 1.0, 0.5, 3
    t = ubar + (1 + 1 / m) * b                       # 11/6
    lam = (1 + 1 / m) * b / t                        # 8/11
    df_old = (m - 1) / lam ** 2
    df_obs = 11 / 13 * 10 * (1 - lam)
    df = df_old * df_obs / (df_old + df_obs)
    riv = (1 + 1 / m) * b / ubar
    assert out["estimate"] == 2.0 and out["std_error"] == pytest.approx(np.sqrt(11 / 6))
    assert out["df"] == pytest.approx(df) and out["lambda"] == pytest.approx(8 / 11)
    assert out["fmi"] == pytest.approx((riv + 2 / (df + 3)) / (riv + 1))


def test_mi_without_missing_values_is_the_complete_case_fit(m1_data):
    m1_columns = ["non_substitutive", "support_model", "frl_pct", "enrollment", "locale",
                  "tech_spend_pp", "students_per_device", "years_teaching", "grade_band",
                  "subject"]
    data = m1_data.dropna(subset=m1_columns).reset_index(drop=True)
    res = rb.multiple_imputation(data, m=2, iterations=1)
    cc = res.complete_case_ame.set_index("support_model")
    pooled = res.ame.set_index("support_model")
    assert np.allclose(pooled["estimate"], cc.loc[pooled.index, "estimate"], rtol=1e-12)
    assert np.allclose(pooled["std_error"], cc.loc[pooled.index, "std_error"], rtol=1e-12)
    assert (pooled["between"] == 0).all() and (pooled["lambda"] == 0).all()
    assert res.n_imputed_rows == 0


def test_chained_imputation_fills_from_observed_values_and_keeps_districts_whole():
    rng = np.random.default_rng(5)
    n_d, per = 60, 12
    district = np.repeat([f"d{k:02d}" for k in range(n_d)], per)
    spend = np.repeat(rng.lognormal(6, 0.3, n_d), per)
    x = rng.normal(size=n_d * per)
    df = pd.DataFrame({"district_id": district, "spend": spend, "x": x,
                       "band": rng.choice(["a", "b", "c"], n_d * per),
                       "y": x + 0.001 * spend + rng.normal(size=n_d * per)})
    df.loc[df["district_id"].isin(["d03", "d17", "d40"]), "spend"] = np.nan
    df.loc[rng.choice(len(df), 50, replace=False), "y"] = np.nan
    df.loc[rng.choice(len(df), 30, replace=False), "band"] = np.nan
    done = rb.impute_chained(df, columns=["y", "band"], group="district_id",
                             group_columns=["spend"], predictors=["x"], m=3, iterations=3,
                             seed=2)
    observed_y = set(df["y"].dropna())
    for d in done:
        assert d[["y", "band", "spend"]].notna().all().all()
        assert set(d["y"]) <= observed_y
        assert set(d["band"]) <= {"a", "b", "c"}
        assert (d.groupby("district_id")["spend"].nunique() == 1).all()
        assert set(d["spend"]) <= set(df["spend"].dropna())
    assert not done[0]["y"].equals(done[1]["y"])     # imputations differ


# -- E-values ------------------------------------------------------------------------
def test_evalue_published_examples():
    # VanderWeele & Ding (2017), Ann Intern Med 167:268: RR 0.80 (0.71-0.91) -> 1.81, 1.43
    e = rb.evalue(0.80, ci_low=0.71, ci_high=0.91)
    assert round(e["evalue_point"], 2) == 1.81 and round(e["evalue_ci"], 2) == 1.43
    # their smoking example: RR 3.9 (1.8-8.7) -> 7.26 and 3.00
    e = rb.evalue(3.9, ci_low=1.8, ci_high=8.7)
    assert round(e["evalue_point"], 2) == 7.26 and round(e["evalue_ci"], 2) == 3.00
    assert rb.evalue(1.3, ci_low=0.9, ci_high=1.8)["evalue_ci"] == 1.0


def test_support_model_evalues_use_the_adjusted_rates(m1_data):
    ev = rb.support_model_evalues(m1_data).set_index("support_model")
    rates = fit_study_model(m1_data).predicted_rates("support_model").set_index("level")
    for model, row in ev.iterrows():
        rr = rates.loc[model, "estimate"] / rates.loc["tech_support_only", "estimate"]
        assert row["risk_ratio"] == pytest.approx(rr, rel=1e-10)
        assert row["rr_ci_low"] < rr < row["rr_ci_high"]
        assert row["evalue_point"] == pytest.approx(rb.evalue(rr)["evalue_point"])
        assert 1.0 <= row["evalue_ci"] <= row["evalue_point"]


# -- propensity ----------------------------------------------------------------------
def test_weighted_multinomial_logit_matches_statsmodels_and_replicated_rows():
    rng = np.random.default_rng(3)
    X = np.column_stack([np.ones(200), rng.normal(size=200), rng.uniform(size=200)])
    z = rng.integers(0, 4, 200)
    coef, probs = rb.multinomial_logit(X, z)
    assert np.allclose(coef, sm.MNLogit(z, X).fit(disp=0).params, atol=1e-7)
    assert np.allclose(probs.sum(axis=1), 1)
    w = rng.integers(1, 4, 200)
    coef_w, _ = rb.multinomial_logit(X, z, weights=w)
    rep = np.repeat(np.arange(200), w)
    assert np.allclose(coef_w, sm.MNLogit(z[rep], X[rep]).fit(disp=0).params, atol=1e-7)


def test_propensity_weights_and_balance(m1_data):
    data = rb.propensity_weights(m1_data, method="overlap")
    ps = data[[f"ps_{lv}" for lv in data["support_model"].cat.categories]].to_numpy()
    assert np.allclose(ps.sum(axis=1), 1)
    own = ps[np.arange(len(data)), data["support_model"].cat.codes.to_numpy()]
    h = 1 / (1 / ps).sum(axis=1)
    assert np.allclose(data["propensity_weight"], h / own)
    assert data["combined_weight"].sum() == pytest.approx(data["weight"].sum())
    res = rb.propensity_weighted_ames(m1_data)
    bal = res.balance
    # generalised overlap weights improve balance but, unlike the two-group case, do not
    # balance the means exactly
    assert bal["smd_after"].abs().mean() < 0.85 * bal["smd_before"].abs().mean()
    assert bal["smd_after"].abs().max() < bal["smd_before"].abs().max()
    assert set(res.ame["support_model"]) == {"pay_and_pray", "vanguard", "consultant",
                                             "director", "coaching"}
    assert (res.ame["ci_low"] < res.ame["estimate"]).all()


# -- multiverse and leave-one-out ------------------------------------------------------
def test_multiverse_grid_and_rows(m1_data):
    grid = list(product(rb.MULTIVERSE_OUTCOMES, rb.MULTIVERSE_COVARIATES,
                        rb.MULTIVERSE_VARIANCE, rb.MULTIVERSE_WEIGHTS, rb.MULTIVERSE_FLAGGED))
    assert len(grid) >= 100
    data = m1_data.assign(transformative=m1_data["transformative"],
                          partial=np.arange(len(m1_data)) % 50 == 0)
    curve = pd.concat([
        rb.multiverse(data, outcomes=["non_substitutive"], covariates=["M1"],
                      weights=["survey"], flagged=["as_cleaned"]),
        rb.multiverse(data, outcomes=["non_substitutive", "transformative"],
                      covariates=["none"], variance=["taylor"],
                      weights=["survey", "unweighted"], flagged=["as_cleaned", "complete_only"]),
    ], ignore_index=True)
    assert len(curve) == 3 + 8
    assert curve.groupby(["outcome", "weights", "flagged"])["n"].first().nunique() > 1
    main = curve.query("covariates == 'M1' and variance == 'taylor' and weights == 'survey'")
    r = pd.read_csv(REFERENCE / "m1_ame_reference.csv").set_index("support_model")
    assert sig6(main["coaching_estimate"].item(), r.loc["coaching", "estimate"])
    same = curve.query("covariates == 'M1' and weights == 'survey'")
    assert same["coaching_estimate"].nunique() == 1           # one fit, three variances
    assert same["coaching_ci_low"].nunique() == 3
    sc = rb.specification_curve(curve, level="director")
    assert len(sc) == len(curve) and sc["estimate_pp"].is_monotonic_increasing
    assert sc["rank"].tolist() == list(range(1, len(curve) + 1))
    assert (sc["significant"] == (sc["p_value"] < 0.05)).all()
    assert sorted(sc["estimate_pp"]) == pytest.approx(sorted(100 * curve["director_estimate"]))
    s = rb.multiverse_summary(curve)
    assert s["n_specifications"] == 11
    assert 0 <= s["coaching"]["share_positive_significant"] <= s["coaching"]["share_positive"]


def test_multiverse_blocks_give_the_same_rows_in_processes_and_on_dask(m1_data):
    """The (outcome, covariates) blocks are independent: joblib processes and a local
    Dask cluster return the serial rows, in the same order, to the last bit."""
    kw = dict(outcomes=["non_substitutive", "transformative"], covariates=["none", "M1"],
              weights=["survey"], flagged=["as_cleaned"], variance=["taylor", "jackknife"])
    serial = rb.multiverse(m1_data, **kw)
    assert len(serial) == 2 * 2 * 2
    assert serial[["outcome", "covariates"]].drop_duplicates().values.tolist() == [
        ["non_substitutive", "none"], ["non_substitutive", "M1"],
        ["transformative", "none"], ["transformative", "M1"]]
    pd.testing.assert_frame_equal(rb.multiverse(m1_data, workers=2, **kw), serial)
    pd.testing.assert_frame_equal(rb.multiverse(m1_data, workers=2, backend="dask", **kw),
                                  serial)
    with pytest.raises(ValueError, match="backend"):
        rb.multiverse(m1_data, backend="spark", **kw)


def test_cluster_variance_is_the_unstratified_design(m1_data):
    data = rb._multiverse_data(m1_data)
    curve = rb.multiverse(m1_data, outcomes=["non_substitutive"], covariates=["M1"],
                          variance=["cluster"], weights=["survey"], flagged=["as_cleaned"])
    design = SurveyDesign(data, weights="weight", psu="district_id")
    fit = fit_svyglm(rb._m1_formula(), design=design)
    ame = fit.ame("support_model", reference="tech_support_only").set_index("level")
    assert curve["director_ci_low"].item() == pytest.approx(ame.loc["director", "ci_low"],
                                                            rel=1e-8)


def test_leave_one_out_is_a_domain_of_the_full_design(m1_data):
    loo = rb.leave_one_out(m1_data, by="stratum")
    strata = sorted(m1_data["stratum"].unique())
    assert len(loo) == 5 * len(strata)
    left = strata[0]
    domain = model_data(m1_data)
    domain.loc[domain["stratum"] == left, "non_substitutive"] = np.nan
    design = rb._study_design(domain, lonely_psu="fail")
    fit = fit_svyglm(rb._m1_formula(), design=design)
    ame = fit.ame("support_model", reference="tech_support_only").set_index("level")
    ours = loo[loo["left_out"] == left].set_index("support_model")
    assert np.allclose(ours["estimate"], ame.loc[ours.index, "estimate"], rtol=1e-10)
    assert np.allclose(ours["std_error"], ame.loc[ours.index, "std_error"], rtol=1e-8)


def test_trim_weights_keeps_the_total_and_caps():
    w = np.random.default_rng(0).lognormal(0, 1, 1000)
    t = rb.trim_weights(w, quantile=0.95)
    assert t.sum() == pytest.approx(w.sum())
    assert t.max() <= np.quantile(w, 0.95) * (1 + 1e-9)


def test_replicate_newton_steps_survive_a_singular_replicate():
    """A replicate that drops every row of a small cell has a singular Hessian: its step
    is the minimum-norm solution (the unidentified coefficient does not move)."""
    from analysis.stats.robustness import _solve_steps

    rng = np.random.default_rng(3)
    A = rng.normal(size=(3, 3))
    good = A @ A.T + np.eye(3)
    singular = good.copy()
    singular[2, :] = singular[:, 2] = 0.0
    g = rng.normal(size=(2, 3))
    steps = _solve_steps(np.stack([good, singular]), g)
    assert np.allclose(steps[:, 0], np.linalg.solve(good, g[0]))
    assert np.isfinite(steps).all() and steps[2, 1] == 0.0
    assert np.allclose(singular[:2, :2] @ steps[:2, 1], g[1, :2])

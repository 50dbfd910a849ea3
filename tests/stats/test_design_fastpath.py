"""The cached (unit, domain) path of ``mean`` and ``total`` equals the general path exactly.

``_Estimators._unit_domain_estimate`` answers ``mean``/``total`` from a structure
cached per domain variable (a sparse row-to-cell matrix, or the bincount key,
plus counts and weighted denominators). These tests compare it, bit for bit,
with the general path (the fast path switched off), over design shapes, data
layouts (PSUs stored together or scattered), missing values and adjusted or
replicate designs, and check that cached values never outlive the weights.
"""

import numpy as np
import pandas as pd
import pytest

from analysis.stats import design as design_module
from analysis.stats.design import ReplicateDesign, SurveyDesign


def make(n=2400, psus=48, seed=5, *, shuffle=False, na=0.0, domain_na=0.0):
    rng = np.random.default_rng(seed)
    psu = np.sort(rng.integers(0, psus, n))
    df = pd.DataFrame({"psu": psu, "stratum": psu % 4, "ssu": rng.integers(0, 3, n),
                       "domain": rng.integers(0, 5, n).astype(float),
                       "g": rng.choice(["a", "b"], n),
                       "y": rng.normal(size=n) * 2 + 3, "w": rng.lognormal(2, 0.5, n)})
    df["fpc"] = df.groupby("stratum")["psu"].transform("nunique") * 4
    df["fpc2"] = 8
    df.loc[rng.uniform(size=n) < na, "y"] = np.nan
    df.loc[rng.uniform(size=n) < domain_na, "domain"] = np.nan
    df["cat"] = pd.Categorical(df["domain"])
    if shuffle:
        df = df.sample(frac=1, random_state=seed).reset_index(drop=True)
    return df


def designs(df):
    strat = SurveyDesign(df, weights="w", strata="stratum", psu="psu", fpc="fpc")
    return {
        "strat": strat,
        "clus": SurveyDesign(df, weights="w", psu="psu"),
        "srs": SurveyDesign(df, weights="w", strata="stratum"),
        "two_stage": SurveyDesign(df, weights="w", strata="stratum", psu="psu", fpc="fpc",
                                  ssu="ssu", fpc2="fpc2", lonely_psu="certainty"),
        "jk_groups": strat.replicate("JK1", groups=12, seed=1),
        "jkn": strat.replicate("JKn"),
        "bootstrap": strat.replicate("bootstrap", replicates=20, seed=2),
    }


def general(monkeypatch, fn):
    """``fn()`` with the cached path switched off (the code before it existed)."""
    with monkeypatch.context() as m:
        m.setattr(design_module._Estimators, "_unit_domain_estimate",
                  lambda self, *args, **kwargs: None)
        return fn()


BYS = [None, "domain", "cat", ["domain", "g"]]


@pytest.mark.parametrize("shuffle", [False, True], ids=["psus-together", "psus-scattered"])
@pytest.mark.parametrize("na,domain_na", [(0.0, 0.0), (0.1, 0.0), (0.0, 0.05), (0.1, 0.05)],
                         ids=["complete", "missing-y", "missing-domain", "missing-both"])
def test_cached_path_equals_general_path(monkeypatch, shuffle, na, domain_na):
    df = make(shuffle=shuffle, na=na, domain_na=domain_na)
    for name, d in designs(df).items():
        for by in BYS:
            for stat in ("mean", "total"):
                for deff in ((False, True) if isinstance(d, SurveyDesign) else (False,)):
                    def run(d=d, stat=stat, by=by, deff=deff):
                        return getattr(d, stat)("y", by=by, deff=deff)
                    expected = general(monkeypatch, run)
                    for _ in range(2):                    # building, then reusing the cache
                        pd.testing.assert_frame_equal(run(), expected, check_exact=True,
                                                      obj=f"{name} {stat} by={by} deff={deff}")


def test_both_layouts_are_exercised():
    """Sparse matrix when PSUs are stored together, bincount key when scattered or
    when there are more cells than rows (one row per PSU)."""
    together = designs(make())["strat"]
    scattered = designs(make(shuffle=True))["strat"]
    assert together._unit_domains("domain")._matrix is not None
    assert scattered._unit_domains("domain")._matrix is None
    srs = SurveyDesign(make(), weights="w")
    assert srs._unit_domains(None)._matrix is not None      # n cells for n rows
    assert srs._unit_domains("domain")._matrix is None      # 5 n cells


def test_missing_rows_leave_their_domain():
    """NA rows drop out of the domain's estimate, denominator and count, as before."""
    df = make(na=0.15)
    d = SurveyDesign(df, weights="w", strata="stratum", psu="psu", fpc="fpc")
    complete = d.mean("w", by="domain")                       # no NA: cached sums
    m = d.mean("y", by="domain")                              # NA: sums over complete rows
    ok = df["y"].notna()
    expected_n = df[ok].groupby("domain").size().to_numpy()
    assert (m["n"].to_numpy() == expected_n).all()
    assert (complete["n"].to_numpy() == df.groupby("domain").size().to_numpy()).all()
    sub = df[ok]
    est = (sub["w"] * sub["y"]).groupby(sub["domain"]).sum() / sub["w"].groupby(
        sub["domain"]).sum()
    np.testing.assert_allclose(m["estimate"], est.to_numpy(), rtol=1e-12)
    # y missing only where the domain is missing: still the cached path, same answer
    df2 = make(domain_na=0.1)
    df2.loc[df2["domain"].isna(), "y"] = np.nan
    d2 = SurveyDesign(df2, weights="w", strata="stratum", psu="psu", fpc="fpc")
    cells = d2._unit_domains("domain")
    assert not np.isnan(cells.sums(df2["y"].to_numpy())).any()
    assert d2.mean("y", by="domain")["n"].sum() == df2["domain"].notna().sum()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")                  # inf * 0, as before
@pytest.mark.parametrize("shuffle", [False, True], ids=["psus-together", "psus-scattered"])
def test_a_missing_weight_on_a_missing_value_is_ignored_as_before(monkeypatch, shuffle):
    """Rows with a missing ``y`` leave the sums even when their weight is NaN or inf."""
    df = make(na=0.1, shuffle=shuffle)
    gone = np.flatnonzero(df["y"].isna().to_numpy())[:2]
    df.loc[gone, "w"] = [np.nan, np.inf]
    d = SurveyDesign(df, weights="w", strata="stratum", psu="psu", fpc="fpc")
    for stat in ("mean", "total"):
        for by in (None, "domain"):
            expected = general(monkeypatch, lambda stat=stat, by=by: getattr(d, stat)("y", by=by))
            got = getattr(d, stat)("y", by=by)
            assert np.isfinite(got["std_error"]).all()
            pd.testing.assert_frame_equal(got, expected, check_exact=True)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_infinite_values_give_what_they_gave(monkeypatch):
    df = make()
    df.loc[[3, 4], "y"] = [np.inf, -np.inf]                  # same PSU: inf - inf = NaN
    d = SurveyDesign(df, weights="w", strata="stratum", psu="psu", fpc="fpc")
    for stat in ("mean", "total"):
        expected = general(monkeypatch, lambda stat=stat: getattr(d, stat)("y", by="domain"))
        pd.testing.assert_frame_equal(getattr(d, stat)("y", by="domain"), expected,
                                      check_exact=True)


def test_adjusted_copies_do_not_share_the_cache():
    df = make()
    base = SurveyDesign(df, weights="w", strata="stratum", psu="psu", fpc="fpc")
    before = base.mean("y", by="g")
    assert ("g",) in base._unit_domain_cache
    ps = base.poststratify("g", {"a": 40_000, "b": 60_000})
    rk = base.rake({"g": {"a": 40_000, "b": 60_000}})
    cal = base.calibrate("C(g)", {"Intercept": 100_000, "C(g)[T.b]": 60_000})
    for adjusted in (ps, rk, cal):
        assert "_unit_domain_cache" not in adjusted.__dict__
        assert adjusted._unit_domains("g") is None           # row-level influence values
        assert adjusted.total("y", by="g")["estimate"].iloc[0] != pytest.approx(
            base.total("y", by="g")["estimate"].iloc[0], rel=1e-3)
    np.testing.assert_allclose(ps.mean("y", by="g")["estimate"],
                               before["estimate"], rtol=1e-12)   # poststratified on g
    pd.testing.assert_frame_equal(base.mean("y", by="g"), before, check_exact=True)


def test_a_copy_with_new_weights_rebuilds_the_cache():
    """A copy whose weights change (as the adjustments do) never reuses the old
    weights' denominators, whether or not the copy has adjustments."""
    df = make()
    base = SurveyDesign(df, weights="w", strata="stratum", psu="psu", fpc="fpc")
    base.mean("y", by="domain")
    new = base._copy()
    new.w = base.w * np.linspace(0.5, 2.0, len(df))
    fresh = SurveyDesign(df.assign(w=new.w), weights="w", strata="stratum", psu="psu",
                         fpc="fpc")
    pd.testing.assert_frame_equal(new.mean("y", by="domain"), fresh.mean("y", by="domain"),
                                  check_exact=True)
    # even with the cache dict shared (weights reassigned in place of a copy)
    base.w = new.w
    pd.testing.assert_frame_equal(base.mean("y", by="domain"), fresh.mean("y", by="domain"),
                                  check_exact=True)


def test_supplied_replicate_weights_keep_the_general_path(monkeypatch):
    df = make()
    jk = SurveyDesign(df, weights="w", psu="psu").replicate("JK1")
    psu = jk._psu
    cols = {f"rw{r}": df["w"] * jk._mult[psu, r] for r in range(jk.n_replicates)}
    supplied = ReplicateDesign(df.assign(**cols), weights="w", replicate_weights=list(cols),
                               type="JK1")
    assert supplied._unit_domains("domain") is None
    a = jk.mean("y", by="domain")
    b = supplied.mean("y", by="domain")
    np.testing.assert_allclose(a["std_error"], b["std_error"], rtol=1e-10)
    expected = general(monkeypatch, lambda: jk.mean("y", by="domain"))
    pd.testing.assert_frame_equal(a, expected, check_exact=True)

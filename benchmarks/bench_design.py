"""Benchmark: design-based estimates on 1,000,000 teachers in 5,000 PSUs.

    .venv/bin/python benchmarks/bench_design.py [--rows N] [--psus P] [--no-r]

Times (median of 7 after a warm-up), as ratios to a plain weighted mean (numpy) measured
in the same run:
- domain means and totals (6 domains) with Taylor SEs (strata, PSUs, FPC), on a design
  already used for that domain variable (the (PSU, domain) structure is cached per
  domain variable); also the first such call on a new design, which builds the cache,
  and a column with 1% missing values, which takes the general path;
- a replicate-weight SE of a mean with 80 delete-a-group jackknife replicates;
- R's survey ``svyby`` for the same domain means, where R is installed.
Targets: domain mean and total at most 5x the weighted mean, the jackknife SE at most
10x (``targets_met``). Writes reports/bench/bench_design.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.stats.design import SurveyDesign


def make_data(rows: int, psus: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    psu = np.sort(rng.integers(0, psus, rows))
    strata = psu % 50
    domain = rng.integers(0, 6, rows)
    y = (rng.uniform(size=rows) < 0.4 + 0.05 * domain).astype(float)
    w = rng.lognormal(3, 0.5, rows)
    n_h = pd.Series(psu).groupby(strata).nunique()
    return pd.DataFrame({"y": y, "w": w, "psu": psu, "stratum": strata,
                         "domain": domain, "fpc": (n_h.reindex(strata).to_numpy() * 20)})


TARGETS = {"domain_mean_taylor": 5.0, "domain_total_taylor": 5.0, "jk80_mean": 10.0}


def timed(fn, repeat: int = 7) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def r_svyby_seconds(df: pd.DataFrame) -> float | None:
    if not shutil.which("Rscript"):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.csv"
        df.to_csv(path, index=False)
        script = (
            f"suppressMessages(library(survey)); d <- read.csv('{path}');"
            "des <- svydesign(ids=~psu, strata=~stratum, weights=~w, fpc=~fpc, data=d);"
            "invisible(svyby(~y, ~domain, des, svymean));"
            "t <- replicate(3, system.time(svyby(~y, ~domain, des, svymean))['elapsed']);"
            "cat(median(t))")
        out = subprocess.run(["Rscript", "-e", script], capture_output=True, text=True)
        if out.returncode != 0:
            return None
        return float(out.stdout.strip().split()[-1])


def first_call_seconds(df: pd.DataFrame, repeat: int = 3) -> float:
    """Median time of the first domain mean on a new design (building its cache)."""
    times = []
    for _ in range(repeat):
        design = SurveyDesign(df, weights="w", strata="stratum", psu="psu", fpc="fpc")
        t0 = time.perf_counter()
        design.mean("y", by="domain")
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--psus", type=int, default=5_000)
    ap.add_argument("--no-r", action="store_true")
    ap.add_argument("--out", default="reports/bench/bench_design.json")
    args = ap.parse_args(argv)
    df = make_data(args.rows, args.psus)
    df["y_missing"] = df["y"].where(np.arange(len(df)) % 100 != 7)     # 1% missing
    design = SurveyDesign(df, weights="w", strata="stratum", psu="psu", fpc="fpc")
    y, w = df["y"].to_numpy(), df["w"].to_numpy()
    base = timed(lambda: np.average(y, weights=w))
    results = {
        "rows": args.rows, "psus": design.n_psu, "strata": design.n_strata,
        "baseline_weighted_mean_s": base,
        "domain_mean_taylor_s": timed(lambda: design.mean("y", by="domain")),
        "domain_total_taylor_s": timed(lambda: design.total("y", by="domain")),
        "domain_mean_taylor_first_call_s": first_call_seconds(df),
    }
    results["domain_mean_taylor_missing_s"] = timed(lambda: design.mean("y_missing",
                                                                        by="domain"))
    rep = design.replicate("JK1", groups=80, seed=1)
    results["jk80_mean_s"] = timed(lambda: rep.mean("y"))
    results["jk80_create_s"] = timed(lambda: design.replicate("JK1", groups=80, seed=1))
    results["r_svyby_s"] = None if args.no_r else r_svyby_seconds(df.drop(columns="y_missing"))
    for key in ("domain_mean_taylor", "domain_total_taylor", "domain_mean_taylor_first_call",
                "domain_mean_taylor_missing", "jk80_mean"):
        results[f"{key}_ratio_to_weighted_mean"] = results[f"{key}_s"] / base
    results["targets_met"] = all(results[f"{key}_ratio_to_weighted_mean"] <= limit
                                 for key, limit in TARGETS.items())
    if results["r_svyby_s"]:
        results["r_svyby_over_ours"] = results["r_svyby_s"] / results["domain_mean_taylor_s"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    for k, v in results.items():
        print(f"{k:52s} {v:.4g}" if isinstance(v, float) else f"{k:52s} {v}")
    return results


if __name__ == "__main__":
    main()

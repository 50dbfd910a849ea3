"""Benchmark: design-based estimates on 1,000,000 teachers in 5,000 PSUs.

    .venv/bin/python benchmarks/bench_design.py [--rows N] [--psus P] [--no-r]

Times (median of 3 after a warm-up), as ratios to a plain weighted mean (numpy) measured
in the same run:
- domain means and totals (6 domains) with Taylor SEs (strata, PSUs, FPC);
- a replicate-weight SE of a mean with 80 delete-a-group jackknife replicates;
- R's survey ``svyby`` for the same domain means, where R is installed.
Writes reports/bench/bench_design.json.
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


def timed(fn, repeat: int = 3) -> float:
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


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--psus", type=int, default=5_000)
    ap.add_argument("--no-r", action="store_true")
    ap.add_argument("--out", default="reports/bench/bench_design.json")
    args = ap.parse_args(argv)
    df = make_data(args.rows, args.psus)
    design = SurveyDesign(df, weights="w", strata="stratum", psu="psu", fpc="fpc")
    y, w = df["y"].to_numpy(), df["w"].to_numpy()
    base = timed(lambda: np.average(y, weights=w))
    results = {
        "rows": args.rows, "psus": design.n_psu, "strata": design.n_strata,
        "baseline_weighted_mean_s": base,
        "domain_mean_taylor_s": timed(lambda: design.mean("y", by="domain")),
        "domain_total_taylor_s": timed(lambda: design.total("y", by="domain")),
    }
    rep = design.replicate("JK1", groups=80, seed=1)
    results["jk80_mean_s"] = timed(lambda: rep.mean("y"))
    results["jk80_create_s"] = timed(lambda: design.replicate("JK1", groups=80, seed=1))
    results["r_svyby_s"] = None if args.no_r else r_svyby_seconds(df)
    for key in ("domain_mean_taylor_s", "domain_total_taylor_s", "jk80_mean_s"):
        results[key.replace("_s", "_ratio_to_weighted_mean")] = results[key] / base
    if results["r_svyby_s"]:
        results["r_svyby_over_ours"] = results["r_svyby_s"] / results["domain_mean_taylor_s"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    for k, v in results.items():
        print(f"{k:45s} {v:.4g}" if isinstance(v, float) else f"{k:45s} {v}")
    return results


if __name__ == "__main__":
    main()

"""Benchmark: simulation-based power of M1 with one and with two worker processes.

    .venv/bin/python benchmarks/bench_power.py [--replications 200] [--workers 1 2]
                                               [--backend loky|dask]

Each replication simulates a study of the bundled study's size (the default
scenario), writes its raw exports to a temporary folder, cleans them and fits
M1 on the survey design (:func:`analysis.stats.power.simulate_power`). The same
seeds are used for every worker count, so the power estimates agree exactly;
the speed-up is the one-worker time over the two-worker time. Other load on
the machine lowers it. Writes reports/bench/bench_power.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

from analysis.stats.power import simulate_power


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replications", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--backend", default="loky", choices=["loky", "dask"])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="reports/bench/bench_power.json")
    args = parser.parse_args(argv)
    runs, summaries = [], {}
    for w in args.workers:
        summary, _ = simulate_power(args.replications, seed=args.seed, workers=w,
                                    backend=args.backend, progress=True)
        seconds = summary.attrs["runtime_s"]
        runs.append({"workers": w, "seconds": round(seconds, 1),
                     "seconds_per_replication": round(seconds / args.replications, 3)})
        summaries[w] = summary
        print(f"{w} worker(s): {seconds:.1f} s ({seconds / args.replications:.2f} s per study)")
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    base = next((r["seconds"] for r in runs if r["workers"] == 1), runs[0]["seconds"])
    for r in runs:
        r["speed_up"] = round(base / r["seconds"], 2)      # over one worker
    result = {"replications": args.replications, "backend": args.backend,
              "cpu_count": os.cpu_count(), "load_average_at_end": os.getloadavg(),
              "python": platform.python_version(), "runs": runs,
              "power": summaries[args.workers[-1]][["support_model", "power", "mc_std_error",
                                                   "coverage"]].to_dict(orient="records")}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(runs))
    return result


if __name__ == "__main__":
    main()

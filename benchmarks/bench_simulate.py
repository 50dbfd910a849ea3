"""Benchmark: simulate and write a large study (1,000,000 teachers in 5,000 districts).

    .venv/bin/python benchmarks/bench_simulate.py                  # the `benchmark` scenario
    .venv/bin/python benchmarks/bench_simulate.py --keep /tmp/big  # keep the files

Times the two steps of ``python -m analysis simulate`` (``simulate_study`` and
``write_raw``) and reports the peak resident memory of the process
(``resource.getrusage``), the sizes of the study and of the files, and the
machine's load average (other work on the machine slows every step). Exits
with status 1 when the run takes longer than ``--max-seconds`` or needs more
than ``--max-gib`` of memory, so ``make bench`` can fail on a regression.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from analysis.study.simulate import simulate_study, write_raw


def peak_rss_gib() -> float:
    """Peak resident set size of this process in GiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run(scenario: str, seed: int, out_dir: Path) -> dict:
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    study = simulate_study(scenario, seed=seed, progress=True)
    t1 = time.perf_counter()
    rss_simulate = peak_rss_gib()
    write_raw(study, out_dir)
    t2 = time.perf_counter()
    truth = study.truth
    return {
        "scenario": scenario,
        "seed": seed,
        "population_districts": truth["n_population_districts"],
        "population_teachers": truth["n_population_teachers"],
        "responding_districts": truth["n_responding_districts"],
        "teacher_respondents": truth["n_teacher_respondents"],
        "teacher_rows": truth["n_teacher_rows"],
        "simulate_seconds": round(t1 - t0, 2),
        "write_seconds": round(t2 - t1, 2),
        "total_seconds": round(t2 - t0, 2),
        "peak_rss_gib_after_simulate": round(rss_simulate, 3),
        "peak_rss_gib": round(peak_rss_gib(), 3),
        "file_mib": {p.name: round(p.stat().st_size / 2**20, 1)
                     for p in sorted(out_dir.iterdir())},
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="benchmark")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, default=None,
                        help="write the files here (default: a temporary folder)")
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--max-gib", type=float, default=24.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = run(args.scenario, args.seed, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-simulate-") as tmp:
            result = run(args.scenario, args.seed, Path(tmp))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    ok = result["total_seconds"] <= args.max_seconds and result["peak_rss_gib"] <= args.max_gib
    if not ok:
        print(f"over budget: {result['total_seconds']} s (max {args.max_seconds}), "
              f"{result['peak_rss_gib']} GiB (max {args.max_gib})", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

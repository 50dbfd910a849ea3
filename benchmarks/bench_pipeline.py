"""Benchmark: the whole pipeline on 1,000,000 teachers (peak memory) and make report on the
bundled study (absolute time).

    .venv/bin/python benchmarks/bench_pipeline.py [--skip-large] [--skip-report]

Large: simulate the `benchmark` scenario (about 1,000,000 teachers in 5,000 districts),
write the raw exports, clean them, fit M1 on the design and compute its AMEs, all in this
process; reports each step's time and the process's peak resident memory (target: under
4 GiB). Report: `python -m analysis clean`, `report` and `notebooks` on the bundled data
into temporary folders, each timed (absolute seconds, for the record).
Writes reports/bench/bench_pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def large(seed: int = 1) -> dict:
    from analysis.data.clean import clean_study
    from analysis.stats.models import fit_study_model
    from analysis.study.codebook import load_codebook
    from analysis.study.simulate import simulate_study, write_raw

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        study = simulate_study("benchmark", seed=seed)
        write_raw(study, Path(tmp))
        del study
        out["simulate_and_write_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        teachers = clean_study(Path(tmp)).teachers
        out["clean_s"] = time.perf_counter() - t0
        out["teachers"] = len(teachers)
    t0 = time.perf_counter()
    fit = fit_study_model(teachers)
    out["m1_fit_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    fit.ame("support_model", reference=load_codebook().reference_model)
    out["m1_ame_s"] = time.perf_counter() - t0
    out["peak_rss_gib"] = peak_gib()
    out["peak_under_4_gib"] = out["peak_rss_gib"] < 4
    return out


def report_times() -> dict:
    py = sys.executable
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        proc, rep = Path(tmp) / "processed", Path(tmp) / "reports"
        steps = {
            "clean_s": [py, "-m", "analysis", "clean", "--processed", str(proc)],
            "report_s": [py, "-m", "analysis", "report", "--processed", str(proc),
                         "--reports", str(rep)],
            "notebooks_s": [py, "-m", "analysis", "notebooks", "--processed", str(proc),
                            "--reports", str(rep)],
        }
        for name, cmd in steps.items():
            t0 = time.perf_counter()
            r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            out[name] = time.perf_counter() - t0
            if r.returncode != 0:
                raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
            if name == "notebooks_s":
                out["notebook_seconds"] = {
                    line.split()[0]: float(line.split()[1])
                    for line in r.stdout.splitlines() if line.endswith(" s")}
    out["make_report_total_s"] = out["clean_s"] + out["report_s"] + out["notebooks_s"]
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument("--skip-report", action="store_true")
    ap.add_argument("--out", default="reports/bench/bench_pipeline.json")
    args = ap.parse_args(argv)
    result = {}
    if not args.skip_report:
        result["bundled_report"] = report_times()
    if not args.skip_large:
        result["large"] = large()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

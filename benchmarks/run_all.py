"""`make bench`: every benchmark, as ratios to a baseline measured in the same run.

    .venv/bin/python benchmarks/run_all.py [--quick]

Runs each benchmark script in its own process (so that its peak memory is its own),
collects their JSON, and writes reports/bench/bench.json and reports/bench/bench.md: each
figure next to its baseline, the ratio, the target, and a description of the machine.
Times are never asserted in tests; these machines are noisy, so compare ratios.
``--quick`` uses smaller sizes (for a smoke run); the targets are for the full sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "reports" / "bench"


def _run(script: str, *args: str) -> tuple[str, float]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT,
                       capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout[-3000:], r.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"{script} failed")
    return r.stdout, time.perf_counter() - t0


def machine() -> dict:
    mem = None
    try:
        with open("/proc/meminfo") as fh:
            mem = round(int(fh.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import numpy as np

    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem, "numpy": np.__version__,
            "load_average": os.getloadavg()[0]}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    q = args.quick
    rows = "100000" if q else "1000000"
    OUT.mkdir(parents=True, exist_ok=True)
    results = {"machine": machine(), "quick": q}

    out, _ = _run("bench_clean.py", "--rows", rows, "--districts", "1000" if q else "5000")
    read = float(re.search(r"pandas.read_csv:\s+([\d.]+)", out).group(1))
    clean = float(re.search(r"clean_study:\s+([\d.]+)", out).group(1))
    results["clean"] = {"rows": int(rows), "clean_s": clean, "read_csv_s": read}

    _run("bench_design.py", "--rows", rows, "--psus", "1000" if q else "5000",
         "--out", str(OUT / "bench_design.json"))
    results["design"] = json.loads((OUT / "bench_design.json").read_text())
    _run("bench_models.py", "--rows", rows, "--districts", "1000" if q else "5000",
         "--out", str(OUT / "bench_models.json"))
    results["models"] = json.loads((OUT / "bench_models.json").read_text())
    _run("bench_ordinal.py", "--rows", "50000" if q else "200000",
         "--out", str(OUT / "bench_ordinal.json"))
    results["ordinal"] = json.loads((OUT / "bench_ordinal.json").read_text())
    _run("bench_pipeline.py", *(["--skip-large"] if q else []),
         "--out", str(OUT / "bench_pipeline.json"))
    results["pipeline"] = json.loads((OUT / "bench_pipeline.json").read_text())
    _run("bench_power.py", "--replications", "10" if q else "30",
         "--out", str(OUT / "bench_power.json"))
    results["power"] = json.loads((OUT / "bench_power.json").read_text())

    (OUT / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    (OUT / "bench.md").write_text(markdown(results))
    print((OUT / "bench.md").read_text())
    return results


def _seconds(v: float) -> str:
    return f"{v:.3g} s" if v >= 0.1 else f"{1000 * v:.3g} ms"


def _row(step, ours, base_name, base, target):
    ratio = ours / base if base else float("nan")
    return (f"| {step} | {_seconds(ours)} | {base_name}: {_seconds(base)} | {ratio:.2f} | "
            f"{target} |")


def markdown(r: dict) -> str:
    m = r["machine"]
    d, mo, c = r["design"], r["models"], r["clean"]
    lines = ["# Benchmarks", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, "
             f"{m['platform']}, Python {m['python']}, numpy {m['numpy']}; load average at "
             f"start {m['load_average']:.2f}." + (" Quick sizes." if r["quick"] else ""), "",
             "| step | ours | baseline (same run) | ratio | target |", "|---|---|---|---|---|",
             _row(f"clean {c['rows']:,} rows", c["clean_s"], "pandas.read_csv", c["read_csv_s"],
                  "<= 3"),
             _row("domain means, Taylor SE", d["domain_mean_taylor_s"], "weighted mean",
                  d["baseline_weighted_mean_s"], "<= 5"),
             _row("domain totals, Taylor SE", d["domain_total_taylor_s"], "weighted mean",
                  d["baseline_weighted_mean_s"], "<= 5"),
             _row("80 JK replicates, SE of a mean", d["jk80_mean_s"], "weighted mean",
                  d["baseline_weighted_mean_s"], "<= 10"),
             _row("M1 design-based logit", mo["m1_design_based_s"],
                  "statsmodels GLM cluster (prepared)", mo["statsmodels_glm_cluster_prepared_s"],
                  "<= 1"),
             _row("M1 AMEs (delta method)", mo["ame_s"], "one M1 fit", mo["m1_design_based_s"],
                  "-"),
             _row("proportional odds (svyolr)", r["ordinal"]["svyolr_s"],
                  "statsmodels OrderedModel", r["ordinal"]["statsmodels_orderedmodel_s"], "-")]
    if d.get("r_svyby_s"):
        lines.append(_row("R svyby domain means (R / ours)", d["r_svyby_s"], "ours",
                          d["domain_mean_taylor_s"], ">= 50"))
    if mo.get("r_svyglm_s"):
        lines.append(_row("R svydesign + svyglm (R / ours)", mo["r_svyglm_s"], "ours",
                          mo["m1_design_based_s"], ">= 10"))
    p = r["pipeline"]
    if "bundled_report" in p:
        b = p["bundled_report"]
        lines += ["", f"make report on the bundled study: clean {b['clean_s']:.1f} s, report "
                      f"{b['report_s']:.1f} s, notebooks {b['notebooks_s']:.1f} s; total "
                      f"{b['make_report_total_s']:.1f} s."]
        lines += [f"- {k}: {v:.1f} s" for k, v in b.get("notebook_seconds", {}).items()]
    if "large" in p:
        g = p["large"]
        lines += ["", f"1,000,000-teacher pipeline ({g['teachers']:,} teachers kept): simulate "
                      f"and write {g['simulate_and_write_s']:.1f} s, clean {g['clean_s']:.1f} s, "
                      f"M1 {g['m1_fit_s']:.1f} s, AMEs {g['m1_ame_s']:.1f} s; peak memory "
                      f"{g['peak_rss_gib']:.2f} GiB (target < 4)."]
    lines += ["", "Power simulation: " + json.dumps(r["power"]), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

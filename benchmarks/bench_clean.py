"""Benchmark: cleaning 1,000,000 teacher rows against ``pandas.read_csv`` of the same file.

The target (issue 3): ``clean_study`` on a 1,000,000-row Qualtrics export
takes no more than about three times as long as ``pandas.read_csv`` of that
export. Both are timed as the median of three runs after one warm-up, in
wall-clock time and in CPU time of this process (both are single-threaded, so
on an idle machine the two agree; on a busy one the CPU-time ratio is the
steadier figure).

    python benchmarks/bench_clean.py                 # 1,000,000 rows, temporary folder
    python benchmarks/bench_clean.py --rows 200000   # a quicker look
    python benchmarks/bench_clean.py --keep /tmp/bench-raw   # keep (and reuse) the raw files

``make bench`` (benchmarks/run_all.py) runs it and reads the two figures it prints.

The study is simulated with ``analysis.study.simulate`` (5,000 districts). When
the simulator gives fewer responding teachers than asked, its teacher export
is repeated with fresh ResponseIds, e-mail addresses and dates shifted by whole
days (so that the duplicate rule does not fire across copies) until it has
the number of rows asked for.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.data.clean import clean_study  # noqa: E402
from analysis.study import simulate  # noqa: E402
from analysis.study.codebook import load_codebook  # noqa: E402


def tile_export(export: pd.DataFrame, rows: int) -> pd.DataFrame:
    """Repeat a teacher export to ``rows`` rows, each copy a distinct set of people."""
    cb = load_codebook()
    header = {c.variable: c.header for c in cb.columns("teacher_survey")}
    copies = -(-rows // len(export))
    out = pd.concat([export] * copies, ignore_index=True).iloc[:rows].copy()
    copy = np.repeat(np.arange(copies), len(export))[:rows]
    suffix = pd.Series(copy, index=out.index).map(lambda k: f"{k:03d}")
    rid = header["response_id"]
    out[rid] = out[rid].str.slice(0, 14) + suffix
    email = header["recipient_email"]
    out[email] = suffix + "." + out[email]
    shift = pd.to_timedelta(copy, unit="D")
    for var in ("start_date", "end_date", "recorded_date"):
        h = header[var]
        out[h] = (pd.to_datetime(out[h]) + shift).dt.strftime("%Y-%m-%d %H:%M:%S")
    return out


def make_raw(folder: Path, rows: int, districts: int, seed: int) -> Path:
    """Write a study with ``rows`` teacher rows into ``folder`` (reused when present)."""
    teacher_file = folder / "teacher_survey.csv"
    stamp = folder / "bench.json"
    wanted = {"rows": rows, "districts": districts, "seed": seed}
    if teacher_file.exists() and stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return teacher_file
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    study = simulate.simulate_study("default", seed=seed, n_districts=districts,
                                    teacher_respondents=rows)
    fd, fs = simulate.to_frame_exports(study)
    fd.to_csv(folder / "frame_districts.csv", index=False)
    fs.to_csv(folder / "frame_schools.csv", index=False)
    simulate.write_form_xlsx(simulate.to_district_export(study), folder / "district_survey.xlsx")
    export = simulate.to_teacher_export(study)
    if len(export) != rows:
        print(f"simulator gave {len(export):,} teacher rows; "
              f"{'repeating' if len(export) < rows else 'cutting'} them to {rows:,}")
        export = tile_export(export, rows)
    simulate.write_qualtrics_csv(export, teacher_file)
    stamp.write_text(json.dumps(wanted))
    print(f"wrote {rows:,} teacher rows ({teacher_file.stat().st_size / 1e6:.0f} MB) "
          f"in {time.perf_counter() - t0:.0f} s")
    return teacher_file


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def median_time(func, repeats: int = 3) -> tuple[float, float]:
    """Median wall-clock and CPU seconds of ``func`` over ``repeats`` runs after a warm-up."""
    func()                                   # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), _cpu()
        func()
        wall.append(time.perf_counter() - t0)
        cpu.append(_cpu() - c0)
    return statistics.median(wall), statistics.median(cpu)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--districts", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=20261130)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None,
                        help="folder for the raw files (kept and reused between runs)")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        teacher_file = make_raw(folder, args.rows, args.districts, args.seed)
        read = median_time(lambda: pd.read_csv(teacher_file, skiprows=[1, 2], low_memory=False),
                           args.repeats)
        clean = median_time(lambda: clean_study(folder), args.repeats)
        n_kept = len(clean_study(folder).teachers)
    print(f"rows: {args.rows:,} (kept after the quality rules: {n_kept:,})")
    print(f"median of {args.repeats}      wall-clock   CPU time")
    print(f"pandas.read_csv:    {read[0]:8.2f} s {read[1]:8.2f} s")
    print(f"clean_study:        {clean[0]:8.2f} s {clean[1]:8.2f} s")
    print(f"ratio:              {clean[0] / read[0]:8.2f}   {clean[1] / read[1]:8.2f}"
          "   (target: about 3 or below)")
    if args.out:
        args.out.write_text(json.dumps({
            "rows": args.rows, "kept": n_kept, "repeats": args.repeats,
            "read_csv_s": read[0], "clean_s": clean[0], "ratio": clean[0] / read[0],
            "read_csv_cpu_s": read[1], "clean_cpu_s": clean[1],
            "ratio_cpu": clean[1] / read[1]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

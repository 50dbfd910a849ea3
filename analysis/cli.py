"""Command line: ``python -m analysis <step>``. The Makefile calls only this.

Every subcommand is a thin wrapper around one package function, so the same
step is reachable from Python, from the CLI and from make.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis import config
from analysis.data.ingest import FORMATS
from analysis.errors import InputError


def _simulate(args) -> None:
    from analysis.study.simulate import simulate_study, write_raw

    study = simulate_study(args.scenario, seed=args.seed, n_districts=args.districts,
                           teacher_respondents=args.teachers)
    hashes = write_raw(study, Path(args.out))
    for name, digest in hashes.items():
        print(f"{digest}  {Path(args.out) / name}")


def _clean(args) -> None:
    from analysis.data.clean import run_clean

    formats = {"teacher_survey": args.teacher_format or args.format,
               "district_survey": args.district_format or args.format}
    summary = run_clean(Path(args.raw), Path(args.processed), formats=formats)
    print(summary)


def _report(args) -> None:
    from analysis.report.publish import run_report

    out = run_report(Path(args.processed), Path(args.reports))
    print(f"wrote {out}")


def _weights(args) -> None:
    import pandas as pd

    from analysis.data.weights import weights_report

    processed = Path(args.processed)
    for name, weight, table in (("teachers", "weight", "teachers.parquet"),
                                ("districts", "district_weight", "districts.parquet")):
        path = processed / table
        if not path.exists():
            raise InputError(path, "not found", hint="run `make data` first")
        data = pd.read_parquet(path)
        print(f"\n{name} ({weight}), by stratum:")
        report = pd.concat([weights_report(data, weights=weight),
                            weights_report(data, weights=weight, by="stratum")
                            .rename(columns={"stratum": "group"})], ignore_index=True)
        print(report.to_string(index=False, float_format=lambda v: f"{v:,.3f}"))


def _notebooks(args) -> None:
    from analysis.report.notebooks import run_notebooks

    times = run_notebooks(raw_dir=Path(args.raw), processed_dir=Path(args.processed),
                          reports_dir=Path(args.reports))
    for name, seconds in times.items():
        print(f"{name:28s} {seconds:6.1f} s")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="write a synthetic study's raw exports")
    p.add_argument("--scenario", default=config.DEFAULT_SCENARIO)
    p.add_argument("--seed", type=int, default=config.SEED)
    p.add_argument("--districts", type=int, default=None, help="population districts")
    p.add_argument("--teachers", type=int, default=None, help="expected responding teachers")
    p.add_argument("--out", default=str(config.RAW_DIR))
    p.set_defaults(func=_simulate)

    p = sub.add_parser("clean", help="raw exports -> processed tables")
    p.add_argument("--raw", default=str(config.RAW_DIR))
    p.add_argument("--processed", default=str(config.PROCESSED_DIR))
    formats = ["auto", *FORMATS]
    p.add_argument("--format", choices=formats, default="auto",
                   help="export format of both survey files (default: detect from each file)")
    p.add_argument("--teacher-format", choices=formats, default=None,
                   help="export format of the teacher survey (overrides --format)")
    p.add_argument("--district-format", choices=formats, default=None,
                   help="export format of the district survey (overrides --format)")
    p.set_defaults(func=_clean)

    p = sub.add_parser("notebooks", help="execute the notebooks into reports/notebooks/")
    p.add_argument("--raw", default=str(config.RAW_DIR))
    p.add_argument("--processed", default=str(config.PROCESSED_DIR))
    p.add_argument("--reports", default=str(config.REPORTS_DIR))
    p.set_defaults(func=_notebooks)

    p = sub.add_parser("weights", help="weights report: sum, CV, Kish n_eff, deff by stratum")
    p.add_argument("--processed", default=str(config.PROCESSED_DIR))
    p.set_defaults(func=_weights)

    p = sub.add_parser("report", help="processed tables -> results.json and figures")
    p.add_argument("--processed", default=str(config.PROCESSED_DIR))
    p.add_argument("--reports", default=str(config.REPORTS_DIR))
    p.set_defaults(func=_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0

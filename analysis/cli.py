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


def _power(args) -> None:
    import pandas as pd

    from analysis.stats import power
    from analysis.study.codebook import load_codebook

    codebook = load_codebook()
    teachers_file = Path(args.processed) / config.TEACHERS_FILE
    if teachers_file.exists():
        params = power.design_parameters(pd.read_parquet(teachers_file))
    elif None in (args.icc, args.teachers_per_district, args.districts):
        raise InputError(teachers_file, "not found", hint="run `make data` to plan from the "
                         "bundled study, or give --districts, --teachers-per-district and --icc")
    else:
        params = {"icc": args.icc, "cluster_size": args.teachers_per_district, "r2_cluster": 0.0,
                  "r2_individual": 0.0, "district_covariates": 5, "strata": 12,
                  "base_rate": 0.5, "reference": codebook.reference_model, "n_districts": None,
                  "allocation": {m: 1 / 6 for m in codebook.support_model_codes()}}
    for key, value in (("icc", args.icc), ("cluster_size", args.teachers_per_district),
                       ("r2_cluster", args.r2_district), ("r2_individual", args.r2_teacher),
                       ("base_rate", args.base_rate), ("n_districts", args.districts)):
        if value is not None:
            params[key] = value
    kw = dict(allocation=params["allocation"], reference=params["reference"],
              cluster_size=params["cluster_size"], icc=params["icc"],
              r2_cluster=params["r2_cluster"], r2_individual=params["r2_individual"],
              covariates=params["district_covariates"], strata=params["strata"],
              base_rate=params["base_rate"], alpha=args.alpha, power=args.power)
    print(f"districts {params['n_districts']}, teachers per district "
          f"{params['cluster_size']:.1f}, ICC {params['icc']:.3f}, R2 district "
          f"{params['r2_cluster']:.2f}, R2 teacher {params['r2_individual']:.2f}, base rate "
          f"{params['base_rate']:.3f}, alpha {args.alpha}, power {args.power}")
    fmt = {"float_format": lambda v: f"{v:,.3f}", "index": False}
    table = power.allocation_table(n_districts=params["n_districts"],
                                   effects_pp=tuple(args.effect_pp), **kw)
    print("\nMinimum detectable effect of each model vs the reference (analytic):")
    print(table.to_string(**fmt))
    print(f"\nDistricts needed for an MDES of {args.target_pp:g} pp (same allocation):")
    print(power.required_districts(args.target_pp, **kw).to_string(index=False))
    if args.simulate:
        summary, _ = power.simulate_power(
            args.replications, scenario=args.scenario, seed=args.seed,
            n_districts=args.population_districts, teacher_respondents=args.sim_teachers,
            workers=args.workers, backend=args.backend, alpha=args.alpha)
        print(f"\nSimulation-based power ({args.replications} simulated studies, "
              f"{summary.attrs['runtime_s']:.0f} s):")
        print(summary.to_string(**fmt))


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

    p = sub.add_parser("power", help="study planning: MDES, districts needed, simulated power")
    p.add_argument("--processed", default=str(config.PROCESSED_DIR),
                   help="processed study whose design parameters are the defaults")
    p.add_argument("--districts", type=int, default=None, help="responding districts (J)")
    p.add_argument("--teachers-per-district", type=float, default=None)
    p.add_argument("--icc", type=float, default=None)
    p.add_argument("--r2-district", type=float, default=None)
    p.add_argument("--r2-teacher", type=float, default=None)
    p.add_argument("--base-rate", type=float, default=None,
                   help="rate of non-substitutive use in the reference model (0-1)")
    p.add_argument("--effect-pp", type=float, nargs="+", default=[5.0, 10.0])
    p.add_argument("--target-pp", type=float, default=10.0)
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--power", type=float, default=0.80)
    p.add_argument("--simulate", action="store_true", help="also run simulation-based power")
    p.add_argument("--replications", type=int, default=200)
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--backend", choices=["loky", "dask"], default="loky")
    p.add_argument("--scenario", default=config.DEFAULT_SCENARIO)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--population-districts", type=int, default=None,
                   help="simulated population districts (default: the scenario's)")
    p.add_argument("--sim-teachers", type=int, default=None,
                   help="simulated responding teachers (default: the scenario's)")
    p.set_defaults(func=_power)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0

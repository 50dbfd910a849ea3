"""Monte Carlo check of M1 against the simulator's truth: CI coverage and type-I error.

    .venv/bin/python benchmarks/monte_carlo.py                       # 200 replications
    .venv/bin/python benchmarks/monte_carlo.py --replications 40 --workers 2 \\
        --json benchmarks/results/monte_carlo.json

Each replication simulates a whole study with its own seed (a new population,
sample and responses), writes the raw exports (``write_raw``), cleans them
(``clean_study``), fits M1 (``fit_study_model``) and computes the average
marginal effect of each support model against ``tech_support_only``; then
compares them with that replication's ``truth.json`` values.

Reported, per scenario:

- ``default``: for each support model, the coverage of the 95% confidence
  intervals (share of replications whose interval holds the true AME, with
  its Monte Carlo standard error), the mean bias (estimate - truth, pp), the
  mean standard error against the standard deviation of the errors, and the
  power (share significant at 5%);
- ``null``: the type-I error rate of each AME at 5% and the family-wise rate
  (any of the five significant at 5% after Holm's adjustment).

``--fixed-population SEED`` surveys one population again and again (new samples
and answers only): the spread of the estimates then checks the design-based
standard errors without the population-to-population variation of the truth.

Replications run in parallel processes (``--workers``) with a progress bar.
(Reading ``--csv`` back with pandas: pass ``keep_default_na=False, na_values=[""]``,
or the scenario name ``null`` becomes a missing value.)
A replication that fails (e.g. a stratum with a single responding district)
is counted and reported, never silently dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

LEVEL = 0.95
ALPHA = 0.05


def replication(scenario: str, seed: int, n_districts: int | None,
                teachers: int | None, overrides: dict | None = None,
                population_seed: int | None = None, hypotheses: bool = False,
                variance: str = "fpc") -> tuple[list[dict], list[dict]]:
    """One simulated study, cleaned and fitted: one row per support model.

    With ``population_seed``, the population (and truth) is that seed's and
    ``seed`` draws only the survey (sample, responses, mess). With ``hypotheses``,
    H1-H8 are evaluated too and each part's verdict is compared with the planted truth
    (second list; empty otherwise). ``variance="with_replacement"`` fits M1 on the
    instrument's design without the district-stage finite-population correction.
    """
    from statsmodels.stats.multitest import multipletests

    from analysis.data.clean import clean_study
    from analysis.stats.models import fit_study_model
    from analysis.study.codebook import load_codebook
    from analysis.study.simulate import simulate_study, write_raw

    reference = load_codebook().reference_model
    study = simulate_study(scenario, seed=seed if population_seed is None else population_seed,
                           sample_seed=None if population_seed is None else seed,
                           n_districts=n_districts, teacher_respondents=teachers,
                           overrides=overrides)
    with tempfile.TemporaryDirectory(prefix="mc-") as tmp:
        write_raw(study, Path(tmp))
        cleaned = clean_study(Path(tmp))
    if variance == "fpc":
        fit = fit_study_model(cleaned.teachers)
    else:
        from analysis.stats.design import SurveyDesign
        from analysis.stats.models import fit_svyglm, model_data

        cb = load_codebook()
        d = cb.design
        design = SurveyDesign(model_data(cleaned.teachers), weights=d["weight"],
                              strata=d["strata"], psu=d["psu"], lonely_psu="adjust")
        fit = fit_svyglm(cb.model_formula("M1"), design=design, family="quasibinomial")
    ame = fit.ame("support_model", reference=reference, level=LEVEL)
    holm = multipletests(ame["p_value"].to_numpy(), alpha=ALPHA, method="holm")[1]
    truth = study.truth["ame_pp"]
    verdicts = []
    if hypotheses:
        from analysis.stats.hypotheses import evaluate_hypotheses, truth_agreement
        table = evaluate_hypotheses(cleaned.teachers, fits={"M1": fit}).table
        agree = truth_agreement(table, study.truth)
        verdicts = [dict(r, scenario=scenario, seed=seed) for r in agree.to_dict("records")]
    return [{
        "scenario": scenario, "seed": seed, "support_model": row.level,
        "estimate_pp": 100 * row.estimate, "std_error_pp": 100 * row.std_error,
        "ci_low_pp": 100 * row.ci_low, "ci_high_pp": 100 * row.ci_high,
        "p_value": row.p_value, "p_holm": p_holm, "truth_pp": truth[row.level],
        "n_teachers": fit.n, "n_districts": int(cleaned.teachers["district_id"].nunique()),
        "df": int(row.df),
    } for row, p_holm in zip(ame.itertuples(index=False), holm, strict=True)], verdicts


def _run_one(args) -> tuple[tuple, list[dict] | str]:
    try:
        return args, replication(*args)
    except Exception as err:  # a failed replication is reported, not hidden
        return args, f"{type(err).__name__}: {err}"


def _limit_threads() -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"


def run(scenarios: list[str], replications: int, *, workers: int, seed_base: int,
        n_districts: int | None, teachers: int | None, overrides: dict | None = None,
        population_seed: int | None = None, hypotheses: bool = False,
        variance: str = "fpc") -> tuple[pd.DataFrame, list, pd.DataFrame]:
    """All replications of all scenarios; returns the AME rows, the failures and the
    hypothesis verdicts (empty without ``hypotheses``)."""
    tasks = [(sc, seed_base + k, n_districts, teachers, overrides, population_seed, hypotheses,
              variance)
             for k in range(replications) for sc in scenarios]
    rows, failures, verdicts = [], [], []
    _limit_threads()
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_run_one, task) for task in tasks]
        for future in tqdm(as_completed(futures), total=len(futures), desc="replications",
                           unit="study"):
            task, result = future.result()
            if isinstance(result, str):
                failures.append({"scenario": task[0], "seed": task[1], "error": result})
            else:
                rows.extend(result[0])
                verdicts.extend(result[1])
    df = pd.DataFrame(rows)
    if len(df):
        df = df.sort_values(["scenario", "seed", "support_model"], ignore_index=True)
    v = pd.DataFrame(verdicts)
    if len(v):
        v = v.sort_values(["scenario", "seed", "id"], ignore_index=True)
    return df, failures, v


def summarise_verdicts(v: pd.DataFrame) -> dict:
    """Per scenario and part: share "supported" (power where planted, false-positive rate
    where not), share agreeing with the planted truth, and share of replications in which
    every part agrees."""
    out = {}
    for scenario, d in v.groupby("scenario", sort=True):
        parts = {}
        for part, g in d.groupby("id", sort=True):
            parts[part] = {"expected": g["expected"].iloc[0],
                           "supported": round(float((g["verdict"] == "supported").mean()), 4),
                           "agrees": round(float(g["agrees"].mean()), 4)}
        out[scenario] = {"replications": int(d["seed"].nunique()),
                         "all_parts_agree": round(float(d.groupby("seed")["agrees"].all().mean()), 4),
                         "parts": parts}
    return out


def summarise(df: pd.DataFrame) -> dict:
    """Coverage, bias and power (default-like scenarios) and type-I error (null)."""
    out = {}
    for scenario, d in df.groupby("scenario", sort=True):
        d = d.assign(covers=(d["ci_low_pp"] <= d["truth_pp"]) & (d["truth_pp"] <= d["ci_high_pp"]),
                     error=d["estimate_pp"] - d["truth_pp"],
                     significant=d["p_value"] < ALPHA)
        reps = d["seed"].nunique()
        per_model = {}
        for model, g in d.groupby("support_model", sort=False):
            cov = g["covers"].mean()
            per_model[model] = {
                "coverage": round(float(cov), 4),
                "coverage_mc_se": round(float(np.sqrt(cov * (1 - cov) / len(g))), 4),
                "mean_truth_pp": round(float(g["truth_pp"].mean()), 3),
                "mean_bias_pp": round(float(g["error"].mean()), 3),
                "bias_mc_se_pp": round(float(g["error"].std(ddof=1) / np.sqrt(len(g))), 3),
                "mean_std_error_pp": round(float(g["std_error_pp"].mean()), 3),
                "sd_of_errors_pp": round(float(g["error"].std(ddof=1)), 3),
                "rejection_rate_5pct": round(float(g["significant"].mean()), 4),
            }
        by_seed = d.groupby("seed")
        out[scenario] = {
            "replications": int(reps),
            "mean_teachers_in_m1": round(float(d.groupby("seed")["n_teachers"].first().mean()), 1),
            "mean_districts": round(float(d.groupby("seed")["n_districts"].first().mean()), 1),
            "all_five_cover": round(float(by_seed["covers"].all().mean()), 4),
            "any_significant_unadjusted": round(float(by_seed["significant"].any().mean()), 4),
            "familywise_holm": round(float(by_seed["p_holm"].min().lt(ALPHA).mean()), 4),
            "per_model": per_model,
        }
    return out


def _print(summary: dict, failures: list, seconds: float) -> None:
    for scenario, s in summary.items():
        print(f"\n== {scenario}: {s['replications']} replications, about "
              f"{s['mean_districts']:.0f} districts and {s['mean_teachers_in_m1']:.0f} teachers in M1")
        table = pd.DataFrame(s["per_model"]).T[
            ["coverage", "coverage_mc_se", "mean_truth_pp", "mean_bias_pp", "bias_mc_se_pp",
             "mean_std_error_pp", "sd_of_errors_pp", "rejection_rate_5pct"]]
        print(table.to_string())
        print(f"all five intervals cover: {s['all_five_cover']:.3f}; any AME significant at 5%: "
              f"{s['any_significant_unadjusted']:.3f}; family-wise (Holm) at 5%: "
              f"{s['familywise_holm']:.3f}")
    print(f"\nfailed replications: {len(failures)}")
    for f in failures[:10]:
        print(f"  {f['scenario']} seed {f['seed']}: {f['error']}")
    print(f"elapsed: {seconds:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replications", type=int, default=200,
                        help="replications per scenario (default 200)")
    parser.add_argument("--scenarios", nargs="+", default=["default", "null"])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed-base", type=int, default=100_000,
                        help="replication k uses seed seed_base + k")
    parser.add_argument("--districts", type=int, default=None,
                        help="population districts (default: the scenario's)")
    parser.add_argument("--teachers", type=int, default=None,
                        help="expected responding teachers (default: the scenario's)")
    parser.add_argument("--fixed-population", type=int, default=None, metavar="SEED",
                        help="survey one fixed population (this seed) again and again: checks "
                             "the design-based variance without population-to-population "
                             "variation of the truth")
    parser.add_argument("--overrides", type=json.loads, default=None,
                        help='scenario overrides as JSON, e.g. \'{"outcome": {"district_sd": 0.3}}\'')
    parser.add_argument("--hypotheses", action="store_true",
                        help="also evaluate H1-H8 and compare each verdict with the planted truth")
    parser.add_argument("--variance", choices=["fpc", "with_replacement"], default="fpc",
                        help="M1's design variance: the instrument's (FPC on the district "
                             "stage) or with-replacement (no FPC)")
    parser.add_argument("--json", type=Path, default=None,
                        help="write the summary and settings here")
    parser.add_argument("--csv", type=Path, default=None,
                        help="write every replication's estimates here")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    df, failures, verdicts = run(args.scenarios, args.replications, workers=args.workers,
                                 seed_base=args.seed_base, n_districts=args.districts,
                                 teachers=args.teachers, overrides=args.overrides,
                                 population_seed=args.fixed_population,
                                 hypotheses=args.hypotheses, variance=args.variance)
    seconds = time.perf_counter() - start
    summary = summarise(df) if len(df) else {}
    _print(summary, failures, seconds)
    if len(verdicts):
        summary_v = summarise_verdicts(verdicts)
        summary["hypotheses"] = summary_v
        for scenario, s in summary_v.items():
            print(f"\n== {scenario}: hypothesis verdicts against the planted truth "
                  f"({s['replications']} replications); every part agrees in "
                  f"{s['all_parts_agree']:.3f}")
            print(pd.DataFrame(s["parts"]).T.to_string())
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(args.csv, index=False, lineterminator="\n")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        args.json.write_text(json.dumps({"settings": settings, "seconds": round(seconds),
                                         "failures": failures, "summary": summary},
                                        indent=2) + "\n")
    return 0 if summary else 1


if __name__ == "__main__":
    sys.exit(main())

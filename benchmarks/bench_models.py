"""Benchmark: M1 (design-based logit) and its AMEs on 1,000,000 teachers in 5,000 districts.

    .venv/bin/python benchmarks/bench_models.py [--rows N] [--districts D] [--no-r]

Times (median of 3 after a warm-up) of
- ours: ``fit_svyglm`` of the codebook's M1 formula with Taylor variance (strata, PSUs,
  FPC), from the DataFrame (formula parsing included);
- baseline: statsmodels ``GLM`` (binomial, frequency-free variance weights) with
  cluster-robust covariance, on prepared arrays (design matrix built beforehand);
- ours: AMEs of the six support models with design-based delta-method CIs, as a ratio
  to one M1 fit;
- R: ``svydesign`` + ``svyglm`` on the same data (median of 3 after a warm-up), where R
  is installed.
Writes reports/bench/bench_models.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.stats.models import fit_svyglm, model_frame, study_design  # noqa: E402
from analysis.study.codebook import load_codebook  # noqa: E402


def make_teachers(rows: int, districts: int, seed: int = 1) -> pd.DataFrame:
    """Teacher rows with M1's variables and the design columns (vectorised numpy)."""
    cb = load_codebook()
    rng = np.random.default_rng(seed)
    d = rng.integers(0, districts, rows)
    codes = cb.support_model_codes()
    dist_model = rng.choice(codes, districts)
    strata = np.arange(districts) % 40
    frl = rng.uniform(5, 95, districts)
    enroll = np.exp(rng.normal(7.5, 1.0, districts))
    effect = dict(zip(codes, [-0.4, 0, 0.2, 0.35, 0.6, 0.9], strict=True))
    eta = (np.vectorize(effect.get)(dist_model)[d] - 0.01 * (frl[d] - 50)
           + rng.normal(0, 0.5, districts)[d])
    t = pd.DataFrame({
        "district_id": d.astype(str), "stratum": strata[d].astype(str),
        "fpc_districts": 10 * np.bincount(strata, minlength=40)[strata[d]],
        "weight": rng.lognormal(3, 0.4, rows),
        "support_model": pd.Categorical(dist_model[d], categories=codes),
        "frl_pct": frl[d], "enrollment": enroll[d],
        "locale": pd.Categorical(rng.choice(cb.scale_values("locale"), districts)[d],
                                 categories=cb.scale_values("locale")),
        "tech_spend_pp": rng.lognormal(5.8, 0.3, districts)[d],
        "students_per_device": rng.uniform(1, 3, districts)[d],
        "years_teaching": rng.integers(0, 40, rows).astype(float),
        "grade_band": pd.Categorical(rng.choice(cb.scale_values("grade_band"), rows),
                                     categories=cb.scale_values("grade_band")),
        "subject": pd.Categorical(rng.choice(cb.scale_values("subject"), rows),
                                  categories=cb.scale_values("subject")),
    })
    t["non_substitutive"] = (rng.uniform(size=rows) < 1 / (1 + np.exp(-eta))).astype(float)
    return t


def timed(fn, repeat: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def r_svyglm_seconds(df: pd.DataFrame, formula: str) -> float | None:
    if not shutil.which("Rscript"):
        return None
    rhs = formula.split("~", 1)[1]
    rhs = (rhs.replace('C(support_model, Treatment("tech_support_only"))',
                       'relevel(factor(support_model), "tech_support_only")')
           .replace('C(locale, Treatment("suburb"))', 'relevel(factor(locale), "suburb")')
           .replace('C(grade_band, Treatment("elementary"))',
                    'relevel(factor(grade_band), "elementary")')
           .replace('C(subject, Treatment("ela"))', 'relevel(factor(subject), "ela")')
           .replace("np.log", "log"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.csv"
        df.to_csv(path, index=False)
        script = (
            f"suppressMessages(library(survey)); d <- read.csv('{path}');"
            f"f <- non_substitutive ~ {rhs};"
            "fit <- function() {des <- svydesign(ids=~district_id, strata=~stratum, "
            "fpc=~fpc_districts, weights=~weight, data=d); "
            "svyglm(f, design=des, family=quasibinomial())}; invisible(fit()); "
            "t <- replicate(3, system.time(fit())['elapsed']); cat(median(t))")
        out = subprocess.run(["Rscript", "-e", script], capture_output=True, text=True)
        return float(out.stdout.split()[-1]) if out.returncode == 0 else None


def main(argv=None) -> dict:
    import statsmodels.api as sm

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--districts", type=int, default=5_000)
    ap.add_argument("--no-r", action="store_true")
    ap.add_argument("--out", default="reports/bench/bench_models.json")
    args = ap.parse_args(argv)
    cb = load_codebook()
    formula = cb.model_formula("M1")
    teachers = make_teachers(args.rows, args.districts)
    design = study_design(teachers)
    ours = timed(lambda: fit_svyglm(formula, design=design))
    y, X, _ = model_frame(formula, design.data)
    Xa, w = X.to_numpy(), design.w
    groups = pd.factorize(design.data["district_id"])[0]
    base = timed(lambda: sm.GLM(y, Xa, family=sm.families.Binomial(), var_weights=w)
                 .fit(cov_type="cluster", cov_kwds={"groups": groups}))
    fit = fit_svyglm(formula, design=design)

    def ames():
        fit.extra.pop("_margins", None)
        fit.ame("support_model", reference=cb.reference_model)

    ame_s = timed(ames)
    results = {
        "rows": args.rows, "districts": args.districts,
        "m1_design_based_s": ours, "statsmodels_glm_cluster_prepared_s": base,
        "m1_over_statsmodels": ours / base, "ame_s": ame_s, "ame_over_m1_fit": ame_s / ours,
        "r_svyglm_s": None if args.no_r else r_svyglm_seconds(teachers, formula),
    }
    if results["r_svyglm_s"]:
        results["r_over_ours"] = results["r_svyglm_s"] / ours
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    for k, v in results.items():
        print(f"{k:40s} {v:.4g}" if isinstance(v, float) else f"{k:40s} {v}")
    return results


if __name__ == "__main__":
    main()

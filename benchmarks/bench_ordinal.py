"""Benchmark: the design-based proportional-odds model against statsmodels' OrderedModel.

    .venv/bin/python benchmarks/bench_ordinal.py [--rows N]

Times (median of 3 after a warm-up) ``fit_svyolr`` (weighted, Taylor variance) and
statsmodels ``OrderedModel`` (unweighted, logit, model-based SEs) on the same prepared
data. Writes reports/bench/bench_ordinal.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.stats.design import SurveyDesign  # noqa: E402
from analysis.stats.ordinal import fit_svyolr  # noqa: E402


def make_data(rows: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    psu = rng.integers(0, max(rows // 200, 10), rows)
    x1, x2 = rng.normal(size=rows), rng.normal(size=rows)
    latent = 0.5 * x1 - 0.3 * x2 + rng.normal(0, 0.5, psu.max() + 1)[psu] + rng.logistic(size=rows)
    level = np.digitize(latent, [-1.0, 0.5, 2.0])
    return pd.DataFrame({
        "y": pd.Categorical(np.array(["S", "A", "M", "R"])[level], categories=list("SAMR"),
                            ordered=True),
        "x1": x1, "x2": x2, "psu": psu, "stratum": psu % 20, "w": rng.lognormal(2, 0.4, rows)})


def timed(fn, repeat=3):
    fn()
    t = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return statistics.median(t)


def main(argv=None) -> dict:
    from statsmodels.miscmodels.ordinal_model import OrderedModel

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--out", default="reports/bench/bench_ordinal.json")
    args = ap.parse_args(argv)
    df = make_data(args.rows)
    design = SurveyDesign(df, weights="w", strata="stratum", psu="psu")
    ours = timed(lambda: fit_svyolr("y ~ x1 + x2", design=design))
    base = timed(lambda: OrderedModel(df["y"], df[["x1", "x2"]], distr="logit")
                 .fit(method="bfgs", disp=False))
    result = {"rows": args.rows, "svyolr_s": ours, "statsmodels_orderedmodel_s": base,
              "ours_over_statsmodels": ours / base}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

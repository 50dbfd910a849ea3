"""Execute the project's notebooks with papermill into ``reports/notebooks/``.

The notebooks are thin: narrative plus calls into ``analysis``. Each has a
papermill ``parameters`` cell (``raw_dir``, ``processed_dir``, ``reports_dir``,
``seed``); this module runs them top to bottom in a fresh kernel with the
folders of the current run, and reports how long each took.

Examples
--------
>>> [p.name for p in notebook_paths()][:2]
['01-clean.ipynb', '02-describe.ipynb']
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from analysis import config

NOTEBOOK_DIR = Path("notebooks")


def notebook_paths(folder: Path = NOTEBOOK_DIR) -> list[Path]:
    """The numbered notebooks, in order."""
    return sorted(Path(folder).glob("[0-9][0-9]-*.ipynb"))


def _execute(nb: str, out: str, params: dict, cwd: str) -> float:
    import papermill

    t0 = time.perf_counter()
    papermill.execute_notebook(nb, out, parameters=params, cwd=cwd, progress_bar=False,
                               kernel_name="python3")
    return time.perf_counter() - t0


def run_notebooks(*, raw_dir: Path = config.RAW_DIR, processed_dir: Path = config.PROCESSED_DIR,
                  reports_dir: Path = config.REPORTS_DIR, folder: Path = NOTEBOOK_DIR,
                  seed: int = config.SEED, only: list[str] | None = None,
                  workers: int | None = None) -> dict[str, float]:
    """Run every notebook (or those whose name starts with one of ``only``).

    The notebooks only read the data and results, so they run ``workers`` at a
    time (default: the number of CPUs, at most 2), each in its own kernel.

    Returns
    -------
    dict
        Notebook name -> seconds it took (in notebook order).
    """
    from concurrent.futures import ProcessPoolExecutor

    out_dir = Path(reports_dir) / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    params = {"raw_dir": str(Path(raw_dir).resolve()),
              "processed_dir": str(Path(processed_dir).resolve()),
              "reports_dir": str(Path(reports_dir).resolve()), "seed": seed}
    todo = [nb for nb in notebook_paths(folder)
            if not only or any(nb.name.startswith(o) for o in only)]
    args = [(str(nb), str(out_dir / nb.name), params, str(Path(folder).resolve()))
            for nb in todo]
    workers = workers or min(2, os.cpu_count() or 1)
    if workers == 1 or len(todo) < 2:
        return {nb.name: _execute(*a) for nb, a in zip(todo, args, strict=True)}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_execute, *a) for a in args]
        return {nb.name: f.result() for nb, f in zip(todo, futures, strict=True)}

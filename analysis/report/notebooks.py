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

import time
from pathlib import Path

from analysis import config

NOTEBOOK_DIR = Path("notebooks")


def notebook_paths(folder: Path = NOTEBOOK_DIR) -> list[Path]:
    """The numbered notebooks, in order."""
    return sorted(Path(folder).glob("[0-9][0-9]-*.ipynb"))


def run_notebooks(*, raw_dir: Path = config.RAW_DIR, processed_dir: Path = config.PROCESSED_DIR,
                  reports_dir: Path = config.REPORTS_DIR, folder: Path = NOTEBOOK_DIR,
                  seed: int = config.SEED, only: list[str] | None = None) -> dict[str, float]:
    """Run every notebook (or those whose name starts with one of ``only``).

    Returns
    -------
    dict
        Notebook name -> seconds it took.
    """
    import papermill

    out_dir = Path(reports_dir) / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    params = {"raw_dir": str(Path(raw_dir).resolve()),
              "processed_dir": str(Path(processed_dir).resolve()),
              "reports_dir": str(Path(reports_dir).resolve()), "seed": seed}
    times = {}
    for nb in notebook_paths(folder):
        if only and not any(nb.name.startswith(o) for o in only):
            continue
        t0 = time.perf_counter()
        papermill.execute_notebook(str(nb), str(out_dir / nb.name), parameters=params,
                                   cwd=str(Path(folder).resolve()), progress_bar=False,
                                   kernel_name="python3")
        times[nb.name] = time.perf_counter() - t0
    return times

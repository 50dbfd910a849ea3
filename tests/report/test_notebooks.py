"""The notebooks: committed without outputs, paired with py:percent copies, and they run."""

import json

import jupytext
import nbformat
import pytest
from helpers import RAW, ROOT

from analysis.report.notebooks import notebook_paths, run_notebooks

NOTEBOOKS = notebook_paths(ROOT / "notebooks")


def test_there_are_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS] == [f"{k:02d}" for k in range(1, len(NOTEBOOKS) + 1)]
    assert len(NOTEBOOKS) >= 4


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs_and_paired(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    assert sum("parameters" in t for t in tags) == 1
    paired = jupytext.read(path.with_suffix(".py"))
    assert [c.source for c in paired.cells] == [c.source for c in nb.cells]


def test_no_analysis_logic_in_cells():
    """Thin notebooks: no function or class definitions, no loops over data."""
    for path in NOTEBOOKS:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                assert "def " not in cell.source and "class " not in cell.source, path.name
                assert "for " not in cell.source.replace("for name, fit in", ""), path.name


def test_every_notebook_runs_top_to_bottom(processed_dir, reports_dir):
    times = run_notebooks(raw_dir=RAW, processed_dir=processed_dir, reports_dir=reports_dir,
                          folder=ROOT / "notebooks")
    assert sorted(times) == [p.name for p in NOTEBOOKS]
    for path in NOTEBOOKS:
        out = json.loads((reports_dir / "notebooks" / path.name).read_text())
        errors = [o for c in out["cells"] for o in c.get("outputs", [])
                  if o.get("output_type") == "error"]
        assert errors == []
        assert any(c.get("outputs") for c in out["cells"] if c["cell_type"] == "code")

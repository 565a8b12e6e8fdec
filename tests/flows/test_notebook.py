"""docs/notebooks/customer_ai_and_click_models.ipynb runs top to bottom with nbclient on the
session's pipeline project (OFFERFLOW_PROJECT): it loads both champions through MLflow, scores a
frame with each, reads a ranking table with DuckDB and draws the lift chart."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.flow

NOTEBOOK = Path(__file__).resolve().parents[2] / "docs" / "notebooks" / "customer_ai_and_click_models.ipynb"


def _outputs(cell) -> str:
    """The text a cell showed: streams, plain-text results and HTML tables."""
    parts = []
    for output in cell.get("outputs", []):
        parts.append(output.get("text", ""))
        data = output.get("data", {})
        parts += [data.get("text/plain", ""), data.get("text/html", "")]
    return "\n".join(parts)


def test_notebook_runs_on_the_pipeline_project(pipeline_run, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    project, _ = pipeline_run
    monkeypatch.setenv("OFFERFLOW_PROJECT", str(project))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # jupyter_core's own migration warning otherwise
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    started = time.monotonic()
    # the kernel inherits this process's environment, OFFERFLOW_PROJECT included
    NotebookClient(notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(project)}}).execute()
    elapsed = time.monotonic() - started
    code = [c for c in notebook.cells if c.cell_type == "code"]
    shown = [_outputs(c) for c in code]
    assert "champions:" in shown[1]
    assert "percentile" in shown[2] and "bucket" in shown[2]  # Customer AI's pyfunc output
    assert "p_click" in shown[3]
    assert "profiles_ranked_first" in shown[4]
    assert "scoring run" in shown[5] or "psi" in shown[5]
    assert any("image/png" in o.get("data", {}) for o in code[-1].outputs), "no chart drawn"
    assert "top-decile lift:" in shown[-1]
    assert elapsed < 90, f"the notebook took {elapsed:.0f} s"

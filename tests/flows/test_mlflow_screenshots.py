"""tools/mlflow_screenshots.py takes the MLflow UI screenshots of docs/data-scientists.md in
headless Chromium: run on the session's pipeline project, every page it captures has rendered
(the run and model names are in the page's text, the PNG is not a blank or loading page), and
the committed images are small enough to keep in the repository."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from offerflow.core.config import load_config
from offerflow.core.tracking import Tracker, resolve_tracking_uri

pytestmark = pytest.mark.flow

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "mlflow_screenshots.py"
IMAGES = REPO / "docs" / "images"
sys.path.insert(0, str(TOOL.parent))
from mlflow_screenshots import find_chromium  # noqa: E402  (a script folder, not a package)


def _distinct_colours(png: Path) -> int:
    from PIL import Image

    with Image.open(png) as image:
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    return len(np.unique(pixels[:: 7], axis=0))


def _run_names(project: Path) -> dict[str, str]:
    config = load_config(project / "offerflow.yaml")
    client = Tracker(resolve_tracking_uri(config.tracking.uri, config.root),
                     config.path(config.tracking.artifact_root)).client
    experiments = [e.experiment_id for e in client.search_experiments()]
    return {run.info.run_id: run.info.run_name for run in client.search_runs(experiments)}


def test_screenshots_of_the_session_project_show_its_runs_and_models(pipeline_run, tmp_path):
    binary = find_chromium()
    if binary is None:
        pytest.skip("no chromium binary on PATH (apt-get install chromium) - no MLflow UI screenshots")
    project, _ = pipeline_run
    out, text = tmp_path / "images", tmp_path / "text"
    run = subprocess.run([sys.executable, str(TOOL), "--project", str(project), "--out", str(out),
                          "--text-dir", str(text)], cwd=REPO, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])})
    assert run.returncode == 0, run.stderr[-3000:]
    names = {p.stem for p in out.glob("*.png")}
    assert {"mlflow-lineage", "mlflow-run-lineage", "mlflow-click-model-charts", "mlflow-registered-model"} <= names
    runs = _run_names(project)
    pipeline_name = next(n for n in runs.values() if n.startswith("pipeline-"))
    pages = {p.stem: p.read_text() for p in text.glob("*.txt")}
    # the parent run and, expanded under it, its steps from the other experiments
    assert pipeline_name in pages["mlflow-lineage"] and "train-purchase_14d-" in pages["mlflow-lineage"]
    assert "Parent run" in pages["mlflow-run-lineage"] and pipeline_name in pages["mlflow-run-lineage"]
    charts = pages["mlflow-click-model-charts"]
    assert "diagnostics" in charts and "offer_rates.png" in charts
    assert "P(goal occurs within" in pages["mlflow-registered-model"] and "champion" in pages["mlflow-registered-model"]
    for png in out.glob("*.png"):
        assert png.stat().st_size < 300_000, png.name
        assert _distinct_colours(png) > 200, f"{png.name} looks blank"


def test_committed_screenshots_are_small_and_not_blank():
    images = sorted(IMAGES.glob("mlflow-*.png"))
    assert {p.stem for p in images} >= {"mlflow-lineage", "mlflow-click-model-charts", "mlflow-registered-model",
                                        "mlflow-drift"}
    guide = (REPO / "docs" / "data-scientists.md").read_text()
    for png in images:
        assert png.stat().st_size < 300_000, png.name
        assert _distinct_colours(png) > 200, png.name
        assert f"images/{png.name}" in guide, f"{png.name} is not shown in docs/data-scientists.md"

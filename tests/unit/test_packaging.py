"""The wheel: it ships the deployments (prefect.yaml, for `offerflow up` from an install) and the
LICENSE; the scale-out and compiled-prediction libraries are extras, not requirements."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("hatchling", reason="the test extra installs hatchling (builds the wheel offline)")
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(out), str(REPO)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    [built] = out.glob("offerflow-*.whl")
    return built


def test_wheel_ships_prefect_yaml_and_the_license(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata = Parser().parsestr(zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode())
        deployments = zf.read("offerflow/prefect.yaml").decode()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "offerflow/ingest/expectation_rationales.yaml" in names
    assert {f"offerflow/ingest/data_docs_assets/{f}" for f in ("bootstrap-table.min.js", "SOURCES.md")} <= set(names)
    assert "entrypoint: offerflow/flows/pipeline.py:pipeline" in deployments
    assert metadata["License-Expression"] == "Apache-2.0"
    core = [r for r in metadata.get_all("Requires-Dist") if "extra ==" not in r]
    assert not [r for r in core if r.split(">")[0].split("[")[0].strip() in {"dask", "prefect-dask", "lleaves", "llvmlite"}]
    assert {"dask", "fast", "postgres", "test"} <= set(metadata.get_all("Provides-Extra"))


def test_predictors_fall_back_without_lleaves(monkeypatch, tmp_path):
    """The `fast` extra is optional: with lleaves missing, compiled prediction gives LightGBM's own."""
    import numpy as np
    from lightgbm import LGBMClassifier

    from offerflow.ranking.compiled_predict import BoosterPredictor

    monkeypatch.setitem(sys.modules, "lleaves", None)  # `import lleaves` raises ImportError
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 4))
    booster = LGBMClassifier(n_estimators=5, verbose=-1).fit(x, x[:, 0] > 0).booster_
    predictor = BoosterPredictor(booster, compile="always", cache_dir=tmp_path)
    assert np.allclose(predictor.predict(x), booster.predict(x)) and not predictor.compiled

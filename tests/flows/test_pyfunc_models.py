"""Every registered model is an MLflow pyfunc a notebook can use: in a fresh process that imports
only MLflow, `mlflow.pyfunc.load_model("models:/<name>@champion").predict(df)` gives Customer AI's
probability, score, percentile and bucket (the same as offerflow's own scoring) and the click
model's P(click) per profile x offer row; offerflow's code comes from the model itself
(`code_paths`), and the logged requirements are the lean ones."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from offerflow.core.config import load_config
from offerflow.core.features import event_time_range, open_events
from offerflow.core.tracking import Tracker, resolve_tracking_uri
from offerflow.customer_ai.propensity import feature_frame, score_table
from offerflow.ingest.catalog import load_offers, load_profiles
from offerflow.models.registry import load_propensity_champion, load_ranking_champion
from offerflow.ranking.click_model import offer_features, profile_features

pytestmark = pytest.mark.flow

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "data-scientists.md"
GOAL = "purchase_14d"
PROPENSITY = f"offerflow-propensity-{GOAL}"
CLICK = "offerflow-ranking-web-personalized"

#: Run in a fresh interpreter: MLflow alone loads each champion and predicts a frame from Parquet.
LOAD_AND_PREDICT = """
import json, sys
import mlflow
import pandas as pd

mlflow.set_tracking_uri("sqlite:///mlflow.db")
name, frame_path, out_path = sys.argv[1:4]
model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
model.predict(pd.DataFrame(model.input_example)).to_parquet(out_path.replace(".parquet", "-example.parquet"))
model.predict(pd.read_parquet(frame_path)).to_parquet(out_path)
import offerflow
print(json.dumps({"offerflow": offerflow.__file__}))
"""


@pytest.fixture()
def project(pipeline_run):
    """The session's pipeline project, read only: loading a model writes nothing there."""
    return pipeline_run[0]


def _fresh_env() -> dict[str, str]:
    """No PYTHONPATH: offerflow must come from the model's own code, not from this checkout."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _predict_in_fresh_process(project: Path, name: str, frame: pd.DataFrame, work: Path) -> tuple[pd.DataFrame, dict]:
    frame_path, out_path = work / "in.parquet", work / "out.parquet"
    frame.to_parquet(frame_path, index=False)
    run = subprocess.run([sys.executable, "-c", LOAD_AND_PREDICT, name, str(frame_path), str(out_path)],
                         cwd=project, env=_fresh_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    info = json.loads(run.stdout.strip().splitlines()[-1])
    assert pd.read_parquet(str(out_path).replace(".parquet", "-example.parquet")).shape[0] > 0
    return pd.read_parquet(out_path), info


def _tracker(project: Path) -> tuple[object, Tracker]:
    config = load_config(project / "offerflow.yaml")
    return config, Tracker(resolve_tracking_uri(config.tracking.uri, config.root),
                           config.path(config.tracking.artifact_root))


def _logged_model_dir(tracker: Tracker, name: str) -> Path:
    import mlflow.artifacts

    return Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}@champion"))


def test_customer_ai_champion_predicts_offerflows_scores_through_mlflow_alone(project, tmp_path):
    config, tracker = _tracker(project)
    goal = config.goal(GOAL)
    con = open_events(config.paths.validated_events)
    profiles = load_profiles(config.path(config.data.profiles))
    as_of = pd.Timestamp(event_time_range(con)[1]).ceil("D").to_pydatetime()
    frame = feature_frame(con, goal, profiles, profiles["profile_id"].head(300), as_of)
    champion, _ = load_propensity_champion(tracker, PROPENSITY)
    frame = frame[["profile_id", *champion.feature_columns]]

    got, info = _predict_in_fresh_process(project, PROPENSITY, frame, tmp_path)

    assert "/code/offerflow/" in info["offerflow"].replace(os.sep, "/")  # the model's own copy
    assert list(got.columns) == ["profile_id", "probability", "score", "percentile", "bucket"]
    assert got["probability"].between(0, 1).all() and got["probability"].nunique() > 10
    expected = score_table(champion.predict(frame), frame["profile_id"], goal.buckets.medium_from,
                           goal.buckets.high_from)
    np.testing.assert_allclose(got["probability"], expected["probability"], rtol=0, atol=1e-12)
    pd.testing.assert_frame_equal(got.drop(columns="probability"), expected.drop(columns="probability"),
                                  check_dtype=False)
    # what offerflow's scoring run wrote for these profiles (same model, same as-of date)
    scores = pd.concat(pd.read_parquet(p) for p in sorted(config.paths.propensity_scores(GOAL).glob("scores-*.parquet")))
    scores = scores[scores["score_date"] == as_of.date().isoformat()].drop_duplicates("profile_id", keep="last")
    both = got.merge(scores[["profile_id", "probability"]], on="profile_id", suffixes=("", "_scored"))
    assert len(both) > 100
    if not goal.bgnbd_features:  # BG/NBD features are fitted on the rows scored together
        np.testing.assert_allclose(both["probability"], both["probability_scored"], atol=1e-9)


def test_click_champion_predicts_p_click_per_profile_offer_through_mlflow_alone(project, tmp_path):
    config, tracker = _tracker(project)
    model_cfg = next(m for m in config.ai_models if m.name == "web-personalized")
    champion = load_ranking_champion(tracker, config.tracking.experiment_prefix, model_cfg).click_model
    profiles = load_profiles(project / "data" / "outputs" / "profiles_enriched.parquet").head(40)
    offers = load_offers(config.path(config.data.offers))
    pairs = profile_features(profiles).merge(offer_features(offers), how="cross")
    frame = pairs[champion.feature_columns]

    got, _ = _predict_in_fresh_process(project, CLICK, frame, tmp_path)

    assert list(got.columns) == ["p_click"] and len(got) == len(frame)
    assert got["p_click"].between(0, 1).all() and got["p_click"].nunique() > 5
    # the probabilities offerflow ranks with (its score matrix, before value weights and the
    # floor of offers it does not personalize)
    champion.offer_weights, champion.qualified_offers = None, offers["offer_id"].tolist()
    matrix = champion.score_matrix(profiles, offers)
    np.testing.assert_allclose(got["p_click"].to_numpy(), matrix.reshape(-1), atol=1e-9)


@pytest.mark.parametrize("name", [PROPENSITY, CLICK])
def test_registered_models_have_a_signature_an_example_and_lean_requirements(project, name):
    _, tracker = _tracker(project)
    model_dir = _logged_model_dir(tracker, name)
    mlmodel = (model_dir / "MLmodel").read_text()
    assert "python_function" in mlmodel and "signature:" in mlmodel and "saved_input_example_info" in mlmodel
    requirements = {re.split(r"[=<>~!\[ ]", line)[0].lower()
                    for line in (model_dir / "requirements.txt").read_text().splitlines() if line.strip()}
    assert {"lightgbm", "pandas", "numpy", "pyarrow"} <= requirements
    assert not requirements & {"pytest", "rich", "dask", "prefect", "prefect-dask", "typer", "great-expectations"}
    assert (model_dir / "code" / "offerflow" / "customer_ai" / "propensity.py").exists()


def test_the_guides_notebook_snippet_runs_with_mlflow_alone(project):
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)
    snippet = next(b for b in blocks if "mlflow.pyfunc.load_model" in b)
    run = subprocess.run([sys.executable, "-c", snippet], cwd=project, env=_fresh_env(), capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, snippet + run.stderr[-4000:]
    assert "probability" in run.stdout and "p_click" in run.stdout

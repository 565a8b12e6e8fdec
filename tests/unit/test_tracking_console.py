"""What logging a model prints: nothing in the CLI's quiet mode (the "mlflow" logger above INFO),
MLflow's registration notes at INFO (--verbose). A fresh `offerflow run` used to print MLflow's
INFO lines, "Successfully registered model ...", "Created version ...", a pickling note, a
type-hint hint and a download bar for every model it registered."""

import logging
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

import offerflow
from offerflow.core.tracking import Tracker

NOTES = ("Successfully registered model", "Created version", "CloudPickle", "type hints", "Downloading artifacts")


@pytest.fixture
def mlflow_level():
    logger = logging.getLogger("mlflow")
    before = logger.level
    yield logger
    logger.setLevel(before)


def _log_one(tracker: Tracker, name: str) -> str:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=400), "z": rng.normal(size=400)})
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 4},
                        lgb.Dataset(frame, (frame["x"] + rng.normal(size=400) > 0).astype(int)), num_boost_round=5)

    def predictor(rows: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"p": booster.predict(rows[["x", "z"]])})

    with tracker.run("console", "console"):
        record = tracker.log_pyfunc(booster, predictor, name, frame.head(3), ["lightgbm"], Path(offerflow.__file__).parent)
    return record.model_version


def test_logging_a_model_is_silent_when_quiet_and_says_so_at_info(tmp_path, capfd, mlflow_level):
    mlflow_level.setLevel(logging.WARNING)  # what `offerflow` without --verbose sets
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "mlruns", tmp_path)
    assert logging.getLogger("mlflow").level == logging.WARNING  # importing MLflow kept the level
    assert _log_one(tracker, "console-model") == "1"
    quiet = capfd.readouterr()
    assert not any(note in quiet.err + quiet.out for note in NOTES), quiet.err

    mlflow_level.setLevel(logging.INFO)  # --verbose
    assert _log_one(tracker, "console-model") == "2"
    verbose = capfd.readouterr()
    assert "Created version '2' of model 'console-model'" in verbose.err + verbose.out

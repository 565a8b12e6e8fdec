"""Scaling the backends: PostgreSQL URLs for MLflow (tracking.uri) and Prefect
(PREFECT_API_DATABASE_CONNECTION_URL) are accepted and reach the servers `offerflow up` starts."""

from __future__ import annotations

from pathlib import Path

import yaml

from offerflow.ops import servers as ops
from offerflow.core.config import TrackingConfig, parse_config
from offerflow.core.tracking import resolve_tracking_uri
from offerflow.synthetic.world import demo_config_yaml

PG_MLFLOW = "postgresql://offerflow:secret@db.internal:5432/mlflow"
PG_PREFECT = "postgresql+asyncpg://offerflow:secret@db.internal:5432/prefect"


def test_tracking_config_accepts_a_postgres_uri_unchanged(tmp_path):
    assert TrackingConfig(uri=PG_MLFLOW).uri == PG_MLFLOW
    raw = yaml.safe_load(demo_config_yaml("data"))
    raw["tracking"] = {"uri": PG_MLFLOW, "artifact_root": "/shared/mlruns"}
    config = parse_config(raw, root=tmp_path)
    assert resolve_tracking_uri(config.tracking.uri, config.root) == PG_MLFLOW
    argv = ops.mlflow_server_argv(config, 5123)
    assert argv[argv.index("--backend-store-uri") + 1] == PG_MLFLOW
    assert argv[argv.index("--default-artifact-root") + 1] == "/shared/mlruns"


def test_sqlite_default_resolves_under_the_project(tmp_path):
    config = parse_config(yaml.safe_load(demo_config_yaml("data")), root=tmp_path)
    argv = ops.mlflow_server_argv(config, 5123)
    assert argv[argv.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"


def test_prefect_database_url_reaches_the_server(monkeypatch, tmp_path):
    monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL", PG_PREFECT)
    env = ops.base_env(tmp_path, Path("."))
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"] == PG_PREFECT
    assert env["PREFECT_HOME"] == str(tmp_path.resolve() / ".prefect")
    assert env["OFFERFLOW_PROJECT_DIR"] == str(tmp_path.resolve())

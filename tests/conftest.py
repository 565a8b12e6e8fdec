"""Shared fixtures: one small seeded world per session, and the real Prefect test harness."""

from __future__ import annotations

import os
import shutil
from datetime import date
from pathlib import Path

import pytest

TEST_END_DATE = date(2026, 11, 1)


def pytest_configure(config: pytest.Config) -> None:
    # Keep Prefect, MLflow and GX local and quiet; never reach for the network. Plain `pytest` from
    # a fresh checkout works without the Makefile's environment: the Prefect home is the Makefile's
    # `.prefect` (created here: Prefect warns, and the warning filter fails collection, when it
    # cannot create it itself).
    if "PREFECT_HOME" not in os.environ:
        home = Path(config.rootpath) / ".prefect"
        home.mkdir(parents=True, exist_ok=True)
        os.environ["PREFECT_HOME"] = str(home)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture(scope="session")
def world_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3,000-profile, 12-offer, 60-day world, generated once per test session."""
    from offerflow.synthetic.world import WorldSpec, generate_world

    out = tmp_path_factory.mktemp("world")
    generate_world(WorldSpec(profiles=3_000, offers=12, days=60, seed=11, end_date=TEST_END_DATE), out)
    return out


def make_project(tmp_path: Path, world_dir: Path) -> Path:
    """A project folder with the demo offerflow.yaml, a copy of the world and our GX suite."""
    from offerflow.synthetic.world import demo_config_yaml

    shutil.copytree(world_dir, tmp_path / "data")
    repo_gx = Path(__file__).resolve().parents[1] / "great_expectations"
    if repo_gx.exists():
        shutil.copytree(repo_gx, tmp_path / "great_expectations",
                        ignore=shutil.ignore_patterns("uncommitted"))
    (tmp_path / "offerflow.yaml").write_text(demo_config_yaml("data"))
    return tmp_path


@pytest.fixture()
def project_dir(tmp_path: Path, world_dir: Path) -> Path:
    return make_project(tmp_path, world_dir)


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory, world_dir: Path, prefect_harness):
    """The whole pipeline run once per session on the seeded world: (project dir, run summary)."""
    from offerflow.flows.pipeline import pipeline

    project = make_project(tmp_path_factory.mktemp("project"), world_dir)
    cwd = os.getcwd()
    os.chdir(project)
    try:
        summary = pipeline(config_path=str(project / "offerflow.yaml"))
    finally:
        os.chdir(cwd)
    return project, summary


@pytest.fixture(scope="module")
def service_app(pipeline_run, tmp_path_factory: pytest.TempPathFactory):
    """The decision service (`create_app`) on the session's pipeline project, logging to a temp folder."""
    from offerflow.core.config import load_config
    from offerflow.decisioning.engine import build_engine
    from offerflow.decisioning.http_service import create_app

    config = load_config(pipeline_run[0] / "offerflow.yaml")
    return create_app(config, engine=build_engine(config), log_dir=tmp_path_factory.mktemp("decision_log"))


@pytest.fixture(scope="session")
def prefect_harness():
    """A real, temporary Prefect server and database for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    from prefect.settings import temporary_settings

    # No flow-run heartbeats: Prefect's heartbeat thread sleeps in 1 s steps and the flow's end joins
    # it, so every flow run lasted up to 1 s longer (~0.9 s for the short ones, 8 of the 10 s of
    # test_bad_config_is_one_line_in_every_flow). Heartbeats only let a server notice a crashed
    # run; no test looks at them, and the CLI and deployments keep Prefect's default.
    with prefect_test_harness(server_startup_timeout=180), \
            temporary_settings(updates={"flows.heartbeat_frequency": None}):
        yield

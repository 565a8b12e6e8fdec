"""Scaling the backends, live: Prefect and MLflow on a real PostgreSQL, as docs/operations.md says.

A throwaway PostgreSQL cluster is created in a temporary directory on a free port (initdb refuses
to run as root, so as root the cluster belongs to the `postgres` user), with a password like a
real deployment. Then exactly the documented switch: `PREFECT_API_DATABASE_CONNECTION_URL` set to
`postgresql+asyncpg://...` and `tracking.uri: postgresql://...` in `offerflow.yaml`, `offerflow up`,
the pipeline deployment run by hand; the flow run must be recorded in the Prefect database, the
models in the MLflow database, and the champion loads back through `offerflow.core.tracking`.
Skipped, with the reason, where no PostgreSQL server binaries or drivers are installed.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from offerflow.ops import servers as ops

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
USER, PASSWORD = "offerflow", "secret"


def postgres_bin() -> Path | None:
    """The newest PostgreSQL server binaries of the machine (Debian's layout)."""
    found = sorted((Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")
                    if Path(p).with_name("pg_ctl").exists()), key=lambda p: int(p.parent.name))
    return found[-1] if found else None


@dataclass
class Cluster:
    port: int

    def url(self, database: str, driver: str = "postgresql") -> str:
        return f"{driver}://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def query(self, database: str, sql: str) -> list[tuple]:
        import psycopg2

        with psycopg2.connect(host="127.0.0.1", port=self.port, user=USER, password=PASSWORD,
                              dbname=database) as conn, conn.cursor() as cur:
            cur.execute(sql)
            rows = cur.fetchall()
        conn.close()
        return rows


@pytest.fixture()
def postgres() -> Iterator[Cluster]:
    """A PostgreSQL cluster in a temporary directory, stopped and deleted afterwards."""
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin; "
                    "install them with `apt-get install -y postgresql`")
    pytest.importorskip("psycopg2", reason="MLflow needs psycopg2 for postgresql:// (pip install psycopg2-binary)")
    pytest.importorskip("asyncpg", reason="Prefect needs asyncpg for postgresql+asyncpg://")
    # pytest's tmp_path lives under a root-only directory: the cluster gets a directory its owner can reach
    base = Path(tempfile.mkdtemp(prefix="offerflow-pg-"))
    as_owner: list[str] = []
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(base, owner.pw_uid, owner.pw_gid)
        as_owner = ["runuser", "-u", "postgres", "--"]
    (base / "pwfile").write_text(PASSWORD + "\n")
    if as_owner:
        os.chown(base / "pwfile", owner.pw_uid, owner.pw_gid)
    data, port = base / "data", ops.free_port()

    def run(*argv: str) -> None:
        result = subprocess.run(as_owner + list(argv), capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{argv[0]}: {result.stdout[-1500:]}{result.stderr[-1500:]}"

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", USER, f"--pwfile={base / 'pwfile'}",
            "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-w", "-t", "60",
            "-o", f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        cluster = Cluster(port)
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=port, user=USER, password=PASSWORD, dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE mlflow")
            cur.execute("CREATE DATABASE prefect")
        conn.close()
        yield cluster
    finally:
        if (data / "postmaster.pid").exists():
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


def test_prefect_and_mlflow_on_postgresql(postgres, project_dir, monkeypatch):
    """~3 minutes on 2 cores: the servers of `offerflow up` on PostgreSQL, the pipeline run by hand."""
    from offerflow.cli import app
    from offerflow.core.config import load_config
    from offerflow.core.tracking import CHAMPION, Tracker

    config_path = project_dir / "offerflow.yaml"
    raw = yaml.safe_load(config_path.read_text())
    raw["tracking"]["uri"] = postgres.url("mlflow")
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL", postgres.url("prefect", "postgresql+asyncpg"))

    prefect_port, mlflow_port = ops.free_port(), ops.free_port()
    runner = CliRunner()
    result = runner.invoke(app, ["up", "--config", str(config_path), "--prefect-port", str(prefect_port),
                                 "--mlflow-port", str(mlflow_port), "--no-schedules"])
    state = ops.read_state(project_dir)
    try:
        assert result.exit_code == 0, result.output
        assert not (project_dir / ".prefect" / "prefect.db").exists()  # no SQLite fallback
        assert not (project_dir / "mlflow.db").exists()
        env = {**ops.base_env(project_dir, REPO), **state.env()}
        run = subprocess.run([str(Path(sys.executable).parent / "prefect"), "deployment", "run",
                              "offerflow-pipeline/daily", "--watch", "--watch-timeout", "500"],
                             env=env, capture_output=True, text=True, timeout=560)
        assert run.returncode == 0 and "Completed" in run.stdout, run.stdout[-2000:] + run.stderr[-2000:]

        # the flow run and its deployments are rows of the Prefect database in PostgreSQL
        flow_runs = postgres.query("prefect", "SELECT f.name, r.state_type FROM flow_run r "
                                              "JOIN flow f ON f.id = r.flow_id WHERE r.deployment_id IS NOT NULL")
        assert ("offerflow-pipeline", "COMPLETED") in {(name, str(kind)) for name, kind in flow_runs}, flow_runs
        deployments = {name for (name,) in postgres.query("prefect", "SELECT name FROM deployment")}
        assert {"daily", "weekly"} <= deployments

        # the flow's MLflow runs and registered models are rows of the MLflow database
        models = {name for (name,) in postgres.query("mlflow", "SELECT name FROM registered_models")}
        assert "offerflow-propensity-purchase_14d" in models, models
        finished = postgres.query("mlflow", "SELECT count(*) FROM runs WHERE status = 'FINISHED'")[0][0]
        assert finished >= 2

        # ... and read back through offerflow.core.tracking: the champion the pipeline promoted loads
        config = load_config(config_path)
        tracker = Tracker(config.tracking.uri, config.path(config.tracking.artifact_root))
        name = "offerflow-propensity-purchase_14d"
        version = tracker.alias_version(name, CHAMPION)
        assert version is not None and version in tracker.model_versions(name)
        assert tracker.run_metrics(tracker.version_run_id(name, version))
        model = tracker.load_lightgbm(f"models:/{name}@{CHAMPION}")
        assert getattr(model, "booster_", model).num_trees() > 0

        import httpx  # the MLflow server `up` started serves the same registry

        found = httpx.get(f"{state.mlflow_url}/api/2.0/mlflow/registered-models/search", timeout=30)
        assert name in {m["name"] for m in found.json()["registered_models"]}
    finally:
        down = runner.invoke(app, ["down", "--config", str(config_path)])
    assert down.exit_code == 0, down.output
    assert all(not ops.is_alive(p) for p in state.processes)

"""What `offerflow demo` tells a new user to run next must run where they are."""

from __future__ import annotations

from pathlib import Path

from offerflow.cli.runs import mlflow_ui_command

TAIL = "ui --backend-store-uri sqlite:///mlflow.db --default-artifact-root mlruns --port 5000"


def test_make_demo_in_a_checkout_keeps_the_short_venv_line(tmp_path):
    python = tmp_path / ".venv" / "bin" / "python"
    assert mlflow_ui_command(tmp_path, "sqlite:///mlflow.db", "mlruns", cwd=tmp_path, python=python) == (
        f".venv/bin/mlflow {TAIL}")


def test_a_project_elsewhere_names_the_real_mlflow_and_the_folder_to_run_it_in(tmp_path):
    """`offerflow demo --project /tmp/x` from an installed package: no `.venv/` in /tmp/x."""
    python, project = Path("/opt/venv/bin/python"), tmp_path / "x"
    project.mkdir()
    line = mlflow_ui_command(project, "sqlite:///mlflow.db", "mlruns", cwd=tmp_path, python=python)
    assert line == f"cd {project.resolve()} && /opt/venv/bin/mlflow {TAIL}"


def test_demo_creates_a_project_folder_that_does_not_exist_yet(tmp_path):
    """`offerflow demo --project /tmp/new/demo` failed with `[Errno 2] No such file or directory`."""
    from offerflow.cli.runs import write_demo_config
    from offerflow.core.config import load_config

    config_path = write_demo_config(tmp_path / "new" / "demo")
    assert config_path == tmp_path / "new" / "demo" / "offerflow.yaml"
    assert load_config(config_path).project
    config_path.write_text(config_path.read_text() + "# edited\n")
    write_demo_config(tmp_path / "new" / "demo")  # an existing project file is kept
    assert config_path.read_text().endswith("# edited\n")

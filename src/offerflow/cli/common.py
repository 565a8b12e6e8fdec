"""What every command shares: the Typer app and its groups, consoles, loading the project file, one-line errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(help="offerflow: rank marketing offers with machine learning, self-hosted.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
rankings_app = typer.Typer(help="Published ranking tables: list versions, show, roll back.", no_args_is_help=True)
app.add_typer(rankings_app, name="rankings")
caps_app = typer.Typer(help="Frequency caps: show the counters, reset them.", no_args_is_help=True)
app.add_typer(caps_app, name="caps")
models_app = typer.Typer(help="The project's AI models: configuration, last training, quality.", no_args_is_help=True)
app.add_typer(models_app, name="models")
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)  # an error stays one line, however long its path

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="Project file.")]


def fail(message: str) -> None:
    err.print(f"[red]error:[/red] {message}", highlight=False, markup=True)
    raise typer.Exit(code=1)


def load_project(config_path: Path):
    from offerflow.config import ConfigError, load_config

    try:
        return load_config(config_path)
    except ConfigError as exc:
        fail(str(exc))


def prepare_prefect_environment(project_dir: Path) -> None:
    """Embedded defaults: a Prefect home inside the project, no analytics, a patient ephemeral
    server start (10-20 s on 2 cores), no MLflow telemetry. Explicit settings win."""
    os.environ.setdefault("PREFECT_HOME", str((project_dir / ".prefect").resolve()))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")


def run_pipeline(config_path: Path) -> dict:
    """Run the pipeline flow (imports Prefect only here, never at import time)."""
    config = load_project(config_path)
    prepare_prefect_environment(config.root)
    from offerflow.catalog import CatalogError
    from offerflow.events import EventFileError
    from offerflow.goals import GoalError
    from offerflow.ingestion import ValidationFailed

    from flows.pipeline import pipeline

    try:
        return pipeline(config_path=str(config_path))
    except (ValidationFailed, EventFileError, CatalogError, GoalError) as exc:
        fail(str(exc))


def project_engine(config_path: Path):
    from offerflow.catalog import CatalogError
    from offerflow.service import build_engine

    config = load_project(config_path)
    try:
        return config, build_engine(config)
    except CatalogError as exc:
        fail(str(exc))


@app.callback()
def _verbosity(verbose: Annotated[bool, typer.Option("--verbose", "-v",
                                                     help="Show the flows' INFO logs (quiet by default).")] = False) -> None:
    """Quiet by default: Prefect and MLflow log warnings only; --verbose shows every step's log."""
    import logging

    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO" if verbose else "WARNING")
    for name in ("mlflow", "alembic", "great_expectations"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)

"""The local servers: `offerflow up` / `offerflow down`."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from offerflow.cli.common import app, console, ConfigOption, JsonOption, fail, load_project, print_json


def _code_dir() -> Path:
    """The directory holding the `offerflow` package, with its prefect.yaml and flows/ (where the
    deployments' code lives): `src/` of a checkout, site-packages of an installed wheel."""
    import offerflow

    return Path(offerflow.__file__).resolve().parents[1]


@app.command()
def up(config: ConfigOption = Path("offerflow.yaml"),
       prefect_port: Annotated[int, typer.Option(help="Prefect server port on 127.0.0.1.")] = 4200,
       mlflow_port: Annotated[int, typer.Option(help="MLflow server port on 127.0.0.1.")] = 5000,
       deploy: Annotated[bool, typer.Option(help="Register every deployment of prefect.yaml.")] = True,
       schedules: Annotated[bool, typer.Option(help="Run the scheduler (off: deployments run only by hand).")] = True,
       pool_limit: Annotated[int, typer.Option(min=1, help="Flow runs the work pool runs at once (others wait).")] = 2,
       as_json: JsonOption = False) -> None:
    """Start a Prefect server, a worker and an MLflow server on 127.0.0.1 and deploy every flow."""
    from offerflow.ops.servers import OpsError
    from offerflow.ops.servers import up as start_servers

    project = load_project(config)
    try:
        with console.status("starting the Prefect server, the MLflow server and a worker") as status:
            state = start_servers(project, _code_dir(), prefect_port, mlflow_port, deploy=deploy,
                                  schedules=schedules, say=lambda m: status.update(m), pool_limit=pool_limit)
    except OpsError as exc:
        fail(str(exc))
    if as_json:
        print_json(asdict(state) | {"api_url": state.api_url, "schedules": schedules})
        return
    for line in up_summary(state, schedules):
        console.print(line, highlight=False)


def up_summary(state, schedules: bool) -> list[str]:
    """What `offerflow up` prints: the URLs, the deployments, the processes, how to run and stop.
    Without deployments (--no-deploy) or schedules (--no-schedules) it says so instead of naming a
    deployment that is not there."""
    lines = [f"Prefect UI:  {state.prefect_url}", f"MLflow UI:   {state.mlflow_url}",
             f"deployments: {', '.join(state.deployments) or 'none (--no-deploy)'}",
             "processes:   " + ", ".join(f"{p.name} (pid {p.pid})" for p in state.processes)]
    if not schedules:
        lines.append("schedules:   off (--no-schedules): deployments run only by hand")
    if state.deployments:
        example = next((d for d in state.deployments if d == "offerflow-pipeline/daily"), state.deployments[0])
        lines.append(f"to run one:  PREFECT_API_URL={state.api_url} prefect deployment run '{example}'")
    return [*lines, "to stop:     offerflow down"]


@app.command()
def down(config: ConfigOption = Path("offerflow.yaml"), as_json: JsonOption = False) -> None:
    """Stop exactly the processes `offerflow up` started for this project."""
    from offerflow.ops.servers import down as stop_servers

    project = load_project(config)
    stopped = stop_servers(project.root)
    if as_json:
        print_json([asdict(proc) for proc in stopped])
        return
    if not stopped:
        console.print("nothing running for this project")
    for proc in stopped:
        console.print(f"stopped {proc.name} (pid {proc.pid})", highlight=False)

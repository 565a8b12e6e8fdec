"""What each placement serves, from the command line: the project file's ranking or the one an
evaluation switched it to; the history of switches; a revert by a person, with the reason."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from offerflow.cli.common import CommandList, app, console, ConfigOption, JsonOption, fail, print_json
from offerflow.core.paths import project_tracker

serving_app = typer.Typer(help="What each placement serves: switches made by evaluations, history, revert.",
                          no_args_is_help=True, cls=CommandList)
app.add_typer(serving_app, name="serving")


def _written_project(config_path: Path):
    """The project file as written (no switches applied): switches are read against it."""
    from offerflow.core.config import ConfigError, load_config

    try:
        return load_config(config_path)
    except ConfigError as exc:
        fail(str(exc).splitlines()[0])


def _read_switches(config_path: Path, read):
    """`read(project)` on the written project: the serving status or history, or a one-line error."""
    from offerflow.core.config import ConfigError

    try:
        return read(_written_project(config_path))
    except ConfigError as exc:
        fail(str(exc))


@serving_app.command("list")
def serving_list(config: ConfigOption = Path("offerflow.yaml"),
                 as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False) -> None:
    """Per placement: the ranking in offerflow.yaml, the ranking it serves, and since when and why."""
    from offerflow.decisioning.switches import serving_status

    status = _read_switches(config, serving_status)
    if as_json:
        print_json([{"placement_id": s.placement_id, "configured": s.configured, "serving": s.serving,
                     "switched": s.switched, "stale": s.stale, "record": s.record} for s in status])
        return
    table = Table(title="what each placement serves (--json for formulas and evidence)", box=box.SIMPLE_HEAD)
    for column in ("placement", "offerflow.yaml", "serving", "since (UTC)", "why"):
        table.add_column(column, overflow="fold")
    for s in status:
        if s.switched:
            run = s.record.get("mlflow_run_id")
            table.add_row(s.placement_id, _short(s.configured), _short(s.serving, s.record.get("strategy")),
                          s.record["at"][:16].replace("T", " "), s.record["reason"] + (f" (MLflow run {run})" if run else ""))
        else:
            table.add_row(s.placement_id, _short(s.configured), "as offerflow.yaml", "",
                          f"recorded switch ignored: {s.stale}" if s.stale else "")
    console.print(table)


def _short(ranking: dict, strategy: str | None = None) -> str:
    """priority, formula (or the evaluated strategy's name) or the AI model's name."""
    method = ranking.get("method", "priority")
    if method == "ai_model":
        return str(ranking.get("ai_model"))
    if method == "formula":
        return strategy.replace("formula-", "formula ", 1) if strategy else "formula"
    return "priority"


@serving_app.command("history")
def serving_history(config: ConfigOption = Path("offerflow.yaml"),
                    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False) -> None:
    """Every recorded switch and revert, oldest first."""
    from offerflow.decisioning.switches import load_history

    history = _read_switches(config, load_history)
    if as_json:
        print_json(history)
        return
    if not history:
        console.print("no serving changes recorded: every placement serves what offerflow.yaml says")
        return
    table = Table(title="serving changes", box=box.SIMPLE_HEAD)
    for column in ("version", "placement", "action", "serving", "by", "at (UTC)", "reason"):
        table.add_column(column, overflow="fold")
    for r in history:
        table.add_row(str(r.get("version")), str(r.get("placement_id")), str(r.get("action")),
                      _short(r.get("ranking") or {}, r.get("strategy")), str(r.get("by", "")),
                      str(r.get("at", ""))[:16].replace("T", " "), str(r.get("reason", "")))
    console.print(table)


@serving_app.command("revert")
def serving_revert(placement: Annotated[str, typer.Argument(help="Placement id.")],
                   reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the history and MLflow).")],
                   config: ConfigOption = Path("offerflow.yaml"),
                   publish: Annotated[bool, typer.Option(help="Re-publish the placement's table now.")] = True,
                   as_json: JsonOption = False) -> None:
    """Serve what offerflow.yaml says on PLACEMENT again; the reason goes to the history and to MLflow."""
    from offerflow.ingest.catalog import CatalogError
    from offerflow.core.config import ConfigError
    from offerflow.decisioning.switches import ServingError, publish_serving, ranking_label, record_revert, revert_record

    project = _written_project(config)
    try:
        revert_record(project, placement, reason)  # nothing to revert or no reason: say so before MLflow starts
        tracker = project_tracker(project)
        record = record_revert(project, placement, reason, tracker=tracker)
    except (ServingError, ConfigError) as exc:
        fail(str(exc))
    reverted = (f"{placement}: serves {ranking_label(record['ranking'])} again (was {ranking_label(record['replaces'])});"
                f" reason recorded in MLflow run {record['mlflow_run_id']}")
    if not as_json:
        console.print(reverted, highlight=False)
    version, why = None, "--no-publish"
    if publish:
        from offerflow.evaluation.report import load_evaluation_catalog

        try:
            profiles, offers = load_evaluation_catalog(project)
            version, why = publish_serving(project, placement, profiles, offers, tracker,
                                           {"serving_version": record["version"]})
        except (CatalogError, FileNotFoundError, ValueError) as exc:
            fail(f"reverted, but not re-published: {str(exc).splitlines()[0]}")
    if as_json:
        print_json({"record": record, "published_version": version, "not_published": None if version else why})
    elif publish:
        console.print(f"{placement}: " + (f"published version {version}" if version is not None
                                          else f"not re-published ({why}); the next scoring run publishes it"),
                      highlight=False)

"""Models from the command line: AI models, ranking tables, training variants, promotion by hand."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from offerflow.cli.common import (app, rankings_app, models_app, console, ConfigOption, JsonOption, check_before_work,
                                 fail, flow_progress, load_project, prepare_prefect_environment, print_json)
from offerflow.core.paths import project_tracker, ranking_store


@rankings_app.command("list")
def rankings_list(config: ConfigOption = Path("offerflow.yaml"), as_json: JsonOption = False) -> None:
    """Published versions per placement and the current one: kind, rows, when published."""
    project = load_project(config)
    store = ranking_store(project)
    rows = []
    for placement in store.placements():
        current = store.current_version(placement)
        meta = store.read_metadata(placement) if current is not None else {}
        rows.append({"placement_id": placement, "versions": store.versions(placement), "current": current,
                     "kind": meta.get("kind"), "rows": meta.get("row_count", 0), "published_at": meta.get("published_at")})
    if as_json:
        print_json(rows)
        return
    table = Table(title="published ranking tables")
    for column in ("placement", "versions", "current", "kind", "rows", "published at"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["placement_id"], ", ".join(map(str, r["versions"])), str(r["current"]), str(r["kind"] or ""),
                      f"{r['rows']:,}", str(r["published_at"] or ""))
    console.print(table)


@rankings_app.command("rollback")
def rankings_rollback(placement: Annotated[str, typer.Argument(help="Placement id.")],
                      version: Annotated[Optional[int], typer.Option(help="Version (default: previous).")] = None,
                      config: ConfigOption = Path("offerflow.yaml"), as_json: JsonOption = False) -> None:
    """Make an earlier published version current again."""
    from offerflow.core.store import StoreError

    project = load_project(config)
    store = ranking_store(project)
    try:
        target = store.rollback_target(placement, version)
        _check_same_ranking(project, store, placement, target)
        current = store.rollback(placement, target)
    except StoreError as exc:
        fail(str(exc))
    if as_json:
        print_json({"placement_id": placement, "current": current})
        return
    console.print(f"{placement}: version {current} is current")


def _check_same_ranking(project, store, placement_id: str, version: int) -> None:
    """Refuse a version published for another ranking than the placement serves now (a table of
    the formula an evaluation had switched to, after `serving revert`): the engine would serve it
    under the served ranking's name, e.g. a formula's scores as `ai_model`, "ranked by priority"."""
    from offerflow.decisioning.switches import apply_serving, ranking_label

    serving = next((p.ranking for p in apply_serving(project).placements if p.id == placement_id), None)
    meta = store.read_metadata(placement_id, version)
    was = {"method": meta.get("ranking_method"), "ai_model": meta.get("ai_model")}
    same_model = serving is not None and (serving.method != "ai_model" or was["ai_model"] == serving.ai_model)
    if serving is None or was["method"] is None or (was["method"] == serving.method and same_model):
        return
    label = ranking_label(was) if was["method"] != "formula" else "a formula"
    fail(f"cannot roll back placement '{placement_id}' to version {version}: it was ranked by {label}, and the"
         f" placement serves {ranking_label(serving.model_dump())} now (offerflow serving list); choose a version"
         f" of that ranking with --version (offerflow rankings show {placement_id} --version N)")


@rankings_app.command("show")
def rankings_show(placement: Annotated[str, typer.Argument(help="Placement id.")],
                  version: Annotated[Optional[int], typer.Option(help="Version (default: the current one).")] = None,
                  rows: Annotated[int, typer.Option(min=1, help="How many rows of the table to print.")] = 10,
                  config: ConfigOption = Path("offerflow.yaml"),
                  as_json: Annotated[bool, typer.Option("--json", help="Print metadata and rows as JSON.")] = False,
                  ) -> None:
    """A placement's published table: its version, how it was scored (metadata.json), its first rows."""
    from offerflow.core.store import StoreError
    from offerflow.decisioning.rankings_view import unread_table_note

    project = load_project(config)
    store = ranking_store(project)
    try:
        metadata = store.read_metadata(placement, version)
        head = store.read_table(placement, int(metadata["version"])).slice(0, rows).to_pandas()
    except StoreError as exc:
        fail(str(exc))
    if as_json:
        print_json({"metadata": metadata, "rows": head.to_dict(orient="records")})
        return
    current = store.current_version(placement)
    console.print(f"[bold]{placement}[/bold] version {metadata['version']}"
                  + (" (current)" if metadata["version"] == current else f" (current: {current})"), highlight=False)
    for key in sorted(metadata):
        if key not in ("version", "placement_id"):
            console.print(f"  {key}: {'none' if metadata[key] is None else metadata[key]}", highlight=False)
    note = unread_table_note(metadata)
    if note:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    table = Table(title=f"first {len(head)} of {metadata.get('row_count', len(head)):,} rows")
    counts = {c for c in head.columns if head[c].dtype.kind == "f" and (head[c].dropna() % 1 == 0).all()}
    for column in head.columns:
        table.add_column(str(column))
    for record in head.itertuples(index=False):  # counts held as floats (successes) print as counts
        table.add_row(*(f"{v:,.0f}" if c in counts and v == v else f"{v:.4f}" if isinstance(v, float) else str(v)
                        for c, v in zip(head.columns, record)))
    console.print(table)


def _model_overview(config_path: Path):
    from offerflow.ranking.ai_models import overview

    project = load_project(config_path)
    tracker = project_tracker(project)
    return project, tracker, overview(project, tracker)


def _fmt(value: float | None, pattern: str = "{:.3f}") -> str:
    return "" if value is None else pattern.format(value)


@models_app.command("list")
def models_list(config: ConfigOption = Path("offerflow.yaml"),
                as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False) -> None:
    """Every AI model: type, status, placements, last trained, offers it personalizes, traffic, Gini."""
    _, _, models = _model_overview(config)
    if as_json:
        print_json([m.to_dict() for m in models])
        return
    from rich import box

    table = Table(title="AI models (traffic % = model / explore / holdout)", box=box.SIMPLE_HEAD)
    for column in ("model", "type", "placements", "trained (UTC)", "offers", "traffic %", "Gini"):
        table.add_column(column, no_wrap=column != "placements", min_width=10 if column == "placements" else None)
    for m in models:
        qualified = m.metrics.get("offers_qualified")
        table.add_row(m.name + (" (draft)" if m.status == "draft" else ""),
                      {"auto_optimization": "auto-opt", "personalized": "personal."}.get(m.type, m.type), ", ".join(m.placements),
                      (m.last_trained or "never")[5:16].replace("T", " "),
                      "" if qualified is None else f"{int(qualified)}/{int(m.metrics.get('offers_total', 0))}",
                      "/".join(f"{100 * m.traffic[k]:.0f}" for k in ("model", "exploration", "holdout"))
                      if m.serving == "model" else "random",
                      _fmt(m.holdout_gini, "{:.2f}"))
    console.print(table)
    for m in models:
        if m.serving != "model":
            console.print(f"[yellow]{m.name}[/yellow] serves at random: {m.serving.removeprefix('random: ')}")


@models_app.command("retrain")
def models_retrain(config: ConfigOption = Path("offerflow.yaml"), as_json: JsonOption = False) -> None:
    """Retrain the auto-optimization models from the validated events and publish their posteriors
    (the `retrain-auto-optimization` flow; incremental, cheap enough to schedule every 15 minutes)."""
    project = load_project(config)
    check_before_work(config, project)
    prepare_prefect_environment(project.root)
    from offerflow.flows.auto_optimization import retrain_auto_optimization

    from offerflow.core.project_lock import ProjectLocked

    try:
        with flow_progress("retrain"):
            summary = retrain_auto_optimization(config_path=str(config))
    except (FileNotFoundError, ProjectLocked) as exc:
        fail(str(exc))
    if as_json:
        print_json(summary)
        return
    for name, model in summary["models"].items():
        m = model["metrics"]
        console.print(f"[bold]{name}[/bold]: {int(m['displays']):,} displays in the window,"
                      f" {int(m['offers_qualified'])} of {int(m['offers_total'])} offers qualified")
    for placement, version in summary["published"].items():
        console.print(f"[bold]published[/bold] {placement}: version {version}")


@models_app.command("show")
def models_show(name: Annotated[str, typer.Argument(help="AI model name.")],
                config: ConfigOption = Path("offerflow.yaml"), as_json: JsonOption = False) -> None:
    """One AI model in detail: configuration, last training run, and what it learned per offer."""
    from offerflow.ranking.ai_models import offer_table

    _, tracker, models = _model_overview(config)
    model = next((m for m in models if m.name == name), None)
    if model is None:
        fail(f"unknown AI model {name!r} (defined: {', '.join(m.name for m in models) or 'none'})")
    offers = offer_table(tracker, model.run_id) if model.run_id is not None else None
    if as_json:
        print_json({**model.to_dict(), "offers": [] if offers is None else offers.to_dict(orient="records")})
        return
    console.print(f"[bold]{model.name}[/bold] ({model.type}, {model.status}): {model.description}")
    console.print(f"placements:        {', '.join(model.placements)}")
    console.print(f"optimizes:         {model.optimization_metric}")
    console.print(f"training window:   {model.training_window_days} days")
    console.print("traffic:           " + ", ".join(f"{k} {v:.0%}" for k, v in model.traffic.items()))
    console.print(f"serving:           {model.serving}")
    console.print(f"MLflow experiment: {model.experiment}")
    if model.run_id is None:
        console.print("last trained:      never")
        return
    console.print(f"last trained:      {model.last_trained} (run {model.run_id})")
    if model.champion_version:
        console.print(f"champion:          version {model.champion_version}")
    m = model.metrics
    console.print(f"data seen:         {int(m.get('displays', 0)):,} displays, {m.get('successes', 0):,.0f} successes")
    if model.holdout_gini is not None:
        console.print(f"holdout quality:   AUC {m['holdout_auc']:.3f}, Gini {model.holdout_gini:.3f}")
    table = Table(title=f"offers as {model.name} last saw them")
    for column in ("offer", "displays", "successes", "posterior rate", "qualified"):
        table.add_column(column)
    for row in offers.itertuples():
        table.add_row(row.offer_id, f"{row.displays:,}", f"{row.successes:,.0f}", f"{row.rate:.4f}",
                      "yes" if row.qualified else "new")
    console.print(table)


@app.command()
def train(
    goal: Annotated[Optional[list[str]], typer.Option("--goal", "-g", help="Customer AI goal (repeatable).")] = None,
    model: Annotated[Optional[list[str]], typer.Option("--model", "-m", help="Ranking AI model (repeatable).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="KEY=VALUE of the goal/model config, "
                                                      "e.g. lightgbm.num_leaves=63 (repeatable).")] = None,
    config: ConfigOption = Path("offerflow.yaml"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON.")] = False,
) -> None:
    """Train Customer AI goals and/or ranking models (a variant with --set), logged to MLflow, promotion
    rule applied; without --goal or --model, every Customer AI goal."""
    from offerflow.core.config import ConfigError
    from offerflow.core.overrides import parse_assignments

    project = load_project(config)
    try:
        overrides = parse_assignments(set_ or [])
    except ConfigError as exc:
        fail(str(exc))
    check_before_work(config, project)
    prepare_prefect_environment(project.root)
    from offerflow.core.project_lock import ProjectLocked
    from offerflow.flows.customer_ai import train_customer_ai
    from offerflow.flows.options import CustomerAIOptions, RankingModelOptions
    from offerflow.flows.ranking_models import train_ranking_models

    summary: dict = {}
    try:
        if goal or not model:
            with flow_progress("train"):
                summary["customer_ai"] = train_customer_ai(str(config), CustomerAIOptions(goals=goal or [],
                                                                                          overrides=overrides))
        if model:
            with flow_progress("train"):
                summary["ranking_models"] = train_ranking_models(str(config), RankingModelOptions(
                    models=model, overrides=overrides))
    except (ConfigError, ValueError, FileNotFoundError, ProjectLocked) as exc:
        fail(str(exc).splitlines()[0])
    if as_json:
        print_json(summary)
        return
    _print_training(summary)


def _print_training(summary: dict) -> None:
    """What `offerflow train` trained, skipped or could not train, one line each (with --json, the
    same in the summary)."""
    from rich.markup import escape

    for name, r in summary.get("customer_ai", {}).get("goals", {}).items():
        console.print(f"[bold]{name}[/bold]: holdout AUC {r['metrics']['auc']:.4f}, version {r['model_version']},"
                      f" {'promoted to @champion' if r['promoted'] else 'kept as @challenger'} ({r['reason']})")
        if population := r.get("population"):
            excluded = "; ".join(f"{n:,} {why}" for why, n in population["excluded"].items() if n) or "none"
            console.print(f"  population as of {population['as_of']}: {population['eligible']:,} eligible,"
                          f" {population['scored']:,} scored; excluded: {excluded}", highlight=False)
    for name, reason in summary.get("customer_ai", {}).get("skipped", {}).items():
        console.print(f"[bold]{name}[/bold]: {escape(reason)}", highlight=False)
    for name, r in summary.get("ranking_models", {}).get("models", {}).items():
        auc = r["metrics"].get("holdout_auc")
        if r["model_version"]:
            status = f"version {r['model_version']}, promoted={r['promoted']} ({r['reason']})"
        else:  # auto-optimization: posteriors, no registered version; or not trained and no @champion
            status = r["reason"] or "posteriors fitted (no registered version)"
        console.print(f"[bold]{name}[/bold] ({r['kind']}): " + (f"holdout AUC {auc:.4f}, " if auc else "")
                      + escape(status), highlight=False)


@app.command()
def promote(
    model: Annotated[str, typer.Option("--model", help="Registered model name, e.g. offerflow-propensity-purchase_14d.")],
    version: Annotated[str, typer.Option("--version", help="Model version to make @champion.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded on the version and its run).")],
    config: ConfigOption = Path("offerflow.yaml"),
    as_json: JsonOption = False,
) -> None:
    """Promote a model version to @champion by hand; the previous champion becomes @challenger."""
    from offerflow.models.registry import RegistryError, promote_by_hand

    project = load_project(config)
    tracker = project_tracker(project)
    try:
        record = promote_by_hand(tracker, model, version, reason)
    except RegistryError as exc:
        fail(str(exc))
    if as_json:
        print_json(asdict(record))
        return
    console.print(f"{record.model}: version {record.version} is @champion"
                  + (f" (was {record.previous_champion}, now @challenger)" if record.previous_champion
                     else " (it was already)")
                  + f"; reason recorded: {record.reason}", highlight=False)

"""The `offerflow` command line: one subcommand per stage.

    offerflow generate    write a seeded synthetic world (profiles, offers, events, truth)
    offerflow demo        generate a world, run the whole pipeline, show what to open next
    offerflow run         run the pipeline flow for a project file
    offerflow decide      which offers for a profile in one or more placements
    offerflow serve       the HTTP decision service
    offerflow decide-batch  decide for every profile of a segment (Prefect flow)
    offerflow caps        frequency caps: show counters, reset
    offerflow rankings    list published ranking versions, roll back
    offerflow models      the AI models: what they optimize, when they last trained, how good they are
    offerflow evaluate    which strategy helps most: off-policy estimates, holdout lift, HTML report
    offerflow train       train Customer AI / ranking models, or a variant (--set lightgbm.num_leaves=63)
    offerflow promote     make a model version @champion by hand, with the reason recorded
    offerflow up / down   start / stop the Prefect server, a worker and MLflow; deploy every flow
"""

from __future__ import annotations

import json
import os
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

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


def _fail(message: str) -> None:
    err.print(f"[red]error:[/red] {message}", highlight=False, markup=True)
    raise typer.Exit(code=1)


def _load(config_path: Path):
    from offerflow.config import ConfigError, load_config

    try:
        return load_config(config_path)
    except ConfigError as exc:
        _fail(str(exc))


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
    config = _load(config_path)
    prepare_prefect_environment(config.root)
    from offerflow.catalog import CatalogError
    from offerflow.events import EventFileError
    from offerflow.goals import GoalError
    from offerflow.ingestion import ValidationFailed

    from flows.pipeline import pipeline

    try:
        return pipeline(config_path=str(config_path))
    except (ValidationFailed, EventFileError, CatalogError, GoalError) as exc:
        _fail(str(exc))


@app.command()
def generate(
    out: Annotated[Path, typer.Option(help="Directory to write the world into.")] = Path("data"),
    profiles: Annotated[int, typer.Option(min=10, help="Number of profiles.")] = 5_000,
    offers: Annotated[int, typer.Option(min=4, max=500, help="Number of regular offers.")] = 12,
    days: Annotated[int, typer.Option(min=30, help="Days of events.")] = 60,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same world.")] = 7,
    end_date: Annotated[Optional[str], typer.Option(help="Last day (exclusive), YYYY-MM-DD; default today.")] = None,
) -> None:
    """Write a seeded synthetic world whose true click and purchase probabilities are known."""
    from offerflow.world import WorldSpec, generate_world

    spec = WorldSpec(profiles=profiles, offers=offers, days=days, seed=seed,
                     **({"end_date": date.fromisoformat(end_date)} if end_date else {}))
    with console.status(f"generating {profiles:,} profiles x {days} days"):
        files = generate_world(spec, out)
    console.print(f"wrote {files.event_count:,} events to {files.events}, profiles to {files.profiles},"
                  f" offers to {files.offers}, truth to {files.truth}")


@app.command()
def run(config: ConfigOption = Path("offerflow.yaml"),
        as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON.")] = False) -> None:
    """Run the whole pipeline: validate, train, score, publish."""
    summary = run_pipeline(config)
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        _print_summary(summary)


def _print_summary(summary: dict) -> None:
    v = summary["validation"]
    console.print(f"[bold]validation[/bold]: {v['accepted']:,} accepted, {v['quarantined']:,} quarantined"
                  f" of {v['rows']:,} rows")
    if v.get("data_docs"):
        console.print(f"[bold]Data Docs[/bold]: {v['data_docs']}", highlight=False)
    for name, r in summary["propensity"].items():
        m = r["metrics"]
        console.print(f"[bold]propensity {name}[/bold]: holdout AUC {m['auc']:.3f}, log loss {m['log_loss']:.3f},"
                      f" model v{r['model_version']} ({r['reason']})")
    for name, r in summary["ranking_models"].items():
        auc = r["metrics"].get("holdout_auc")
        extra = f", holdout AUC {auc:.3f}" if auc is not None else ""
        console.print(f"[bold]ranking model {name}[/bold] ({r['kind']}):"
                      f" {int(r['metrics']['offers_qualified'])} offers qualified{extra}")
    for placement, version in summary["published"].items():
        console.print(f"[bold]published[/bold] {placement}: version {version}")


def _engine(config_path: Path):
    from offerflow.catalog import CatalogError
    from offerflow.service import build_engine

    config = _load(config_path)
    try:
        return config, build_engine(config)
    except CatalogError as exc:
        _fail(str(exc))


@app.command()
def serve(
    config: ConfigOption = Path("offerflow.yaml"),
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    admin_token: Annotated[Optional[str], typer.Option(envvar="OFFERFLOW_ADMIN_TOKEN",
                                                       help="Bearer token for /admin endpoints.")] = None,
    api_key: Annotated[Optional[str], typer.Option(envvar="OFFERFLOW_API_KEY",
                                                   help="Require this X-API-Key on decision requests.")] = None,
) -> None:
    """Serve decisions over HTTP (POST /decisions, GET /health, OpenAPI docs at /docs)."""
    from offerflow.service import run_server

    project = _load(config)
    console.print(f"serving decisions on http://{host}:{port} (docs at /docs)")
    run_server(project, host=host, port=port, admin_token=admin_token, api_key=api_key)


@app.command()
def decide(
    profile: Annotated[str, typer.Option("--profile", "-p", help="Profile id.")],
    placement: Annotated[list[str], typer.Option("--placement", "-x", help="Placement id (repeatable).")],
    items: Annotated[Optional[int], typer.Option(min=1, max=30, help="Items per placement.")] = None,
    allow_duplicates: Annotated[bool, typer.Option(help="Allow an offer in several placements.")] = False,
    config: ConfigOption = Path("offerflow.yaml"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the decision as JSON.")] = False,
    log: Annotated[bool, typer.Option(help="Append the decision to the decision log.")] = True,
) -> None:
    """Which offers to show a profile in one or more placements."""
    from offerflow.decisioning import DecisionError, log_decisions

    project, engine = _engine(config)
    try:
        decision = engine.decide(profile, placement, items=items, allow_duplicates=allow_duplicates)
    except DecisionError as exc:
        _fail(str(exc))
    if log:
        log_decisions([decision], project.path(project.data.outputs_dir) / "decision_log")
    if as_json:
        print(json.dumps(decision.to_dict(), indent=2, default=str))
        return
    table = Table(title=f"decision {decision.decision_id} for {profile}")
    for column in ("placement", "rank", "offer", "score", "source", "model"):
        table.add_column(column)
    for p in decision.placements:
        for item in p.items:
            score = "" if item.score is None else f"{item.score:.4f}"
            model = f"{p.ai_model} v{p.model_version}" if p.ai_model else p.ranking_method
            table.add_row(p.placement_id, str(item.rank), item.offer_id, score, p.source, model)
    console.print(table)


@app.command("decide-batch")
def decide_batch_command(
    placement: Annotated[Optional[list[str]], typer.Option("--placement", "-x",
                                                           help="Placement id (repeatable; default: all).")] = None,
    profiles_file: Annotated[Optional[Path], typer.Option(help="Profile ids: text (one per line), CSV or Parquet.")] = None,
    goal: Annotated[Optional[str], typer.Option(help="Customer AI goal of the segment (with --bucket).")] = None,
    bucket: Annotated[Optional[str], typer.Option(help="Customer AI bucket: low, medium or high.")] = None,
    items: Annotated[Optional[int], typer.Option(min=1, max=30, help="Items per placement.")] = None,
    allow_duplicates: Annotated[bool, typer.Option(help="Allow an offer in several placements.")] = False,
    config: ConfigOption = Path("offerflow.yaml"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON.")] = False,
) -> None:
    """Decide for every profile of a segment (the batch-decisions Prefect flow); default: everyone."""
    from offerflow.batch_decisions import SegmentError
    from offerflow.catalog import CatalogError
    from offerflow.decisioning import DecisionError

    project = _load(config)
    prepare_prefect_environment(project.root)
    from flows.decisions import batch_decisions

    try:
        summary = batch_decisions(config_path=str(config), placements=placement or None,
                                  profiles_file=str(profiles_file) if profiles_file else None, goal=goal,
                                  bucket=bucket, items=items, allow_duplicates=allow_duplicates)
    except (SegmentError, DecisionError, CatalogError) as exc:
        _fail(str(exc))
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
        return
    console.print(f"decided {summary['profiles']:,} profiles in {', '.join(summary['placements'])}"
                  f" ({summary['items']:,} items) in {summary['seconds']:.1f} s -> {summary['decisions_path']}")


@caps_app.command("show")
def caps_show(config: ConfigOption = Path("offerflow.yaml"),
              profile: Annotated[Optional[str], typer.Option("--profile", "-p", help="Counts of one profile.")] = None,
              as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False) -> None:
    """Frequency caps: per offer and rule, the count in the current window and whether it is capped."""
    from offerflow.capping import caps_of, load_cap_counters
    from offerflow.catalog import CatalogError, load_offers
    from offerflow.decisioning import cap_resets_path, decision_log_dir

    project = _load(config)
    try:
        offers = load_offers(project.path(project.data.offers), [p.id for p in project.placements])
    except CatalogError as exc:
        _fail(str(exc))
    validated = project.path(project.data.outputs_dir) / "validated" / "events.parquet"
    counters = load_cap_counters(caps_of(offers), validated if validated.exists() else None,
                                 decision_log_dir(project), cap_resets_path(project))
    rows = counters.state(profile_id=profile)
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    table = Table(title="frequency caps" + (f" for {profile}" if profile else ""))
    for column in ("offer", "cap", "count", "limit", "at limit", "capped", "resets at"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["offer_id"], r["cap"], str(r["count"]), str(r["limit"]), str(r["at_limit"]),
                      "yes" if r["capped"] else "no", r["resets_at"] or "never")
    console.print(table)


@caps_app.command("reset")
def caps_reset(config: ConfigOption = Path("offerflow.yaml"),
               offer: Annotated[Optional[str], typer.Option(help="Only this offer (default: all).")] = None) -> None:
    """Reset cap counters: events before now stop counting (a running service: POST /admin/caps/reset)."""
    from datetime import datetime, timezone

    from offerflow.capping import write_cap_reset
    from offerflow.decisioning import cap_resets_path

    project = _load(config)
    write_cap_reset(cap_resets_path(project), offer, datetime.now(timezone.utc))
    console.print(f"cap counters reset for {offer or 'every offer'}")


@rankings_app.command("list")
def rankings_list(config: ConfigOption = Path("offerflow.yaml")) -> None:
    """Published versions per placement (the current one marked with *)."""
    from offerflow.store import RankingStore

    project = _load(config)
    store = RankingStore(project.path(project.store.path), project.store.keep_versions)
    table = Table(title="published ranking tables")
    for column in ("placement", "versions", "current", "kind", "rows", "published at"):
        table.add_column(column)
    for placement in store.placements():
        current = store.current_version(placement)
        meta = store.read_metadata(placement) if current is not None else {}
        table.add_row(placement, ", ".join(map(str, store.versions(placement))), str(current),
                      str(meta.get("kind", "")), f"{meta.get('row_count', 0):,}", str(meta.get("published_at", "")))
    console.print(table)


@rankings_app.command("rollback")
def rankings_rollback(placement: Annotated[str, typer.Argument(help="Placement id.")],
                      version: Annotated[Optional[int], typer.Option(help="Version (default: previous).")] = None,
                      config: ConfigOption = Path("offerflow.yaml")) -> None:
    """Make an earlier published version current again."""
    from offerflow.store import RankingStore, StoreError

    project = _load(config)
    store = RankingStore(project.path(project.store.path), project.store.keep_versions)
    try:
        current = store.rollback(placement, version)
    except StoreError as exc:
        _fail(str(exc))
    console.print(f"{placement}: version {current} is current")


def _model_overview(config_path: Path):
    from offerflow.aimodels import overview
    from offerflow.tracking import Tracker, resolve_tracking_uri

    project = _load(config_path)
    tracker = Tracker(resolve_tracking_uri(project.tracking.uri, project.root),
                      project.path(project.tracking.artifact_root))
    return project, tracker, overview(project, tracker)


def _fmt(value: float | None, pattern: str = "{:.3f}") -> str:
    return "" if value is None else pattern.format(value)


@models_app.command("list")
def models_list(config: ConfigOption = Path("offerflow.yaml"),
                as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False) -> None:
    """Every AI model: type, status, placements, last trained, offers it personalizes, traffic, Gini."""
    _, _, models = _model_overview(config)
    if as_json:
        print(json.dumps([m.to_dict() for m in models], indent=2, default=str))
        return
    table = Table(title="AI models")
    for column in ("model", "type", "placements", "last trained (UTC)", "offers qualified",
                   "traffic % model/explore/holdout", "holdout Gini"):
        table.add_column(column)
    for m in models:
        qualified = m.metrics.get("offers_qualified")
        table.add_row(m.name + (" (draft)" if m.status == "draft" else ""), m.type.replace("_", "-"),
                      ", ".join(m.placements), (m.last_trained or "never")[:16].replace("T", " "),
                      "" if qualified is None else f"{int(qualified)} of {int(m.metrics.get('offers_total', 0))}",
                      "/".join(f"{100 * m.traffic[k]:.0f}" for k in ("model", "exploration", "holdout")),
                      _fmt(m.holdout_gini))
    console.print(table)


@models_app.command("retrain")
def models_retrain(config: ConfigOption = Path("offerflow.yaml")) -> None:
    """Retrain the auto-optimization models from the validated events and publish their posteriors
    (the `retrain-auto-optimization` flow; incremental, cheap enough to schedule every 15 minutes)."""
    project = _load(config)
    prepare_prefect_environment(project.root)
    from flows.auto_optimization import retrain_auto_optimization

    try:
        summary = retrain_auto_optimization(config_path=str(config))
    except FileNotFoundError as exc:
        _fail(str(exc))
    for name, model in summary["models"].items():
        m = model["metrics"]
        console.print(f"[bold]{name}[/bold]: {int(m['displays']):,} displays in the window,"
                      f" {int(m['offers_qualified'])} of {int(m['offers_total'])} offers qualified")
    for placement, version in summary["published"].items():
        console.print(f"[bold]published[/bold] {placement}: version {version}")


@models_app.command("show")
def models_show(name: Annotated[str, typer.Argument(help="AI model name.")],
                config: ConfigOption = Path("offerflow.yaml")) -> None:
    """One AI model in detail: configuration, last training run, and what it learned per offer."""
    from offerflow.aimodels import offer_table

    _, tracker, models = _model_overview(config)
    model = next((m for m in models if m.name == name), None)
    if model is None:
        _fail(f"unknown AI model {name!r} (defined: {', '.join(m.name for m in models) or 'none'})")
    console.print(f"[bold]{model.name}[/bold] ({model.type}, {model.status}): {model.description}")
    console.print(f"placements:        {', '.join(model.placements)}")
    console.print(f"optimizes:         {model.optimization_metric}")
    console.print(f"training window:   {model.training_window_days} days")
    console.print("traffic:           " + ", ".join(f"{k} {v:.0%}" for k, v in model.traffic.items()))
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
    offers = offer_table(tracker, model.run_id)
    table = Table(title=f"offers as {model.name} last saw them")
    for column in ("offer", "displays", "successes", "posterior rate", "qualified"):
        table.add_column(column)
    for row in offers.itertuples():
        table.add_row(row.offer_id, f"{row.displays:,}", f"{row.successes:,.0f}", f"{row.rate:.4f}",
                      "yes" if row.qualified else "new")
    console.print(table)


@app.command()
def evaluate(
    config: ConfigOption = Path("offerflow.yaml"),
    events: Annotated[Optional[Path], typer.Option(help="Events to evaluate on (default: the validated snapshot).")] = None,
    decision_log: Annotated[Optional[Path], typer.Option(help="Decision log directory (default: <outputs>/decision_log).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Which strategy helps most: off-policy estimates, holdout lift, an HTML report and an MLflow run."""
    from offerflow.catalog import CatalogError
    from offerflow.events import EventFileError

    project = _load(config)
    prepare_prefect_environment(project.root)
    if events is not None and not events.exists():
        _fail(f"{events}: events file not found")
    from flows.evaluate import evaluate_models

    try:
        result = evaluate_models(config_path=str(config), events=str(events) if events else None,
                                 decision_log=str(decision_log) if decision_log else None)
    except (CatalogError, EventFileError, ValueError) as exc:
        _fail(str(exc).splitlines()[0])
    if as_json:
        print(json.dumps(result, indent=2, default=str))
        return
    for line in result["summary"]:
        console.print(f"- {line}", highlight=False)
    for note in result["notes"]:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    console.print(f"report: {result['report']}  (MLflow run {result['mlflow_run_id']})", highlight=False)


@app.command()
def demo(
    project: Annotated[Path, typer.Option(help="Project directory (offerflow.yaml and data/).")] = Path("."),
    profiles: Annotated[int, typer.Option(min=100, help="Number of profiles in the demo world.")] = 5_000,
    days: Annotated[int, typer.Option(min=45, help="Days of events.")] = 60,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
) -> None:
    """Generate a demo world, run the whole pipeline, and show what to open next."""
    from offerflow.world import demo_config_yaml

    config_path = project / "offerflow.yaml"
    if not config_path.exists():
        config_path.write_text(demo_config_yaml("data"))
        console.print(f"wrote {config_path}")
    generate(out=project / "data", profiles=profiles, offers=12, days=days, seed=seed, end_date=None)
    summary = run_pipeline(config_path)
    _print_summary(summary)
    cfg, engine = _engine(config_path)
    console.rule("what to open next")
    console.print(f"MLflow UI:    .venv/bin/mlflow ui --backend-store-uri {cfg.tracking.uri}"
                  f" --default-artifact-root {cfg.tracking.artifact_root} --port 5000")
    if summary["validation"]["data_docs"]:
        console.print(f"Data Docs:    {summary['validation']['data_docs']}")
    console.print(f"Rankings:     {cfg.path(cfg.store.path)}  (offerflow rankings list)")
    opted_in = engine.profiles["email_opt_in"].astype(bool)
    profile_ids = engine.profiles["profile_id"]
    # an opted-in profile, another one, and an opted-out one (eligible for no email offer: fallback)
    samples = [(profile_ids[opted_in].iat[0], ["web-banner", "email-hero"]),
               (profile_ids[opted_in].iat[1], ["web-sidebar"]), (profile_ids[~opted_in].iat[0], ["email-hero"])]
    for profile_id, placements in samples:
        decision = engine.decide(profile_id, placements)
        shown = "; ".join(f"{p.placement_id}: {', '.join(i.offer_id for i in p.items)} ({p.source})"
                          for p in decision.placements)
        console.print(f"Decision:     offerflow decide -p {profile_id} "
                      + " ".join(f"-x {p}" for p in placements) + f"   ->  {shown}")


@app.callback()
def _verbosity(verbose: Annotated[bool, typer.Option("--verbose", "-v",
                                                     help="Show the flows' INFO logs (quiet by default).")] = False) -> None:
    """Quiet by default: Prefect and MLflow log warnings only; --verbose shows every step's log."""
    import logging

    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO" if verbose else "WARNING")
    for name in ("mlflow", "alembic", "great_expectations"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)


def _code_dir() -> Path:
    """The directory holding prefect.yaml and flows/ (where the deployments' code lives)."""
    import flows

    return Path(flows.__file__).resolve().parents[1]


@app.command()
def up(config: ConfigOption = Path("offerflow.yaml"),
       prefect_port: Annotated[int, typer.Option(help="Prefect server port on 127.0.0.1.")] = 4200,
       mlflow_port: Annotated[int, typer.Option(help="MLflow server port on 127.0.0.1.")] = 5000,
       deploy: Annotated[bool, typer.Option(help="Register every deployment of prefect.yaml.")] = True,
       schedules: Annotated[bool, typer.Option(help="Run the scheduler (off: deployments run only by hand).")] = True,
       ) -> None:
    """Start a Prefect server, a worker and an MLflow server on 127.0.0.1 and deploy every flow."""
    from offerflow.ops import OpsError
    from offerflow.ops import up as start_servers

    project = _load(config)
    try:
        with console.status("starting the Prefect server, the MLflow server and a worker") as status:
            state = start_servers(project, _code_dir(), prefect_port, mlflow_port, deploy=deploy,
                                  schedules=schedules, say=lambda m: status.update(m))
    except OpsError as exc:
        _fail(str(exc))
    console.print(f"Prefect UI:  {state.prefect_url}", highlight=False)
    console.print(f"MLflow UI:   {state.mlflow_url}", highlight=False)
    console.print(f"deployments: {', '.join(state.deployments) or 'none'}", highlight=False)
    console.print(f"processes:   " + ", ".join(f"{p.name} (pid {p.pid})" for p in state.processes), highlight=False)
    console.print(f"to run one:  PREFECT_API_URL={state.api_url} prefect deployment run 'offerflow-pipeline/daily'",
                  highlight=False)
    console.print("to stop:     offerflow down", highlight=False)


@app.command()
def down(config: ConfigOption = Path("offerflow.yaml")) -> None:
    """Stop exactly the processes `offerflow up` started for this project."""
    from offerflow.ops import down as stop_servers

    project = _load(config)
    stopped = stop_servers(project.root)
    if not stopped:
        console.print("nothing running for this project")
    for proc in stopped:
        console.print(f"stopped {proc.name} (pid {proc.pid})", highlight=False)


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
    from offerflow.config import ConfigError
    from offerflow.overrides import parse_assignments

    project = _load(config)
    try:
        overrides = parse_assignments(set_ or [])
    except ConfigError as exc:
        _fail(str(exc))
    prepare_prefect_environment(project.root)
    from flows.customer_ai import CustomerAIOptions, train_customer_ai
    from flows.ranking_models import RankingModelOptions, train_ranking_models

    summary: dict = {}
    try:
        if goal or not model:
            with console.status("training Customer AI " + ", ".join(goal or ["(every goal)"])):
                summary["customer_ai"] = train_customer_ai(str(config), CustomerAIOptions(goals=goal or [],
                                                                                          overrides=overrides))
        if model:
            with console.status("training ranking models " + ", ".join(model)):
                summary["ranking_models"] = train_ranking_models(str(config), RankingModelOptions(
                    models=model, overrides=overrides))
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc).splitlines()[0])
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
        return
    for name, r in summary.get("customer_ai", {}).get("goals", {}).items():
        console.print(f"[bold]{name}[/bold]: holdout AUC {r['metrics']['auc']:.4f}, version {r['model_version']},"
                      f" {'promoted to @champion' if r['promoted'] else 'kept as @challenger'} ({r['reason']})")
    for name, r in summary.get("ranking_models", {}).get("models", {}).items():
        auc = r["metrics"].get("holdout_auc")
        console.print(f"[bold]{name}[/bold] ({r['kind']}): " + (f"holdout AUC {auc:.4f}, " if auc else "")
                      + f"version {r['model_version']}" + (f", promoted={r['promoted']} ({r['reason']})"
                                                            if r["model_version"] else ""))


@app.command()
def promote(
    model: Annotated[str, typer.Option("--model", help="Registered model name, e.g. offerflow-propensity-purchase_14d.")],
    version: Annotated[str, typer.Option("--version", help="Model version to make @champion.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded on the version and its run).")],
    config: ConfigOption = Path("offerflow.yaml"),
) -> None:
    """Promote a model version to @champion by hand; the previous champion becomes @challenger."""
    from offerflow.champions import RegistryError, promote_by_hand
    from offerflow.tracking import Tracker, resolve_tracking_uri

    project = _load(config)
    tracker = Tracker(resolve_tracking_uri(project.tracking.uri, project.root),
                      project.path(project.tracking.artifact_root))
    try:
        record = promote_by_hand(tracker, model, version, reason)
    except RegistryError as exc:
        _fail(str(exc))
    console.print(f"{record.model}: version {record.version} is @champion"
                  + (f" (was {record.previous_champion}, now @challenger)" if record.previous_champion
                     and record.previous_champion != record.version else "")
                  + f"; reason recorded: {record.reason}", highlight=False)


def _goal(project, name: str):
    for goal in project.propensity_goals:
        if goal.name == name:
            return goal
    _fail(f"unknown propensity goal {name!r} (defined: {', '.join(g.name for g in project.propensity_goals) or 'none'})")


@app.command()
def score(
    goal: Annotated[Optional[list[str]], typer.Option("--goal", "-g", help="Customer AI goal (repeatable; default all).")] = None,
    as_of: Annotated[Optional[str], typer.Option("--as-of", help="Score as of this date (YYYY-MM-DD): features from"
                                                  " earlier events only; default: the end of the data.")] = None,
    refit: Annotated[bool, typer.Option(help="Train a fresh model on events before --as-of only (a strict backtest)"
                                        " instead of using the registry's @champion.")] = False,
    config: ConfigOption = Path("offerflow.yaml"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Score Customer AI goals as of a date into a new batch, and backtest against what happened next."""
    from datetime import datetime, timezone

    from offerflow.catalog import load_profiles
    from offerflow.champions import load_propensity_champion, propensity_model_name
    from offerflow.features import event_time_range, open_events
    from offerflow.goals import GoalError
    from offerflow.ingestion import validated_dir
    from offerflow.tracking import Tracker, resolve_tracking_uri
    from offerflow.training import fit_propensity_before, score_propensity_as_of

    project = _load(config)
    goals = [_goal(project, name) for name in goal] if goal else list(project.propensity_goals)
    if not goals:
        _fail(f"{config}: no propensity_goals defined")
    events_path = validated_dir(project) / "events.parquet"
    if not events_path.exists():
        _fail(f"{events_path}: no validated events yet; run `offerflow run` first")
    try:
        day = datetime.strptime(as_of, "%Y-%m-%d").replace(tzinfo=timezone.utc) if as_of else None
    except ValueError:
        _fail(f"--as-of: expected a date as YYYY-MM-DD, got {as_of!r}")
    if refit and day is None:
        _fail("--refit needs --as-of (the date to train before)")
    con = open_events(events_path)
    first, last = event_time_range(con)
    if day is None:  # the day after the last event, as the pipeline scores
        day = datetime.combine(last.date(), datetime.min.time(), timezone.utc) + timedelta(days=1)
    elif not first < day <= last + timedelta(days=1):
        _fail(f"--as-of {as_of}: outside the events ({first:%Y-%m-%d} to {last:%Y-%m-%d})")
    tracker = Tracker(resolve_tracking_uri(project.tracking.uri, project.root), project.path(project.tracking.artifact_root))
    profiles = load_profiles(project.path(project.data.profiles))
    results = []
    for g in goals:
        try:
            if refit:
                model, label = fit_propensity_before(con, g, profiles, day, project.seed), f"refit before {day:%Y-%m-%d}"
            else:
                loaded = load_propensity_champion(tracker, propensity_model_name(project.tracking.experiment_prefix, g.name))
                if loaded is None:
                    _fail(f"{g.name}: no @champion yet; run `offerflow run` (or use --refit)")
                model, label = loaded[0], f"v{loaded[1]}"
            with console.status(f"scoring {g.name} as of {day:%Y-%m-%d}"):
                results.append(score_propensity_as_of(con, model, g, profiles, day, label,
                                                      project.path(project.data.outputs_dir) / "propensity" / g.name,
                                                      tracker, project.tracking.experiment_prefix))
        except GoalError as exc:
            _fail(str(exc))
    if as_json:
        print(json.dumps([{**r.__dict__, "path": str(r.path)} for r in results], indent=2, default=str))
        return
    for r in results:
        line = f"[bold]{r.goal}[/bold] as of {r.as_of} ({r.model}): {r.profiles:,} profiles -> {r.path}"
        if r.backtest is None:
            line += "; no events after this date to backtest against"
        else:
            b = r.backtest
            partial = "" if b["observed_days"] >= _goal(project, r.goal).outcome_window_days else \
                f" (partial window: {b['observed_days']:.1f} days observed)"
            line += (f"\n  backtest vs what happened next: AUC {b['auc']:.3f}, Gini {b['gini']:.3f}, base rate"
                     f" {b['base_rate']:.3f} on {int(b['n']):,} profiles{partial}")
        console.print(line, highlight=False)


@app.command()
def segment(
    goal: Annotated[str, typer.Option("--goal", "-g", help="Customer AI goal.")],
    bucket: Annotated[Optional[str], typer.Option(help="low, medium or high.")] = None,
    min_score: Annotated[Optional[float], typer.Option(min=0, max=100, help="Keep scores >= this (0-100).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output file, .csv or .parquet"
                                                " (default: segment-<goal>.csv).")] = None,
    batch: Annotated[Optional[int], typer.Option(help="Score batch (default: latest of the newest date).")] = None,
    config: ConfigOption = Path("offerflow.yaml"),
) -> None:
    """Export the profiles of a Customer AI bucket and/or above a score as CSV or Parquet."""
    from offerflow.segments import SegmentError, read_batch, select_segment, write_segment

    project = _load(config)
    _goal(project, goal)
    if bucket is not None and bucket not in ("low", "medium", "high"):
        _fail(f"--bucket: expected low, medium or high, got {bucket!r}")
    try:
        scores, number = read_batch(project.path(project.data.outputs_dir) / "propensity" / goal, batch)
        chosen = select_segment(scores, bucket, min_score)
        path = write_segment(chosen, out or Path(f"segment-{goal}.csv"))
    except SegmentError as exc:
        _fail(str(exc))
    as_of = scores["score_date"].iat[0] if len(scores) else "?"
    console.print(f"{len(chosen):,} of {len(scores):,} profiles (batch {number}, as of {as_of}) -> {path}",
                  highlight=False)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())

"""Pipeline runs from the command line: generate a world, run the pipeline, the demo, evaluate."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from typer._click import exceptions as click_exceptions  # the Click that Typer vendors

from offerflow.cli.common import (app, console, err, ConfigOption, JsonOption, fail, load_project,
                                 prepare_prefect_environment, print_json, project_check, report_problems,
                                 report_warnings, run_pipeline, project_engine, flow_progress)

StrictOption = Annotated[bool, typer.Option("--strict", help="Formulas and rules that rank nothing (no value or one"
                                            " value for every pair, no profile eligible) are errors, not warnings.")]


@app.command()
def generate(
    out: Annotated[Path, typer.Option(help="Directory to write the world into.")] = Path("data"),
    profiles: Annotated[int, typer.Option(min=10, help="Number of profiles.")] = 5_000,
    offers: Annotated[int, typer.Option(min=4, max=500, help="Number of regular offers.")] = 12,
    days: Annotated[int, typer.Option(min=30, help="Days of events.")] = 60,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same world.")] = 7,
    end_date: Annotated[Optional[str], typer.Option(help="Last day (exclusive), YYYY-MM-DD; default today.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Write a seeded synthetic world whose true click and purchase probabilities are known."""
    from offerflow.synthetic.world import WorldSpec, generate_world

    try:
        spec = WorldSpec(profiles=profiles, offers=offers, days=days, seed=seed,
                         **({"end_date": date.fromisoformat(end_date)} if end_date else {}))
    except ValueError as exc:
        fail(f"--end-date: {str(exc).splitlines()[0]}")
    with console.status(f"generating {profiles:,} profiles x {days} days"):
        files = generate_world(spec, out)
    if as_json:
        print_json({name: str(getattr(files, name)) for name in ("events", "profiles", "offers", "truth")}
                   | {"event_count": files.event_count})
        return
    console.print(f"wrote {files.event_count:,} events to {files.events}, profiles to {files.profiles},"
                  f" offers to {files.offers}, truth to {files.truth}")


@app.command()
def run(config: ConfigOption = Path("offerflow.yaml"),
        as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON.")] = False,
        no_cache: Annotated[bool, typer.Option("--no-cache", help="Recompute every step, even those whose inputs"
                                               " did not change since they last ran.")] = False,
        strict: StrictOption = False,
        wait: Annotated[float, typer.Option(min=0, help="Seconds to wait for another command writing in this"
                                            " project (it holds the project lock); default: stop at once.")] = 0.0,
        ) -> None:
    """Run the whole pipeline: validate, train, score, publish (steps whose inputs did not change are reused)."""
    before = _serving_versions(config)
    try:
        summary = run_pipeline(config, use_cache=not no_cache, strict=strict, wait_seconds=wait)
    except (typer.Exit, typer.Abort, click_exceptions.ClickException):
        raise
    except (KeyboardInterrupt, Exception) as exc:  # bad input is the group's one line; the rest is said here
        from offerflow.ops.bad_input import BAD_INPUT_ERRORS

        if isinstance(exc, BAD_INPUT_ERRORS):
            raise
        _report_stopped_run(config, before, exc)
    if as_json:
        print_json(summary)
    else:
        _print_summary(summary)


def _serving_versions(config: Path) -> dict[str, int]:
    """Placement -> the version that serves now (the ranking store's manifest)."""
    from offerflow.core.paths import ranking_store

    return ranking_store(load_project(config)).manifest().versions()


def _report_stopped_run(config: Path, before: dict[str, int], exc: BaseException) -> None:
    """A run interrupted or failed by something other than bad input (its traceback, if any, was
    logged by Prefect above): one last line saying what happened and what serves now."""
    after = _serving_versions(config)
    switched = {p: v for p, v in after.items() if before.get(p) != v}
    interrupted = isinstance(exc, KeyboardInterrupt)
    message = str(exc).splitlines()[0] if str(exc) else ""
    what = "interrupted" if interrupted else f"the run failed: {type(exc).__name__}: {message}"
    serves = ("nothing was switched: every placement serves the version it served before the run"
              if not switched else "this run's versions serve: " + ", ".join(f"{p} v{v}" for p, v in switched.items()))
    err.print(f"[red]error:[/red] {escape(what)}; {escape(serves)} (offerflow rankings list)", highlight=False)
    raise typer.Exit(code=130 if interrupted else 1)


@app.command()
def check(config: ConfigOption = Path("offerflow.yaml"),
          as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
          strict: StrictOption = False) -> None:
    """Check every ranking formula, eligibility rule and goal condition against the catalog and the
    profile columns, without starting anything: one line per mistake, exit 2. Formulas and rules
    that rank nothing on the first profiles are warnings (errors with --strict)."""
    from offerflow.core.config import ConfigError
    from offerflow.decisioning.switches import load_serving_config
    from offerflow.models.project_check import CheckResult

    try:
        result = project_check(config, load_serving_config(config), strict)
    except ConfigError as exc:
        result = CheckResult(problems=str(exc).splitlines())
    if as_json:
        print_json(result.as_dict())
        if not result.ok:
            raise typer.Exit(code=2)
    elif not result.ok:
        report_problems(result.problems)
    else:
        report_warnings(result.warnings)
        console.print(result.summary(), highlight=False)


def _print_summary(summary: dict) -> None:
    from rich.markup import escape

    from offerflow.ingest.snapshot import logged_displays_note

    v = summary["validation"]
    console.print(f"[bold]validation[/bold]: {v['accepted']:,} accepted, {v['quarantined']:,} quarantined"
                  f" of {v['rows']:,} rows{logged_displays_note(v)}")
    if v.get("data_docs"):
        console.print(f"[bold]Data Docs[/bold]: {v['data_docs']}", highlight=False)
    for warning in v.get("warnings", []):
        console.print(f"[yellow]validation warning[/yellow]: {escape(warning)}", highlight=False)
    for name, r in summary["propensity"].items():
        m = r["metrics"]
        console.print(f"[bold]propensity {name}[/bold]: holdout AUC {m['auc']:.3f}, log loss {m['log_loss']:.3f},"
                      f" model v{r['model_version']} ({r['reason']})")
    for name, reason in summary.get("propensity_skipped", {}).items():
        console.print(f"[bold]propensity {name}[/bold]: [yellow]skipped[/yellow]: {escape(reason)}", highlight=False)
    for name, r in summary["ranking_models"].items():
        auc = r["metrics"].get("holdout_auc")
        extra = f", holdout AUC {auc:.3f}" if auc is not None else ""
        if str(r.get("reason", "")).startswith("not trained"):
            extra = f"; [yellow]{escape(r['reason'])}[/yellow]"
        console.print(f"[bold]ranking model {name}[/bold] ({r['kind']}):"
                      f" {int(r['metrics']['offers_qualified'])} offers qualified{extra}", highlight=False)
    for placement, version in summary["published"].items():
        console.print(f"[bold]published[/bold] {placement}: version {version}")


@app.command()
def evaluate(
    config: ConfigOption = Path("offerflow.yaml"),
    events: Annotated[Optional[Path], typer.Option(help="Events to evaluate on (default: the validated snapshot).")] = None,
    decision_log: Annotated[Optional[Path], typer.Option(help="Decision log directory (default: <outputs>/decision_log).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Which strategy helps most: off-policy estimates, holdout lift, an HTML report and an MLflow run."""
    from offerflow.ingest.catalog import CatalogError
    from offerflow.ingest.events import EventFileError

    project = load_project(config)
    prepare_prefect_environment(project.root)
    if events is not None and not events.exists():
        fail(f"{events}: events file not found")
    from offerflow.flows.evaluate import evaluate_models

    try:
        with flow_progress("evaluate"):
            result = evaluate_models(config_path=str(config), events=str(events) if events else None,
                                     decision_log=str(decision_log) if decision_log else None)
    except (CatalogError, EventFileError, ValueError) as exc:
        fail(str(exc).splitlines()[0])
    if as_json:
        print_json(result)
        return
    for line in result["summary"]:
        console.print(f"- {line}", highlight=False)
    for note in result["notes"]:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    for placement_id, serving in result["serving"].items():
        if serving.get("switched"):
            console.print(f"[bold]switched[/bold] {placement_id} to {serving['switched']['strategy']} "
                          f"(offerflow serving list; undo: offerflow serving revert {placement_id} --reason ...)",
                          highlight=False)
    console.print(f"report: {result['report']}  (MLflow run {result['mlflow_run_id']})", highlight=False)


def mlflow_ui_command(project: Path, tracking_uri: str, artifact_root: str, cwd: Path | None = None,
                      python: Path | None = None) -> str:
    """The `mlflow ui` line to copy: the `mlflow` next to this Python (relative when under the current
    folder, as `.venv/bin/mlflow` after `make demo`), run from the project folder, where the
    project's relative tracking URI and artifact root point."""
    import sys

    cwd, python = (cwd or Path.cwd()).resolve(), python or Path(sys.executable)
    mlflow = python.parent / "mlflow"
    if mlflow.is_absolute() and mlflow.is_relative_to(cwd):
        mlflow = mlflow.relative_to(cwd)
    command = f"{mlflow} ui --backend-store-uri {tracking_uri} --default-artifact-root {artifact_root} --port 5000"
    return command if project.resolve() == cwd else f"cd {project.resolve()} && {command}"


def write_demo_config(project: Path) -> Path:
    """The demo's `offerflow.yaml` in `project` (created if missing), unless one is there already."""
    from offerflow.synthetic.world import demo_config_yaml

    config_path = project / "offerflow.yaml"
    if not config_path.exists():
        project.mkdir(parents=True, exist_ok=True)
        config_path.write_text(demo_config_yaml("data"))
        console.print(f"wrote {config_path}")
    return config_path


DEMO_MIN_PROFILES = 500


@app.command()
def demo(
    project: Annotated[Path, typer.Option(help="Project directory (offerflow.yaml and data/).")] = Path("."),
    # below ~500 profiles the demo's Customer AI goal has fewer than its 200 positive examples and the
    # run fails at training (100: 53 found, 300: 160; 500 passes with seeds 1, 2, 3 and 7)
    profiles: Annotated[int, typer.Option(min=DEMO_MIN_PROFILES, help="Number of profiles in the demo world.")] = 5_000,
    days: Annotated[int, typer.Option(min=45, help="Days of events.")] = 60,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
) -> None:
    """Generate a demo world, run the whole pipeline, and show what to open next."""
    config_path = write_demo_config(project)
    generate(out=project / "data", profiles=profiles, offers=12, days=days, seed=seed, end_date=None, as_json=False)
    summary = run_pipeline(config_path)
    _print_summary(summary)
    cfg, engine = project_engine(config_path)
    console.rule("what to open next")
    console.print(f"MLflow UI:    {mlflow_ui_command(project, cfg.tracking.uri, cfg.tracking.artifact_root)}",
                  highlight=False)
    if summary["validation"]["data_docs"]:
        console.print(f"Data Docs:    {summary['validation']['data_docs']}")
    console.print(f"Rankings:     {cfg.paths.rankings}  (offerflow rankings list)")
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

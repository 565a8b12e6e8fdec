"""Customer AI from the command line: score as of a date, export segments."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Optional

import typer

from offerflow.cli.common import (app, console, ConfigOption, JsonOption, check_before_work, fail, load_project,
                                 print_json)
from offerflow.core.paths import project_tracker


def _goal(project, name: str):
    try:
        return project.goal(name)
    except KeyError as exc:
        fail(exc.args[0])


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
    project = load_project(config)
    goals = [_goal(project, name) for name in goal] if goal else list(project.propensity_goals)
    if not goals:
        fail(f"{config}: no propensity_goals defined")
    check_before_work(config, project)  # before the heavy imports: a typo is reported in well under 2 s
    from offerflow.core.features import open_events
    from offerflow.customer_ai.goals import GoalError
    from offerflow.ingest.catalog import load_profiles
    from offerflow.models.customer_ai_training import fit_propensity_before, score_propensity_as_of
    from rich.markup import escape

    events_path = project.paths.validated_events
    if not events_path.exists():
        fail(f"{events_path}: no validated events yet; run `offerflow run` first")
    con = open_events(events_path)
    day = _scoring_day(con, as_of, refit)
    tracker = project_tracker(project)
    profiles = load_profiles(project.paths.profiles)
    results, notes = [], {}
    for g in goals:
        try:
            if refit:
                model, version = fit_propensity_before(con, g, profiles, day, project.seed), None
            else:
                model, version, notes[g.name] = _champion(tracker, project, g.name, day)
            label = f"v{version}" if version else f"refit before {day:%Y-%m-%d}"
            with console.status(f"scoring {g.name} as of {day:%Y-%m-%d}"):
                results.append(score_propensity_as_of(con, model, g, profiles, day, label,
                                                      project.paths.propensity_scores(g.name),
                                                      tracker, project.tracking.experiment_prefix, version))
        except GoalError as exc:
            fail(str(exc))
    if as_json:
        print_json([{**r.__dict__, "path": str(r.path), "population": r.population.as_dict() if r.population else None,
                     "note": notes.get(r.goal)} for r in results])
        return
    for r in results:
        console.print(_describe_scores(r, project.goal(r.goal).outcome_window_days), highlight=False)
        if notes.get(r.goal) and r.backtest is not None:
            console.print(f"  [yellow]note:[/yellow] {escape(notes[r.goal])}", highlight=False)


def _champion(tracker, project, goal: str, day):
    """(the goal's @champion model, its registry version, a note when scoring as of `day` backtests
    it on outcomes it was trained on, else None); a one-line error when there is none yet."""
    from offerflow.models.registry import load_propensity_champion, propensity_model_name, trained_outcomes_end

    registered = propensity_model_name(project.tracking.experiment_prefix, goal)
    loaded = load_propensity_champion(tracker, registered)
    if loaded is None:
        fail(f"{goal}: no @champion yet; run `offerflow run` (or use --refit)")
    model, version = loaded
    seen = trained_outcomes_end(tracker, registered, version)
    if seen is None or day >= seen:
        return model, version, None
    return model, version, (f"{goal}: the @champion (v{version}) learned from outcomes up to {seen:%Y-%m-%d}, after"
                            f" {day:%Y-%m-%d}: its backtest scores outcomes it was trained on and reads too well;"
                            " `--refit` trains on the events before the date only")


def _scoring_day(con, as_of: str | None, refit: bool):
    """The as-of date `score` scores at: --as-of inside the events, or the day after the last event."""
    from datetime import datetime, timezone

    from offerflow.core.features import event_time_range

    try:
        day = datetime.strptime(as_of, "%Y-%m-%d").replace(tzinfo=timezone.utc) if as_of else None
    except ValueError:
        fail(f"--as-of: expected a date as YYYY-MM-DD, got {as_of!r}")
    if refit and day is None:
        fail("--refit needs --as-of (the date to train before)")
    first, last = event_time_range(con)
    if day is None:  # the day after the last event, as the pipeline scores
        return datetime.combine(last.date(), datetime.min.time(), timezone.utc) + timedelta(days=1)
    if not first < day <= last + timedelta(days=1):
        fail(f"--as-of {as_of}: outside the events ({first:%Y-%m-%d} to {last:%Y-%m-%d})")
    return day


def _describe_scores(r, window_days: int) -> str:
    """One scoring result as the CLI prints it: where the batch went, who it scores, the backtest."""
    line = f"[bold]{r.goal}[/bold] as of {r.as_of} ({r.model}): {r.profiles:,} profiles -> {r.path}"
    if r.population is not None:
        line += f"\n  population: {r.population.describe()}"
    if r.backtest is None:
        return line + "; no events after this date to backtest against"
    b = r.backtest
    partial = "" if b["observed_days"] >= window_days else f" (partial window: {b['observed_days']:.1f} days observed)"
    return line + (f"\n  backtest vs what happened next: AUC {b['auc']:.3f}, Gini {b['gini']:.3f}, base rate"
                   f" {b['base_rate']:.3f} on {int(b['n']):,} profiles{partial}")


@app.command()
def segment(
    goal: Annotated[str, typer.Option("--goal", "-g", help="Customer AI goal.")],
    bucket: Annotated[Optional[str], typer.Option(help="low, medium or high.")] = None,
    min_score: Annotated[Optional[float], typer.Option(min=0, max=100, help="Keep scores >= this (0-100).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output file, .csv or .parquet"
                                                " (default: segment-<goal>.csv).")] = None,
    batch: Annotated[Optional[int], typer.Option(help="Score batch (default: latest of the newest date).")] = None,
    config: ConfigOption = Path("offerflow.yaml"),
    as_json: JsonOption = False,
) -> None:
    """Export the profiles of a Customer AI bucket and/or above a score as CSV or Parquet."""
    from offerflow.customer_ai.segments import SegmentError, read_batch, select_segment, write_segment

    project = load_project(config)
    _goal(project, goal)
    if bucket is not None and bucket not in ("low", "medium", "high"):
        fail(f"--bucket: expected low, medium or high, got {bucket!r}")
    try:
        scores, number = read_batch(project.paths.propensity_scores(goal), batch)
        chosen = select_segment(scores, bucket, min_score)
        path = write_segment(chosen, out or Path(f"segment-{goal}.csv"))
    except SegmentError as exc:
        fail(str(exc))
    as_of = scores["score_date"].iat[0] if len(scores) else None
    if as_json:
        print_json({"goal": goal, "profiles": len(chosen), "of": len(scores), "batch": number, "as_of": as_of,
                    "path": str(path)})
        return
    console.print(f"{len(chosen):,} of {len(scores):,} profiles (batch {number}, as of {as_of or '?'}) -> {path}",
                  highlight=False)

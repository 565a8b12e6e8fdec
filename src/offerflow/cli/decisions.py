"""Decisions from the command line: one profile, a segment in batch, the HTTP service, caps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from offerflow.cli.common import (app, caps_app, console, ConfigOption, JsonOption, check_before_work, fail,
                                 load_project, one_shot, print_json, project_engine)


@app.command()
def serve(
    config: ConfigOption = Path("offerflow.yaml"),
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    admin_token: Annotated[Optional[str], typer.Option(envvar="OFFERFLOW_ADMIN_TOKEN",
                                                       help="Bearer token for /admin endpoints.")] = None,
    api_key: Annotated[Optional[str], typer.Option(envvar="OFFERFLOW_API_KEY",
                                                   help="Require this X-API-Key on decision requests.")] = None,
    access_log: Annotated[bool, typer.Option(help="Log every request (off: decisions are in the decision log; "
                                                  "a line per request costs ~7% of the service's CPU).")] = False,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes; more than 1 needs caps.store: "
                                                             "lmdb or redis://... (cap counters shared by every "
                                                             "worker).")] = 1,
) -> None:
    """Serve decisions over HTTP (POST /decisions, GET /health, OpenAPI docs at /docs)."""
    from offerflow.decisioning.http_service import run_server
    from offerflow.rules.cap_store import CapStoreError

    project = load_project(config)
    if workers > 1 and not project.caps.shared:
        fail(f"{config}: caps.store: --workers {workers} needs a shared cap store; set caps.store to lmdb (the "
             "workers of this machine) or a Redis URL (e.g. redis://127.0.0.1:6379/0): the embedded store counts "
             "caps in one process")
    console.print(f"serving decisions on http://{host}:{port} with {workers} worker(s) (docs at /docs)")
    try:
        run_server(project, host=host, port=port, admin_token=admin_token, api_key=api_key, access_log=access_log,
                   workers=workers, config_path=config)
    except CapStoreError as exc:
        fail(str(exc))


@app.command()
def decide(
    profile: Annotated[str, typer.Option("--profile", "-p", help="Profile id.")],
    placement: Annotated[list[str], typer.Option("--placement", "-x", help="Placement id (repeatable).")],
    items: Annotated[Optional[int], typer.Option(min=1, max=30, help="Items per placement.")] = None,
    allow_duplicates: Annotated[bool, typer.Option(help="Allow an offer in several placements.")] = False,
    config: ConfigOption = Path("offerflow.yaml"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the decision as JSON.")] = False,
    log: Annotated[bool, typer.Option(help="Append the decision to the decision log.")] = True,
    explain: Annotated[bool, typer.Option("--explain", help="Say why: the arm, how each offer was ranked and its "
                                                            "caps, why every other offer was not shown.")] = False,
) -> None:
    """Which offers to show a profile in one or more placements (--explain: and why)."""
    with one_shot():
        from offerflow.decisioning.decision_log import log_decisions
        from offerflow.decisioning.decision_types import DecisionError

        project, engine = project_engine(config, check=True, profile_ids=[profile])
        try:
            decision = engine.decide(profile, placement, items=items, allow_duplicates=allow_duplicates,
                                     explain=explain)
        except DecisionError as exc:
            fail(str(exc))
        if log:
            log_decisions([decision], project.paths.decision_log)
    if as_json:
        print_json(decision.to_dict())
        return
    table = Table(title=f"decision {decision.decision_id} for {profile}")
    for column in ("placement", "rank", "offer", "score", "source", "model"):
        table.add_column(column)
    for p in decision.placements:
        model = _model_column(project, p)
        for item in p.items:
            score = "" if item.score is None else f"{item.score:.4f}"
            table.add_row(p.placement_id, str(item.rank), item.offer_id, score, p.source, model)
    console.print(table)
    for p in decision.placements if explain else ():
        print_explanation(p.placement_id, p.explanation)


def _model_column(project, placement) -> str:
    """What ranked a placement: its AI model and version, its method (formula, priority), or, for an
    AI model that has published no table yet, its name and that (it decided by priority)."""
    if placement.model_label:
        return placement.model_label
    if placement.ranking_method == "ai_model":
        return f"{project.placement(placement.placement_id).ranking.ai_model} (not published yet)"
    return placement.ranking_method


def print_explanation(placement_id: str, explanation: dict) -> None:
    """One placement's explanation as a table: the arm, then each offer shown or not and why; the
    offers a random order did not draw (all the others of a holdout or exploration decision) as one
    row, which the JSON (--json) lists one by one."""
    from offerflow.decisioning.explain import NOT_DRAWN

    table = Table(title=f"why, in {placement_id}: {explanation['text']} "
                        f"(arm {explanation['arm']}, {explanation['arm_share']:.0%} of decisions)",
                  title_justify="left")
    for column in ("offer", "outcome", "why"):
        table.add_column(column, overflow="fold")
    for shown in explanation["shown"]:
        table.add_row(shown["offer_id"], f"shown, rank {shown['rank']}", shown["text"].split(", ", 1)[1])
    whys = [other["text"].split(": ", 1)[1] for other in explanation["not_shown"]]
    undrawn = [other["offer_id"] for other, why in zip(explanation["not_shown"], whys) if why.startswith(NOT_DRAWN)]
    for other, why in zip(explanation["not_shown"], whys):
        if len(undrawn) < 2 or not why.startswith(NOT_DRAWN):
            table.add_row(other["offer_id"], other["reason"].replace("_", " "), why)
    if len(undrawn) >= 2:
        pool = next(why for why in whys if why.startswith(NOT_DRAWN)).removeprefix(NOT_DRAWN)
        listed = ", ".join(undrawn[:5]) + (", ..." if len(undrawn) > 5 else "")
        table.add_row(f"{len(undrawn)} others", "lower rank",
                      f"{len(undrawn)} other eligible offers {NOT_DRAWN}{pool}: {listed} (--json lists each)")
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
    explain: Annotated[bool, typer.Option("--explain", help="Add `why` and `explanation` (JSON) columns to the "
                                                            "decisions dataset (~0.3 ms per decision and placement).")]
    = False,
) -> None:
    """Decide for every profile of a segment (default: everyone), on the published tables, without
    starting Prefect (the `batch-decisions` flow runs the same steps on a schedule)."""
    with one_shot():
        from offerflow.customer_ai.segments import SegmentError
        from offerflow.decisioning.batch_runs import run_batch_decisions
        from offerflow.decisioning.decision_types import DecisionError
        from offerflow.ingest.catalog import CatalogError

        project = load_project(config)
        check_before_work(config, project, warnings=False)
        try:
            summary = run_batch_decisions(project, placements=placement or None,
                                          profiles_file=str(profiles_file) if profiles_file else None, goal=goal,
                                          bucket=bucket, items=items, allow_duplicates=allow_duplicates,
                                          explain=explain)
        except (SegmentError, DecisionError, CatalogError, FileNotFoundError) as exc:
            fail(str(exc).splitlines()[0])
    if as_json:
        print_json(summary)
        return
    unknown = summary["unknown_profiles"]
    unknown_text = f" ({unknown:,} not in the profiles table: decided as unknown profiles)" if unknown else ""
    console.print(f"decided {summary['profiles']:,} profiles{unknown_text} in {', '.join(summary['placements'])}"
                  f" ({summary['items']:,} items) in {summary['seconds']:.1f} s -> {summary['decisions_path']}")


def _catalog(project):
    """The project's offers, or exit with the catalog's one-line error."""
    from offerflow.ingest.catalog import CatalogError, load_offers

    try:
        return load_offers(project.path(project.data.offers), [p.id for p in project.placements])
    except CatalogError as exc:
        fail(str(exc))


@caps_app.command("show")
def caps_show(config: ConfigOption = Path("offerflow.yaml"),
              profile: Annotated[Optional[str], typer.Option("--profile", "-p", help="Counts of one profile.")] = None,
              as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False) -> None:
    """Frequency caps: per offer and rule, the count in the current window and whether it is capped
    (with caps.store lmdb or Redis: the shared counters a running service uses)."""
    from offerflow.rules.capping import caps_of

    project = load_project(config)
    rows = _cap_store(project, caps_of(_catalog(project))).state(profile_id=profile)
    if as_json:
        print_json(rows)
        return
    table = Table(title="frequency caps" + (f" for {profile}" if profile else "") + " (times in UTC)",
                  title_justify="left")
    for column in ("offer", "placement", "cap", "count", "capped", "resets"):
        table.add_column(column, no_wrap=column != "cap")
    for r in rows:
        cap = f"{r['limit']:,} {r['event']}{'s' if r['limit'] != 1 else ''} {r['scope'].replace('_', ' ')}, {r['reset']}"
        table.add_row(r["offer_id"], r["placement_id"] or ("each" if r["per_placement"] else "all"), cap,
                      f"{r['count']:,}", _capped(r, profile),
                      r["resets_at"][:16].replace("T", " ") if r["resets_at"] else "never")
    console.print(table)


def _cap_store(project, caps: dict):
    """The project's cap store (one line and exit 1 when a shared one cannot be used)."""
    from offerflow.decisioning.engine import project_cap_store
    from offerflow.rules.cap_store import CapStoreError

    try:
        return project_cap_store(project, caps)
    except CapStoreError as exc:
        fail(str(exc))


def _capped(row: dict, profile: str | None) -> str:
    """'yes' / 'no'; for a per-profile rule read for every profile, how many profiles are capped."""
    if profile is None and row["scope"] == "per_profile":
        return f"{row['at_limit']:,} profile{'s' if row['at_limit'] != 1 else ''}" if row["at_limit"] else "no"
    return "yes" if row["capped"] else "no"


@caps_app.command("reset")
def caps_reset(config: ConfigOption = Path("offerflow.yaml"),
               offer: Annotated[Optional[str], typer.Option(help="Only this offer (default: all).")] = None,
               as_json: JsonOption = False) -> None:
    """Reset cap counters: events before now stop counting (a running service with the embedded store:
    POST /admin/caps/reset; with lmdb or Redis this resets the shared counters)."""
    from datetime import datetime, timezone

    from offerflow.rules.capping import write_cap_reset

    project = load_project(config)
    offers = _catalog(project)
    if offer is not None and offer not in set(offers["offer_id"]):
        fail(f"unknown offer {offer!r}")
    at = write_cap_reset(project.paths.cap_resets, offer, datetime.now(timezone.utc))
    if project.caps.shared:  # the counters every worker reads (LMDB or Redis), while the service runs too
        from offerflow.rules.capping import caps_of

        _cap_store(project, caps_of(offers)).reset(offer)
    if as_json:
        print_json({"status": "reset", "offer_id": offer, "reset_at": at.isoformat()})
        return
    console.print(f"cap counters reset for {offer or 'every offer'}")

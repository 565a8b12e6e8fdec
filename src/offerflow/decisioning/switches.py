"""What each placement serves: `offerflow.yaml` overridden by recorded serving decisions.

The evaluation's promotion rule (`offpolicy.serving_decision`) may say "switch": a candidate
strategy beat the current one with the lower end of its lift interval above the configured
minimum. Then the switch is recorded here, never by rewriting the user's project file, in a small
versioned history next to the ranking store::

    <store root>/_serving/assignments.json   {"history": [record, ...]}   (newest last)

Each record is a `switch` (placement, the ranking it serves now, the ranking of the project file it
replaces, reason, evidence, MLflow run) or a `revert` (back to the project file, with a person's
reason). `load_config` applies the active switches (`apply_serving`), so scoring, publishing, the
decision engine and the evaluation itself all see the placement's *effective* ranking. A switch
whose `replaces` no longer equals the project file's ranking is stale and ignored: a person edited
`offerflow.yaml` after the switch, and that edit is the newer decision.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from offerflow.core.config import ConfigError, PlacementConfig, ProjectConfig, RankingMethod, _cross_check, load_config
from offerflow.core.paths import ranking_store

SERVING_DIR, SERVING_FILE = "_serving", "assignments.json"


class ServingError(ValueError):
    """A serving change that cannot be made; the one-line message says why."""


def serving_path(config: ProjectConfig) -> Path:
    return config.paths.rankings / SERVING_DIR / SERVING_FILE


def ranking_dict(ranking: RankingMethod) -> dict[str, Any]:
    """A ranking method as the plain dict the history records (None fields left out)."""
    return ranking.model_dump(mode="json", exclude_none=True)


def ranking_label(ranking: Mapping[str, Any]) -> str:
    """`priority`, `formula: <expr>` or `ai_model: <name>`, for people."""
    method = ranking.get("method", "priority")
    if method == "formula":
        return f"formula: {ranking.get('formula')}" + (f" (ai_score of {ranking['ai_model']})"
                                                       if ranking.get("ai_model") else "")
    if method == "ai_model":
        return f"ai_model: {ranking.get('ai_model')}"
    return "priority"


def load_history(config: ProjectConfig) -> list[dict[str, Any]]:
    """Every recorded switch and revert, oldest first ([] when nothing was ever switched)."""
    path = serving_path(config)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable serving history ({exc})") from None
    history = data.get("history") if isinstance(data, dict) else None
    if not isinstance(history, list):
        raise ConfigError(f"{path}: expected {{\"history\": [...]}}")
    return history


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _append(config: ProjectConfig, record: dict[str, Any]) -> dict[str, Any]:
    """Add a record with the next version number; the file is replaced atomically under a lock."""
    path = serving_path(config)
    with _locked(path):
        history = load_history(config)
        record = {"version": 1 + max((int(r.get("version", 0)) for r in history), default=0), **record}
        tmp = path.with_name(f".{SERVING_FILE}.{uuid.uuid4().hex}")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"history": [*history, record]}, f, indent=2, default=str)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    return record


@dataclass(frozen=True)
class PlacementServing:
    """What one placement serves and why."""

    placement_id: str
    configured: dict[str, Any]        # the project file's ranking
    serving: dict[str, Any]           # the effective ranking
    record: dict[str, Any] | None     # the active switch, if any
    stale: str | None = None          # why a recorded switch is ignored

    @property
    def switched(self) -> bool:
        return self.record is not None and self.stale is None


def _last_records(history: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    last: dict[str, dict[str, Any]] = {}
    for record in history:
        last[str(record.get("placement_id"))] = record
    return last


def _check_switch(config: ProjectConfig, placement: PlacementConfig, record: Mapping[str, Any]) -> str | None:
    """None when the switch applies to this project file, else why it is ignored."""
    if record.get("replaces") != ranking_dict(placement.ranking):
        return (f"offerflow.yaml now ranks {placement.id} by {ranking_label(ranking_dict(placement.ranking))}, "
                f"not {ranking_label(record.get('replaces') or {})} which the switch replaced")
    try:
        ranking = RankingMethod.model_validate(record.get("ranking"))
    except ValueError as exc:
        return f"recorded ranking is invalid: {str(exc).splitlines()[-1]}"
    trial = _with_ranking(config, placement.id, ranking)
    problems = _cross_check({}, trial)
    return problems[0] if problems else None


def _with_ranking(config: ProjectConfig, placement_id: str, ranking: RankingMethod) -> ProjectConfig:
    placements = [p.model_copy(update={"ranking": ranking}) if p.id == placement_id else p for p in config.placements]
    return config.model_copy(update={"placements": placements})


def serving_status(config: ProjectConfig) -> list[PlacementServing]:
    """Per placement of the project file (as written, not yet overridden), what it serves."""
    last = _last_records(load_history(config))
    out = []
    for placement in config.placements:
        configured = ranking_dict(placement.ranking)
        record = last.get(placement.id)
        if record is None or record.get("action") != "switch":
            out.append(PlacementServing(placement.id, configured, configured, None))
            continue
        stale = _check_switch(config, placement, record)
        out.append(PlacementServing(placement.id, configured, configured if stale else dict(record["ranking"]),
                                    record, stale))
    return out


def apply_serving(config: ProjectConfig) -> ProjectConfig:
    """The project config with every active switch applied to its placement's ranking."""
    if not serving_path(config).exists():
        return config
    for status in serving_status(config):
        if status.switched:
            config = _with_ranking(config, status.placement_id, RankingMethod.model_validate(status.serving))
    return config


def load_serving_config(path: str | Path) -> ProjectConfig:
    """The project file with what each placement serves: the file's ranking, unless an evaluation
    switched it (`offerflow serving list` shows which). For the callers that serve or publish."""
    return apply_serving(load_config(path))


def record_switch(config: ProjectConfig, placement_id: str, strategy: str, ranking: RankingMethod, reason: str,
                  evidence: Mapping[str, Any], mlflow_run_id: str | None,
                  decided_by: str = "evaluate-models") -> dict[str, Any]:
    """Record that `placement_id` now serves `ranking` (the evaluated `strategy`). `config` may be
    the project file as written or already switched: the record keeps the file's ranking it
    replaces either way (a second switch still replaces the file's ranking)."""
    placement = config.placement(placement_id)
    replaces = ranking_dict(placement.ranking)
    active = _last_records(load_history(config)).get(placement_id)
    if active is not None and active.get("action") == "switch" and active.get("ranking") == replaces:
        replaces = active["replaces"]
    problems = _cross_check({}, _with_ranking(config, placement_id, ranking))
    if problems:
        raise ServingError(f"cannot serve {strategy} on {placement_id}: {problems[0]}")
    # back to the project file's own ranking: recorded as a revert, so the placement shows as not switched
    action = "revert" if ranking_dict(ranking) == replaces else "switch"
    return _append(config, {"placement_id": placement_id, "action": action, "strategy": strategy,
                            "ranking": ranking_dict(ranking), "replaces": replaces,
                            "reason": reason, "evidence": {k: v for k, v in evidence.items()},
                            "mlflow_run_id": mlflow_run_id, "by": decided_by,
                            "at": datetime.now(timezone.utc).isoformat(timespec="seconds")})


def revert_record(config: ProjectConfig, placement_id: str, reason: str, by: str | None = None) -> dict[str, Any]:
    """The revert record for `placement_id` (back to the project file's ranking), not yet saved;
    a ServingError when there is nothing to revert or no reason."""
    reason = reason.strip()
    if not reason:
        raise ServingError("a revert needs a reason (--reason \"...\")")
    status = {s.placement_id: s for s in serving_status(config)}
    if placement_id not in status:
        raise ServingError(f"unknown placement {placement_id!r} (known: {', '.join(status)})")
    current = status[placement_id]
    if not current.switched:
        raise ServingError(f"{placement_id} already serves what offerflow.yaml says "
                           f"({ranking_label(current.configured)}); nothing to revert")
    return {"placement_id": placement_id, "action": "revert", "strategy": None, "ranking": current.configured,
            "replaces": current.serving, "reverted_version": current.record.get("version"), "reason": reason,
            "by": by or getpass.getuser(), "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def record_revert(config: ProjectConfig, placement_id: str, reason: str, by: str | None = None,
                  tracker: Any = None) -> dict[str, Any]:
    """Serve the project file's ranking on `placement_id` again, with a person's reason; with a
    tracker, the change is also one MLflow run (`log_serving_change`) named in the record.
    `config` is the project file as written (`load_config`, without the switches)."""
    record = revert_record(config, placement_id, reason, by)
    record["mlflow_run_id"] = log_serving_change(tracker, config, record) if tracker is not None else None
    return _append(config, record)


def log_serving_change(tracker: Any, config: ProjectConfig, record: Mapping[str, Any]) -> str:
    """One MLflow run in the evaluation experiment for a serving change made by a person (a
    revert), with the record as tags and `serving_change.json`. Returns the run id."""
    experiment = f"{config.tracking.experiment_prefix}-evaluation"
    tags = {"project": config.project, "serving.action": str(record["action"]),
            "serving.placement": str(record["placement_id"]), "serving.reason": str(record["reason"]),
            "serving.by": str(record.get("by", "")), "serving.ranking": ranking_label(record["ranking"]),
            "serving.replaces": ranking_label(record.get("replaces") or {})}
    with tracker.run(experiment, run_name=f"serving-{record['action']}", tags=tags) as run_id:
        tracker.log_dict(dict(record), "serving_change.json")
    return run_id


def serving_model(config: ProjectConfig, placement_id: str, tracker: Any):
    """The trained model a placement's effective ranking needs to be published, or (None, why not)
    when there is none yet: a personalized model's `@champion`, an auto-optimization model's last
    training run's posteriors. (None, None) when the ranking needs no model."""
    placement = config.placement(placement_id)
    name = placement.ranking.ai_model
    if name is None:
        return None, None
    model_cfg = config.ai_model(name)
    from offerflow.ranking.ai_models import experiment_name

    if model_cfg.type == "personalized":
        from offerflow.models.registry import load_ranking_champion

        model = load_ranking_champion(tracker, config.tracking.experiment_prefix, model_cfg)
        return model, None if model is not None else f"{name} has no @champion yet"
    import pandas as pd

    from offerflow.ranking.ai_models import RankingModelResult

    last = tracker.latest_run(experiment_name(config.tracking.experiment_prefix, name))
    if last is None:
        return None, f"{name} was never trained"
    posteriors = pd.DataFrame(tracker.load_run_dict(last["run_id"], "posteriors.json")["posteriors"])
    try:  # per placement since pool_placements (runs before it have pooled posteriors only)
        per_placement = {p: pd.DataFrame(rows) for p, rows in
                         tracker.load_run_dict(last["run_id"], "placement_posteriors.json").items()}
    except Exception:  # a run without the artifact (MLflow raises its own error type): pooled only
        per_placement = None
    return RankingModelResult(name, last["run_id"], None, last["metrics"], False, "last training run",
                              kind=model_cfg.type, posteriors=posteriors, placement_posteriors=per_placement), None


def publish_serving(config: ProjectConfig, placement_id: str, profiles, offers, tracker: Any,
                    extra_metadata: Mapping[str, Any] | None = None) -> tuple[int | None, str | None]:
    """Publish the placement's table with its effective ranking, so the next decision serves it.
    Returns (version, None), or (None, why not) when the model it needs is not trained yet."""
    from offerflow.ranking.publishing import publish_placement

    model, why = serving_model(config, placement_id, tracker)
    if why is not None:
        return None, why
    store = ranking_store(config)
    version = publish_placement(store, config.placement(placement_id), profiles, offers, model,
                                {"published_by": "serving", **(extra_metadata or {})})
    return version, None


def apply_serving_decisions(config: ProjectConfig, result: Any, mlflow_run_id: str | None, profiles, offers,
                            tracker: Any) -> dict[str, dict[str, Any]]:
    """Act on an evaluation's serving decisions: each placement whose decision says switch gets a
    switch record (evidence and the evaluation's MLflow run) and its table re-published with the
    winner, so the next decision serves it; the run gets `serving.<placement>.switched_to` tags.
    `result` is a `report.EvaluationResult`. Returns per switched placement what was done."""
    done: dict[str, dict[str, Any]] = {}
    for placement_id, decision in result.serving.items():
        if not decision.serve_candidate:
            continue
        ranking = result.candidates[placement_id].rankings[decision.candidate]
        record = record_switch(config, placement_id, decision.candidate, ranking, decision.reason,
                               dict(decision.evidence), mlflow_run_id)
        version, why = publish_serving(_with_ranking(config, placement_id, ranking), placement_id, profiles, offers,
                                       tracker, {"serving_version": record["version"]})
        done[placement_id] = {"strategy": decision.candidate, "ranking": record["ranking"],
                              "serving_version": record["version"], "table_version": version,
                              "not_published": why}
    if mlflow_run_id and done:
        tracker.set_run_tags(mlflow_run_id, {
            f"serving.{p}.switched_to": ranking_label(d["ranking"]) + f" (serving version {d['serving_version']})"
            for p, d in done.items()})
    return done

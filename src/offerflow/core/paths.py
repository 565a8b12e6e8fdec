"""Every file and folder a project uses, resolved once from its config, and the handles built on them.

The layout of `<data.outputs_dir>` is written here and nowhere else:

    validated/events.parquet          the validated events snapshot (ingest)
    propensity/<goal>/scores-*.parquet Customer AI score batches
    profiles_enriched.parquet         profiles with every goal's latest scores
    offer_stats/<model>/              auto-optimization's incremental daily statistics
    partitions/                       partitioned scoring's temporary files
    decision_log/                     logged displays (+ meta/ decision metadata)
    caps/resets.json                  frequency-cap resets
    batch_decisions/<run>.parquet     batch decisions
    task_cache/                       the flows' task cache (unless cache.path says otherwise)
    evaluation/                       evaluation reports (unless evaluation.report_dir says otherwise)
    offerflow.lock                    the project lock a writing command holds (core/project_lock.py)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ContextManager

if TYPE_CHECKING:
    from offerflow.core.config import ProjectConfig
    from offerflow.core.store import RankingStore
    from offerflow.core.tracking import Tracker


#: The decision log's display files inside `<outputs>/decision_log` (their metadata is in `meta/`).
LOGGED_DISPLAYS_GLOB = "decisions-*.parquet"


def logged_display_files(decision_log_dir: Path | None) -> list[Path]:
    """The display files of a decision-log directory, oldest first (none without a directory)."""
    return sorted(Path(decision_log_dir).glob(LOGGED_DISPLAYS_GLOB)) if decision_log_dir else []


def _output(*parts: str) -> property:
    """A path under `<data.outputs_dir>`, as a read-only attribute."""
    return property(lambda self: self.outputs.joinpath(*parts), doc=f"<outputs>/{'/'.join(parts)}")


@dataclass(frozen=True)
class ProjectPaths:
    """The project's files and folders, absolute."""

    root: Path
    events: Path
    profiles: Path
    offers: Path
    quarantine: Path
    outputs: Path
    rankings: Path
    artifacts: Path
    task_cache: Path
    evaluation_reports: Path

    @classmethod
    def of(cls, config: ProjectConfig) -> ProjectPaths:
        outputs = config.path(config.data.outputs_dir)
        return cls(
            root=config.root, events=config.path(config.data.events), profiles=config.path(config.data.profiles),
            offers=config.path(config.data.offers), quarantine=config.path(config.data.quarantine_dir),
            outputs=outputs, rankings=config.path(config.store.path),
            artifacts=config.path(config.tracking.artifact_root),
            task_cache=config.path(config.cache.path) if config.cache.path else outputs / "task_cache",
            evaluation_reports=(config.path(config.evaluation.report_dir) if config.evaluation.report_dir
                                else outputs / "evaluation"))

    def propensity_scores(self, goal: str) -> Path:
        return self.outputs / "propensity" / goal

    def logged_display_files(self) -> list[Path]:
        """The decision log's display files (`decisions-*.parquet`, not the metadata), oldest first."""
        return logged_display_files(self.decision_log)

    validated = _output("validated")
    validated_events = _output("validated", "events.parquet")
    enriched_profiles = _output("profiles_enriched.parquet")
    offer_stats = _output("offer_stats")
    partitions = _output("partitions")
    decision_log = _output("decision_log")
    cap_resets = _output("caps", "resets.json")
    batch_decisions = _output("batch_decisions")
    lock = _output("offerflow.lock")


def ranking_store(config: ProjectConfig) -> RankingStore:
    """The project's ranking store (the only way the library opens it)."""
    from offerflow.core.store import RankingStore

    return RankingStore(config.paths.rankings, config.store.keep_versions)


def hold_project_lock(config: ProjectConfig, command: str, timeout_seconds: float = 0.0) -> ContextManager[None]:
    """The project's lock (`core.project_lock`), held by a command that writes while it works."""
    from offerflow.core.project_lock import project_lock

    return project_lock(config.paths.lock, command, timeout_seconds)


def project_tracker(config: ProjectConfig) -> Tracker:
    """The project's MLflow tracker: its tracking URI (a relative sqlite path made absolute) and
    artifact root."""
    from offerflow.core.tracking import Tracker, resolve_tracking_uri

    return Tracker(resolve_tracking_uri(config.tracking.uri, config.root), config.paths.artifacts, config.root)

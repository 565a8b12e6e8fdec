"""The operational sections of offerflow.yaml: tracking, the ranking store, the cap store,
validation thresholds and the task cache, and an auto-optimization model's sampling rule
(re-exported by `offerflow.core.config`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrackingConfig(_Strict):
    uri: str = "sqlite:///mlflow.db"
    artifact_root: Path = Path("mlruns")
    experiment_prefix: str = "offerflow"
    drift_psi_threshold: float = Field(0.2, gt=0, description=(
        "PSI above which a scoring run warns that a feature or the score drifted (docs/customer-ai.md)."))


class StoreConfig(_Strict):
    path: Path = Path("data/rankings")
    keep_versions: int = Field(5, ge=1)


class CapsConfig(_Strict):
    """Where frequency-cap counters live (see docs/decisioning.md, "Cap store")."""

    store: str = Field("embedded", description=(
        "embedded: in the serving process (one worker); lmdb: a memory-mapped file shared by the workers"
        " of this machine (<data.outputs_dir>/caps/counters.lmdb, or lmdb:///absolute/dir); or a Redis URL"
        " (redis://host:6379/0) shared by every worker and machine serving the project."
        " `offerflow serve --workers N` needs lmdb or Redis."))
    lmdb_map_mib: int = Field(1024, ge=16, description=(
        "The most the LMDB cap store's file may grow to, MiB (mapped, not allocated up front)."))

    @field_validator("store")
    @classmethod
    def _known_store(cls, value: str) -> str:
        if value in ("embedded", "lmdb") or value.startswith(("redis://", "rediss://", "unix://")):
            return value
        if value.startswith("lmdb://"):
            if not value.removeprefix("lmdb://").startswith("/"):
                raise ValueError(f"an lmdb:// store needs an absolute directory (lmdb:///var/lib/offerflow/caps), "
                                 f"got {value!r}; 'lmdb' alone puts it under the outputs")
            return value
        raise ValueError(f"must be 'embedded', 'lmdb' (or lmdb:///absolute/dir) or a Redis URL "
                         f"(redis://host:6379/0), got {value!r}")

    @property
    def redis_url(self) -> str | None:
        return None if self.store == "embedded" or self.store.startswith("lmdb") else self.store

    @property
    def shared(self) -> bool:
        """Counters every process of the project sees (LMDB or Redis), not the embedded ones."""
        return self.store != "embedded"

    def lmdb_path(self, outputs: Path) -> Path | None:
        """The LMDB store's directory (`outputs`: the project's <data.outputs_dir>), None for another store."""
        if self.store == "lmdb":
            return outputs / "caps" / "counters.lmdb"
        return Path(self.store.removeprefix("lmdb://")) if self.store.startswith("lmdb://") else None


class ValidationConfig(_Strict):
    great_expectations_dir: Path = Path("great_expectations")
    future_tolerance_minutes: int = Field(10, ge=0)
    window_start: str | None = None
    window_end: str | None = None
    max_row_drop_share: float = Field(0.5, ge=0, le=1)
    max_null_share: float = Field(0.01, ge=0, lt=1, description="Rows with a null required column a run tolerates.")
    max_unknown_share: float = Field(0.01, ge=0, lt=1, description="Rows with an unknown offer/placement tolerated.")
    #: Events are read, checked and staged this many rows at a time (memory ~ one batch).
    batch_rows: int = Field(1_000_000, ge=1_000)
    #: The `events` expectation suite runs on at most about this many rows (a sample beyond).
    expectation_sample_rows: int = Field(200_000, ge=1_000)
    #: Memory cap of the DuckDB cross-row checks; beyond it they spill to disk.
    duckdb_memory_mib: int = Field(3072, ge=256)


class CacheConfig(_Strict):
    """Task caching: a flow re-run on unchanged inputs (file contents, config, code) reuses the
    results of its expensive steps instead of recomputing them (see docs/operations.md)."""

    enabled: bool = True
    path: Path | None = Field(None, description="Where cached results are kept; default <data.outputs_dir>/task_cache.")


class SamplingConfig(_Strict):
    """How an auto-optimization model picks the first offer of a decision from its posteriors
    (`ai_models[].sampling`; docs/ranking-models.md, "Sampling rule")."""

    rule: Literal["thompson", "top_two"] = Field("thompson", description=(
        "thompson: the offers in the order of one posterior draw. top_two: top-two Thompson sampling"
        " (Russo 2016) with a bounded re-draw: with probability leader_share the order of one draw"
        " (its winner, the leader, first); otherwise up to max_redraws further draws until one is won"
        " by another offer, whose order is served (the challenger first); if none is, the first draw's."
        " Close runners-up keep being measured while a clear leader is left alone."))
    leader_share: float = Field(0.5, ge=0, le=1, description="top_two: share of decisions the first draw orders.")
    max_redraws: int = Field(3, ge=0, le=50, description=(
        "top_two: draws tried for a challenger before the leader is served after all."))

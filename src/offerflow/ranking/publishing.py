"""Scoring profiles against offers and publishing one ranking table per placement.

Two ways to the same table: `publish_placement` ranks all profiles in one process;
`publish_placement_partitioned` splits them by a stable hash of profile_id (`partitions`), ranks
each partition on its own from a picklable `ScoringPlan` (what a Dask worker receives) into one
sorted Parquet part, and publishes the parts as one version (`RankingStore.publish_parts`).

Both warn (or, under `strict`, refuse to publish) when the placement's formula gives no value or
one value for every pair, or when no profile is eligible for any offer (`ranking.degenerate`);
the warnings are logged and kept in the version's metadata.json.
Each function publishes through `store`: a `RankingStore` switches the placement on its own; a
`Publication` (`RankingStore.publication(run_id)`) only stages the version, for the run to switch
every placement together (`RankingStore.commit`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from offerflow.ingest.catalog import offers_for_placement
from offerflow.core.config import PlacementConfig
from offerflow.core.partitions import PART_NAME, write_profile_partitions
from offerflow.ranking.click_model import ClickModel
from offerflow.ranking.degenerate import FORMULA_PROFILES, formula_warning, raise_or_warn
from offerflow.ranking.tables import ScoreFn, formula_scorer, priority_scores, rank_profiles
from offerflow.rules.expressions import schema_from_frames
from offerflow.core.schema import POSTERIOR_SCHEMA, RANKING_SCHEMA
from offerflow.core.store import Publication, RankingStore
from offerflow.ranking.ai_models import RankingModelResult


_log = logging.getLogger(__name__)


def ranking_warnings(placement: PlacementConfig, rows: int, profiles: pd.DataFrame, candidates: pd.DataFrame,
                     score_fn: ScoreFn) -> list[str]:
    """Why a placement's table (of `rows` rows) ranks nothing: its formula gives no value or one
    value for every pair (tried on the first FORMULA_PROFILES profiles), or no profile is eligible."""
    if profiles.empty or candidates.empty:
        return []
    if placement.ranking.method == "formula":
        head = profiles.head(FORMULA_PROFILES)
        values = score_fn(head, candidates)  # no value is -inf in a score matrix
        scope = "" if len(profiles) <= len(head) else f" (first {len(head):,} profiles)"
        message = formula_warning(np.where(np.isneginf(values), np.nan, values), placement.id, len(candidates), scope)
        if message is not None:
            return [message]
    if rows == 0:
        return [f"no profile is eligible for any offer: placement {placement.id}'s ranking table is empty"]
    return []


def build_ranking_table(placement: PlacementConfig, profiles: pd.DataFrame, offers: pd.DataFrame,
                        model: RankingModelResult | None, chunk_profiles: int = 50_000, strict: bool = False,
                        warn: Callable[[str], object] | None = None) -> pa.Table:
    """The ranking table a placement serves: top `items` eligible offers per profile. A table that
    ranks nothing is a warning (`warn`), or under `strict` a `DegenerateExpression`."""
    plan = plan_scoring(placement, profiles, offers, model)
    score_fn = plan.score_fn(model.click_model if model else None)
    parts = list(rank_profiles(profiles, plan.candidates, score_fn, placement.items, chunk_profiles))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=RANKING_SCHEMA.names)
    raise_or_warn(ranking_warnings(placement, len(frame), profiles, plan.candidates, score_fn), strict, warn)
    return pa.Table.from_pandas(frame, schema=RANKING_SCHEMA, preserve_index=False)


def _with_warnings(metadata: dict[str, object], warnings: list[str]) -> dict[str, object]:
    """Each warning logged once, and kept in the version's metadata."""
    for line in warnings:
        _log.warning("%s", line)
    return {**metadata, "warnings": warnings} if warnings else metadata


def ranking_metadata(placement: PlacementConfig, model: RankingModelResult | None,
                     extra_metadata: Mapping[str, object] | None = None) -> dict[str, object]:
    """What metadata.json records about how a placement's table was scored."""
    metadata: dict[str, object] = {
        "placement_id": placement.id, "ranking_method": placement.ranking.method,
        "items": placement.items, "scored_at": datetime.now(timezone.utc).isoformat(),
        **(extra_metadata or {}),
    }
    if model is not None:
        metadata.update(ai_model=model.name, ai_model_type=model.kind, model_version=model.model_version,
                        training_run_id=model.run_id,
                        training_window=[t.isoformat() for t in model.window] if model.window else None)
        if model.kind == "personalized":  # fewer than 2: it ranks nothing (PlacementPlan.too_few_qualified)
            # (no click model: never trained, too few displays; its table is the priority order)
            metadata["offers_qualified"] = len(model.click_model.qualified_offers) if model.click_model else 0
    return metadata


def publish_placement(store: RankingStore | Publication, placement: PlacementConfig, profiles: pd.DataFrame | None,
                      offers: pd.DataFrame, model: RankingModelResult | None,
                      extra_metadata: Mapping[str, object] | None = None, strict: bool = False) -> int:
    """Score and publish one placement atomically; returns the new version number. (Posterior
    tables of auto-optimization models need no profiles.) Under `strict` a table that ranks
    nothing is not published (`DegenerateExpression`)."""
    metadata = ranking_metadata(placement, model, extra_metadata)
    if model is not None and model.kind == "auto_optimization":
        table = pa.Table.from_pandas(model.posteriors_for(placement.id), schema=POSTERIOR_SCHEMA, preserve_index=False)
        return store.publish(placement.id, table, {**metadata, "kind": "posterior"})
    if profiles is None:
        raise ValueError(f"placement {placement.id!r}: scoring a ranking table needs the profiles")
    warnings: list[str] = []
    table = build_ranking_table(placement, profiles, offers, model, strict=strict, warn=warnings.append)
    return store.publish(placement.id, table, _with_warnings({**metadata, "kind": "ranking"}, warnings))


# --- partitioned scoring -----------------------------------------------------------------------

#: Click models rebuilt from text in this process, by sha256 of the text: a worker builds (and, for
#: large runs, compiles) each model once, however many partitions it ranks.
_CLICK_MODELS: dict[str, ClickModel] = {}


@dataclass(frozen=True)
class ScoringPlan:
    """Everything needed to rank one partition of a placement, small and picklable.

    The click model travels as LightGBM model text, never as a predictor: a compiled predictor is
    a native library loaded in one process, so each worker builds its own. `expected_rows` is the
    whole run's profile x offer pair count, so every partition makes the compile decision a
    single-process run would make (compiled and interpreted predictions differ in float rounding).
    """

    placement: PlacementConfig
    candidates: pd.DataFrame
    method: str
    formula_schema: dict[str, str] | None = None
    model_text: str | None = None
    feature_columns: list[str] = field(default_factory=list)
    categories: dict[str, list[str]] = field(default_factory=dict)
    qualified_offers: list[str] = field(default_factory=list)
    offer_weights: dict[str, float] | None = None
    compile: str = "auto"
    expected_rows: int = 0
    interaction_base: dict | None = None  # `InteractionBase.to_dict()`: the base the trees start from

    def click_model(self) -> ClickModel:
        import lightgbm as lgb

        base = json.dumps(self.interaction_base, sort_keys=True)
        key = hashlib.sha256(f"{self.compile}\n{self.model_text}\n{base}".encode()).hexdigest()
        model = _CLICK_MODELS.get(key)
        if model is None:
            if len(_CLICK_MODELS) >= 4:
                _CLICK_MODELS.pop(next(iter(_CLICK_MODELS)))
            booster = lgb.Booster(model_str=self.model_text)
            spec = {"feature_columns": self.feature_columns, "categories": self.categories,
                    "interaction_base": self.interaction_base}
            model = _CLICK_MODELS[key] = ClickModel.from_spec(booster, spec, self.qualified_offers,
                                                              compile=self.compile)
        model.offer_weights = self.offer_weights
        model.qualified_offers = list(self.qualified_offers)
        return model

    def score_fn(self, click_model: ClickModel | None = None) -> ScoreFn:
        """The score function; `click_model` is the in-process model when there is one (a worker
        rebuilds it from the model text instead)."""
        model = None
        if self.model_text is not None:
            model = click_model if click_model is not None else self.click_model()
            # Scored chunk by chunk; announcing the whole run lets a large one compile the model first.
            model.predictor().expect_rows(self.expected_rows)
        if self.method == "ai_model" and model is not None:
            return model.score_matrix
        if self.method == "formula":
            return formula_scorer(self.placement.ranking.formula or "", self.formula_schema or {},
                                  ai_scores=model.score_matrix if model is not None else None)
        return priority_scores


def plan_scoring(placement: PlacementConfig, profiles: pd.DataFrame, offers: pd.DataFrame,
                 model: RankingModelResult | None) -> ScoringPlan:
    """The plan `build_ranking_table` follows, in a form that can be shipped to workers. The formula
    schema comes from all profiles here, as in a single-process run."""
    candidates = offers_for_placement(offers, placement.id)
    method = placement.ranking.method
    click: dict[str, object] = {}
    if method in ("ai_model", "formula") and model is not None and model.click_model is not None:
        c = model.click_model
        booster = getattr(c.booster, "booster_", c.booster)
        click = dict(model_text=booster.model_to_string(), feature_columns=list(c.feature_columns),
                     categories=dict(c.categories), qualified_offers=list(c.qualified_offers),
                     offer_weights=c.offer_weights, compile=c.compile, expected_rows=len(profiles) * len(candidates),
                     interaction_base=c.spec()["interaction_base"])
    if method == "ai_model" and click:
        return ScoringPlan(placement, candidates, method, **click)
    if method == "formula":
        return ScoringPlan(placement, candidates, method,
                           formula_schema=dict(schema_from_frames(profiles=profiles, offers=candidates)), **click)
    return ScoringPlan(placement, candidates, "priority")


def rank_partition(plan: ScoringPlan, profiles: pd.DataFrame, chunk_profiles: int = 50_000) -> pa.Table:
    """The ranking rows of one partition's profiles, sorted by (profile_id, rank) as a part must be."""
    parts = list(rank_profiles(profiles, plan.candidates, plan.score_fn(), plan.placement.items, chunk_profiles))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=RANKING_SCHEMA.names)
    table = pa.Table.from_pandas(frame, schema=RANKING_SCHEMA, preserve_index=False)
    return table.sort_by([("profile_id", "ascending"), ("rank", "ascending")])


def rank_partition_file(plan: ScoringPlan, profiles_path: Path, part_path: Path) -> int:
    """Rank the profiles of one partition file into one Parquet ranking part; returns its rows.
    Written under a private name and renamed, so a part that exists is complete."""
    table = rank_partition(plan, pd.read_parquet(profiles_path))
    part_path.parent.mkdir(parents=True, exist_ok=True)
    private = part_path.with_name(f".{part_path.name}.{uuid.uuid4().hex}")
    pq.write_table(table, private)
    private.replace(part_path)
    return table.num_rows


def partition_workdir(outputs_dir: Path, placement_id: str) -> Path:
    """A fresh directory for one partitioned run's profile partitions and ranking parts."""
    return outputs_dir / "partitions" / f"{placement_id}-{uuid.uuid4().hex[:12]}"


def ranking_part_paths(workdir: Path, n: int) -> list[Path]:
    return [workdir / "rankings" / PART_NAME.format(p) for p in range(n)]


def publish_partitioned_parts(store: RankingStore | Publication, placement: PlacementConfig, model: RankingModelResult | None,
                              parts: Sequence[Path], extra_metadata: Mapping[str, object] | None = None,
                              partitions: int | None = None, warnings: Sequence[str] = ()) -> int:
    """Publish ranked parts as one version of the placement (see `RankingStore.publish_parts`)."""
    metadata = ranking_metadata(placement, model, extra_metadata)
    metadata.update(kind="ranking", partitions=partitions if partitions is not None else len(parts))
    return store.publish_parts(placement.id, parts, _with_warnings(metadata, list(warnings)))


#: Ranks every partition file into its part file; returns the rows written. The default ranks them one
#: after the other in this process; the flows pass one that runs them as Prefect tasks (on Dask).
RankParts = Callable[[ScoringPlan, Sequence[Path], Sequence[Path]], int]


def rank_parts_in_process(plan: ScoringPlan, sources: Sequence[Path], parts: Sequence[Path]) -> int:
    return sum(rank_partition_file(plan, source, part) for source, part in zip(sources, parts))


def publish_placement_partitioned(store: RankingStore | Publication, placement: PlacementConfig, profiles: pd.DataFrame,
                                  offers: pd.DataFrame, model: RankingModelResult | None, partitions: int,
                                  workdir: Path, extra_metadata: Mapping[str, object] | None = None,
                                  rank_parts: RankParts = rank_parts_in_process, strict: bool = False) -> int:
    """`publish_placement` in `partitions` hash partitions: split the profiles, rank each partition
    with `rank_parts`, publish the parts as one version. `workdir` holds the partition files while
    it runs and is removed afterwards."""
    if model is not None and model.kind == "auto_optimization":
        return publish_placement(store, placement, None, offers, model, extra_metadata)
    plan = plan_scoring(placement, profiles, offers, model)
    try:
        inputs = write_profile_partitions(profiles, partitions, workdir / "profiles")
        parts = ranking_part_paths(workdir, partitions)
        rows = rank_parts(plan, inputs, parts)
        warnings = ranking_warnings(placement, rows, profiles, plan.candidates, plan.score_fn())
        raise_or_warn(warnings, strict)
        return publish_partitioned_parts(store, placement, model, parts, extra_metadata, partitions, warnings)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

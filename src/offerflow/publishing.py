"""Scoring profiles against offers and publishing one ranking table per placement."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone

import pandas as pd
import pyarrow as pa

from offerflow.catalog import offers_for_placement
from offerflow.config import PlacementConfig
from offerflow.ranking import formula_scorer, priority_scores, rank_profiles
from offerflow.rules import schema_from_frames
from offerflow.schema import POSTERIOR_SCHEMA, RANKING_SCHEMA
from offerflow.store import RankingStore
from offerflow.training import RankingModelResult


def build_ranking_table(placement: PlacementConfig, profiles: pd.DataFrame, offers: pd.DataFrame,
                        model: RankingModelResult | None, chunk_profiles: int = 50_000) -> pa.Table:
    """The ranking table a placement serves: top `items` eligible offers per profile."""
    candidates = offers_for_placement(offers, placement.id)
    method = placement.ranking.method
    if method == "ai_model" and model is not None and model.click_model is not None:
        score_fn = model.click_model.score_matrix
        # Scored chunk by chunk; announcing the whole run lets a large one compile the model first.
        model.click_model.predictor().expect_rows(len(profiles) * len(candidates))
    elif method == "formula":
        score_fn = formula_scorer(placement.ranking.formula or "",
                                  schema_from_frames(profiles=profiles, offers=candidates))
    else:
        score_fn = priority_scores
    parts = list(rank_profiles(profiles, candidates, score_fn, placement.items, chunk_profiles))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=RANKING_SCHEMA.names)
    return pa.Table.from_pandas(frame, schema=RANKING_SCHEMA, preserve_index=False)


def publish_placement(store: RankingStore, placement: PlacementConfig, profiles: pd.DataFrame | None,
                      offers: pd.DataFrame, model: RankingModelResult | None,
                      extra_metadata: Mapping[str, object] | None = None) -> int:
    """Score and publish one placement atomically; returns the new version number. (Posterior
    tables of auto-optimization models need no profiles.)"""
    metadata: dict[str, object] = {
        "placement_id": placement.id, "ranking_method": placement.ranking.method,
        "items": placement.items, "scored_at": datetime.now(timezone.utc).isoformat(),
        **(extra_metadata or {}),
    }
    if model is not None:
        metadata.update(ai_model=model.name, ai_model_type=model.kind, model_version=model.model_version,
                        training_run_id=model.run_id,
                        training_window=[t.isoformat() for t in model.window] if model.window else None)
    if model is not None and model.kind == "auto_optimization":
        table = pa.Table.from_pandas(model.posteriors, schema=POSTERIOR_SCHEMA, preserve_index=False)
        return store.publish(placement.id, table, {**metadata, "kind": "posterior"})
    if profiles is None:
        raise ValueError(f"placement {placement.id!r}: scoring a ranking table needs the profiles")
    table = build_ranking_table(placement, profiles, offers, model)
    return store.publish(placement.id, table, {**metadata, "kind": "ranking"})

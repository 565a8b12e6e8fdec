"""Explanations for batch decisions (`offerflow decide-batch --explain`).

A batch is decided as matrices, so it keeps no per-request trace; each (decision, placement) is
explained afterwards by the same `Explainer` as a request, from what the batch chose: its items,
its arm, the offers of the decision's earlier placements (duplicates), the tables at the versions
the batch decided with (`BatchResult.versions`: a version published since is not read), and the
engine's cap counters as they were before the batch (a batch counts its own decisions in its
matrices: an offer a total cap ran out of within the batch reads `lower_rank` here, not
`cap_reached`). Thompson samples are not kept in batch: shown offers carry their posterior mean,
displays and clicks.

Adds two columns to the decisions dataset: `why` (the item's one line) and `explanation` (the
placement's explanation as JSON, as `POST /decisions` with `explain: true` returns it). About 0.3 ms
per decision and placement: meant for segments, not for every profile of a large base.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from offerflow.decisioning.decision_types import (RANDOM_TOO_FEW_QUALIFIED, DecisionItem, PlacementDecision,
                                                  PlacementPlan)


def explain_batch(engine: Any, result: Any, allow_duplicates: bool = False, items: int | None = None) -> Any:
    """`result` (a `batch.BatchResult`) with `why` and `explanation` columns on its decisions."""
    rows = result.decisions.to_pandas()
    order = {p: i for i, p in enumerate(dict.fromkeys(rows["placement_id"]))}
    rows = rows.assign(_order=rows["placement_id"].map(order)).sort_values(["decision_id", "_order", "rank"],
                                                                          kind="stable")
    # the versions the batch decided with, not the manifest's now: a run may publish in between
    plans = {p: engine.plan(p, items, result.versions or None) for p in order}
    explainer = engine.explainer()
    why, explanation = pd.Series("", index=rows.index, dtype=object), pd.Series("", index=rows.index, dtype=object)
    with engine.caps.lock:
        for _, decision in rows.groupby("decision_id", sort=False):
            earlier: list[PlacementDecision] = []
            used: set[str] = set()
            for _, group in decision.groupby("_order", sort=True):
                plan = plans[group["placement_id"].iat[0]]
                now = group["decided_at"].iat[0].to_pydatetime()
                placement = _placement_decision(engine, plan, group)
                explained = explainer.explain(placement, plan, group["profile_id"].iat[0], used, now,
                                              {"earlier": earlier})
                text = json.dumps(explained.explanation, default=str)
                for index, shown in zip(group.index, explained.explanation["shown"]):
                    why[index], explanation[index] = shown["text"], text
                earlier.append(explained)
                if not allow_duplicates:
                    used.update(group["offer_id"])
    decisions = result.decisions.append_column("why", pa.array(why.reindex(range(len(why))).tolist(), pa.string()))
    decisions = decisions.append_column("explanation", pa.array(explanation.reindex(range(len(why))).tolist(),
                                                                pa.string()))
    return dataclasses.replace(result, decisions=decisions)


def _placement_decision(engine: Any, plan: PlacementPlan, group: pd.DataFrame) -> PlacementDecision:
    """The batch's rows of one decision and placement as the engine's `PlacementDecision`."""
    arm = group["arm"].iat[0]
    items = [DecisionItem(plan.placement_id, r.offer_id, int(r.rank), None if np.isnan(r.score) else float(r.score),
                          fallback=bool(r.fallback), propensity=None if np.isnan(r.propensity) else float(r.propensity))
             for r in group.itertuples()]
    source = _source(engine, plan, arm, items, group["profile_id"].iat[0])
    return PlacementDecision(placement_id=plan.placement_id, items=items, arm=arm, source=source, **plan.description())


def _source(engine: Any, plan: PlacementPlan, arm: str, items: list[DecisionItem], profile_id: str) -> str:
    """The engine's `source` for a batch row (the batch records the arm only)."""
    if arm in ("fallback", "holdout"):
        return {"fallback": "fallback", "holdout": "random_holdout"}[arm]
    if plan.posterior:
        if arm != "model":
            return RANDOM_TOO_FEW_QUALIFIED
        post = engine.posterior_arrays(plan.placement_id, plan.snapshot)
        first = post.offer_ids.index(items[0].offer_id)
        return "thompson_sampling" if post.qualified[first] else "exploration"
    if plan.too_few_qualified:
        return RANDOM_TOO_FEW_QUALIFIED
    if arm == "model":
        return "exploration" if items[0].score is None else "ranking_table"
    listed = plan.snapshot is not None and len(plan.snapshot.lookup(profile_id)[0]) > 0
    return "ranking_table" if listed else "non_personalized"

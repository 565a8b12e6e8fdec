"""Batch decisioning: the decision step for many profiles at once, as matrices instead of requests.

Same semantics as `DecisionEngine.decide` for each profile, vectorized per chunk of profiles and
per placement (in request order): an (n_profiles, n_offers) mask of what each profile may get
(eligibility rule now, not used by an earlier placement, not capped), a sort key per cell (ranking
table rank then priority; Thompson samples for auto-optimized placements; a random order for the
holdout share), the top items of every row at once, and the fallback offer for empty rows.

Caps: per-profile counters are columns aligned with the chunk's profiles. A total cap has a
remaining budget, allocated in a deterministic order (profile id order, as the batch is sorted):
rows beyond the budget lose the offer and are ranked again, until no budget is exceeded.

With a shared cap store (LMDB, Redis: `engine.caps.shared`) the batch adds each chunk's decisions
to the store once the chunk is decided (`SharedCapStore.record_decided`), so running services see
them at once. It reads the store where it needs a count: the total caps' counters before each
chunk (a few keys) and the per-profile counters of a chunk's profiles when the chunk first needs
them (one read of a key per profile and capped offer), so what services counted meanwhile is
decided with; only what a service counts for a profile while that profile's chunk is being
decided can take it past a cap.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from offerflow.customer_ai.segments import SegmentError
from offerflow.rules.capping import ALL, DECIDED_EVENTS, CapRule, Family
from offerflow.decisioning.decision_log import write_decision_log
from offerflow.decisioning.decision_types import MAX_ITEMS, DecisionError
from offerflow.decisioning.engine import DecisionEngine
from offerflow.ranking.tables import eligibility_matrix, top_k
from offerflow.core.schema import PROFILE_ID
from offerflow.decisioning.batch_tables import (ARM_CODES, BATCH_DECISION_SCHEMA, FALLBACK, HOLDOUT, MODEL,
                                                NON_PERSONALIZED, BatchResult, result_tables)

__all__ = ["ARM_CODES", "BATCH_DECISION_SCHEMA", "BatchResult", "SegmentError", "decide_batch", "segment_profile_ids",
           "write_batch"]


@dataclass
class _CapRuleState:
    """One cap rule of one offer as it applies to one counter key of this batch."""

    offer_id: str
    rule: CapRule
    placement_key: str
    per_profile: pd.Series | None = None  # embedded store: profile_id -> count before the batch
    increments: np.ndarray | None = None  # this chunk's decisions, aligned with its rows
    remaining: int = 0                    # total scope: budget left


class _Caps:
    """The engine's cap counters, turned into per-chunk columns and total budgets."""

    def __init__(self, engine: DecisionEngine, now: datetime) -> None:
        self.rules: dict[tuple[Family, str, str], _CapRuleState] = {}
        self.store, self.now = engine.caps, now
        self.shared = bool(getattr(engine.caps, "shared", False))
        # a shared store is read where a count is needed (`state`, `start_chunk`, `per_profile_count`)
        self._frames = {} if self.shared else {family: engine.caps.counts_frame(family)
                                               for family in engine.caps.families}
        self._caps = engine.caps.caps

    def state(self, offer_id: str, rule: CapRule, placement_id: str) -> _CapRuleState:
        family = rule.family
        placement_key = placement_id if rule.per_placement else ALL
        key = (family, offer_id, placement_key, rule.limit)
        found = self.rules.get(key)
        if found is None:
            found = _CapRuleState(offer_id, rule, placement_key)
            if self.shared:
                if rule.scope != "per_profile":  # per-profile counts: read per chunk
                    found.remaining = rule.limit - self.store.read_counts([self._key(found, ALL)])[0]
            else:
                frame = self._frames[family]
                rows = frame[(frame["offer_id"] == offer_id) & (frame["placement_id"] == placement_key)]
                if rule.scope == "per_profile":
                    found.per_profile = rows.set_index("profile_id")["n"]
                else:
                    found.remaining = int(rule.limit - rows["n"].sum())
            self.rules[key] = found
        return found

    def _key(self, state: _CapRuleState, profile_id: str) -> str:
        """The shared store's counter key of `state` in the batch's window (`profile_id` "": the prefix
        that a profile id completes)."""
        return self.store.key(state.rule.family, self.now, state.offer_id, state.placement_key, profile_id)

    def states(self, offer_ids: Sequence[str], placement_id: str) -> list[tuple[int, _CapRuleState]]:
        return [(j, self.state(oid, rule, placement_id)) for j, oid in enumerate(offer_ids)
                for rule in self._caps.get(oid, ())]

    def start_chunk(self, profile_ids: np.ndarray) -> None:
        self._chunk_ids = pd.Index(profile_ids)
        for state in self.rules.values():
            state.increments = None
        if self.shared:  # the total counters now: the batch's earlier chunks and what services counted
            totals = [s for s in self.rules.values() if s.rule.scope != "per_profile"]
            for state, n in zip(totals, self.store.read_counts([self._key(s, ALL) for s in totals])):
                state.remaining = state.rule.limit - n

    def record(self, plans: Sequence[_Plan], parts: Sequence[dict[str, np.ndarray]], chunk_ids: np.ndarray) -> None:
        """Add a decided chunk's items (`parts`, one per plan, rows local to the chunk) to a shared store."""
        if self.shared:
            self.store.record_decided([(plan.placement_id, part["offer_id"], chunk_ids[part["row"]])
                                       for plan, part in zip(plans, parts)], self.now)

    def per_profile_count(self, state: _CapRuleState) -> np.ndarray:
        if state.increments is None:
            if self.shared:  # the chunk's profiles now: what services counted for them up to this chunk
                keys = self._key(state, "") + self._chunk_ids.to_numpy(dtype=object)  # str + each id
                base = np.asarray(self.store.read_counts(keys), dtype=np.int64)
            else:
                base = state.per_profile.reindex(self._chunk_ids, fill_value=0).to_numpy(np.int64, copy=True)
            state.increments = base  # counts before this chunk plus this chunk's decisions so far
        return state.increments


def decide_batch(engine: DecisionEngine, profile_ids: Sequence[str] | np.ndarray, placement_ids: Sequence[str],
                 items: int | None = None, allow_duplicates: bool = False, now: datetime | None = None,
                 seed: int | None = None, chunk_size: int = 100_000) -> BatchResult:
    """Decide for every profile (sorted, deduplicated) in every placement, like `engine.decide`."""
    started = time.perf_counter()
    known = [c.id for c in engine.config.placements]
    unknown = [p for p in placement_ids if p not in known]
    if not placement_ids or unknown:
        raise DecisionError(f"unknown placement(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})"
                            if unknown else "at least one placement is required")
    if items is not None and not 1 <= items <= MAX_ITEMS:
        raise DecisionError(f"items must be between 1 and {MAX_ITEMS}, got {items}")
    now = now or datetime.now(timezone.utc)
    ids = np.unique(np.asarray(profile_ids, dtype=object).astype(str)).astype(object)
    run = uuid.uuid4().hex[:12]
    caps = _Caps(engine, now)
    profiles = engine.profiles.set_index(PROFILE_ID)
    versions = engine.pinned_versions(placement_ids)  # every placement from one manifest
    plans = [_Plan(engine, pid, items, versions) for pid in placement_ids]
    offer_pos = {oid: i for i, oid in enumerate(engine.offers["offer_id"])}
    parts: list[dict[str, np.ndarray]] = []
    unknown = 0
    for c, start in enumerate(range(0, len(ids), chunk_size)):
        chunk_ids = ids[start:start + chunk_size]
        chunk = profiles.reindex(chunk_ids).rename_axis(PROFILE_ID).reset_index()
        known = profiles.index.get_indexer(chunk_ids) >= 0  # hashed; np.isin on strings is quadratic here
        unknown += int(len(known) - known.sum())
        caps.start_chunk(chunk_ids)
        used = np.zeros((len(chunk_ids), len(offer_pos)), dtype=bool)
        rng = np.random.default_rng(None if seed is None else [seed, c])
        chunk_parts = [plan.decide(chunk, chunk_ids, known, used, caps, rng, offer_pos, allow_duplicates)
                       for plan in plans]
        caps.record(plans, chunk_parts, chunk_ids)
        for part in chunk_parts:
            part["row"] = part["row"] + start
        parts += chunk_parts
    return result_tables(plans, parts, ids, run, now, started, versions, unknown)


class _Plan:
    """What a placement needs for every chunk: the engine's `PlacementPlan` (candidates, table,
    model, exploration share, fallback) as arrays over the placement's offers, and their rules."""

    def __init__(self, engine: DecisionEngine, placement_id: str, items: int | None,
                 versions: Mapping[str, int]) -> None:
        plan = engine.plan(placement_id, items, versions)
        self.engine, self.placement_id = engine, placement_id
        self.placement, self.n_items, self.snap, self.meta = plan.placement, plan.n_items, plan.snapshot, plan.metadata
        self.model, self.holdout, self.posterior = plan.model, plan.holdout_share, plan.posterior
        # personalized models explore: a random order for `exploration_share` of their traffic
        self.exploration = plan.exploration_share
        self.random = plan.too_few_qualified  # the model ranks nothing: every row a random order
        if self.posterior:
            post = engine.posterior_arrays(placement_id, self.snap)
            self.post, self.post_pos = post, np.flatnonzero(post.in_placement)
            self.offer_ids = [post.offer_ids[j] for j in self.post_pos]
            self.qualified, self.means = post.qualified[self.post_pos], post.means[self.post_pos]
            self.weights = post.weights[self.post_pos] if post.weights is not None else None
        else:
            self.offer_ids = list(plan.candidates)
            self.table = engine.store.read_table(placement_id, self.snap.version) if self.snap is not None else None
            if self.table is not None:
                self._index_table()
        self.offers = engine.offers.loc[self.offer_ids].reset_index(drop=True)
        self.rules = [engine.eligibility_rule(oid) for oid in self.offer_ids]
        self.priority = self.offers["priority"].to_numpy(float)
        self.fallback = plan.fallback

    def _index_table(self) -> None:
        """The table's columns as arrays, once: profile ids (Arrow, and NumPy for the chunk bounds),
        each row's offer as its column in this plan (-1: not a candidate), ranks and scores."""
        self.table_pids = self.table.column("profile_id").combine_chunks()
        self.table_pids_np = self.table_pids.to_numpy(zero_copy_only=False).astype(object)
        offers = pc.dictionary_encode(self.table.column("offer_id")).combine_chunks()  # few distinct offer ids
        positions = pd.Index(self.offer_ids).get_indexer(offers.dictionary.to_numpy(zero_copy_only=False))
        self.table_cols = positions[offers.indices.to_numpy(zero_copy_only=False)]
        self.table_ranks = self.table.column("rank").to_numpy()
        self.table_scores = self.table.column("score").to_numpy()

    def _table_matrix(self, chunk_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ranks (0 = not in the table) and scores of the chunk's profiles, shape (n, m)."""
        n, m = len(chunk_ids), len(self.offer_ids)
        ranks, scores = np.zeros((n, m), dtype=np.int16), np.zeros((n, m))
        if self.table is None or n == 0:
            return ranks, scores
        lo = int(np.searchsorted(self.table_pids_np, chunk_ids[0], side="left"))
        hi = int(np.searchsorted(self.table_pids_np, chunk_ids[-1], side="right"))
        # Arrow's hash lookup: ~5x faster than a pandas Index of Python strings
        rows = pc.index_in(self.table_pids.slice(lo, hi - lo),
                           value_set=pa.array(chunk_ids, type=self.table_pids.type)).fill_null(-1).to_numpy()
        cols = self.table_cols[lo:hi]
        keep = (rows >= 0) & (cols >= 0)
        ranks[rows[keep], cols[keep]] = self.table_ranks[lo:hi][keep]
        scores[rows[keep], cols[keep]] = self.table_scores[lo:hi][keep]
        return ranks, scores

    def decide(self, chunk: pd.DataFrame, chunk_ids: np.ndarray, known: np.ndarray, used: np.ndarray,
               caps: _Caps, rng: np.random.Generator, offer_pos: dict[str, int],
               allow_duplicates: bool) -> dict[str, np.ndarray]:
        n, m = len(chunk_ids), len(self.offer_ids)
        cols = np.array([offer_pos[o] for o in self.offer_ids], dtype=np.int64)
        allowed = eligibility_matrix(chunk, self.offers, self.rules) if m else np.zeros((n, 0), dtype=bool)
        allowed &= ~used[:, cols]
        cap_states, totals = self._apply_caps(allowed, caps)
        # Random draws, fixed per row so ranking again after a cap keeps each row's luck.
        random_order = rng.random((n, m))
        holdout_row = rng.random(n) < self.holdout
        if self.posterior:
            samples = rng.beta(self.post.alpha[self.post_pos], self.post.beta[self.post_pos], size=(n, m))
            if self.weights is not None:
                samples = samples * self.weights[None, :]
            explore_draw = rng.random(n) < self.exploration
            scores = np.broadcast_to(self.means, (n, m))
            # with fewer than two qualified offers allowed the model does not rank: served at random
            arm_model = ((allowed & self.qualified[None, :]).sum(axis=1) >= 2) & (self.model is not None)
        else:
            ranks, table_scores = self._table_matrix(chunk_ids)
            in_table = ranks > 0
            listed = in_table.any(axis=1)
            table_key = np.where(in_table, 1000.0 - ranks, -1.0 - np.arange(m)[None, :])
            scores = np.where(in_table, table_scores, self.priority[None, :])
            arm_model = listed & (self.model is not None) & (not self.random)
            if self.random:
                table_key, scores = random_order, np.full((n, m), np.nan)
            explore_draw = (rng.random(n) < self.exploration) & arm_model
        holdout_row &= arm_model

        def model_key(mask: np.ndarray) -> np.ndarray:
            if not self.posterior:
                return np.where(explore_draw[:, None], random_order, table_key)
            pool = (mask & self.qualified[None, :]).sum(axis=1)
            explore = explore_draw | (pool < 2)
            return np.where(explore[:, None] | ~self.qualified[None, :], random_order, 2.0 + samples)

        rows, idx, chosen = self._select_within_budgets(
            allowed, totals, lambda mask: np.where(holdout_row[:, None], random_order, model_key(mask)))
        for j, state in totals:
            state.remaining -= int(chosen[:, j].sum())
        for j, state in cap_states:
            if state.rule.scope == "per_profile" and state.rule.event in DECIDED_EVENTS:
                state.increments += chosen[:, j]
        if not allow_duplicates:
            used[:, cols] |= chosen
        return self._items(rows, idx, n, allowed, holdout_row, arm_model, scores, model_key,
                           *((None, None) if self.posterior else (explore_draw, table_key)))

    def _apply_caps(self, allowed: np.ndarray, caps: _Caps) -> tuple[list[tuple[int, _CapRuleState]],
                                                                    list[tuple[int, _CapRuleState]]]:
        """Drop (in place) the offers a per-profile cap or an exhausted total budget rules out; the
        placement's cap states and, of them, the total-scope ones (budgets to allocate)."""
        cap_states = caps.states(self.offer_ids, self.placement_id)
        totals = []
        for j, state in cap_states:
            if state.rule.scope == "per_profile":
                allowed[:, j] &= caps.per_profile_count(state) < state.rule.limit
            else:
                totals.append((j, state))
                if state.remaining <= 0:
                    allowed[:, j] = False
        return cap_states, totals

    def _select_within_budgets(self, allowed: np.ndarray, totals: list[tuple[int, _CapRuleState]],
                               sort_key: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The top items of every row by `sort_key(allowed)`: rank, then take back (in `allowed`,
        in place) offers beyond a total cap's budget, until none is exceeded."""
        n, m = allowed.shape
        while True:
            rows, idx, _ = top_k(sort_key(allowed), allowed, self.n_items)
            chosen = np.zeros((n, m), dtype=bool)
            chosen[rows, idx] = True
            over_budget = False
            for j, state in totals:
                taken = chosen[:, j]
                over = taken & (np.cumsum(taken) > state.remaining)
                if over.any():
                    allowed[over, j] = False
                    over_budget = True
            if not over_budget:
                return rows, idx, chosen

    def _items(self, rows, idx, n, allowed, holdout_row, arm_model, scores, model_key,
               explored: np.ndarray | None = None, table_key: np.ndarray | None = None) -> dict[str, np.ndarray]:
        counts = np.bincount(rows, minlength=n)
        rank = (np.arange(len(rows)) - np.searchsorted(rows, rows)).astype(np.int16) + 1
        arm = np.where(holdout_row, HOLDOUT, np.where(arm_model, MODEL, NON_PERSONALIZED))
        # Per-slot propensities (the engine's, see DecisionEngine._decide_placement): a random order
        # puts any eligible offer in any slot with probability 1 / |pool|; the model's own order
        # (table, then priority) is deterministic. Thompson sampling: the first slot only.
        first = rank == 1
        n_pool = allowed[rows].sum(axis=1)
        if self.posterior:
            propensity = np.full(len(rows), np.nan)
            p = self._thompson_probability(allowed[rows[first]], idx[first])
            if self.holdout > 0:
                p = np.where(arm_model[rows[first]], self.holdout / n_pool[first] + (1 - self.holdout) * p, p)
            propensity[first] = p
        else:
            order = np.argsort(-np.where(allowed, table_key, -np.inf), axis=1, kind="stable")
            in_model_slot = (idx == order[rows, rank - 1]).astype(float)
            p = in_model_slot
            if explored is not None and self.exploration > 0:
                p = np.where(arm_model[rows], self.exploration / n_pool + (1 - self.exploration) * in_model_slot, p)
            if self.holdout > 0:
                p = np.where(arm_model[rows], self.holdout / n_pool + (1 - self.holdout) * p, p)
            propensity = np.where(arm_model[rows], p, 1.0 / n_pool if self.random else 1.0)
        offer_ids = np.asarray(self.offer_ids, dtype=object)
        random_rows = holdout_row if explored is None else holdout_row | explored
        item_scores = np.where(random_rows[rows], np.nan, scores[rows, idx])
        empty = np.flatnonzero(counts == 0)
        return {"row": np.concatenate([rows, empty]), "rank": np.concatenate([rank, np.ones(len(empty), np.int16)]),
                "offer_id": np.concatenate([offer_ids[idx], np.full(len(empty), self.fallback, dtype=object)]),
                "score": np.concatenate([item_scores, np.full(len(empty), np.nan)]),
                "fallback": np.concatenate([np.zeros(len(rows), bool), np.ones(len(empty), bool)]),
                "propensity": np.concatenate([propensity, np.ones(len(empty))]),
                "arm": np.concatenate([arm[rows], np.full(len(empty), FALLBACK)])}

    def _thompson_probability(self, allowed: np.ndarray, first: np.ndarray) -> np.ndarray:
        """Thompson first-choice probability of each row's first offer, once per distinct mask."""
        if len(allowed) == 0:
            return np.ones(0)
        packed = np.packbits(allowed, axis=1)
        patterns, inverse = np.unique(packed, axis=0, return_inverse=True)
        out = np.empty(len(allowed))
        for k in range(len(patterns)):
            members = np.flatnonzero(inverse.ravel() == k)
            full = np.zeros(len(self.post.offer_ids), dtype=bool)
            full[self.post_pos] = allowed[members[0]]
            probabilities = self.engine.choice_probabilities(self.placement_id, self.snap, full)
            out[members] = probabilities[self.post_pos][first[members]]
        return out


BUCKETS = ("low", "medium", "high")


def segment_profile_ids(profiles: pd.DataFrame, profiles_file: str | Path | None = None, goal: str | None = None,
                        bucket: str | None = None) -> np.ndarray:
    """Profile ids of a segment: a file of ids (text, one per line; CSV or Parquet with a
    `profile_id` column), or a Customer AI bucket (`propensity.<goal>.bucket == bucket`), or all."""
    if profiles_file is not None and (goal or bucket):
        raise SegmentError("give either a profiles file or a goal and bucket, not both")
    if profiles_file is not None:
        ids = _ids_from_file(Path(profiles_file))
        if not len(ids):
            raise SegmentError(f"{profiles_file}: no profile ids in the file (nothing to decide)")
        return ids
    if goal is not None or bucket is not None:
        column = f"propensity.{goal}.bucket"
        if goal is None or bucket is None:
            raise SegmentError("a Customer AI segment needs both a goal and a bucket")
        if bucket not in BUCKETS:
            raise SegmentError(f"unknown bucket {bucket!r} (one of: {', '.join(BUCKETS)})")
        if column not in profiles.columns:
            known = sorted({c.split(".")[1] for c in profiles.columns if c.startswith("propensity.")})
            raise SegmentError(f"no Customer AI scores for goal {goal!r} on the profiles "
                               f"(scored goals: {', '.join(known) or 'none; run the pipeline first'})")
        return profiles.loc[profiles[column].astype(str) == bucket, PROFILE_ID].astype(str).to_numpy(dtype=object)
    return profiles[PROFILE_ID].astype(str).to_numpy(dtype=object)


def _ids_from_file(path: Path) -> np.ndarray:
    """The profile ids of a segment file: text (one per line), or CSV or Parquet with `profile_id`."""
    if not path.exists():
        raise SegmentError(f"{path}: profiles file not found")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        elif path.suffix.lower() == ".csv":
            frame = pd.read_csv(path, dtype=str)
        else:
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
            return np.asarray([line for line in lines if line], dtype=object)
    except (OSError, ValueError, pa.ArrowException) as exc:  # UnicodeDecodeError, ParserError: ValueErrors
        raise SegmentError(f"{path}: cannot read profile ids: {str(exc).splitlines()[0] if str(exc) else exc!r}"
                           " (a text file of ids, one per line, or a CSV or Parquet file with a profile_id"
                           " column)") from None
    if PROFILE_ID not in frame.columns:
        raise SegmentError(f"{path}: missing column {PROFILE_ID}")
    return frame[PROFILE_ID].dropna().astype(str).to_numpy(dtype=object)


def write_batch(result: BatchResult, path: Path, decision_log: Path) -> Path:
    """Write the decisions dataset to `path` and append displays + metadata to the decision log."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(result.decisions, tmp, compression="zstd")
    tmp.replace(path)
    write_decision_log(result.events, result.meta, decision_log)
    return path

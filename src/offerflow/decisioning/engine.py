"""The decision step: which offers for this profile in these placements, right now.

For each requested placement, in request order: read the published ranking (a per-profile ranked
list, or auto-optimization posteriors to Thompson-sample), drop offers whose eligibility rule is
false for the profile's current attributes, drop offers already chosen for an earlier placement of
the same request (unless duplicates are allowed), keep the top items, and fall back to the
placement's fallback offer when nothing is left. A profile the table has never seen gets the
placement's non-personalized ranking (priority). Offers at a frequency cap are skipped; a request's
offers are reserved in one step in the cap store (`rules.cap_store`: in process, LMDB or Redis).

A share of an AI model's decisions (`holdout_share`) is served a uniformly random order of the
eligible offers instead, and marked `arm="holdout"`, so the model's lift can be measured; a model
that qualified fewer than two offers ranks nothing, and its placement is served in a random order
(`source="random_too_few_qualified"`). Every
decision is logged as `display` events in the data contract, each with its per-slot propensity (the
probability that the logging policy put that offer in that slot; Thompson-sampled slots after the
first: none), plus one metadata row per placement (`DECISION_META_SCHEMA`: arm, model, versions).

Data types (with the `PlacementPlan` that `batch` shares) are in `decision_types`, the log in `decision_log`."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any

import numpy as np

from offerflow.ranking.bandits import first_choice_probability, sampled_offers, thompson_select
from offerflow.rules.cap_store import CapStore, load_cap_store
from offerflow.rules.capping import CapCounters, CapRule, caps_of, load_cap_counters
from offerflow.ingest.catalog import fallback_offer, load_offer_rows, load_profile_table, offers_for_placement
from offerflow.core.columns import Table
from offerflow.core.config import ProjectConfig
from offerflow.core.store import RankingStore, StoreError
from offerflow.decisioning.eligibility import OfferEligibility
from offerflow.decisioning.explain import Explainer
from offerflow.decisioning.decision_types import (MAX_ITEMS, RANDOM_TOO_FEW_QUALIFIED, Decision, DecisionError,
                                                  DecisionItem, PlacementDecision, PlacementPlan, PosteriorArrays,
                                                  iso_text, new_decision_id)


class DecisionEngine(OfferEligibility):
    """Answers decision requests from the published ranking tables of one project.

    `caps`: the live cap store (None: in-process counters for the catalog's caps, starting at zero;
    `offerflow.rules.cap_store` has the LMDB and Redis stores that several workers share).
    `seed` makes Thompson sampling and the holdout draw reproducible.

    `offers`: the catalog's normalized rows (`ingest.catalog.load_offer_rows`) or their DataFrame;
    `profiles`: a pyarrow Table (`load_profile_table`) or a DataFrame. The engine reads both
    column-wise without pandas (`offerflow decide` never imports it); `offers` and `profiles`
    give them as DataFrames to the callers that work on frames (batch decisions, tests).
    """

    def __init__(self, config: ProjectConfig, store: RankingStore, offers: Table,
                 profiles: Table, seed: int | None = None, caps: CapStore | None = None) -> None:
        super().__init__(offers, profiles)
        self.config = config
        self.store = store
        self.caps: CapStore = caps if caps is not None else CapCounters(caps_of(self.offer_rows))
        self._by_priority = {p.id: [row["offer_id"] for row in sorted(offers_for_placement(self.offer_rows, p.id),
                                                                        key=lambda r: (-r["priority"], r["offer_id"]))]
                             for p in config.placements}
        self.priority = {row["offer_id"]: float(row["priority"]) for row in self.offer_rows}
        self._fallback = {p.id: fallback_offer(self.offer_rows, p.id) for p in config.placements}
        # per placement, its offers by priority, each with its eligibility column (-1: no rule) and
        # whether it has caps: what `_pool` goes through on every decision
        self._pool_specs = {p: [(oid, self._rule_column.get(oid, -1), oid in self.caps.caps) for oid in ids
                                if oid in self._offer_values] for p, ids in self._by_priority.items()}
        self._snapshots: dict[str, Any] = {}
        self._plans: dict[tuple[str, int | None], PlacementPlan] = {}
        self.snapshot_loads = 0  # tables read so far (a server freezes them out of the GC's reach)
        self._manifest_stamp: tuple[int, int] | None = None
        self._versions_held = False  # `hold_versions`: the manifest's versions are served without a stat
        self._served: Mapping[str, int] = MappingProxyType({})
        self._posteriors: dict[str, PosteriorArrays] = {}
        # First-choice probabilities of Thompson sampling, per (table version, eligible offers).
        self._choice_probabilities: dict[tuple[str, int, bytes], np.ndarray] = {}
        # Independent streams: Thompson sampling and exploration, and the holdout draw (the same
        # seed for both would make every explored decision a holdout decision too).
        self._rng, self._holdout_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
        self._explainer: Explainer | None = None  # built on the first decision asked to explain itself

    def served_versions(self) -> Mapping[str, int]:
        """Placement -> version, as the store's manifest says now: every placement of one decision
        (or batch) is served from one manifest, so never from two runs. The manifest is read only
        when its stamp changed (a stat; reading it every request costs as much as a decision), and
        not stat'ed at all while `hold_versions` holds them."""
        if self._versions_held:
            return self._served
        stamp = self.store.manifest_stamp()
        if stamp is None or stamp != self._manifest_stamp:
            self._served = MappingProxyType(self.store.manifest().versions())
            self._manifest_stamp = stamp
        return self._served

    def hold_versions(self, check: bool = True) -> None:
        """Check the manifest now (`check`; else keep what the last check found), then serve its
        versions without a stat until `release_versions`. `offerflow serve` holds them for one
        event-loop turn (`FastDecider.hold_versions`, which checks at most every
        `VERSION_CHECK_S`): the stat was ~10% of an answer's CPU."""
        self._versions_held = False
        if check or self._manifest_stamp is None:
            self.served_versions()
        self._versions_held = True

    def release_versions(self) -> None:
        """Check the manifest on every call again (see `hold_versions`)."""
        self._versions_held = False

    def snapshot(self, placement_id: str, versions: Mapping[str, int] | None = None):
        """The placement's table at its version in `versions` (None: the manifest's now), loaded
        once per version; None when nothing is published."""
        version = (self.served_versions() if versions is None else versions).get(placement_id)
        cached = self._snapshots.get(placement_id)
        if version is not None and (cached is None or cached.version != version):
            self._snapshots[placement_id] = cached = self.store.snapshot(placement_id, version)
            self.snapshot_loads += 1
        return cached if version is not None else None

    def pinned_versions(self, placement_ids: Sequence[str]) -> Mapping[str, int]:
        """`served_versions`, with the tables of `placement_ids` loaded at those versions (the
        manifest read again when a version was pruned between reading it and its table)."""
        for attempt in range(3):
            versions = self.served_versions()
            try:
                for placement_id in placement_ids:
                    self.snapshot(placement_id, versions)
                return versions
            except StoreError:
                if attempt == 2:
                    raise
                self._manifest_stamp, self._versions_held = None, False
        raise AssertionError("unreachable")

    def preload(self) -> DecisionEngine:
        """Read every placement's current table (and index its rows by profile) now rather than on
        its first request."""
        versions = self.pinned_versions([p.id for p in self.config.placements])
        for placement in self.config.placements:
            snap = self.snapshot(placement.id, versions)
            if snap is not None and snap.kind == "ranking":
                self.table_rows(snap)
        return self

    def decide(self, profile_id: str, placement_ids: Sequence[str], items: int | None = None,
               allow_duplicates: bool = False, now: datetime | None = None, explain: bool = False) -> Decision:
        """Decide for one profile across placements (filled in request order). `explain`: each
        placement also carries why (`explain.Explainer`), built before its offers are counted."""
        if not placement_ids:
            raise DecisionError("at least one placement is required")
        if items is not None and not 1 <= items <= MAX_ITEMS:
            raise DecisionError(f"items must be between 1 and {MAX_ITEMS}, got {items}")
        unknown = [p for p in placement_ids if p not in self._by_priority]
        if unknown:
            raise DecisionError(f"unknown placement(s): {', '.join(unknown)} "
                                f"(known: {', '.join(sorted(self._by_priority))})")
        now = now or datetime.now(timezone.utc)
        pos = self._profile_pos.get(profile_id)
        row = (self._unknown_eligibility if pos is None else self._eligibility[pos]).tolist()  # list: fast [j]
        row.append(True)  # row[-1]: an offer without a rule (`_rule_column.get(offer_id, -1)`)
        versions = self.pinned_versions(placement_ids)
        refused: dict[str, set[str]] = {p: set() for p in placement_ids}
        results: list[PlacementDecision] = []
        with self.caps.lock:  # check-then-count as one step, so concurrent requests cannot overshoot a cap
            while len(results) < len(placement_ids):  # each round refuses an offer more, so it ends
                results += self._decide_round(profile_id, placement_ids, row, items, allow_duplicates, now,
                                              versions, explain, results, refused)
        return Decision(new_decision_id(), profile_id, iso_text(now), results)

    def _decide_round(self, profile_id: str, placement_ids: Sequence[str], row: list[bool], items: int | None,
                      allow_duplicates: bool, now: datetime, versions: Mapping[str, int], explain: bool,
                      counted: list[PlacementDecision], refused: dict[str, set[str]]) -> list[PlacementDecision]:
        """Decide the placements after the `counted` ones and count them in the cap store in one call
        (one round trip with Redis); returns those it counted, in order. When the store refuses an
        offer (another worker reached its cap meanwhile), it joins that placement's `refused` and
        that placement and the ones after it are decided again in the next round. `row`: the
        profile's eligibility, one bool per offer with a rule (`_rule_column`)."""
        used = set() if allow_duplicates else {i.offer_id for r in counted for i in r.items}
        results = []
        for placement_id in placement_ids[len(counted):]:
            trace: dict[str, Any] | None = {"earlier": [*counted, *results]} if explain else None
            result = self._decide_placement(profile_id, placement_id, row, items, used | refused[placement_id],
                                            now, versions, trace)
            if trace is not None:  # before counting, so the cap state is the one the decision saw
                result = self.explainer().explain(result, trace["plan"], profile_id, used, now, trace)
            if not allow_duplicates:
                used.update(i.offer_id for i in result.items)
            results.append(result)
        n, denied = self.caps.reserve_request([([i.offer_id for i in r.items if not i.fallback],
                                                [i.offer_id for i in r.items if i.fallback], r.placement_id)
                                               for r in results], profile_id, now)
        if denied:
            refused[results[n].placement_id].update(denied)
        return results[:n]

    def count_decisions(self, decisions: Sequence[Decision]) -> None:
        """Count decisions made elsewhere (by the engine this one replaces) against the caps, as
        `decide` counts its own: every item of every placement, at the decision's time. A shared
        store (Redis) counted them already."""
        if self.caps.shared:
            return
        with self.caps.lock:
            for d in decisions:
                at = datetime.fromisoformat(d.decided_at)
                for p in d.placements:
                    self.caps.record([i.offer_id for i in p.items], p.placement_id, d.profile_id, at)

    def plan(self, placement_id: str, items: int | None = None,
             versions: Mapping[str, int] | None = None) -> PlacementPlan:
        """The placement's plan for a decision now: its current table (its version in `versions`,
        None: the manifest's now), model and candidates."""
        snap = self.snapshot(placement_id, versions)
        cached = self._plans.get((placement_id, items))
        if cached is not None and cached.snapshot is snap:  # made once per table version
            return cached
        placement = self.config.placement(placement_id)
        meta = snap.metadata if snap is not None else {}
        model = self.model_of(placement, meta)
        if snap is not None and snap.kind == "posterior":
            auto = self.config.ai_model(meta["ai_model"])
            # sampling every offer (new_offers: empirical_bayes) explores by itself: no random share
            exploration = 0.0 if auto.samples_every_offer else auto.exploration_share
        else:
            exploration = model.exploration_share if model is not None else 0.0
        plan = self._plans[(placement_id, items)] = PlacementPlan(
            placement_id, placement, items or placement.items, snap, meta, model, self._by_priority[placement_id],
            self._fallback[placement_id], exploration)
        return plan

    def explainer(self) -> Explainer:
        """The explanation builder of this engine (made once, on first use)."""
        if self._explainer is None:
            self._explainer = Explainer(self)
        return self._explainer

    def _decide_placement(self, profile_id: str, placement_id: str, row: list[bool], items: int | None,
                          used: set[str], now: datetime, versions: Mapping[str, int],
                          trace: dict[str, Any] | None = None) -> PlacementDecision:
        """`trace` (explanations only): gets the plan and, for Thompson sampling, the selection.
        Offers travel as (offer_id, score) pairs in rank order; each `DecisionItem` is made once."""
        plan = self.plan(placement_id, items, versions)
        if trace is not None:
            trace["plan"] = plan
        snap, n_items, model = plan.snapshot, plan.n_items, plan.model
        offer_values, caps, with_caps, rule_column = self._offer_values, self.caps, self.caps.caps, self._rule_column

        def allowed(offer_id: str) -> bool:
            return (offer_id not in used and offer_id in offer_values and row[rule_column.get(offer_id, -1)]
                    and (offer_id not in with_caps or not caps.capped(offer_id, placement_id, profile_id, now)))

        if plan.posterior:
            chosen, pool, first_probability, source = self._thompson(placement_id, snap, allowed, n_items,
                                                                     plan.exploration_share, trace)
            arm = "model" if model is not None and source != RANDOM_TOO_FEW_QUALIFIED else "non_personalized"
        elif plan.too_few_qualified:  # the model ranks nothing: a random order, 1 / |pool| per offer and slot
            pool = self._pool(placement_id, row, used, profile_id, now)
            chosen = [(pool[j], None) for j in self._rng.permutation(len(pool))[:n_items]]
            first_probability = lambda oid, rank=1: 1.0 / len(pool)  # noqa: E731
            source, arm = RANDOM_TOO_FEW_QUALIFIED, "non_personalized"
        else:
            chosen, pool, first_probability, source = self._ranked(snap, profile_id, n_items,
                                                                   self._pool(placement_id, row, used, profile_id, now))
            arm = "model" if model is not None and source == "ranking_table" else "non_personalized"
            if arm == "model" and plan.exploration_share > 0 and chosen:
                chosen, first_probability, source = self._explore(chosen, pool, plan.exploration_share, n_items,
                                                                  source)
        if chosen and arm == "model" and plan.holdout_share > 0:
            chosen, source, arm = self._holdout(chosen, pool, plan.holdout_share, n_items, source, arm)
            share, size = plan.holdout_share, len(pool)
            model_p = [first_probability(oid, r) for r, (oid, _) in enumerate(chosen, 1)]
            propensity = [None if q is None else share / size + (1.0 - share) * q for q in model_p]
        else:
            propensity = [first_probability(oid, r) for r, (oid, _) in enumerate(chosen, 1)]
        if not chosen:
            items_out = [DecisionItem(placement_id, plan.fallback, 1, None, fallback=True, propensity=1.0)]
            source, arm = "fallback", "fallback"
        else:
            items_out = [DecisionItem(placement_id, oid, r, score, False, q)
                         for r, ((oid, score), q) in enumerate(zip(chosen, propensity), 1)]
        return PlacementDecision(placement_id, plan.placement.channel, items_out, *plan.described(), source, arm)

    def _holdout(self, chosen: list[tuple[str, float | None]], pool: list[str], share: float, n_items: int,
                 source: str, arm: str) -> tuple[list[tuple[str, float | None]], str, str]:
        """A model's `share` of decisions gets a uniformly random order of the eligible offers (arm
        `holdout`), so its lift can be measured. Each slot's propensity (made by the caller) is
        share / |pool| (a random order puts any offer in any slot equally often) plus (1 - share)
        x the model's probability of that offer in that slot (None: not known)."""
        if self._holdout_rng.random() < share:
            chosen = [(pool[j], None) for j in self._holdout_rng.permutation(len(pool))[:n_items]]
            source, arm = "random_holdout", "holdout"
        return chosen, source, arm

    def _explore(self, chosen: list[tuple[str, float | None]], pool: list[str], share: float, n_items: int,
                 source: str):
        """A personalized model shows `share` of its traffic a random order of the eligible offers,
        so offers it cannot personalize yet (too little data) keep being shown and learned. Each
        slot's propensity is share / |pool| + (1 - share) * [it is the model's offer for that slot]."""
        ranked = [offer_id for offer_id, _ in chosen]
        if self._rng.random() < share:
            chosen = [(pool[j], None) for j in self._rng.permutation(len(pool))[:n_items]]
            source = "exploration"
        base = share / len(pool)

        def probability(offer_id: str, rank: int = 1) -> float:
            return base + (1.0 - share) if rank <= len(ranked) and ranked[rank - 1] == offer_id else base

        return chosen, probability, source

    def model_of(self, placement: Any, metadata: dict[str, Any]) -> Any:
        """The AI model config serving the placement's published table (None: not an AI model)."""
        name = metadata.get("ai_model") if placement.ranking.method == "ai_model" else None
        if name is None:
            return None
        try:
            return self.config.ai_model(name)
        except KeyError:  # a table published by a model since removed from the project file
            return None

    def _pool(self, placement_id: str, row: list[bool], used: set[str], profile_id: str, now: datetime) -> list[str]:
        """The placement's offers, highest priority first, that the profile may see now: not in
        `used`, eligible (`row`, as `decide` makes it), not at a cap; what `allowed` in
        `_decide_placement` keeps, checked in the same order (a cap check that finds the offer
        capped counts a cap hit), without a function call per offer."""
        capped = self.caps.capped
        return [oid for oid, j, has_caps in self._pool_specs[placement_id]
                if oid not in used and row[j] and not (has_caps and capped(oid, placement_id, profile_id, now))]

    def _ranked(self, snap: Any, profile_id: str, n_items: int, pool: list[str]):
        """The profile's ranked offers as (offer_id, score) pairs (table first, then priority to
        fill) among the eligible `pool`, the pool, and the logging probability of an offer in a slot
        (deterministic: 1 for the slot's offer, else 0)."""
        offer_ids, scores = self.ranked_offers(snap, profile_id) if snap is not None else ((), ())
        source = "ranking_table" if len(offer_ids) else "non_personalized"
        pool_set = set(pool)
        chosen: list[tuple[str, float | None]] = []
        if len(offer_ids):
            for offer_id, score in zip(offer_ids.tolist(), scores.tolist()):
                if len(chosen) == n_items:
                    break
                if offer_id in pool_set:
                    chosen.append((offer_id, score))
        if len(chosen) < n_items:  # fewer ranked offers left than asked for: fill by priority
            taken = {oid for oid, _ in chosen}
            chosen += [(oid, self.priority[oid]) for oid in pool if oid not in taken][:n_items - len(chosen)]
        ranked = [offer_id for offer_id, _ in chosen]  # deterministic: each slot's offer has probability 1
        return chosen, pool, (lambda oid, rank=1: float(rank <= len(ranked) and ranked[rank - 1] == oid)), source

    def posterior_arrays(self, placement_id: str, snap: Any) -> PosteriorArrays:
        cached = self._posteriors.get(placement_id)
        if cached is None or cached.version != snap.version:
            post = snap.posterior_columns
            alpha, beta = post["alpha"].astype(float), post["beta"].astype(float)
            new_offers = self.config.ai_model(snap.metadata["ai_model"]).new_offers
            offer_ids = [str(oid) for oid in post["offer_id"].tolist()]
            in_placement = np.isin(np.array(offer_ids, dtype=object), self._by_priority[placement_id])
            # value per success (value-weighted models; tables published before it existed: 1)
            weights = post["value_weight"].astype(float) if "value_weight" in post else np.ones(len(alpha))
            cached = PosteriorArrays(snap.version, offer_ids, alpha, beta,
                                     sampled_offers(post["qualified"].astype(bool), new_offers),
                                     alpha / (alpha + beta) * weights, in_placement,
                                     post["displays"].astype(np.int64), post["successes"].astype(float),
                                     None if np.all(weights == 1.0) else weights)
            self._posteriors[placement_id] = cached
        return cached

    def choice_probabilities(self, placement_id: str, snap: Any, eligible: np.ndarray) -> np.ndarray:
        """Thompson first-choice probabilities for an eligible mask, cached per table version."""
        post = self.posterior_arrays(placement_id, snap)
        model = self.config.ai_model(snap.metadata["ai_model"])
        key = (placement_id, snap.version, eligible.tobytes())
        probabilities = self._choice_probabilities.get(key)
        if probabilities is None:
            if len(self._choice_probabilities) > 10_000:
                self._choice_probabilities.clear()
            probabilities = first_choice_probability(post.alpha, post.beta, post.qualified, eligible,
                                                     model.exploration_share, self._rng, draws=4000,
                                                     weights=post.weights, sampling=model.sampling)
            self._choice_probabilities[key] = probabilities
        return probabilities

    def _thompson(self, placement_id: str, snap: Any, allowed: Any, n_items: int, exploration_share: float,
                  trace: dict[str, Any] | None = None):
        post = self.posterior_arrays(placement_id, snap)
        eligible = np.array([ok and allowed(oid) for oid, ok in zip(post.offer_ids, post.in_placement)], dtype=bool)
        probabilities = self.choice_probabilities(placement_id, snap, eligible)
        sampling = self.config.ai_model(snap.metadata["ai_model"]).sampling
        selection = thompson_select(post.alpha, post.beta, post.qualified, eligible, n_items,
                                    exploration_share, self._rng, first_probabilities=probabilities,
                                    weights=post.weights, sampling=sampling)
        if trace is not None:
            trace.update(selection=selection, eligible=eligible)
        chosen = [(post.offer_ids[j], float(post.means[j])) for j in selection.indices]
        position = {oid: j for j, oid in enumerate(post.offer_ids)}
        pool = [post.offer_ids[j] for j in np.flatnonzero(eligible)]
        if int((post.qualified & eligible).sum()) < 2:
            source = RANDOM_TOO_FEW_QUALIFIED
        else:
            source = "exploration" if selection.explored else "thompson_sampling"
        # the first-choice probability is exact (= selection.propensity for the first offer); later
        # slots' marginals are not computed (None)
        return chosen, pool, (lambda oid, rank=1: float(probabilities[position[oid]]) if rank == 1 else None), source


def build_engine(config: ProjectConfig, seed: int | None = None, now: datetime | None = None,
                 profile_ids: Collection[str] | None = None) -> DecisionEngine:
    """The decision engine of a project: enriched profiles if the pipeline wrote them (else the raw
    ones), the catalog, the ranking store, and cap counters counted from the validated events and
    the decision log. `profile_ids`: an engine for these profiles only (profiles and ranking tables
    read with a filter, `offerflow decide`); any other profile is decided as an unknown one."""
    outputs = config.path(config.data.outputs_dir)
    enriched = outputs / "profiles_enriched.parquet"
    profiles = load_profile_table(enriched if enriched.exists() else config.path(config.data.profiles), profile_ids)
    offers = load_offer_rows(config.path(config.data.offers), [p.id for p in config.placements])
    store = RankingStore(config.path(config.store.path), config.store.keep_versions, profile_ids)
    validated = outputs / "validated" / "events.parquet"
    events = validated if validated.exists() else None
    if profile_ids is not None and not config.caps.shared:  # per-profile counters of these profiles only
        caps = load_cap_counters(caps_of(offers), events, config.paths.decision_log, config.paths.cap_resets,
                                 now=now, profile_ids=[str(p) for p in profile_ids])
    else:
        caps = project_cap_store(config, caps_of(offers), now)
    return DecisionEngine(config, store, offers, profiles, seed=seed, caps=caps)


def project_cap_store(config: ProjectConfig, caps: Mapping[str, Sequence[CapRule]],
                      now: datetime | None = None) -> CapStore:
    """The project's cap store (`caps.store`) over these offers' `caps`: embedded counters counted
    from the validated events and the decision log, or the LMDB or Redis store, seeded from them once."""
    paths = config.paths
    return load_cap_store(caps, paths.validated_events if paths.validated_events.exists() else None,
                          paths.decision_log, paths.cap_resets, now=now, redis_url=config.caps.redis_url,
                          namespace=config.project, lmdb_path=config.caps.lmdb_path(paths.outputs),
                          lmdb_map_mib=config.caps.lmdb_map_mib)

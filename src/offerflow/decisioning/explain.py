"""Why this offer? The explanation of one placement's decision, built on request.

`DecisionEngine.decide(..., explain=True)` calls `Explainer.explain` for each placement right after
deciding it and before counting its offers against the caps, so the cap counts it reports are the
ones the decision saw. The explanation (a JSON-ready dict, documented field by field in
`http_models.PlacementExplanationOut`) says:

- the traffic arm (`model`, `exploration`, `holdout`, `non_personalized`, `fallback`), the share
  of the placement's decisions that go to it, and whether the model is in a cold start;
- per offer shown: how it was ranked (ranking table: version, rank and score, and for a formula
  each term's value; Thompson sampling: the sample, the posterior mean, displays and clicks;
  priority; a random order) and its cap state (count, limit, reset) before this decision;
- per candidate not shown, the reason: `rule_failed` (the failing comparison and the profile
  values it read), `cap_reached` (the rule, count and limit), `already_shown` (in which earlier
  placement of the request), `lower_rank` (its rank, score or sample) or `not_in_model`;
- why the fallback offer was used.

Nothing here runs unless asked: the engine's hot path only tests `explain`.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from offerflow.rules.values import missing
from offerflow.rules.capping import next_window_start
from offerflow.rules.explanations import FormulaExplainer, RuleExplainer, show_value
from offerflow.decisioning.decision_types import RANDOM_TOO_FEW_QUALIFIED, PlacementDecision, PlacementPlan

#: Why a candidate offer was not shown, in the order they are checked.
REASONS = ("already_shown", "rule_failed", "cap_reached", "not_in_model", "lower_rank")
_RANDOM_SOURCES = ("random_holdout", RANDOM_TOO_FEW_QUALIFIED)
#: How a `lower_rank` offer of a randomly ordered placement is explained (`<offer>: NOT_DRAWN of <n> offers
#: left`); `offerflow decide --explain` prints those as one row.
NOT_DRAWN = "not drawn by the random order"
_REASON_WORDS = {"already_shown": "already shown in an earlier placement", "rule_failed": "failed their eligibility rule",
                 "cap_reached": "reached a frequency cap", "not_in_model": "are not in the model's table",
                 "lower_rank": "ranked lower"}


class Explainer:
    """Builds explanations for one engine; caches each rule's and formula's subterm evaluators."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.priority = engine.priority
        self._rules: dict[str, RuleExplainer] = {}
        self._formulas: dict[str, FormulaExplainer] = {}
        self._failures: dict[tuple[Any, ...], dict[str, Any]] = {}  # rule_failed by the values it read
        self._cap_rules: dict[str, list[tuple[Any, dict[str, Any]]]] = {}

    def values(self, position: int | None, names: list[str]) -> dict[str, Any]:
        """The profile values (`profile.<column>`) among `names` of the profile at `position`
        (None: unknown, all null). Column arrays are made on first use, only for columns read
        (`engine.profile_column`)."""
        out: dict[str, Any] = {}
        for name in names:
            if not name.startswith("profile.") or position is None:
                continue
            value = self.engine.profile_column(name[8:])[position]
            out[name] = None if missing(value) else value
        return out

    def rule_failed(self, offer_id: str, position: int | None) -> dict[str, Any]:
        """The `rule_failed` entry of an offer whose rule is false for this profile, cached by the
        values the rule reads (most profiles share them)."""
        rule = self.rule(offer_id)
        values = {**self.values(position, rule.reads), **self.engine.offer_values(offer_id)}
        key = (offer_id, position is None, *(values.get(n) for n in rule.reads))
        found = self._failures.get(key)
        if found is None:
            if len(self._failures) > 100_000:
                self._failures.clear()
            failed = rule.failures(values)
            unknown = "" if position is not None else " (unknown profile: every profile value is null)"
            found = self._failures[key] = {
                "offer_id": offer_id, "reason": "rule_failed", "rule": rule.text,
                "failed_terms": [{"term": f.term, "value": f.value, "values": f.names} for f in failed],
                "text": f"{offer_id}: " + _rule_text(rule.text, failed) + unknown}
        return found

    def explain(self, result: PlacementDecision, plan: PlacementPlan, profile_id: str, used: set[str],
                now: datetime, trace: dict[str, Any]) -> PlacementDecision:
        """`result` with its `explanation`. `trace`: what the engine kept of the decision (the
        earlier placements' results, the Thompson selection)."""
        request = _Request(self, result, plan, profile_id, used, now, trace)
        shown = [request.shown_item(item) for item in result.items]
        not_shown = [request.not_shown(oid) for oid in request.candidates() if oid not in request.shown_ids]
        explanation = {**request.arm(not_shown), "shown": shown, "not_shown": not_shown}
        explanation["fallback_reason"] = request.fallback_reason(not_shown) if result.arm == "fallback" else None
        return dataclasses.replace(result, explanation=explanation)

    def cap_rules(self, offer_id: str) -> list[tuple[Any, dict[str, Any]]]:
        """The offer's cap rules, each with the fields of its explanation that do not change."""
        found = self._cap_rules.get(offer_id)
        if found is None:
            found = self._cap_rules[offer_id] = [
                (rule, {"cap": rule.describe(), "event": rule.event, "scope": rule.scope, "limit": rule.limit,
                        "reset": rule.reset}) for rule in self.engine.caps.caps.get(offer_id, ())]
        return found

    def rule(self, offer_id: str) -> RuleExplainer:
        found = self._rules.get(offer_id)
        if found is None:
            text = self.engine.eligibility_rule(offer_id).text
            found = self._rules[offer_id] = RuleExplainer(text, self.engine.rule_schema,
                                                          f"offer {offer_id!r} eligibility")
        return found

    def formula(self, text: str) -> FormulaExplainer:
        found = self._formulas.get(text)
        if found is None:
            found = self._formulas[text] = FormulaExplainer(text, {**self.engine.rule_schema, "ai_score": "number"},
                                                            "ranking formula")
        return found


class _Request:
    """One placement of one request, as the explanation reads it."""

    def __init__(self, explainer: Explainer, result: PlacementDecision, plan: PlacementPlan, profile_id: str,
                 used: set[str], now: datetime, trace: dict[str, Any]) -> None:
        self.explainer, self.engine, self.result, self.plan = explainer, explainer.engine, result, plan
        self.profile_id, self.used, self.now = profile_id, used, now
        self.position_of_profile = self.engine.profile_position(profile_id)
        self._candidates: list[str] | None = None
        self._pool_size: int | None = None
        self._resets: dict[str, str | None] = {}
        self.selection, self.eligible = trace.get("selection"), trace.get("eligible")
        self.earlier: list[PlacementDecision] = trace["earlier"]
        self.shown_ids = {i.offer_id for i in result.items if not i.fallback}
        self.version = plan.snapshot.version if plan.snapshot is not None else None
        if plan.posterior:
            self.post = self.engine.posterior_arrays(plan.placement_id, plan.snapshot)
            self.position = {oid: j for j, oid in enumerate(self.post.offer_ids)}
            self.samples = ({} if self.selection is None or self.selection.samples is None else
                            dict(zip(self.selection.pool.tolist(), self.selection.samples.tolist())))
        else:
            row = plan.snapshot.lookup(profile_id) if plan.snapshot is not None else ([], [])
            self.table = {str(oid): (r + 1, float(s)) for r, (oid, s) in enumerate(zip(*row))}

    def candidates(self) -> list[str]:
        """The placement's offers (and, for Thompson sampling, those of its posterior table)."""
        if self._candidates is None:
            self._candidates = list(self.plan.candidates)
            if self.plan.posterior:
                known = set(self.plan.candidates)
                self._candidates += [oid for oid, ok in zip(self.post.offer_ids, self.post.in_placement)
                                     if ok and oid not in known]
        return self._candidates

    # ------------------------------------------------------------------ offers shown

    def shown_item(self, item: Any) -> dict[str, Any]:
        ranking = {"kind": "fallback", "text": "the placement's fallback offer"} if item.fallback else self.ranking(item)
        caps = self.caps(item.offer_id)
        cap_text = "; ".join(f"cap {c['count']}/{c['limit']} {c['event']}s {c['scope'].replace('_', ' ')}" for c in caps)
        return {"offer_id": item.offer_id, "rank": item.rank, "propensity": item.propensity, "ranking": ranking,
                "caps": caps, "text": f"rank {item.rank}: {item.offer_id}, {ranking['text']}"
                                      + (f" ({cap_text} before this decision)" if caps else "")}

    def ranking(self, item: Any) -> dict[str, Any]:
        """How a shown offer got its place."""
        oid, source = item.offer_id, self.result.source
        if self.plan.posterior and source not in _RANDOM_SOURCES and self.post.qualified[self.position[oid]]:
            return self.thompson(oid)  # every qualified eligible offer is sampled, exploring or not
        if source in _RANDOM_SOURCES or source == "exploration":
            return {"kind": "random", "pool_size": self.pool_size(),
                    "text": f"drawn by a uniformly random order of {_offers(self.pool_size())} left ({source})"}
        if oid in self.table:
            rank, score = self.table[oid]
            out = {"kind": "ranking_table", "table_version": self.version, "table_rank": rank, "score": score,
                   "ai_model": self.result.ai_model, "model_version": self.result.model_version,
                   "text": f"rank {rank} in table v{self.version} with score {score:.4g}"
                           + (f" ({self.result.model_label})" if self.result.ai_model else "")}
            formula = self.plan.placement.ranking.formula
            if self.plan.placement.ranking.method == "formula" and formula:
                explainer = self.explainer.formula(formula)
                terms = explainer.terms({**self.explainer.values(self.position_of_profile, explainer.reads),
                                         **self.engine.offer_values(oid)})
                out["formula"] = {"text": formula, "terms": [{"term": t, "value": v} for t, v in terms]}
                out["text"] += "; formula now " + ", ".join(f"{t} = {show_value(v)}" for t, v in terms[1:])
            return out
        priority = self.explainer.priority[oid]
        how = "filled by priority after the profile's table offers" if self.table else "ranked by priority"
        return {"kind": "priority", "priority": priority, "text": f"{how} (priority {priority:g})"}

    def thompson(self, oid: str) -> dict[str, Any]:
        j = self.position[oid]
        displays, clicks = int(self.post.displays[j]), round(float(self.post.successes[j]))
        sample, mean = self.samples.get(j), float(self.post.means[j])
        leader = None if self.selection is None else self.selection.leader  # top-two: a re-draw ranked the slate
        drawn = "" if leader is None else f" in a top-two re-draw ({self.post.offer_ids[leader]} led the first draw)"
        how = f"Thompson sample {sample:.4f}{drawn}" if sample is not None else "Thompson-sampled (sample not kept)"
        text = how + f" (posterior mean {mean:.4f} from {displays:,} displays and {clicks:,} clicks, " \
                     f"table v{self.version})"
        return {"kind": "thompson_sampling", "table_version": self.version, "sample": sample, "posterior_mean": mean,
                "displays": displays, "clicks": clicks, "qualified": bool(self.post.qualified[j]), "text": text}

    def caps(self, offer_id: str) -> list[dict[str, Any]]:
        """Each cap rule of the offer: its count for this request's key, limit and reset (before counting)."""
        counters, out = self.engine.caps, []
        for rule, described in self.explainer.cap_rules(offer_id):
            count = counters.count(rule, offer_id, self.plan.placement_id, self.profile_id, self.now)
            resets = self._resets.get(rule.reset)
            if rule.reset not in self._resets:
                resets = self._resets[rule.reset] = (None if rule.reset == "never"
                                                     else next_window_start(rule.reset, self.now).isoformat())
            out.append({**described, "count": count, "resets_at": resets, "reached": count >= rule.limit})
        return out

    # ------------------------------------------------------------------ offers not shown

    def not_shown(self, oid: str) -> dict[str, Any]:
        if oid in self.used:
            where = next((p.placement_id for p in self.earlier if oid in {i.offer_id for i in p.items}), None)
            return {"offer_id": oid, "reason": "already_shown", "shown_in": where,
                    "text": f"{oid}: already shown in {where} earlier in this request (duplicates are off)"}
        if not self.engine.eligible(self.profile_id, oid):
            return self.explainer.rule_failed(oid, self.position_of_profile)
        capped = self.engine.caps.capped(oid, self.plan.placement_id, self.profile_id, self.now)
        reached = [c for c in self.caps(oid) if c["reached"]] if capped else []
        if reached:
            c = reached[0]
            when = f", resets {c['resets_at']}" if c["resets_at"] else ", never resets"
            return {"offer_id": oid, "reason": "cap_reached", "cap": c,
                    "text": f"{oid}: cap reached: {c['count']}/{c['limit']} ({c['cap']}{when})"}
        if self.plan.posterior and oid not in self.position:
            return {"offer_id": oid, "reason": "not_in_model",
                    "text": f"{oid}: not in {self.result.ai_model}'s posterior table v{self.version}"}
        return self.lower_rank(oid)

    def lower_rank(self, oid: str) -> dict[str, Any]:
        out: dict[str, Any] = {"offer_id": oid, "reason": "lower_rank"}
        source = self.result.source
        if source in _RANDOM_SOURCES:
            return {**out, "text": f"{oid}: {NOT_DRAWN} of {_offers(self.pool_size())} left"}
        if self.plan.posterior and self.post.qualified[self.position[oid]]:
            t = self.thompson(oid)
            out.update(sample=t["sample"], posterior_mean=t["posterior_mean"])
            return {**out, "text": f"{oid}: lower {t['text']} than the {len(self.shown_ids)} shown"}
        if self.plan.posterior:
            t, model = self.thompson(oid), self.plan.model
            need = f"; qualifies at {model.min_displays} and {model.min_successes}" if model is not None else ""
            return {**out, "text": f"{oid}: new offer ({t['displays']} displays, {t['clicks']} clicks{need}): "
                                   "shown first only by exploration"}
        if source == "exploration":
            return {**out, "text": f"{oid}: {NOT_DRAWN} of {_offers(self.pool_size())} left"}
        if oid in self.table:
            rank, score = self.table[oid]
            out.update(table_rank=rank, score=score)
            return {**out, "text": f"{oid}: rank {rank} in table v{self.version} (score {score:.4g}), "
                                   f"below the {len(self.shown_ids)} shown"}
        priority = self.explainer.priority[oid]
        out["priority"] = priority
        where = f"not in the profile's top {len(self.table)} of table v{self.version}, and " if self.table else ""
        return {**out, "text": f"{oid}: {where}priority {priority:g} below the {len(self.shown_ids)} shown"}

    def pool_size(self) -> int:
        """Offers left to choose from: shown, or not shown only for lower rank."""
        if self._pool_size is None:
            self._pool_size = self._count_pool()
        return self._pool_size

    def _count_pool(self) -> int:
        return sum(1 for oid in self.candidates() if oid in self.shown_ids or (
            oid not in self.used and self.engine.eligible(self.profile_id, oid)
            and not self.engine.caps.capped(oid, self.plan.placement_id, self.profile_id, self.now)
            and (not self.plan.posterior or oid in self.position)))

    # ------------------------------------------------------------------ arm and fallback

    def arm(self, not_shown: list[dict[str, Any]]) -> dict[str, Any]:
        plan, result = self.plan, self.result
        holdout, explore = plan.holdout_share, plan.exploration_share
        model = result.model_label
        if plan.posterior and self.samples:
            n_new = int((~self.post.qualified & self.eligible).sum())
            explore = explore if n_new else 0.0  # Thompson sampling explores only while an offer is new
        cold = False
        if result.arm == "fallback":
            arm, share, text = "fallback", 1.0, "fallback: " + self.fallback_reason(not_shown)
        elif result.arm == "holdout":
            arm, share = "holdout", holdout
            text = (f"holdout: {holdout:.0%} of {model}'s decisions get a uniformly random order of the eligible "
                    "offers so its lift can be measured; this decision drew it")
        elif result.source == "exploration":
            arm, share = "exploration", (1 - holdout) * explore
            text = (f"exploration: {explore:.0%} of {model}'s model traffic gets a random order"
                    + (" with a new offer first" if plan.posterior else "") + " so that new offers keep being learned")
        elif result.arm == "model":
            arm, share = "model", (1 - holdout) * (1 - explore)
            text = f"model: ranked by {model}" + (" (Thompson sampling)" if plan.posterior else "")
        else:
            arm, share = "non_personalized", 1.0
            cold, text = self.non_personalized_text()
        return {"arm": arm, "arm_share": share, "cold_start": cold, "text": text}

    def non_personalized_text(self) -> tuple[bool, str]:
        """(cold start?, why the placement was not ranked by a model)."""
        plan, result = self.plan, self.result
        if result.source == RANDOM_TOO_FEW_QUALIFIED:
            model = plan.model or self.engine.config.ai_model(plan.metadata["ai_model"])
            if plan.posterior:
                n_qualified = sum(1 for oid in self.candidates() if oid in self.position
                                  and bool(self.post.qualified[self.position[oid]]) and oid not in self.used
                                  and self.engine.eligible(self.profile_id, oid))
                among = "qualified among the eligible offers"
            else:  # personalized: the offers its click model personalizes (table metadata)
                n_qualified = int(plan.metadata["offers_qualified"])
                among = "qualified offer" if n_qualified == 1 else "qualified offers"
            return True, (f"cold start: {model.name} has {n_qualified} {among} "
                          f"(an offer qualifies after {model.min_displays} displays and {model.min_successes} "
                          "clicks), fewer than 2: it cannot rank yet, so the offers are served in a random order")
        if plan.model is not None:
            return True, (f"cold start: profile {self.profile_id} is not in {result.ai_model}'s table "
                          f"v{self.version} (a profile the model has never scored): ranked by priority")
        method = plan.placement.ranking
        if method.method == "formula":
            return False, f"ranked by the formula `{method.formula}` (table v{self.version})"
        return False, "ranked by priority"

    def fallback_reason(self, not_shown: list[dict[str, Any]]) -> str:
        if not not_shown:
            return f"the placement has no offers besides its fallback {self.plan.fallback}"
        counts = {r: sum(1 for c in not_shown if c["reason"] == r) for r in REASONS}
        parts = [f"{n} {_REASON_WORDS[r]}" for r, n in counts.items() if n]
        counted = f"{len(not_shown)} candidate" + ("" if len(not_shown) == 1 else "s")
        return f"no offer was left for this profile ({counted}: " + ", ".join(parts) + ")"


def _offers(n: int) -> str:
    return f"{n} offer" + ("" if n == 1 else "s")


def _rule_text(rule: str, failed: list[Any]) -> str:
    """`rule `r` is false: <each failing term and its values>` (the term once when it is the whole rule)."""
    if len(failed) == 1 and failed[0].term == rule:
        return f"rule `{rule}` is {failed[0].describe().removeprefix(rule + ' is ')}"
    return f"rule `{rule}` is false: " + "; ".join(f.describe() for f in failed)

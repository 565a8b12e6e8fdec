"""Per-slot propensities in the decision log: every item of a personalized slate carries the
probability that the engine puts that offer in that slot, which the position-aware slate estimator
needs. Checked against observed slot frequencies of many real decisions, and the batch path
against the engine."""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import pytest

from offerflow.decisioning.batch import decide_batch
from offerflow.rules.capping import CapCounters, caps_of
from offerflow.core.config import load_config
from offerflow.decisioning.engine import DecisionEngine, build_engine

pytestmark = pytest.mark.flow
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def engines(pipeline_run):
    project_dir, _ = pipeline_run
    config = load_config(project_dir / "offerflow.yaml")
    base = build_engine(config, now=NOW)

    def engine(seed: int) -> DecisionEngine:
        return DecisionEngine(config, base.store, base.offers.reset_index(drop=True), base.profiles, seed=seed,
                              caps=CapCounters({}, now=NOW))
    return config, engine


def test_every_slot_of_a_personalized_slate_logs_its_true_probability(engines) -> None:
    config, engine = engines
    e = engine(11)
    profile = next(pid for pid in e.profiles["profile_id"]  # one with a full slate
                   if len(e.decide(pid, ["web-banner"], now=NOW).placements[0].items) == 3)
    shown, logged = [], {}
    for _ in range(4000):
        placement = e.decide(profile, ["web-banner"], now=NOW).placements[0]
        for item in placement.items:
            shown.append((item.offer_id, item.rank))
            logged.setdefault((item.offer_id, item.rank), set()).add(round(item.propensity, 12))
    frequency = pd.Series(shown).value_counts() / 4000
    for key, values in logged.items():
        assert len(values) == 1, key  # one probability per (offer, slot): it does not depend on the draw
        assert abs(frequency[key] - next(iter(values))) < 0.02, key
    # every offer of the pool appeared in every slot (random orders), so each slot's probabilities sum to 1
    by_slot = pd.Series({key: next(iter(values)) for key, values in logged.items()}).groupby(level=1).sum()
    assert (by_slot - 1.0).abs().max() < 1e-9, by_slot


def test_batch_logs_the_engines_per_slot_propensities(engines) -> None:
    config, engine = engines
    ids = list(engine(1).profiles["profile_id"].iloc[:600])
    batch = decide_batch(engine(2), ids, ["web-banner", "web-sidebar"], now=NOW, seed=6).decisions.to_pandas()
    assert batch["propensity"].notna().all() and batch["propensity"].between(0, 1, inclusive="right").all()
    e = engine(3)
    single = pd.DataFrame([{"profile_id": pid, "placement_id": p.placement_id, "offer_id": i.offer_id, "rank": i.rank,
                            "propensity": i.propensity, "arm": p.arm}
                           for pid in ids for p in e.decide(pid, ["web-banner", "web-sidebar"], now=NOW).placements
                           for i in p.items])
    # the marginal probability of an offer in a slot does not depend on the arm this draw took
    both = batch.merge(single, on=["profile_id", "placement_id", "offer_id", "rank"], suffixes=("_batch", "_engine"))
    assert len(both) > 500 and (both["arm_batch"] != both["arm_engine"]).any()
    assert (both["propensity_batch"] - both["propensity_engine"]).abs().max() < 1e-9

"""The seeded world is reproducible and its logged propensities are the policy's true ones."""

import numpy as np
import pandas as pd

from offerflow.ingest.catalog import load_offers
from offerflow.synthetic.world import (logging_probabilities, load_truth, true_click_probability,
                             true_purchase_probability)


def test_world_has_all_event_kinds(world_dir):
    events = pd.read_parquet(world_dir / "events.parquet")
    kinds = events["event_type"].value_counts()
    assert {"display", "click", "purchase"} <= set(kinds.index)
    assert events["event_id"].is_unique
    displays = events[events.event_type == "display"]
    assert displays["propensity"].between(0, 1, inclusive="right").all()
    assert set(displays["channel"]) == {"web", "email"}
    assert (events["timestamp"].dt.tz is not None)


def test_click_rate_matches_truth(world_dir):
    profiles, offers = load_truth(world_dir)
    events = pd.read_parquet(world_dir / "events.parquet")
    web = events[(events.placement_id == "web-banner")]
    shown = web[web.event_type == "display"]
    clicked = set(web.loc[web.event_type == "click", "decision_id"])
    p = pd.Series(range(len(profiles)), index=profiles.profile_id)
    o = pd.Series(range(len(offers)), index=offers.offer_id)
    truth = true_click_probability(profiles, offers, "web")
    expected = truth[p[shown.profile_id].to_numpy(), o[shown.offer_id].to_numpy()]
    observed = shown.decision_id.isin(clicked).to_numpy()
    assert abs(observed.mean() - expected.mean()) < 3 * np.sqrt(expected.mean() / len(expected))


def test_logged_propensity_is_the_logging_policy(world_dir):
    offers = load_offers(world_dir / "offers.yaml")
    eligible = np.array([[True, True, False]])
    probs = logging_probabilities(eligible, np.array([1.0, 5.0, 9.0]))
    assert probs.sum() == 1.0 or abs(probs.sum() - 1) < 1e-12
    assert probs[0, 2] == 0
    assert offers["fallback"].sum() == 1


def test_same_seed_same_world(tmp_path):
    from datetime import date

    from offerflow.synthetic.world import WorldSpec, generate_world

    spec = WorldSpec(profiles=200, offers=6, days=30, seed=3, end_date=date(2026, 1, 1))
    a = generate_world(spec, tmp_path / "a")
    b = generate_world(spec, tmp_path / "b")
    assert pd.read_parquet(a.events).equals(pd.read_parquet(b.events))
    profiles, _ = load_truth(tmp_path / "a")
    assert 0 < true_purchase_probability(profiles, 14).mean() < 1

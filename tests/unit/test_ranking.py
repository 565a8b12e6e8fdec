import numpy as np
import pandas as pd

from offerflow.ranking import formula_scorer, ips_weights, rank_profiles, top_k
from offerflow.rules import schema_from_frames


def test_top_k_orders_and_skips_ineligible():
    scores = np.array([[0.1, 0.5, 0.3], [0.9, 0.2, 0.4]])
    eligible = np.array([[True, False, True], [False, False, False]])
    rows, idx, best = top_k(scores, eligible, 2)
    assert rows.tolist() == [0, 0]
    assert idx.tolist() == [2, 0]
    assert best.tolist() == [0.3, 0.1]


def make_frames():
    profiles = pd.DataFrame({"profile_id": ["p1", "p2", "p3"], "age": [17, 30, 45],
                             "favorite_category": ["home", "sports", "home"]})
    offers = pd.DataFrame({"offer_id": ["a", "b", "c"], "name": ["A", "B", "C"], "priority": [5, 3, 1],
                           "placements": [("x",)] * 3, "eligibility": [None, "profile.age >= 18", None],
                           "fallback": [False] * 3, "category": ["sports", "home", "home"]})
    return profiles, offers


def test_rank_profiles_with_formula_respects_eligibility_and_k():
    profiles, offers = make_frames()
    formula = "if(offer.category == profile.favorite_category, offer.priority * 2, offer.priority)"
    score = formula_scorer(formula, schema_from_frames(profiles=profiles, offers=offers))
    table = pd.concat(rank_profiles(profiles, offers, score, k=2, chunk_profiles=2))
    by_profile = table.groupby("profile_id")["offer_id"].apply(list).to_dict()
    assert by_profile == {"p1": ["a", "c"], "p2": ["a", "b"], "p3": ["b", "a"]}
    assert table.groupby("profile_id")["rank"].apply(list).to_dict()["p3"] == [1, 2]
    assert "b" not in by_profile["p1"]  # p1 is 17: never ranked an ineligible offer


def test_ips_weights_undo_logging_bias():
    propensity = pd.Series([0.5, 0.5, 0.1, np.nan])
    w = ips_weights(propensity)
    assert w.mean() == 1.0 or abs(w.mean() - 1.0) < 1e-12
    assert w[2] == 5 * w[0]

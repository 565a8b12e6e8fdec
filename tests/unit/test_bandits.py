import numpy as np
import pandas as pd
import pytest

from offerflow.bandits import first_choice_probability, fit_posteriors, thompson_select


def counts(rows):
    return pd.DataFrame(rows, columns=["offer_id", "displays", "successes"])


def test_posteriors_and_qualification():
    post = fit_posteriors(counts([("b", 1000, 50), ("a", 50, 10), ("c", 200, 4)]), 100, 5)
    assert post["offer_id"].tolist() == ["a", "b", "c"]
    assert post["alpha"].tolist() == [11, 51, 5]
    assert post["beta"].tolist() == [41, 951, 197]
    assert post["qualified"].tolist() == [False, True, False]


def test_thompson_prefers_the_best_offer_but_explores():
    rng = np.random.default_rng(0)
    alpha = np.array([1 + 50, 1 + 100, 1 + 60, 1 + 0])
    beta = np.array([1 + 950, 1 + 900, 1 + 940, 1 + 10])
    qualified = np.array([True, True, True, False])
    eligible = np.ones(4, bool)
    firsts = [thompson_select(alpha, beta, qualified, eligible, 1, 0.1, rng).indices[0] for _ in range(2000)]
    share = np.bincount(firsts, minlength=4) / len(firsts)
    assert share[1] > 0.85            # the best offer wins most draws
    assert 0.01 < share[3] < 0.05     # the new offer only gets exploration traffic (10% / 4)


def test_fewer_than_two_qualified_serves_at_random():
    rng = np.random.default_rng(1)
    qualified = np.array([True, False, False])
    probs = first_choice_probability(np.ones(3), np.ones(3), qualified, np.ones(3, bool), 0.1, rng)
    assert probs == pytest.approx([1 / 3] * 3)


def test_recorded_propensity_matches_observed_frequency():
    rng = np.random.default_rng(2)
    alpha, beta = np.array([30.0, 25.0, 10.0]), np.array([970.0, 975.0, 990.0])
    qualified, eligible = np.ones(3, bool), np.ones(3, bool)
    probs = first_choice_probability(alpha, beta, qualified, eligible, 0.1, rng, draws=20000)
    firsts = [thompson_select(alpha, beta, qualified, eligible, 1, 0.1, rng, 200).indices[0] for _ in range(4000)]
    observed = np.bincount(firsts, minlength=3) / 4000
    assert observed == pytest.approx(probs, abs=0.03)
    assert probs.sum() == pytest.approx(1.0)


def test_ineligible_offers_never_selected():
    rng = np.random.default_rng(3)
    eligible = np.array([False, True, False, True])
    for _ in range(200):
        sel = thompson_select(np.full(4, 5.0), np.full(4, 50.0), np.ones(4, bool), eligible, 3, 0.2, rng, 50)
        assert set(sel.indices) <= {1, 3}

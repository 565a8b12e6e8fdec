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


def test_value_weighting_ranks_by_expected_value_per_display():
    # a: 5% conversion at 10 per conversion (0.5 per display); b: 3% at 50 (1.5 per display).
    table = pd.DataFrame({"offer_id": ["a", "b"], "displays": [20_000, 20_000], "successes": [1000, 600],
                          "value": [10_000.0, 30_000.0]})
    plain = fit_posteriors(table, 100, 5)
    weighted = fit_posteriors(table, 100, 5, value_weighted=True)
    assert plain["value_weight"].tolist() == [1.0, 1.0]
    # shrunk slightly toward the overall mean value per success (40,000 / 1,600 = 25)
    assert weighted["value_weight"].iat[0] == pytest.approx((10_000 + 5 * 25) / 1005)
    assert weighted["value_weight"].iat[1] == pytest.approx((30_000 + 5 * 25) / 605)
    rng = np.random.default_rng(4)
    args = dict(qualified=np.ones(2, bool), eligible=np.ones(2, bool), n_items=1, exploration_share=0.0, rng=rng)

    def first(post, weights=None):
        return [thompson_select(post["alpha"].to_numpy(), post["beta"].to_numpy(), weights=weights, **args).indices[0]
                for _ in range(300)]

    assert np.mean(first(plain)) < 0.05  # by rate, a wins
    assert np.mean(first(weighted, weighted["value_weight"].to_numpy())) > 0.95  # by value, b wins
    probs = first_choice_probability(weighted["alpha"].to_numpy(), weighted["beta"].to_numpy(), np.ones(2, bool),
                                     np.ones(2, bool), 0.0, rng, weights=weighted["value_weight"].to_numpy())
    assert probs[1] > 0.95


def test_value_shrinkage_keeps_lucky_offers_in_check():
    # c had two large orders out of 2 successes; with shrinkage it does not outrank d's steady value.
    table = pd.DataFrame({"offer_id": ["c", "d"], "displays": [200, 5000], "successes": [2, 500],
                          "value": [2_000.0, 25_000.0]})
    weighted = fit_posteriors(table, 100, 1, value_weighted=True)
    assert weighted["value_weight"].iat[0] < 1_000 / 2

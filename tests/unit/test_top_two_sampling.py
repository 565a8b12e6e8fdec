"""Top-two Thompson sampling with a bounded re-draw (`sampling.rule: top_two`): the first choice it
serves, the propensity it logs, the vectorised first choices simulations use, and the setting."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from offerflow.core.config import AIModelConfig, SamplingConfig
from offerflow.ranking.bandits import (first_choice_probability, thompson_first_choices, thompson_select,
                                      top_two_probabilities)

TOP_TWO = SamplingConfig(rule="top_two")  # leader share 0.5, at most 3 re-draws
#: three close offers and a clearly worse one: the first draw's winner is offer 0 about 70% of the time
ALPHA, BETA = np.array([45.0, 40.0, 30.0, 10.0]), np.array([955.0, 960.0, 970.0, 990.0])


def first_shares(alpha, beta, sampling, n=6000, seed=0):
    """How often `thompson_select` puts each offer first, every offer qualified and eligible."""
    rng = np.random.default_rng(seed)
    m = len(alpha)
    probs = np.ones(m) / m  # the propensity is not what these shares measure
    firsts = [thompson_select(alpha, beta, np.ones(m, bool), np.ones(m, bool), 1, 0.0, rng,
                              first_probabilities=probs, sampling=sampling).indices[0] for _ in range(n)]
    return np.bincount(firsts, minlength=m) / n


def test_logged_propensity_is_the_served_first_choice_frequency():
    rng = np.random.default_rng(1)
    everyone = np.ones(4, bool)
    plain = first_choice_probability(ALPHA, BETA, everyone, everyone, 0.0, rng, draws=40_000)
    probs = first_choice_probability(ALPHA, BETA, everyone, everyone, 0.0, rng, draws=40_000, sampling=TOP_TWO)
    assert probs.sum() == pytest.approx(1.0)
    assert first_shares(ALPHA, BETA, TOP_TWO) == pytest.approx(probs, abs=0.02)
    # the rule moves traffic from the leader to the runners-up: not plain Thompson sampling's propensity
    assert probs[0] < plain[0] - 0.05 and probs[1] > plain[1] + 0.05
    # the propensity each selection carries is that of the offer it put first
    sel = thompson_select(ALPHA, BETA, everyone, everyone, 2, 0.0, rng, first_probabilities=probs, sampling=TOP_TWO)
    assert sel.propensity == probs[sel.indices[0]]


def test_vectorised_first_choices_follow_the_same_rule_and_exploration():
    """What `simulate_auto_optimization` and the regret test serve: the same first-choice
    probabilities, per eligible set, with the exploration share for a new offer unchanged."""
    rng = np.random.default_rng(2)
    qualified = np.array([True, True, True, False])  # offer 3 is new: 10% exploration while eligible
    eligible = np.ones((30_000, 4), bool)
    eligible[:10_000, 0] = False
    firsts = thompson_first_choices(ALPHA, BETA, qualified, eligible, 0.1, rng, TOP_TWO)
    for rows in (slice(0, 10_000), slice(10_000, None)):
        expected = first_choice_probability(ALPHA, BETA, qualified, eligible[rows][0], 0.1, rng, draws=40_000,
                                            sampling=TOP_TWO)
        assert np.bincount(firsts[rows], minlength=4) / len(firsts[rows]) == pytest.approx(expected, abs=0.015)
    assert expected[3] == pytest.approx(0.1)
    assert (thompson_first_choices(ALPHA, BETA, qualified, np.zeros((2, 4), bool), 0.1, rng, TOP_TWO) == -1).all()


def test_a_clear_leader_keeps_nearly_every_decision_and_tied_offers_split():
    # offer 0 at 30% against two at 2%: no re-draw turns up a challenger
    alpha, beta = np.array([300.0, 20.0, 20.0]), np.array([700.0, 980.0, 980.0])
    assert first_shares(alpha, beta, TOP_TWO, n=3000)[0] > 0.999
    # two offers with the same posterior, well ahead of a third: half each, leader or challenger
    alpha, beta = np.array([60.0, 60.0, 20.0]), np.array([940.0, 940.0, 980.0])
    shares = first_shares(alpha, beta, TOP_TWO)
    assert shares[:2] == pytest.approx([0.5, 0.5], abs=0.03) and shares[2] < 0.01


def test_leader_share_and_redraw_bound_act_as_stated():
    """A leader winning about 85% of single draws: with 3 re-draws a challenger turns up only in
    1 - 0.85^3 of the decisions that look for one; with 30 it nearly always does; leader share 1
    or no re-draw is plain Thompson sampling."""
    alpha, beta = np.array([64.0, 53.0]), np.array([1936.0, 1947.0])
    everyone = np.ones(2, bool)
    plain = first_choice_probability(alpha, beta, everyone, everyone, 0.0, np.random.default_rng(3), draws=40_000)
    assert 0.8 < plain[0] < 0.9
    bounded = first_shares(alpha, beta, TOP_TWO, seed=4)
    unbounded = first_shares(alpha, beta, SamplingConfig(rule="top_two", max_redraws=30), seed=5)
    assert bounded == pytest.approx(top_two_probabilities(plain, (0.5, 3)), abs=0.02)
    assert unbounded == pytest.approx(top_two_probabilities(plain, (0.5, 30)), abs=0.02)
    assert bounded[1] < unbounded[1] - 0.2  # the bound leaves a clear leader alone
    assert unbounded[1] == pytest.approx(0.5 * plain[1] + 0.5 * plain[0], abs=0.03)
    for same in (SamplingConfig(rule="top_two", leader_share=1.0), SamplingConfig(rule="top_two", max_redraws=0)):
        assert first_shares(alpha, beta, same, seed=6) == pytest.approx(plain, abs=0.02)
        assert top_two_probabilities(plain, (same.leader_share, same.max_redraws)) == pytest.approx(plain)


def test_the_slate_is_the_served_draws_order():
    """With a challenger the whole slate is the re-draw's order (so its samples explain it), and the
    selection names the leader it passed over."""
    rng = np.random.default_rng(7)
    everyone = np.ones(4, bool)
    selections = [thompson_select(ALPHA, BETA, everyone, everyone, 4, 0.0, rng, first_probabilities=np.ones(4) / 4,
                                  sampling=TOP_TWO) for _ in range(2000)]
    redraws = [s for s in selections if s.leader is not None]
    assert 0.15 < len(redraws) / len(selections) < 0.5
    for s in selections:
        assert (s.indices == s.pool[np.argsort(-s.samples, kind="stable")]).all()
    assert all(s.indices[0] != s.leader for s in redraws)
    plain = thompson_select(ALPHA, BETA, everyone, everyone, 4, 0.0, rng, first_probabilities=np.ones(4) / 4)
    assert plain.leader is None


def test_the_sampling_setting():
    model = AIModelConfig(name="m", type="auto_optimization", placements=["p"])
    assert (model.sampling.leader_share, model.sampling.max_redraws) == (0.5, 3)
    model = AIModelConfig(name="m", type="auto_optimization", placements=["p"],
                          sampling={"rule": "top_two", "leader_share": 0.6})
    assert (model.sampling.rule, model.sampling.leader_share, model.sampling.max_redraws) == ("top_two", 0.6, 3)
    for wrong in ({"rule": "top_three"}, {"leader_share": 1.5}, {"max_redraws": -1}, {"redraws": 3}):
        with pytest.raises(ValidationError):
            AIModelConfig(name="m", type="auto_optimization", placements=["p"], sampling=wrong)

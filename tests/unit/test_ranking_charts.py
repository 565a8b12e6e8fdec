"""ranking.charts: the per-offer rates table behind the offer-rates chart (observed rate, the
prior's and the posterior's mean, the posterior's interval) from a posteriors frame."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from offerflow.ranking.bandits import fit_posteriors
from offerflow.ranking.charts import offer_rates, offer_rates_figure, permutation_importance


@pytest.mark.parametrize("empirical_prior", [False, True])
def test_offer_rates_recover_counts_prior_and_a_credible_interval(empirical_prior):
    counts = pd.DataFrame({"offer_id": ["a", "b", "c", "d"], "displays": [1000, 400, 30, 0],
                           "successes": [100, 20, 6, 0]})
    posteriors = fit_posteriors(counts, min_displays=100, min_successes=10, empirical_prior=empirical_prior)
    table = offer_rates(posteriors).set_index("offer_id")
    assert table.loc["a", "observed_rate"] == pytest.approx(0.1) and np.isnan(table.loc["d", "observed_rate"])
    assert np.allclose(table["prior_mean"], table["prior_mean"].iat[0])  # one prior for every offer
    if not empirical_prior:
        assert table["prior_mean"].iat[0] == pytest.approx(0.5)  # the flat Beta(1, 1)
    else:  # fitted to the offers' own rates: between the lowest and highest observed rate
        assert 0.05 < table["prior_mean"].iat[0] < 0.2
    assert (table["posterior_low"] < table["posterior_mean"]).all()
    assert (table["posterior_mean"] < table["posterior_high"]).all()
    # many displays: the posterior sits on the observed rate, narrowly; none: it is the prior
    assert table.loc["a", "posterior_mean"] == pytest.approx(0.1, abs=0.005)
    assert table.loc["a", "posterior_high"] - table.loc["a", "posterior_low"] < 0.04
    assert table.loc["d", "posterior_mean"] == pytest.approx(table.loc["d", "prior_mean"])
    assert table["qualified"].tolist() == [True, True, False, False]
    assert offer_rates_figure(table.reset_index(), "test").axes  # draws without a display


def test_permutation_importance_finds_the_column_the_outcome_depends_on():
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"a": rng.normal(size=4000), "b": rng.normal(size=4000)})
    y = (rng.random(4000) < 1 / (1 + np.exp(-2 * frame["a"].to_numpy()))).astype(int)
    drop = permutation_importance(lambda f: f["a"].to_numpy() + 0.01 * f["b"].to_numpy(), frame, y, ["a", "b"],
                                  seed=1, max_rows=3000)
    assert drop["a"] > 0.2 and abs(drop["b"]) < 0.01, drop
    constant = permutation_importance(lambda f: f["a"].to_numpy(), frame, np.zeros(4000), ["a"], seed=1)
    assert constant["a"] == 0.0  # one class only: no AUC, nothing to lose


def test_customer_ai_score_distribution_of_a_holdout_without_positives():
    """A holdout whose window holds no goal event draws the one class it has (a density of no
    scores divided by zero: a RuntimeWarning that failed training under warnings-as-errors)."""
    from offerflow.customer_ai.charts import score_distribution_figure

    figure = score_distribution_figure(np.zeros(50), np.linspace(0.01, 0.99, 50))
    assert [t.get_text() for t in figure.axes[0].get_legend().get_texts()] == ["did not reach goal"]

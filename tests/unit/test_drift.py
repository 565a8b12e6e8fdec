"""Drift between scoring runs: PSI in the previous run's fixed quantile bins (customer_ai.drift)."""

from __future__ import annotations

import numpy as np
import pytest

from offerflow.customer_ai.drift import bin_shares, distribution_profile, drift_table, drifted, psi


@pytest.fixture()
def samples() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A reference run and a new run of 5,000 rows: `stable` drawn alike, `shifted` moved by one
    standard deviation, `count` a discrete feature that lost its zeros."""
    rng = np.random.default_rng(12345)
    before = {"stable": rng.normal(0, 1, 5000), "shifted": rng.normal(0, 1, 5000), "count": rng.poisson(1.0, 5000)}
    after = {"stable": rng.normal(0, 1, 5000), "shifted": rng.normal(1, 1, 5000), "count": rng.poisson(1.0, 5000) + 1}
    return before, after


def test_known_shift_is_found_and_the_same_distribution_is_not(samples):
    before, after = samples
    table = drift_table(distribution_profile(before), after).set_index("feature")
    assert table.loc["stable", "psi"] < 0.02
    # N(0,1) -> N(1,1) in decile bins: PSI about 0.8-1.2 (the floor caps the emptied bins)
    assert 0.6 < table.loc["shifted", "psi"] < 1.6
    assert table.loc["count", "psi"] > 0.2
    assert sorted(drifted(table.reset_index(), 0.2)["feature"]) == ["count", "shifted"]


def test_reference_bins_are_the_previous_runs_quantiles(samples):
    before, _ = samples
    profile = distribution_profile(before)
    ref = profile["stable"]
    assert len(ref["edges"]) == 9 and len(ref["shares"]) == 11  # 10 bins + missing
    assert np.allclose(ref["shares"][:10], 0.1, atol=0.002) and ref["shares"][10] == 0
    assert len(profile["count"]["edges"]) < 9  # ties merged: a Poisson(1) has few distinct deciles
    assert psi(ref["shares"], ref["shares"]) == 0.0


def test_missing_values_have_their_own_bin():
    shares = bin_shares(np.array([0.0, 1.0, np.nan, np.inf]), np.array([0.5]))
    assert shares.tolist() == [0.25, 0.25, 0.5]
    assert psi([0.5, 0.5, 0.0], shares) > 0.2


def test_columns_unknown_to_the_reference_are_left_out(samples):
    before, after = samples
    table = drift_table(distribution_profile({"stable": before["stable"]}), after)
    assert table["feature"].tolist() == ["stable"]
    assert drift_table({}, after).empty

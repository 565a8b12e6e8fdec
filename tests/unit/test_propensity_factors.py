"""The fast contribution path gives LightGBM's own `pred_contrib` numbers, and factors are ranked
by absolute contribution with their direction and share."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from offerflow.customer_ai.contributions import grouped_contributions
from offerflow.core.features import encode, feature_matrix
from offerflow.customer_ai.propensity import top_factors


@pytest.fixture(scope="module")
def model_and_frame():
    rng = np.random.default_rng(3)
    n = 6000
    frame = pd.DataFrame({
        "count_display_30d": rng.poisson(4, n).astype(float),
        "days_since_purchase": np.where(rng.random(n) < 0.3, np.nan, rng.exponential(10, n)),
        "tenure_days": rng.integers(0, 2000, n).astype(float),
        "zero_heavy": np.where(rng.random(n) < 0.5, 0.0, rng.normal(0, 1, n)),
        "loyalty_tier": rng.choice(["bronze", "silver", "gold", "platinum"], n),
        "email_opt_in": rng.random(n) < 0.6,
    })
    logit = (0.3 * frame["count_display_30d"] - 0.05 * frame["days_since_purchase"].fillna(60)
             + frame["loyalty_tier"].map({"bronze": 0, "silver": 0.5, "gold": 1, "platinum": 1.5})
             + 0.7 * frame["email_opt_in"] + 0.5 * frame["zero_heavy"] - 2)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    categories = {"loyalty_tier": ["bronze", "gold", "platinum", "silver"], "email_opt_in": ["False", "True"]}
    model = lgb.LGBMClassifier(n_estimators=60, num_leaves=15, min_child_samples=20, verbose=-1, random_state=0)
    model.fit(encode(frame, categories), y)
    # unseen category and missing values at scoring time
    scoring = frame.copy()
    scoring.loc[:9, "loyalty_tier"] = "diamond"
    scoring.loc[10:19, "tenure_days"] = np.nan
    return model, scoring, categories


def test_grouped_contributions_equal_plain_pred_contrib(model_and_frame):
    model, frame, categories = model_and_frame
    plain = model.predict(encode(frame, categories), pred_contrib=True)
    fast = grouped_contributions(model.booster_, feature_matrix(frame, list(frame.columns), categories),
                                 chunk_rows=1000)
    np.testing.assert_allclose(fast, plain, rtol=0, atol=1e-10)


def test_grouped_contributions_respect_the_tree_count(model_and_frame):
    model, frame, categories = model_and_frame
    X = feature_matrix(frame, list(frame.columns), categories)
    np.testing.assert_allclose(grouped_contributions(model.booster_, X, n_trees=7),
                               model.booster_.predict(X, num_iteration=7, pred_contrib=True), atol=1e-10)


def test_top_factors_order_direction_and_share():
    contributions = np.array([[0.5, -2.0, 0.1], [0.0, 0.0, 0.0], [-0.3, 0.2, 0.6]])
    factors = top_factors(contributions, ["a", "b", "c"], top=2)
    assert factors["factor_1"].tolist() == ["b", "a", "c"]
    assert factors["factor_1_impact"].tolist() == [-2.0, 0.0, 0.6]
    assert factors["factor_1_direction"].tolist() == ["lowers", "raises", "raises"]
    assert factors["factor_1_importance"].tolist() == [pytest.approx(2.0 / 2.6, abs=1e-4), 0.0,
                                                       pytest.approx(0.6 / 1.1, abs=1e-4)]
    assert factors["factor_2"].tolist() == ["a", "b", "a"]

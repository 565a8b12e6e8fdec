"""Customer AI against the known truth of the seeded world (3,000 profiles, 60 days, seed 11).

The generator's daily purchase probability depends on loyalty tier, email opt-in, tenure and a
hidden activity rate (the daily probability of a web visit); churn (no web visit in the window)
depends on activity alone. The oracle knows each profile's activity exactly; any model can only
infer it from the days of history before the cut-off. So the model is held to two yardsticks:
the AUC of the true probabilities (the oracle), and the AUC of the best estimate the observable
history allows (`world.best_estimates_from_history`: the Bayes posterior under the generator).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from offerflow.core.config import PropensityGoalConfig
from offerflow.core.metrics import classification_metrics
from offerflow.core.features import event_time_range, open_events, query_frame
from offerflow.customer_ai.goals import GoalError, eligible_profiles
from offerflow.customer_ai.propensity import (build_examples, check_enough_examples, feature_frame, fit_propensity_model,
                                 plan_cutoffs, score_goal, score_table)
from offerflow.synthetic.world import best_estimates_from_history, load_truth, true_purchase_probability

# One LightGBM thread: on a shared 2-core machine OpenMP threads spinning against other jobs made
# these small fits ~7x slower; the holdout AUC is the same with 2 threads.
PURCHASE = {"name": "purchase_14d", "goal": {"all_of": [{"field": "event_type", "value": "purchase"}]},
            "outcome_window_days": 14, "lookback_days": [7, 30, 90], "min_positives": 200, "min_negatives": 200,
            "lightgbm": {"num_threads": 1}}
CHURN = {"name": "web_churn_14d", "type": "churn",
         "goal": {"all_of": [{"field": "event_type", "value": "display"}, {"field": "channel", "value": "web"}]},
         "outcome_window_days": 14, "lookback_days": [7, 30, 90], "min_positives": 200, "min_negatives": 200,
         "lightgbm": {"num_threads": 1}}


def _fit(world_dir: Path, raw: dict):
    goal = PropensityGoalConfig.model_validate(raw)
    con = open_events(world_dir / "events.parquet")
    profiles = pd.read_parquet(world_dir / "profiles.parquet")
    plan = plan_cutoffs(*event_time_range(con), goal)
    examples = build_examples(con, goal, profiles, plan.train)
    check_enough_examples(examples, goal)
    model = fit_propensity_model(examples, goal.lightgbm, seed=7)
    holdout = build_examples(con, goal, profiles, [plan.holdout])
    truth, _ = load_truth(world_dir)
    holdout = holdout.merge(truth[["profile_id", "activity", "daily_purchase_rate"]], on="profile_id")
    return goal, con, profiles, plan, model, holdout


def _best_from_history(con, holdout: pd.DataFrame, cutoff, truth: pd.DataFrame, window: int) -> dict[str, np.ndarray]:
    """`world.best_estimates_from_history` for the holdout: web and purchase days before `cutoff`."""
    first, _ = event_time_range(con)
    seen = query_frame(con, """SELECT profile_id,
        count(DISTINCT CAST(timestamp AS DATE)) FILTER (WHERE channel = 'web') AS web_days,
        count(DISTINCT CAST(timestamp AS DATE)) FILTER (WHERE event_type = 'purchase') AS purchase_days
        FROM events WHERE timestamp < ? GROUP BY profile_id""", [cutoff])
    seen = holdout[["profile_id"]].merge(seen, on="profile_id", how="left").fillna(0)
    return best_estimates_from_history(holdout, seen["web_days"].to_numpy(), seen["purchase_days"].to_numpy(),
                                       (pd.Timestamp(cutoff) - pd.Timestamp(first).floor("D")).days, window,
                                       truth["activity"].to_numpy())


@pytest.fixture(scope="module")
def purchase(world_dir):
    return _fit(world_dir, PURCHASE)


def test_learned_propensity_tracks_the_true_purchase_probability(purchase, world_dir):
    goal, con, _, plan, model, holdout = purchase
    # early stopping watches the validation AUC alone: a world with real signal needs many trees
    assert model.n_trees >= 20, model.n_trees
    learned = model.predict(holdout)
    truth, _ = load_truth(world_dir)
    true_p = true_purchase_probability(holdout, goal.outcome_window_days)
    rho = spearmanr(learned, true_p).statistic
    assert rho > 0.6, rho
    y = holdout["label"].to_numpy()
    auc = {name: classification_metrics(y, p)["auc"] for name, p in [
        ("model", learned), ("oracle", true_p),
        ("history", _best_from_history(con, holdout, plan.holdout, truth, goal.outcome_window_days)["purchase"])]}
    # Measured (docs/customer-ai.md): model 0.812, best from history 0.823, oracle 0.846. What
    # separates the oracle from the best estimate is information the ~46 days of history before
    # the holdout cut-off do not hold (the exact activity rate), not something a model can learn.
    assert auc["oracle"] - auc["history"] > 0.015, auc
    assert auc["model"] > auc["history"] - 0.03, auc  # the issue's 0.03, against what history allows
    assert auc["model"] > auc["oracle"] - 0.045, auc  # and the measured gap to the oracle (0.035)


def test_scores_percentiles_buckets_and_factors(purchase):
    goal, con, profiles, plan, model, _ = purchase
    goal = goal.model_copy(update={"buckets": goal.buckets.model_copy(update={"medium_from": 30, "high_from": 50}),
                                   "top_factors": 4})
    scores = score_goal(con, model, goal, profiles, plan.scoring)
    assert scores["probability"].between(0, 1).all()
    assert np.allclose(scores["score"], np.round(scores["probability"] * 100, 1))
    # percentiles uniform: every percentile 1..100 holds 1% of the profiles (+-1 profile)
    counts = scores["percentile"].value_counts()
    assert set(counts.index) == set(range(1, 101))
    assert counts.max() - counts.min() <= 1
    # buckets follow the configured cut-offs
    expected = np.select([scores["score"] >= 50, scores["score"] >= 30], ["high", "medium"], "low")
    assert (scores["bucket"] == expected).all()
    assert set(scores["bucket"]) == {"low", "medium", "high"}
    # four factors, largest first, with direction and share of the row's total contribution
    assert {f"factor_{k}_{part}" for k in range(1, 5) for part in ("impact", "direction", "importance")} <= set(scores)
    assert (scores["factor_1_impact"].abs() >= scores["factor_4_impact"].abs()).all()
    assert ((scores["factor_1_impact"] >= 0) == (scores["factor_1_direction"] == "raises")).all()
    assert scores[[f"factor_{k}_importance" for k in range(1, 5)]].sum(axis=1).between(0, 1.0001).all()


def test_batched_scoring_equals_scoring_every_profile_at_once(purchase, monkeypatch):
    """score_goal streams the features from a Parquet file in batches: the same rows, order,
    probabilities and factors as one feature frame of every eligible profile."""
    goal, con, profiles, plan, model, _ = purchase
    ids = eligible_profiles(con, goal, plan.scoring)
    frame = feature_frame(con, goal, profiles, ids, plan.scoring)
    probability, factors = model.predict_with_factors(frame, top=goal.top_factors)
    expected = pd.concat([score_table(probability, ids, goal.buckets.medium_from, goal.buckets.high_from), factors],
                         axis=1)
    batched = score_goal(con, model, goal, profiles, plan.scoring, batch_rows=700)
    assert len(batched) == len(ids) > 2 * 700  # several batches, the last one partial
    pd.testing.assert_frame_equal(batched, expected)
    # Past profiles_per_query, one feature query per hash partition (3 here): the same table.
    import offerflow.customer_ai.propensity as propensity

    queries = []
    real = propensity.write_interaction_features
    monkeypatch.setattr(propensity, "write_interaction_features",
                        lambda *a, **k: queries.append(real(*a, **k)) or queries[-1])
    partitioned = score_goal(con, model, goal, profiles, plan.scoring, batch_rows=700, profiles_per_query=1_000)
    assert len(queries) == 3 and sum(queries) == len(ids) and min(queries) > 0
    pd.testing.assert_frame_equal(partitioned, expected)


def test_a_training_sample_gets_the_same_features_from_a_semi_join(purchase):
    goal, con, profiles, plan, _, _ = purchase
    ids = profiles["profile_id"].sample(300, random_state=1).sort_values(ignore_index=True)
    pd.testing.assert_frame_equal(feature_frame(con, goal, profiles, ids, plan.train[-1], only_these=True),
                                  feature_frame(con, goal, profiles, ids, plan.train[-1]))


def test_factors_name_the_attributes_the_generator_uses(purchase):
    goal, con, profiles, plan, model, _ = purchase
    scores = score_goal(con, model, goal, profiles, plan.scoring)
    # purchase rate: tier, opt-in, tenure, and activity seen through display/click/purchase history;
    # age, country and favourite category play no part in it.
    used = ("loyalty_tier", "email_opt_in", "tenure_days", "count_", "days_since_", "value_purchase", "active_days_",
            "per_day_", "active_share_")
    top = scores["factor_1"]
    assert top.map(lambda n: n.startswith(used)).mean() > 0.95, top.value_counts().head(8)
    unused = scores[["factor_1", "factor_2", "factor_3"]].isin(["age", "country", "favorite_category"])
    assert unused.to_numpy().mean() < 0.1


def test_churn_goal_predicts_who_stops_visiting(world_dir):
    goal, con, _, plan, model, holdout = _fit(world_dir, CHURN)
    assert goal.goal.occurrence == "will_not_occur"
    y = holdout["label"].to_numpy()
    learned = model.predict(holdout)
    # truth: P(no web visit in 14 days) = (1 - activity)^14 (almost every visitor is shown an offer)
    true_churn = (1 - holdout["activity"].to_numpy()) ** goal.outcome_window_days
    assert spearmanr(learned, true_churn).statistic > 0.6
    truth, _ = load_truth(world_dir)
    best = _best_from_history(con, holdout, plan.holdout, truth, goal.outcome_window_days)["no_visit"]
    auc = {name: classification_metrics(y, p)["auc"] for name, p in
           [("model", learned), ("oracle", true_churn), ("history", best)]}
    assert auc["model"] > auc["history"] - 0.03 and auc["model"] > auc["oracle"] - 0.06, auc


def test_too_little_data_says_how_many_examples_it_found(world_dir):
    goal = PropensityGoalConfig.model_validate({**PURCHASE, "min_positives": 10**6})
    con = open_events(world_dir / "events.parquet")
    plan = plan_cutoffs(*event_time_range(con), goal)
    examples = build_examples(con, goal, pd.read_parquet(world_dir / "profiles.parquet"), plan.train)
    positives = int(examples["label"].sum())
    with pytest.raises(GoalError) as raised:
        check_enough_examples(examples, goal)
    assert str(raised.value) == (f"propensity goal 'purchase_14d': too little data: found {positives} positive and"
                                 f" {len(examples) - positives} negative examples, need at least 1000000 and 200")

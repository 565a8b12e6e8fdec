"""Customer AI: propensity models that predict whether a profile reaches a goal within N days.

Training examples are snapshots at several cut-off dates: features from events before the cut-off
(`features.interaction_features`) plus profile attributes, the label from the outcome window after
it (`goals.label_goal`). The split is by time: the most recent training cut-off validates early
stopping, and the holdout cut-off (one outcome window before the end of the data) is never seen in
training, so the holdout metrics estimate how the model does on the future.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pandas as pd

from offerflow.config import LightGBMParams, PropensityGoalConfig
from offerflow.features import categorical_columns, categories_of, encode, interaction_features
from offerflow.goals import GoalError, eligible_profiles, label_goal
from offerflow.schema import PROFILE_ID

BUCKETS = ("low", "medium", "high")


@dataclass(frozen=True)
class CutoffPlan:
    train: list[datetime]  # oldest first; the last one validates early stopping
    holdout: datetime
    scoring: datetime


def plan_cutoffs(first_event: datetime, last_event: datetime, goal: PropensityGoalConfig,
                 step_days: int = 7, min_history_days: int = 7) -> CutoffPlan:
    """Cut-off dates on day boundaries: holdout = end - window, training cut-offs every week before.

    Training labels end before the holdout cut-off, so no training label overlaps the holdout's.
    """
    end = pd.Timestamp(last_event).ceil("D").to_pydatetime()
    start = pd.Timestamp(first_event).floor("D").to_pydatetime()
    window = timedelta(days=goal.outcome_window_days)
    holdout = end - window
    latest_train = holdout - window
    earliest = start + timedelta(days=min_history_days)
    train = []
    cutoff = latest_train
    while cutoff >= earliest:
        train.append(cutoff)
        cutoff -= timedelta(days=step_days)
    if len(train) < 2:
        needed = 2 * goal.outcome_window_days + min_history_days + step_days
        raise GoalError(f"propensity goal {goal.name!r}: the events span {(end - start).days} days, but an"
                        f" outcome window of {goal.outcome_window_days} days needs at least {needed}")
    return CutoffPlan(train=sorted(train), holdout=holdout, scoring=end)


def feature_frame(con: duckdb.DuckDBPyConnection, goal: PropensityGoalConfig, profiles: pd.DataFrame,
                  profile_ids: pd.Series, cutoff: datetime) -> pd.DataFrame:
    """Features for `profile_ids` as of `cutoff`: interaction history + profile attributes."""
    event_types = ["display", "click", "purchase", *goal.custom_event_types]
    history = interaction_features(con, cutoff, goal.lookback_days, list(dict.fromkeys(event_types)))
    attributes = profiles if goal.profile_attributes is None else profiles[[PROFILE_ID, *goal.profile_attributes]]
    frame = pd.DataFrame({PROFILE_ID: profile_ids.to_numpy()})
    frame = frame.merge(history, on=PROFILE_ID, how="left").merge(attributes, on=PROFILE_ID, how="left")
    counts = [c for c in frame.columns if c.startswith(("count_", "value_"))]
    frame[counts] = frame[counts].fillna(0)
    return frame


def build_examples(con: duckdb.DuckDBPyConnection, goal: PropensityGoalConfig, profiles: pd.DataFrame,
                   cutoffs: list[datetime]) -> pd.DataFrame:
    """Labelled snapshots at each cut-off, with columns `profile_id, cutoff, label` + features."""
    parts = []
    for cutoff in cutoffs:
        labels = label_goal(con, goal, cutoff)
        features = feature_frame(con, goal, profiles, labels[PROFILE_ID], cutoff)
        parts.append(features.assign(cutoff=cutoff, label=labels["label"].to_numpy()))
    return pd.concat(parts, ignore_index=True)


def check_enough_examples(examples: pd.DataFrame, goal: PropensityGoalConfig) -> None:
    positives = int(examples["label"].sum())
    negatives = int(len(examples) - positives)
    if positives < goal.min_positives or negatives < goal.min_negatives:
        raise GoalError(f"propensity goal {goal.name!r}: too little data: found {positives} positive and"
                        f" {negatives} negative examples, need at least {goal.min_positives} and"
                        f" {goal.min_negatives}")


@dataclass
class PropensityModel:
    """A fitted LightGBM classifier plus what it needs to turn a feature frame into its input."""

    booster: object  # lightgbm.LGBMClassifier
    feature_columns: list[str]
    categories: dict[str, list[str]]
    holdout_metrics: dict[str, float] = field(default_factory=dict)

    def matrix(self, frame: pd.DataFrame) -> pd.DataFrame:
        return encode(frame[self.feature_columns], self.categories)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return self.booster.predict_proba(self.matrix(frame))[:, 1]

    def predict_with_factors(self, frame: pd.DataFrame, top: int = 3) -> tuple[np.ndarray, pd.DataFrame]:
        """Probabilities and the `top` most influential features per row (LightGBM `pred_contrib`,
        SHAP values in log-odds): columns `factor_<k>`, `factor_<k>_impact` (signed), k = 1..top."""
        contributions = self.booster.predict(self.matrix(frame), pred_contrib=True)
        per_feature, base = contributions[:, :-1], contributions[:, -1]
        probability = 1.0 / (1.0 + np.exp(-(per_feature.sum(axis=1) + base)))
        top = min(top, per_feature.shape[1])
        order = np.argsort(-np.abs(per_feature), axis=1)[:, :top]
        names = np.asarray(self.feature_columns, dtype=object)
        factors = {}
        for k in range(top):
            factors[f"factor_{k + 1}"] = names[order[:, k]]
            factors[f"factor_{k + 1}_impact"] = np.take_along_axis(per_feature, order[:, k:k + 1], axis=1)[:, 0]
        return probability, pd.DataFrame(factors)


def fit_propensity_model(examples: pd.DataFrame, params: LightGBMParams, seed: int) -> PropensityModel:
    """Fit on all but the latest training cut-off; early-stop on the latest one (a time split)."""
    import lightgbm as lgb

    feature_columns = [c for c in examples.columns if c not in (PROFILE_ID, "cutoff", "label")]
    categories = categories_of(examples, categorical_columns(examples[feature_columns]))
    latest = examples["cutoff"].max()
    train, valid = examples[examples["cutoff"] < latest], examples[examples["cutoff"] == latest]
    positives = max(int(train["label"].sum()), 1)
    model = lgb.LGBMClassifier(
        **params.classifier_kwargs(seed),
        # Imbalance: weight positives up to the negatives' mass, at most 10x.
        scale_pos_weight=float(min(10.0, max(1.0, (len(train) - positives) / positives))),
    )
    encoded = encode(examples[feature_columns], categories)
    model.fit(encoded.loc[train.index], train["label"], eval_X=(encoded.loc[valid.index],), eval_y=(valid["label"],),
              eval_metric="auc", callbacks=[lgb.early_stopping(params.early_stopping_rounds, verbose=False)])
    return PropensityModel(model, feature_columns, categories)


def score_table(probability: np.ndarray, profile_ids: pd.Series, medium_from: float = 25,
                high_from: float = 75) -> pd.DataFrame:
    """Probability (0-1), score (0-100), percentile (1-100) and bucket per profile."""
    n = len(probability)
    # Tree models give many profiles the very same probability; ranking ties by position keeps
    # percentiles uniform (each holds 1% of profiles), as segment sizes by percentile expect.
    ranks = pd.Series(probability).rank(method="first").to_numpy()
    percentile = np.ceil(ranks / max(n, 1) * 100).clip(1, 100).astype(np.int16)
    score = np.round(probability * 100, 1)
    bucket = np.where(score >= high_from, "high", np.where(score >= medium_from, "medium", "low"))
    return pd.DataFrame({PROFILE_ID: profile_ids.to_numpy(), "probability": probability,
                         "score": score, "percentile": percentile, "bucket": bucket})


def score_goal(con: duckdb.DuckDBPyConnection, model: PropensityModel, goal: PropensityGoalConfig,
               profiles: pd.DataFrame, as_of: datetime) -> pd.DataFrame:
    """Score every eligible profile as of `as_of` (features from events before it only), with the
    top influential factors of each score."""
    ids = eligible_profiles(con, goal, as_of)
    frame = feature_frame(con, goal, profiles, ids, as_of)
    probability, factors = model.predict_with_factors(frame)
    return pd.concat([score_table(probability, ids), factors], axis=1)

"""Customer AI: propensity models that predict whether a profile reaches a goal within N days.

Training examples are snapshots at several cut-off dates: features from events before the cut-off
(`features.interaction_features`) plus profile attributes, the label from the outcome window after
it (`goals.label_goal`). The split is by time: the most recent training cut-off validates early
stopping, and the holdout cut-off (one outcome window before the end of the data) is never seen in
training, so the holdout metrics estimate how the model does on the future.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from offerflow.core.config import CHANNELS, LightGBMParams, PropensityGoalConfig
from offerflow.core.features import (categorical_columns, categories_of, encode, feature_matrix,
                                interaction_features, safe_name, write_interaction_features)
from offerflow.customer_ai.goals import GoalError, HistoryTooShort, eligible_condition, label_goal
from offerflow.core.partitions import in_sample, partition_of, sample_share
from offerflow.core.schema import PROFILE_ID

BUCKETS = ("low", "medium", "high")
#: Profiles scored at a time by `score_goal` (memory: their features, contributions and factors).
SCORING_BATCH_ROWS = 500_000
#: Profiles whose features one DuckDB query aggregates when scoring (more: one query per partition).
SCORING_PROFILES_PER_QUERY = 1_000_000
#: Profiles (a stable hash sample) whose features each scoring run compares with the previous run's.
DRIFT_SAMPLE_PROFILES = 20_000


@dataclass(frozen=True)
class CutoffPlan:
    train: list[datetime]  # oldest first; the last one validates early stopping
    holdout: datetime
    scoring: datetime


def plan_cutoffs(first_event: datetime, last_event: datetime, goal: PropensityGoalConfig,
                 step_days: int = 7, min_history_days: int = 7) -> CutoffPlan:
    """Cut-off dates on day boundaries: holdout = end - window, training cut-offs every week before,
    as many as fit (at least one).

    Training labels end before the holdout cut-off, so no training label overlaps the holdout's;
    the earliest cut-off has `min_history_days` of events before it. So one training cut-off needs
    `2 * outcome_window_days + min_history_days` days of events; each further one, `step_days`
    more. With fewer, `HistoryTooShort` (docs/customer-ai.md has a worked example).
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
    if not train:
        needed, days = 2 * goal.outcome_window_days + min_history_days, goal.outcome_window_days
        span = f"{(end - start).days} day{'' if (end - start).days == 1 else 's'}"
        raise HistoryTooShort(f"propensity goal {goal.name!r}: the events span {span}, but an"
                              f" outcome window of {days} day{'' if days == 1 else 's'} needs at least {needed}"
                              f" ({min_history_days} of history, a training outcome window, a holdout one)")
    return CutoffPlan(train=sorted(train), holdout=holdout, scoring=end)


def history_too_short(events_path: Path, goal: PropensityGoalConfig) -> str | None:
    """Why the events at `events_path` are too short for even one training cut-off of `goal`
    (`plan_cutoffs`' message, ending in "skipped"), or None when the goal can train: the flows
    skip such a goal with this one-line warning and go on with the rest of the run."""
    from offerflow.core.features import event_time_range, open_events

    try:
        plan_cutoffs(*event_time_range(open_events(events_path)), goal)
    except HistoryTooShort as exc:
        return f"{exc}; skipped"
    return None


def feature_frame(con: duckdb.DuckDBPyConnection, goal: PropensityGoalConfig, profiles: pd.DataFrame,
                  profile_ids: pd.Series, cutoff: datetime, *, only_these: bool = False) -> pd.DataFrame:
    """Features for `profile_ids` as of `cutoff`: interaction history + profile attributes.

    With `only_these`, DuckDB aggregates the history of `profile_ids` alone (a semi-join): the
    same rows, cheaper when they are a small share of the profiles (a training sample).
    """
    history = interaction_features(con, cutoff, goal.lookback_days, _event_types(goal), active_day_channels=CHANNELS,
                                   profile_ids=profile_ids if only_these else None,
                                   history_event_types=_history_event_types(goal))
    frame = pd.DataFrame({PROFILE_ID: profile_ids.to_numpy()}).merge(history, on=PROFILE_ID, how="left")
    return _with_attributes(_with_bgnbd(frame, goal), profile_attributes(goal, profiles).set_index(PROFILE_ID))


def _bgnbd_event_type(goal: PropensityGoalConfig) -> str:
    """The whole-history event BG/NBD models: the goal's `event_type ==` condition when it names
    one of them, else purchases."""
    history = _history_event_types(goal)
    for condition in [*goal.goal.all_of, *goal.goal.any_of]:
        if condition.field == "event_type" and condition.operator == "==" and condition.value in history:
            return str(condition.value)
    return "purchase"


def _with_bgnbd(history: pd.DataFrame, goal: PropensityGoalConfig) -> pd.DataFrame:
    """History rows with BG/NBD's features (`bgnbd.add_features`), fitted on these rows, when the
    goal asks for them; the same call at training, holdout and scoring."""
    if not goal.bgnbd_features:
        return history
    from offerflow.customer_ai.bgnbd import add_features

    return add_features(history, safe_name(_bgnbd_event_type(goal)), goal.outcome_window_days)


def profile_attributes(goal: PropensityGoalConfig, profiles: pd.DataFrame) -> pd.DataFrame:
    """The profile columns the goal's model reads (all of them unless `profile_attributes` says)."""
    if goal.profile_attributes is None:
        return profiles
    unknown = [a for a in goal.profile_attributes if a not in profiles.columns or a == PROFILE_ID]
    if unknown:
        known = ", ".join(c for c in profiles.columns if c != PROFILE_ID)
        raise GoalError(f"propensity_goals[{goal.name}].profile_attributes: unknown profile attribute(s)"
                        f" {', '.join(map(repr, unknown))} (attributes: {known})")
    return profiles[[PROFILE_ID, *goal.profile_attributes]]


def _event_types(goal: PropensityGoalConfig) -> list[str]:
    return list(dict.fromkeys(["display", "click", "purchase", *goal.custom_event_types]))


def _history_event_types(goal: PropensityGoalConfig) -> list[str]:
    """The sparse events that get whole-history features (recency, frequency, tenure, gaps, value)."""
    return list(dict.fromkeys(["purchase", *goal.custom_event_types]))


def _with_attributes(history: pd.DataFrame, attributes: pd.DataFrame) -> pd.DataFrame:
    """History rows completed with the profile attributes (`attributes` indexed by profile id);
    a profile without events in a window has counts of 0 there (not unknown)."""
    extra = attributes.reindex(history[PROFILE_ID].to_numpy()).reset_index(drop=True)
    frame = pd.concat([history.reset_index(drop=True), extra], axis=1)
    counts = [c for c in frame.columns if c.startswith(("count_", "value_", "active_days_", "per_day_", "active_share_"))]
    frame[counts] = frame[counts].fillna(0)
    return frame


def build_examples(con: duckdb.DuckDBPyConnection, goal: PropensityGoalConfig, profiles: pd.DataFrame,
                   cutoffs: list[datetime]) -> pd.DataFrame:
    """Labelled snapshots at each cut-off, with columns `profile_id, cutoff, label` + features.

    Beyond `goal.max_training_profiles` profiles only a stable sample of them gives snapshots: the
    holdout AUC hardly moves (docs/customer-ai.md) while memory and time stop growing with the
    number of profiles. Scoring (`score_goal`) always covers every profile.
    """
    share = sample_share(goal.max_training_profiles, len(profiles))
    parts = []
    for cutoff in cutoffs:
        labels = label_goal(con, goal, cutoff)
        labels = labels[in_sample(labels[PROFILE_ID], share)].reset_index(drop=True)
        features = feature_frame(con, goal, profiles, labels[PROFILE_ID], cutoff, only_these=share < 1.0)
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

    def numeric_matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """The features as float64, categoricals as training-time codes (LightGBM's own encoding)."""
        return feature_matrix(frame, self.feature_columns, self.categories)

    @property
    def n_trees(self) -> int:
        """Trees the classifier predicts with (the best iteration when early stopping fired)."""
        return int(self.booster.best_iteration_ or self.booster.booster_.current_iteration())

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        # The float matrix, not the pandas frame: the same predictions whether the classifier was
        # fitted on pandas (here) or on float blocks (lightgbm.dask, `cluster_training`).
        return self.booster.booster_.predict(self.numeric_matrix(frame), num_iteration=self.n_trees)

    def contributions(self, frame: pd.DataFrame, method: str = "grouped") -> np.ndarray:
        """Per-row SHAP contributions (log-odds), shape (n, n_features + 1), last column the base.

        `plain` is LightGBM's `pred_contrib` on every row; `grouped` gives the same numbers (see
        `contributions.grouped_contributions`) many times faster.
        """
        if method == "plain":
            return self.booster.booster_.predict(self.numeric_matrix(frame), pred_contrib=True,
                                                 num_iteration=self.n_trees)
        from offerflow.customer_ai.contributions import grouped_contributions

        return grouped_contributions(self.booster.booster_, self.numeric_matrix(frame), self.n_trees)

    def predict_with_factors(self, frame: pd.DataFrame, top: int = 3,
                             method: str = "grouped") -> tuple[np.ndarray, pd.DataFrame]:
        """Probabilities and the `top` most influential features of each row.

        Returns columns `factor_<k>` (feature name), `factor_<k>_impact` (signed SHAP value in
        log-odds), `factor_<k>_direction` (`raises` / `lowers` the probability) and
        `factor_<k>_importance` (share of the row's total absolute contribution, 0-1), k = 1..top.
        """
        contributions = self.contributions(frame, method)
        per_feature, base = contributions[:, :-1], contributions[:, -1]
        probability = 1.0 / (1.0 + np.exp(-(per_feature.sum(axis=1) + base)))
        return probability, top_factors(per_feature, self.feature_columns, top)


def top_factors(per_feature: np.ndarray, names: list[str], top: int) -> pd.DataFrame:
    """The `top` features with the largest absolute contribution per row, largest first."""
    top = min(top, per_feature.shape[1])
    magnitude = np.abs(per_feature)
    total = magnitude.sum(axis=1)
    # Stable sort on the negated magnitude: ties (e.g. unused features at 0) keep column order.
    order = np.argsort(-magnitude, axis=1, kind="stable")[:, :top]
    impact = np.take_along_axis(per_feature, order, axis=1)
    share = np.divide(np.abs(impact), total[:, None], out=np.zeros_like(impact), where=total[:, None] > 0)
    labels = np.asarray(names, dtype=object)
    factors: dict[str, np.ndarray] = {}
    for k in range(top):
        factors[f"factor_{k + 1}"] = labels[order[:, k]]
        factors[f"factor_{k + 1}_impact"] = impact[:, k]
        factors[f"factor_{k + 1}_direction"] = np.where(impact[:, k] >= 0, "raises", "lowers").astype(object)
        factors[f"factor_{k + 1}_importance"] = np.round(share[:, k], 4)
    return pd.DataFrame(factors)


#: The one metric early stopping watches. LightGBM otherwise also evaluates its objective's default
#: (binary_logloss) and, without `first_metric_only`, stops on whichever stalls first: with
#: up-weighted positives the log loss rose from the first round and the model kept 1 tree.
EARLY_STOPPING_METRIC = {"metric": "auc"}


def fit_propensity_model(examples: pd.DataFrame, params: LightGBMParams, seed: int) -> PropensityModel:
    """Early-stop on the validation rows' AUC, then refit on every example with that many trees.

    Validation (`PropensityTrainingData`): every snapshot of a stable hash share of the profiles,
    which never train; the other profiles train. The final model is then refitted with the trees
    early stopping kept on every snapshot, the latest cut-off (the longest history, the closest to
    the scoring date's) and the held-out profiles included.

    No class weights: AUC, which early stopping and promotion use, ranks and does not need them,
    and without them the probabilities stay calibrated (a score of 30 means about a 30% chance),
    which the buckets and the "expected conversions" of a segment rely on.
    """
    import lightgbm as lgb

    data = PropensityTrainingData.of(examples)
    encoded = encode(examples[data.feature_columns], data.categories)
    train, valid = data.train, data.valid
    stopper = lgb.LGBMClassifier(**{**params.classifier_kwargs(seed), **EARLY_STOPPING_METRIC})
    stopper.fit(encoded[train], data.labels[train], eval_X=(encoded[valid],), eval_y=(data.labels[valid],),
                callbacks=[lgb.early_stopping(params.early_stopping_rounds, first_metric_only=True, verbose=False)])
    trees = int(stopper.best_iteration_ or stopper.booster_.current_iteration())
    model = lgb.LGBMClassifier(**{**params.classifier_kwargs(seed), **EARLY_STOPPING_METRIC, "n_estimators": trees})
    model.fit(encoded, data.labels)
    return PropensityModel(model, data.feature_columns, data.categories)


#: The share of profiles (a stable hash sample) whose snapshots validate early stopping; they never
#: train the model that early stopping measures.
VALIDATION_SHARE = 0.2


@dataclass
class PropensityTrainingData:
    """What every trainer of a propensity model (here, or `cluster_training` on Dask) derives from
    the snapshots the same way: the feature columns, their categories, the labels, and the
    early-stopping split by profiles: `valid`, every snapshot of a stable hash sample of
    `VALIDATION_SHARE` of the profiles; `train`, every snapshot of the others.

    Not by time: snapshots a week apart share most of their history and most of their outcome
    window, and whole-history features such as the total spent nearly identify a profile, so with
    the latest cut-off validating, the same profiles' earlier snapshots in training gave its label
    away. On CDNOW (tuning cut-off, 8,000 customers) the validation AUC kept rising to the 400-tree
    cap while the holdout AUC fell: 0.794 (learning rate 0.05), 0.773 (0.1); validated on profiles
    that never train it stops at 11-18 trees with 0.808-0.809. Pooling the held-out profiles'
    snapshots of every cut-off (not only the latest) gives early stopping 5-40x more rows: on the
    3,000-profile world 50 trees and 0.811 instead of 7 trees and 0.808."""

    feature_columns: list[str]
    categories: dict[str, list[str]]
    labels: np.ndarray
    train: np.ndarray
    valid: np.ndarray

    @classmethod
    def of(cls, examples: pd.DataFrame) -> "PropensityTrainingData":
        feature_columns = [c for c in examples.columns if c not in (PROFILE_ID, "cutoff", "label")]
        categories = categories_of(examples, categorical_columns(examples[feature_columns]))
        cutoffs = examples["cutoff"].to_numpy()
        held_out = validation_profiles(examples[PROFILE_ID], VALIDATION_SHARE)
        return cls(feature_columns, categories, examples["label"].to_numpy(), ~held_out, held_out)


def validation_profiles(profile_ids: pd.Series, share: float) -> np.ndarray:
    """Whether each profile validates: a stable hash sample of `share` of the profiles, salted so
    that it is independent of the training sample (`partitions.in_sample`) and the partitions."""
    salted = ("validation:" + profile_ids.astype(str)).to_numpy(dtype=object)
    return partition_of(salted, 1_000_000) < round(share * 1_000_000)


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


@dataclass
class GoalScorer:
    """A goal's model as a registered MLflow model predicts (`mlflow.pyfunc`, see
    `models.registry.register_propensity`): a frame with the model's feature columns (as
    `feature_frame` builds them, string categoricals as they are) -> `probability, score,
    percentile, bucket` per row, by `PropensityModel.predict` and `score_table` (percentiles among
    the rows given), with `profile_id` first when the frame has it."""

    model: PropensityModel
    medium_from: float = 25
    high_from: float = 75

    def __call__(self, frame: pd.DataFrame) -> pd.DataFrame:
        ids = frame[PROFILE_ID] if PROFILE_ID in frame else pd.Series(frame.index)
        table = score_table(self.model.predict(frame), ids, self.medium_from, self.high_from)
        return table if PROFILE_ID in frame else table.drop(columns=PROFILE_ID)


def score_goal(con: duckdb.DuckDBPyConnection, model: PropensityModel, goal: PropensityGoalConfig,
               profiles: pd.DataFrame, as_of: datetime, *, batch_rows: int = SCORING_BATCH_ROWS,
               profiles_per_query: int = SCORING_PROFILES_PER_QUERY) -> pd.DataFrame:
    """Score every eligible profile as of `as_of` (features from events before it only), with the
    top influential factors of each score; one row per eligible profile.

    DuckDB writes the features of the eligible profiles to a temporary Parquet file sorted by
    profile id, which is then scored `batch_rows` profiles at a time: memory grows with a batch,
    not with the number of profiles. Beyond `profiles_per_query` profiles this runs once per hash
    partition of the profiles: one query over 10 million profiles aggregated ~10^8 (profile,
    channel, day) groups and spilled over 40 GB to disk; with 2 million profiles a query came
    within DuckDB's 4 GiB cap and failed once; with 1 million it peaks at ~2 GiB (42 s a
    query at 10M profiles). Rows come sorted by profile id.
    """
    attributes = profile_attributes(goal, profiles).set_index(PROFILE_ID)
    parts = max(1, -(-len(profiles) // profiles_per_query))
    ids, probabilities, factors = [], [], []
    with tempfile.TemporaryDirectory(prefix="offerflow-scoring-") as tmp:
        for part in range(parts):
            where = eligible_condition(goal, as_of, f"hash(profile_id) % {parts} = {part}" if parts > 1 else "TRUE")
            path = _write_goal_features(con, goal, as_of, where, Path(tmp) / f"features-{part}.parquet")
            for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
                history = batch.to_pandas()
                probability, top = model.predict_with_factors(_with_attributes(_with_bgnbd(history, goal), attributes),
                                                              top=goal.top_factors)
                ids.append(history[PROFILE_ID])
                probabilities.append(probability)
                factors.append(top)
            path.unlink()
    if not ids:
        ids = [pd.Series([], dtype=object)]
        probabilities = [np.empty(0)]
        factors = [top_factors(np.empty((0, len(model.feature_columns))), model.feature_columns, goal.top_factors)]
    ids, probability = pd.concat(ids, ignore_index=True), np.concatenate(probabilities)
    factors = pd.concat(factors, ignore_index=True)
    if parts > 1:  # one order, by profile id, whatever the partitions (percentile ties follow it)
        order = np.argsort(ids.to_numpy(dtype=object), kind="stable")
        ids, probability = ids.iloc[order].reset_index(drop=True), probability[order]
        factors = factors.iloc[order].reset_index(drop=True)
    table = score_table(probability, ids, goal.buckets.medium_from, goal.buckets.high_from)
    return pd.concat([table, factors], axis=1)


def _write_goal_features(con: duckdb.DuckDBPyConnection, goal: PropensityGoalConfig, as_of: datetime, where: str,
                         path: Path) -> Path:
    """The goal's event features as of `as_of` of the profiles `where` says, as a Parquet file."""
    write_interaction_features(con, path, as_of, goal.lookback_days, _event_types(goal), active_day_channels=CHANNELS,
                               where=where, history_event_types=_history_event_types(goal))
    return path


def feature_sample(con: duckdb.DuckDBPyConnection, model: PropensityModel, goal: PropensityGoalConfig,
                   profiles: pd.DataFrame, as_of: datetime, max_profiles: int = DRIFT_SAMPLE_PROFILES) -> pd.DataFrame:
    """The numeric features of `model` (float64; categoricals left out) for a stable hash sample of
    the profiles eligible as of `as_of`, about `max_profiles` of them: what drift between scoring
    runs is measured on (`customer_ai.drift`). The same profiles are sampled run after run."""
    buckets = max(1, -(-len(profiles) // max_profiles))
    where = eligible_condition(goal, as_of, f"hash(profile_id) % {buckets} = 0")
    with tempfile.TemporaryDirectory(prefix="offerflow-drift-") as tmp:
        history = pd.read_parquet(_write_goal_features(con, goal, as_of, where, Path(tmp) / "features.parquet"))
    frame = _with_attributes(_with_bgnbd(history, goal), profile_attributes(goal, profiles).set_index(PROFILE_ID))
    matrix = pd.DataFrame(model.numeric_matrix(frame), columns=model.feature_columns)
    return matrix[[c for c in model.feature_columns if c not in model.categories]]


def backtest_scores(con: duckdb.DuckDBPyConnection, goal: PropensityGoalConfig, scores: pd.DataFrame,
                    as_of: datetime) -> dict[str, float]:
    """As-of scores against what really happened in the outcome window after `as_of`.

    Returns `classification_metrics` (auc, gini, pr_auc, ...) plus `observed_days`: days of events
    after `as_of` inside the window (less than `outcome_window_days` means a partial window).
    """
    from offerflow.core.metrics import classification_metrics
    from offerflow.core.features import event_time_range

    _, last = event_time_range(con)
    if last <= as_of:
        raise GoalError(f"propensity goal {goal.name!r}: no events after {as_of:%Y-%m-%d}, nothing to backtest against")
    # the data ends at midnight after its last event, as for the holdout cut-off (`plan_cutoffs`)
    observed = (pd.Timestamp(last).ceil("D") - pd.Timestamp(as_of)).total_seconds() / 86400
    labels = label_goal(con, goal, as_of)
    joined = scores[[PROFILE_ID, "probability"]].merge(labels, on=PROFILE_ID, how="inner")
    metrics = classification_metrics(joined["label"].to_numpy(), joined["probability"].to_numpy())
    return {**metrics, "observed_days": float(min(observed, goal.outcome_window_days))}

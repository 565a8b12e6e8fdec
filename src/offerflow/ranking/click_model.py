"""The personalized click model: P(success | profile, offer) with LightGBM over profile and offer
attributes and the offer id, its training data (the interaction log of displays and successes) and
its score matrix (`ClickModel.score_matrix`, a `tables.ScoreFn`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from offerflow.core.config import LightGBMParams
from offerflow.core.features import (EVENTS_VIEW, categorical_columns, categories_of, encode, feature_matrix,
                                profile_filter, query_frame)
from offerflow.ranking.compiled_predict import BoosterPredictor, CompileMode
from offerflow.ranking.interactions import BaseChoice, InteractionBase, choose_interaction_base
from offerflow.core.schema import PROFILE_ID

#: Offer columns that describe the catalog entry rather than the offer itself.
OFFER_BOOKKEEPING = ("name", "placements", "eligibility", "fallback", "caps")
#: The one metric a click model's early stopping watches on the validation rows.
STOPPING_METRIC = "auc"
#: Where a click model's holdout starts in its time-sorted training frame: the last 20% of displays.
HOLDOUT_FROM = 0.8


def interaction_log(con: duckdb.DuckDBPyConnection, placement_ids: list[str], start: datetime,
                    end: datetime, success_event: str = "click",
                    profile_ids: pd.Series | None = None) -> pd.DataFrame:
    """Displays in [start, end) on the placements, each with `success` = 1 if the success event
    (a click by default) happened for its offer in the same decision, and `value` = the summed
    value of those success events (0 without one); only the displays to `profile_ids` when given.
    Columns: profile_id, offer_id, placement_id, timestamp, propensity, success, value."""
    marks = ", ".join("?" for _ in placement_ids)
    with profile_filter(con, profile_ids, column="d.profile_id") as keep:
        sql = f"""
            WITH s AS (SELECT decision_id, offer_id, SUM(IF(isfinite(value), value, 0)) AS value FROM {EVENTS_VIEW}
                       WHERE event_type = ? AND decision_id IS NOT NULL GROUP BY decision_id, offer_id)
            SELECT d.profile_id, d.offer_id, d.placement_id, d.timestamp, d.propensity,
                   (s.decision_id IS NOT NULL)::TINYINT AS success, COALESCE(s.value, 0)::DOUBLE AS value
            FROM {EVENTS_VIEW} d LEFT JOIN s ON d.decision_id = s.decision_id AND d.offer_id = s.offer_id
            WHERE d.event_type = 'display' AND d.placement_id IN ({marks})
              AND d.timestamp >= ? AND d.timestamp < ? AND {keep}
            ORDER BY d.timestamp, d.profile_id, d.offer_id"""
        return query_frame(con, sql, [success_event, *placement_ids, start, end])


def displays_per_profile(con: duckdb.DuckDBPyConnection, placement_ids: list[str], start: datetime,
                         end: datetime) -> pd.DataFrame:
    """Profiles shown an offer on the placements in [start, end), with their `displays` count."""
    marks = ", ".join("?" for _ in placement_ids)
    return query_frame(con, f"""SELECT profile_id, count(*) AS displays FROM {EVENTS_VIEW}
        WHERE event_type = 'display' AND placement_id IN ({marks}) AND timestamp >= ? AND timestamp < ?
        GROUP BY profile_id ORDER BY profile_id""", [*placement_ids, start, end])


def offer_counts(log: pd.DataFrame) -> pd.DataFrame:
    """Displays, successes and the value of the successes per offer, from an interaction log."""
    if "value" not in log:
        log = log.assign(value=0.0)
    return (log.groupby("offer_id", as_index=False)
               .agg(displays=("success", "size"), successes=("success", "sum"), value=("value", "sum")))


def offer_features(offers: pd.DataFrame) -> pd.DataFrame:
    """Offer columns the model may use: the id and the attributes, prefixed `o_`."""
    keep = [c for c in offers.columns if c not in OFFER_BOOKKEEPING]
    return offers[keep].rename(columns=lambda c: "offer_id" if c == "offer_id" else f"o_{c}")


def profile_features(profiles: pd.DataFrame) -> pd.DataFrame:
    """Profile columns the model may use, prefixed `p_` (profile_id kept for joins)."""
    return profiles.rename(columns=lambda c: c if c == PROFILE_ID else f"p_{c}")


@dataclass
class ClickModel:
    """P(success | profile, offer): LightGBM over profile and offer attributes and the offer id."""

    booster: object  # lightgbm.LGBMClassifier
    feature_columns: list[str]
    categories: dict[str, list[str]]
    qualified_offers: list[str]
    holdout_metrics: dict[str, float] = field(default_factory=dict)
    compile: CompileMode = "auto"
    #: Value of a success per offer id, for value-weighted models: scores become expected value per
    #: display (click probability x value). None ranks by click probability.
    offer_weights: dict[str, float] | None = None
    #: The pairwise-interaction base the trees start from (`ranking.interactions`); None: trees alone.
    base: InteractionBase | None = None
    #: How the trees were counted: the early-stopping metric, its validation values per round and the
    #: best round (with a base, `booster` is then refitted with that many trees: `fit_click_model`).
    stopping: dict[str, Any] = field(default_factory=dict)
    _predictor: BoosterPredictor | None = field(default=None, init=False, repr=False)

    def predictor(self) -> BoosterPredictor:
        """The batch predictor of this model (compiled when a large scoring run asks for it)."""
        if self._predictor is None:
            self._predictor = BoosterPredictor(self.booster, compile=self.compile)
        return self._predictor

    def spec(self) -> dict[str, object]:
        """What `feature_spec.json` stores next to the logged booster: `from_spec` rebuilds the model."""
        return {"feature_columns": self.feature_columns, "categories": self.categories,
                "interaction_base": self.base.to_dict() if self.base is not None else None}

    @classmethod
    def from_spec(cls, booster: object, spec: dict, qualified_offers: list[str],
                  holdout_metrics: dict[str, float] | None = None, compile: CompileMode = "auto") -> ClickModel:
        """The model of a logged booster and its `spec()` (a spec without a base: trees alone)."""
        return cls(booster, list(spec["feature_columns"]), dict(spec["categories"]), list(qualified_offers),
                   dict(holdout_metrics or {}), compile, base=InteractionBase.from_dict(spec.get("interaction_base")))

    def predict_frame(self, frame: pd.DataFrame) -> np.ndarray:
        p = self.booster.predict_proba(encode(frame[self.feature_columns], self.categories))[:, 1]
        if self.base is None:
            return p
        return with_base(p, self.base.logit_rows(feature_matrix(frame, self.feature_columns, self.categories),
                                                 self.feature_columns))

    def predict_pairs(self, frame: pd.DataFrame) -> pd.DataFrame:
        """P(success) (column `p_click`) per row of a profile x offer frame with the model's feature
        columns (`p_<attribute>`, `offer_id`, `o_<attribute>`, as `training_frame` builds them),
        predicted as `score_matrix` predicts (before offer weights): what the registered MLflow
        model returns (`models.registry.register_click_model`)."""
        features = feature_matrix(frame, self.feature_columns, self.categories)
        predictor = BoosterPredictor(self.booster, compile="never")  # not cached: stays picklable
        p = predictor.predict(features)
        if self.base is not None:
            p = with_base(p, self.base.logit_rows(features, self.feature_columns))
        return pd.DataFrame({"p_click": p}, index=frame.index)

    def pair_blocks(self, profiles: pd.DataFrame, offers: pd.DataFrame,
                    max_rows: int = 1_000_000) -> Iterator[tuple[int, int, np.ndarray]]:
        """The model's feature matrix of every profile x offer pair, as (start, stop, block) for
        the profiles [start, stop), profile-major, at most `max_rows` rows per block.

        Profile and offer features are encoded once each, as float matrices, and each block is
        assembled with NumPy (`repeat`/`tile`) instead of a cross-joined DataFrame. The block's
        buffer is reused: use it before asking for the next one.
        """
        return self._blocks(self._side_blocks(profiles, offers), max_rows)

    def _side_blocks(self, profiles: pd.DataFrame,
                     offers: pd.DataFrame) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
        """(profile columns, their feature matrix, offer columns, theirs), each side encoded once."""
        pf, of = profile_features(profiles), offer_features(offers)
        p_cols = [c for c in self.feature_columns if c in pf.columns]
        o_cols = [c for c in self.feature_columns if c in of.columns and c not in p_cols]
        missing = sorted(set(self.feature_columns) - set(p_cols) - set(o_cols))
        if missing:
            raise ValueError(f"the click model needs columns the profiles/offers lack: {', '.join(missing)}")
        return p_cols, feature_matrix(pf, p_cols, self.categories), o_cols, feature_matrix(of, o_cols, self.categories)

    def _blocks(self, sides: tuple[list[str], np.ndarray, list[str], np.ndarray],
                max_rows: int) -> Iterator[tuple[int, int, np.ndarray]]:
        p_cols, p_block, o_cols, o_block = sides
        p_pos = [self.feature_columns.index(c) for c in p_cols]
        o_pos = [self.feature_columns.index(c) for c in o_cols]
        n, m = len(p_block), len(o_block)
        step = max(1, max_rows // max(m, 1))
        pairs = np.empty((min(step, n) * m, len(self.feature_columns)))
        for start in range(0, n, step):
            stop = min(start + step, n)
            block = pairs[: (stop - start) * m]
            block[:, p_pos] = np.repeat(p_block[start:stop], m, axis=0)
            block[:, o_pos] = np.tile(o_block, (stop - start, 1))
            yield start, stop, block

    def score_matrix(self, profiles: pd.DataFrame, offers: pd.DataFrame,
                     max_rows_per_predict: int = 1_000_000) -> np.ndarray:
        """Click probability for every profile x offer pair, shape (n_profiles, n_offers), predicted
        block by block (`pair_blocks`), so nearly all the time goes to the model's predict.

        Offers the model does not personalize score as the worst qualified offer for that
        profile, so they stay rankable and are shown by exploration traffic (see the decision step).
        """
        n, m = len(profiles), len(offers)
        scores = np.empty((n, m))
        predictor = self.predictor()
        predictor.expect_rows(n * m)
        sides = self._side_blocks(profiles, offers)
        for start, stop, block in self._blocks(sides, max_rows_per_predict):
            scores[start:stop] = predictor.predict(block).reshape(stop - start, m)
        if self.base is not None:
            scores = with_base(scores, self.base.logit_matrix(sides[1], sides[0], sides[3], sides[2]))
        if self.offer_weights is not None:
            default = float(np.mean(list(self.offer_weights.values()))) if self.offer_weights else 1.0
            scores *= offers["offer_id"].map(self.offer_weights).fillna(default).to_numpy(float)[None, :]
        qualified = offers["offer_id"].isin(self.qualified_offers).to_numpy()
        if qualified.any() and not qualified.all():
            worst = scores[:, qualified].min(axis=1, keepdims=True)
            scores = np.where(qualified[None, :], scores, worst)
        return scores


def with_base(tree_probability: np.ndarray, base_logit: np.ndarray) -> np.ndarray:
    """sigmoid(base logit + the trees' raw score), the trees' raw score read back from their
    probability (LightGBM's and the compiled predictor's output alike)."""
    p = np.clip(tree_probability, 1e-15, 1 - 1e-15)
    return 1.0 / (1.0 + np.exp(-(base_logit + np.log(p) - np.log1p(-p))))


def training_frame(log: pd.DataFrame, profiles: pd.DataFrame, offers: pd.DataFrame) -> pd.DataFrame:
    """The interaction log joined with profile and offer features (inner join: known ids only)."""
    return (log.merge(profile_features(profiles), on=PROFILE_ID, how="inner")
               .merge(offer_features(offers), on="offer_id", how="inner"))


def holdout_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The holdout of a training frame: its last 20% of displays by time, the rows a click
    model's holdout metrics are measured on (`fit_click_model`, `cluster.fit_click_model_on_cluster`)."""
    frame = frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
    return frame.iloc[int(len(frame) * HOLDOUT_FROM):]


def ips_weights(propensity: pd.Series, clip: float = 20.0) -> np.ndarray:
    """Inverse logging propensities, clipped and normalised to mean 1 (1 where not logged).

    Weighting by 1/propensity makes the training data look as if offers had been shown at
    random: it matters for a model that cannot represent what the logging policy targeted on.
    """
    p = propensity.to_numpy(float)
    w = np.where(np.isfinite(p) & (p > 0), 1.0 / np.clip(p, 1e-6, 1), 1.0)
    w = np.minimum(w, clip * np.median(w))
    return w / w.mean()


#: Whether click models weight displays by inverse logging propensity unless told otherwise. No:
#: P(click | profile, offer) does not depend on how the logging policy chose the offer when that
#: choice depended only on the features the model sees, so weighting mostly adds variance. On
#: both synthetic worlds of bench/external_ranking.py (tuning seeds 1 and 3) unweighted training
#: chose first offers with as high or higher true click rates (docs/ranking-models.md).
IPS_BY_DEFAULT = False


def display_weights(propensity: pd.Series, ips: bool) -> np.ndarray:
    """Training weight of each display: `ips_weights` when `ips`, else 1."""
    return ips_weights(propensity) if ips else np.ones(len(propensity))


#: Whether personalized click models start from the pairwise-interaction base (`ranking.interactions`)
#: unless told otherwise; `AIModelConfig.interaction_base` is the setting (docs/ranking-models.md).
INTERACTIONS_BY_DEFAULT = True


class TooFewToTrain(ValueError):
    """A window whose displays cannot train a click model (see `untrainable`)."""


def untrainable(frame: pd.DataFrame) -> str | None:
    """Why `fit_click_model` cannot train on `frame`, or None: its time split (training, early
    stopping, holdout) needs displays with and without a success in each part."""
    success = frame.sort_values("timestamp", kind="stable")["success"].to_numpy() if len(frame) else np.zeros(0)
    n = len(success)
    parts = np.split(success, [int(n * 0.7), int(n * HOLDOUT_FROM)])
    if all(len(part) and 0 < part.sum() < len(part) for part in parts):
        return None
    return (f"{n:,} displays and {int(success.sum()):,} successes in the window: too few to train a click model"
            " (its training, early-stopping and holdout parts each need displays with and without a success)")


def fit_click_model(frame: pd.DataFrame, params: LightGBMParams, qualified_offers: list[str],
                    seed: int, ips: bool = IPS_BY_DEFAULT, interactions: bool = INTERACTIONS_BY_DEFAULT) -> ClickModel:
    """Time split: first 70% of displays train, next 10% early-stop, last 20% are the holdout.
    `ips`: weight each display by its inverse logging propensity (`ips_weights`). `interactions`:
    choose the pairwise-interaction base (its per-block L2, `choose_interaction_base`) and the trees
    grown on its residuals (LightGBM's `init_score`) with the base fitted on the training rows and
    early stopping on the next 10%, which neither has seen; then fit both again, with the sizes
    chosen, on the training and early-stopping rows (`_refit_with_base`). The holdout stays out."""
    import lightgbm as lgb

    from offerflow.core.metrics import classification_metrics

    frame = frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
    drop = {PROFILE_ID, "placement_id", "timestamp", "propensity", "success", "value"}
    feature_columns = [c for c in frame.columns if c not in drop]
    categories = categories_of(frame, categorical_columns(frame[feature_columns]))
    n = len(frame)
    cut_train, cut_valid = int(n * 0.7), int(n * HOLDOUT_FROM)
    encoded = encode(frame[feature_columns], categories)
    weights = display_weights(frame["propensity"], ips)
    y = frame["success"].to_numpy()
    choice, init = None, np.zeros(n)
    if interactions:
        matrix = feature_matrix(frame, feature_columns, categories)
        choice = choose_interaction_base(matrix, feature_columns, categories, y, weights, cut_train, cut_valid, seed=seed)
        init = choice.base.logit_rows(matrix, feature_columns) if choice is not None else init
    # One declared stopping metric: with only `eval_metric="auc"`, LightGBM also evaluates its
    # default binary_logloss and early stopping stops on whichever worsens first.
    model = lgb.LGBMClassifier(**params.classifier_kwargs(seed), metric=STOPPING_METRIC)
    model.fit(encoded.iloc[:cut_train], y[:cut_train], sample_weight=weights[:cut_train],
              init_score=init[:cut_train] if choice is not None else None,
              eval_X=(encoded.iloc[cut_train:cut_valid],), eval_y=(y[cut_train:cut_valid],),
              eval_sample_weight=[weights[cut_train:cut_valid]], eval_metric=STOPPING_METRIC,
              eval_init_score=[init[cut_train:cut_valid]] if choice is not None else None,
              callbacks=[lgb.early_stopping(params.early_stopping_rounds, first_metric_only=True, verbose=False)])
    base = None if choice is None else choice.base
    stopping = {"metric": STOPPING_METRIC,  # best_iteration_ 0: early stopping never stopped
                "best_iteration": int(model.best_iteration_ or params.n_estimators),
                "valid": [float(v) for v in model.evals_result_["valid_0"][STOPPING_METRIC]]}
    if choice is not None and cut_valid > cut_train:
        base, model = _refit_with_base(choice, stopping["best_iteration"], matrix, feature_columns, encoded, y, weights,
                                       cut_valid, params, seed)
    click_model = ClickModel(model, feature_columns, categories, qualified_offers, base=base, stopping=stopping)
    holdout = classification_metrics(y[cut_valid:], click_model.predict_frame(frame.iloc[cut_valid:]))
    click_model.holdout_metrics = {**holdout, "best_iteration": float(stopping["best_iteration"])}
    return click_model


def _refit_with_base(choice: BaseChoice, rounds: int, matrix: np.ndarray, feature_columns: list[str],
                     encoded: pd.DataFrame, y: np.ndarray, weights: np.ndarray, rows: int,
                     params: LightGBMParams, seed: int) -> tuple[InteractionBase, Any]:
    """The chosen base and the `rounds` trees early stopping kept (at least one), fitted again on rows
    [0, rows): the training and early-stopping rows."""
    import lightgbm as lgb

    base = choice.refit(matrix, feature_columns, y, weights, rows)
    refitted = lgb.LGBMClassifier(**{**params.classifier_kwargs(seed), "n_estimators": max(1, rounds)},
                                  metric=STOPPING_METRIC)
    refitted.fit(encoded.iloc[:rows], y[:rows], sample_weight=weights[:rows],
                 init_score=base.logit_rows(matrix, feature_columns)[:rows])
    return base, refitted

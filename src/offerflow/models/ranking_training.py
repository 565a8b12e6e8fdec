"""The ranking AI models' training steps: auto-optimization posteriors per placement, the
personalized click model (fit, holdout, log to MLflow, register, promote by `registry.promote`).

Each function takes only the part of the config it needs and returns a small result record; the
flows decide what to do with it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from offerflow.ranking.ai_models import RankingModelResult, experiment_name
from offerflow.ranking.bandits import fit_posteriors
from offerflow.ingest.catalog import offers_for_placement
from offerflow.core.config import AIModelConfig
from offerflow.core.features import event_time_range, events_dataset
from offerflow.ranking.offer_stats import OfferStatsStore, daily_stats, window_counts
from offerflow.models.cluster import fit_click_model_with
from offerflow.ranking.click_model import (ClickModel, TooFewToTrain, displays_per_profile, holdout_rows,
                                           interaction_log, training_frame, untrainable)
from offerflow.core.partitions import in_sample, sample_share
from offerflow.core.schema import PROFILE_ID
from offerflow.core.tracking import CHAMPION, Tracker, run_stamp
from offerflow.models.registry import (describe_click_model, holdout_metrics, logged_champion, promote,
                                      register_click_model)


def ranking_window(con: duckdb.DuckDBPyConnection, model_cfg: AIModelConfig) -> tuple[datetime, datetime]:
    """The rolling training window [start, end): the `training_window_days` days up to the end of
    the day of the last event."""
    _, last = event_time_range(con)
    end = pd.Timestamp(last).ceil("D").to_pydatetime()
    return end - timedelta(days=model_cfg.training_window_days), end


def model_offers(offers: pd.DataFrame, placements: list[str]) -> pd.DataFrame:
    """The regular offers of any of the placements, once each."""
    return pd.concat([offers_for_placement(offers, p) for p in placements]).drop_duplicates("offer_id")


def fit_placement_posteriors(stats: pd.DataFrame, offers: pd.DataFrame, model_cfg: AIModelConfig, start: datetime,
                             end: datetime) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Beta posteriors from the daily offer statistics of the window: pooled over the model's
    placements, and per placement (each from its own displays over its own offers, or the pooled
    ones restricted to its offers when the model pools placements).

    An offer qualifies on its whole history in `stats` (up to `end`), not on the window alone: an
    offer that Thompson sampling stopped showing keeps its place in the model instead of falling
    back to "new" and to exploration traffic every time its displays leave the window.
    """
    def fit(frame: pd.DataFrame, candidates: pd.DataFrame) -> pd.DataFrame:
        ids = candidates[["offer_id"]]
        counts = ids.merge(window_counts(frame, start, end), on="offer_id", how="left").fillna(0)
        posteriors = fit_posteriors(counts, model_cfg.min_displays, model_cfg.min_successes, model_cfg.value_weighted,
                                    empirical_prior=model_cfg.samples_every_offer,
                                    sharpening=model_cfg.posterior_sharpening)
        history = ids.merge(window_counts(frame, datetime(1970, 1, 1), end), on="offer_id", how="left").fillna(0)
        qualified = set(history.loc[(history["displays"] >= model_cfg.min_displays)
                                    & (history["successes"] >= model_cfg.min_successes), "offer_id"])
        return posteriors.assign(qualified=posteriors["offer_id"].isin(qualified))

    pooled = fit(stats, model_offers(offers, model_cfg.placements))
    per_placement = {}
    for placement in model_cfg.placements:
        candidates = offers_for_placement(offers, placement)
        if model_cfg.pool_placements:
            per_placement[placement] = pooled[pooled["offer_id"].isin(candidates["offer_id"])].reset_index(drop=True)
        else:
            per_placement[placement] = fit(stats[stats["placement_id"] == placement], candidates)
    return pooled, per_placement


def fit_personalized_model(con: duckdb.DuckDBPyConnection, model_cfg: AIModelConfig, profiles: pd.DataFrame,
                           offers: pd.DataFrame, qualified: list[str], seed: int, start: datetime, end: datetime,
                           dask_address: str | None = None) -> tuple[ClickModel, str, pd.DataFrame, int]:
    """The click model of a personalized model on the window's displays: (model, trainer,
    training frame, displays in the window)."""
    log, displays = _training_displays(con, model_cfg, start, end)
    frame = training_frame(log, profiles, model_offers(offers, model_cfg.placements))
    if (reason := untrainable(frame)) is not None:
        raise TooFewToTrain(f"ranking model {model_cfg.name!r}: {reason}")
    click_model, trainer = fit_click_model_with(frame, model_cfg.lightgbm, qualified, seed, dask_address,
                                                ips=model_cfg.ips_weighting, interactions=model_cfg.interaction_base)
    return click_model, trainer, frame, displays


def log_offer_rates(tracker: Tracker, posteriors: pd.DataFrame, model_name: str) -> None:
    """Each offer's observed rate in the window against its prior and posterior, as
    `diagnostics/offer_rates.csv` and `.png`, in the active run."""
    from offerflow.ranking import charts

    table = charts.offer_rates(posteriors)
    tracker.log_text(table.to_csv(index=False), "diagnostics/offer_rates.csv")
    tracker.log_figure(charts.offer_rates_figure(table, f"{model_name}: success rate per offer (window)"),
                       "diagnostics/offer_rates.png")


def log_click_model_diagnostics(tracker: Tracker, click_model: ClickModel, frame: pd.DataFrame, seed: int) -> None:
    """Calibration, lift, gains and feature importance of a click model on its holdout displays
    (`holdout_rows`: those its holdout metrics are measured on), as PNGs under `diagnostics/`
    with the numbers behind the first three in `diagnostics/lift_by_decile.csv` (per decile of
    predicted P(click): displays, clicks, mean prediction, observed rate, lift, gain), the charts
    Customer AI logs for its goals. Importance is by permutation on the holdout (the trees' own
    gain leaves out the interaction base they start from); both are in `feature_importance.csv`."""
    from offerflow.customer_ai import charts
    from offerflow.ranking.charts import permutation_importance

    def p_click(pairs: pd.DataFrame) -> np.ndarray:
        return click_model.predict_pairs(pairs)["p_click"].to_numpy()

    holdout = holdout_rows(frame)
    y, p = holdout["success"].to_numpy(), p_click(holdout)
    table = charts.lift_table(y, p, unit="displays")
    tracker.log_text(table.to_csv(index=False), "diagnostics/lift_by_decile.csv")
    tracker.log_metrics({"holdout_top_decile_lift": float(table["lift"].iat[0])})
    booster = getattr(click_model.booster, "booster_", click_model.booster)  # LGBMClassifier or Booster
    importance = pd.DataFrame({
        "feature": click_model.feature_columns,
        "auc_drop_when_shuffled": permutation_importance(p_click, holdout, y, click_model.feature_columns,
                                                         seed).to_numpy(),
        "tree_gain": booster.feature_importance(importance_type="gain")})
    tracker.log_text(importance.to_csv(index=False), "diagnostics/feature_importance.csv")
    figures = {"calibration.png": charts.calibration_figure(y, p),
               "lift_by_decile.png": charts.lift_figure(table),
               "cumulative_gains.png": charts.gains_figure(table),
               "feature_importance.png": charts.importance_figure(
                   click_model.feature_columns, importance["auc_drop_when_shuffled"].to_numpy(),
                   xlabel="holdout AUC lost when the column is shuffled")}
    for name, figure in figures.items():
        tracker.log_figure(figure, f"diagnostics/{name}")


def _load_champion_click_model(tracker: Tracker, registered: str, qualified: list[str]) -> tuple[ClickModel, str]:
    version = tracker.alias_version(registered, CHAMPION)
    run_id = tracker.version_run_id(registered, version)
    spec = tracker.load_run_dict(run_id, "feature_spec.json")
    booster = tracker.load_lightgbm(f"models:/{registered}@{CHAMPION}")
    return ClickModel.from_spec(booster, spec, qualified, holdout_metrics(tracker, run_id)), version


def _training_displays(con: duckdb.DuckDBPyConnection, model_cfg: AIModelConfig, start: datetime,
                        end: datetime) -> tuple[pd.DataFrame, int]:
    """The interaction log a personalized model trains on, and the displays in its window: every
    display, or beyond `max_training_displays` those of a stable hash sample of profiles (picked
    from the per-profile counts, so the full log never has to be loaded)."""
    per_profile = displays_per_profile(con, model_cfg.placements, start, end)
    displays = int(per_profile["displays"].sum())
    share = sample_share(model_cfg.max_training_displays, displays)
    sample = None if share >= 1.0 else per_profile.loc[in_sample(per_profile[PROFILE_ID], share), PROFILE_ID]
    return interaction_log(con, model_cfg.placements, start, end, model_cfg.success_event, profile_ids=sample), displays


def train_ranking_model(con: duckdb.DuckDBPyConnection, model_cfg: AIModelConfig, profiles: pd.DataFrame | None,
                        offers: pd.DataFrame, tracker: Tracker, experiment_prefix: str, seed: int,
                        tags: dict[str, str] | None = None, stats_dir: Path | None = None,
                        dask_address: str | None = None) -> RankingModelResult:
    """Train an auto-optimization (posteriors) or personalized (click model) ranking model.

    With `dask_address` (`compute.dask_address`) the click model trains with lightgbm.dask on that
    cluster (`cluster.fit_click_model_with`); the run's `trainer` parameter records which.

    Per-offer counts come from the daily offer statistics: kept under `stats_dir/<model>` and
    updated incrementally when given (cheap enough for auto-optimization every 15 minutes),
    otherwise computed for the window.
    """
    start, end = ranking_window(con, model_cfg)
    stats_update = None
    if stats_dir is not None:
        stats_store = OfferStatsStore(stats_dir / model_cfg.name, model_cfg.placements, model_cfg.success_event)
        stats_update = stats_store.update(con)
        stats = stats_store.read()
    else:
        stats = daily_stats(con, model_cfg.placements, model_cfg.success_event)  # whole history: qualification
    posteriors, per_placement = fit_placement_posteriors(stats, offers, model_cfg, start, end)
    counts = model_offers(offers, model_cfg.placements)[["offer_id"]].merge(
        window_counts(stats, start, end), on="offer_id", how="left").fillna(0)
    qualified = posteriors.loc[posteriors["qualified"], "offer_id"].tolist()
    experiment = experiment_name(experiment_prefix, model_cfg.name)
    with tracker.run(experiment, run_name=f"train-{model_cfg.name}-{run_stamp()}",
                     tags={**(tags or {}), "ai_model": model_cfg.name, "type": model_cfg.type}) as run_id:
        tracker.log_input(events_dataset(con), "training")
        tracker.log_params({"type": model_cfg.type, "placements": model_cfg.placements,
                            "training_window_start": start.isoformat(), "training_window_end": end.isoformat(),
                            "min_displays": model_cfg.min_displays, "min_successes": model_cfg.min_successes,
                            "exploration_share": model_cfg.exploration_share, "new_offers": model_cfg.new_offers,
                            "posterior_sharpening": model_cfg.posterior_sharpening,
                            "sampling": model_cfg.sampling.model_dump(),
                            "success_event": model_cfg.success_event, "value_weighted": model_cfg.value_weighted,
                            "n_displays": int(counts["displays"].sum()),
                            "pool_placements": model_cfg.pool_placements,
                            "stats_update": stats_update.mode if stats_update else "window"})
        metrics = {"displays": float(counts["displays"].sum()), "successes": float(counts["successes"].sum()),
                   "success_value": float(counts["value"].sum()),
                   "offers_qualified": float(len(qualified)), "offers_total": float(len(posteriors))}
        tracker.log_dict({"posteriors": posteriors.to_dict(orient="records")}, "posteriors.json")
        tracker.log_dict({p: frame.to_dict(orient="records") for p, frame in per_placement.items()},
                         "placement_posteriors.json")
        log_offer_rates(tracker, posteriors, model_cfg.name)
        result = RankingModelResult(model_cfg.name, run_id, None, metrics, False, "", kind=model_cfg.type,
                                    posteriors=posteriors, window=(start, end), placement_posteriors=per_placement)
        if model_cfg.type == "personalized":
            _train_click_model(con, model_cfg, profiles, offers, qualified, tracker, experiment, seed, dask_address,
                               result)
        tracker.log_metrics(metrics)
        result.metrics = metrics
    return result


def _train_click_model(con: duckdb.DuckDBPyConnection, model_cfg: AIModelConfig, profiles: pd.DataFrame | None,
                       offers: pd.DataFrame, qualified: list[str], tracker: Tracker, registered: str, seed: int,
                       dask_address: str | None, result: RankingModelResult) -> None:
    """The personalized part of a training run (inside it): fit, log, register, promote; sets the
    result's click model (the champion's when the new one lost), version and promotion."""
    start, end = result.window
    try:
        click_model, trainer, frame, displays = fit_personalized_model(con, model_cfg, profiles, offers, qualified,
                                                                      seed, start, end, dask_address)
    except TooFewToTrain as exc:  # this model alone: the champion keeps serving, or none does (random)
        champion = tracker.alias_version(registered, CHAMPION)
        result.reason = f"not trained: {exc}; " + (f"the @champion (version {champion}) stays" if champion else
                                                  "its placements are served in a random order until it can be trained")
        tracker.set_tags({"not_trained": str(exc)})
        if champion:
            result.click_model, result.model_version = _load_champion_click_model(tracker, registered, qualified)
        return
    result.metrics.update({f"holdout_{k}": v for k, v in click_model.holdout_metrics.items()})
    result.metrics["offers_personalized"] = float(len(qualified))
    tracker.log_params({"best_iteration": int(click_model.holdout_metrics.get("best_iteration", 0)),  # trees kept
                        "trainer": trainer, "training_rows": len(frame), "displays_in_window": displays,
                        "ips_weighting": model_cfg.ips_weighting, "interaction_base": click_model.base is not None,
                        **model_cfg.lightgbm.model_dump()})
    tracker.log_dict(click_model.spec(), "feature_spec.json")
    log_click_model_diagnostics(tracker, click_model, frame, seed)
    record = register_click_model(tracker, click_model, registered, frame)
    result.model_version = record.model_version
    describe_click_model(tracker, registered, record.model_version, model_cfg, result.window, len(frame),
                         click_model.holdout_metrics)
    result.promoted, result.reason = promote(tracker, registered, record.model_version, click_model.holdout_metrics,
                                             logged_champion(tracker, registered, record.model_version), "auc", 0.0)
    if not result.promoted:
        # The challenger is recorded, but placements keep being scored by the champion.
        click_model, result.model_version = _load_champion_click_model(tracker, registered, qualified)
    if model_cfg.value_weighted:  # rank by click probability x value of a success
        click_model.offer_weights = dict(zip(result.posteriors["offer_id"], result.posteriors["value_weight"]))
    result.click_model = click_model

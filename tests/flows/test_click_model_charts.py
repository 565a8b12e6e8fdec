"""The ranking models' training runs carry their charts (models.ranking_training): the click
model's calibration, lift, gains and importance on its holdout displays, and every model's
per-offer rates against its prior and posterior. The numbers behind the charts are checked
against the seeded world's true click probabilities, not only that the files exist."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from offerflow.core.config import load_config
from offerflow.core.features import open_events
from offerflow.core.tracking import CHAMPION, Tracker, resolve_tracking_uri
from offerflow.ingest.catalog import load_offers, load_profiles
from offerflow.models.ranking_training import model_offers
from offerflow.models.registry import load_ranking_champion
from offerflow.ranking.click_model import holdout_rows, interaction_log, training_frame
from offerflow.synthetic.world import load_truth, true_click_probability

pytestmark = pytest.mark.flow

CLICK_CHARTS = {"calibration.png", "lift_by_decile.png", "cumulative_gains.png", "feature_importance.png",
                "offer_rates.png", "lift_by_decile.csv", "feature_importance.csv", "offer_rates.csv"}


def _tracker(project: Path):
    config = load_config(project / "offerflow.yaml")
    return config, Tracker(resolve_tracking_uri(config.tracking.uri, config.root),
                           config.path(config.tracking.artifact_root))


def _champion_run(tracker: Tracker, registered: str) -> str:
    return tracker.version_run_id(registered, tracker.alias_version(registered, CHAMPION))


def _diagnostics(tracker: Tracker, run_id: str, tmp_path: Path) -> Path:
    import mlflow

    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="diagnostics", dst_path=str(tmp_path),
                                                    tracking_uri=tracker.uri))


def _true_rate_per_display(project: Path, config, log: pd.DataFrame, channel: str) -> np.ndarray:
    """The true click probability of each display of an interaction log (the world's formula)."""
    profiles, offers = load_truth(project / "data")
    truth = true_click_probability(profiles, offers, channel)
    p_idx = pd.Index(profiles["profile_id"]).get_indexer(log["profile_id"])
    o_idx = pd.Index(offers["offer_id"]).get_indexer(log["offer_id"])
    assert (p_idx >= 0).all() and (o_idx >= 0).all()
    return truth[p_idx, o_idx]


def _profiles_path(config) -> Path:
    """The profiles ranking models train on: enriched with Customer AI's scores when there are some."""
    enriched = config.paths.enriched_profiles
    return enriched if enriched.exists() else config.path(config.data.profiles)


def _window_log(project: Path, config, tracker: Tracker, run_id: str, placements: list[str]) -> pd.DataFrame:
    params = tracker.run_params(run_id)
    start, end = (datetime.fromisoformat(params[k]) for k in ("training_window_start", "training_window_end"))
    con = open_events(config.paths.validated_events)
    try:
        return interaction_log(con, placements, start, end)
    finally:
        con.close()


def test_click_model_calibration_by_decile_matches_the_true_click_rates(pipeline_run, tmp_path):
    project, _ = pipeline_run
    config, tracker = _tracker(project)
    model_cfg = config.ai_model("web-personalized")
    registered = f"{config.tracking.experiment_prefix}-ranking-{model_cfg.name}"
    run_id = _champion_run(tracker, registered)
    folder = _diagnostics(tracker, run_id, tmp_path)
    assert CLICK_CHARTS <= {p.name for p in folder.iterdir()}
    for png in folder.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000, png.name
    table = pd.read_csv(folder / "lift_by_decile.csv")

    # The same holdout displays, rebuilt from the events, with their true click probability.
    log = _window_log(project, config, tracker, run_id, model_cfg.placements)
    frame = training_frame(log, load_profiles(_profiles_path(config)),
                           model_offers(load_offers(config.path(config.data.offers)), model_cfg.placements))
    holdout = holdout_rows(frame)
    assert table["displays"].sum() == len(holdout)
    champion = load_ranking_champion(tracker, config.tracking.experiment_prefix, model_cfg).click_model
    predicted = champion.predict_pairs(holdout)["p_click"].to_numpy()
    true_rate = _true_rate_per_display(project, config, holdout, config.placement("web-banner").channel)
    order = np.argsort(-predicted, kind="stable")
    decile = np.empty(len(order), dtype=int)
    decile[order] = np.arange(len(order)) * 10 // len(order) + 1
    truth = pd.Series(true_rate).groupby(decile).mean()

    assert np.allclose(table["mean_score"], pd.Series(predicted).groupby(decile).mean(), atol=1e-9)
    noise = 3 * np.sqrt(truth * (1 - truth) / table["displays"].to_numpy())  # binomial, 3 standard errors
    assert (np.abs(table["rate"].to_numpy() - truth.to_numpy()) <= noise.to_numpy() + 0.01).all(), (table, truth)
    assert (np.abs(table["mean_score"].to_numpy() - truth.to_numpy()) <= 0.15 * truth.to_numpy() + 0.005).all(), \
        (table, truth)  # calibrated: the predictions are the true rates, within 15%
    assert truth.iat[0] > 2 * truth.iat[-1] and table["lift"].iat[0] > 1.5  # the ranking separates

    # Importance by permutation finds the world's click drivers (favourite category x offer
    # category, discount x loyalty tier, age x category), not the attributes that play no part.
    importance = pd.read_csv(folder / "feature_importance.csv").set_index("feature")["auc_drop_when_shuffled"]
    drivers = {"p_favorite_category", "o_category", "o_discount_pct", "p_loyalty_tier", "p_age"}
    assert set(importance.nlargest(3).index) <= drivers, importance.sort_values()
    assert importance[["p_country", "p_email_opt_in", "p_tenure_days"]].max() < importance.max() / 5, importance


def test_auto_optimization_offer_rates_match_the_true_rates_and_posteriors(pipeline_run, tmp_path):
    project, _ = pipeline_run
    config, tracker = _tracker(project)
    model_cfg = config.ai_model("email-auto")
    experiment = f"{config.tracking.experiment_prefix}-ranking-{model_cfg.name}"
    run_id = tracker.latest_run(experiment)["run_id"]
    folder = _diagnostics(tracker, run_id, tmp_path)
    assert {"offer_rates.png", "offer_rates.csv"} <= {p.name for p in folder.iterdir()}
    rates = pd.read_csv(folder / "offer_rates.csv")
    assert ((rates["posterior_low"] <= rates["posterior_mean"])
            & (rates["posterior_mean"] <= rates["posterior_high"])).all()

    log = _window_log(project, config, tracker, run_id, model_cfg.placements)
    log = log.assign(true_rate=_true_rate_per_display(project, config, log, config.placement("email-hero").channel))
    truth = log.groupby("offer_id")["true_rate"].mean()
    shown = rates[rates["displays"] >= 100].set_index("offer_id")
    assert len(shown) >= 3
    counts = log.groupby("offer_id").size()
    assert (shown["displays"] == counts.reindex(shown.index)).all()
    t = truth.reindex(shown.index)
    noise = 3 * np.sqrt(t * (1 - t) / shown["displays"])
    assert (np.abs(shown["observed_rate"] - t) <= noise + 0.005).all(), (shown, t)
    assert (np.abs(shown["posterior_mean"] - t) <= noise + 0.005).all(), (shown, t)

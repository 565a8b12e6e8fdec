"""The whole pipeline, end to end, on real components: Prefect (test harness), MLflow (sqlite in
tmp_path), Great Expectations, LightGBM, the ranking store and the decision step."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from offerflow.ingest.catalog import load_offers, load_profiles
from offerflow.core.config import load_config
from offerflow.decisioning.engine import DecisionEngine
from offerflow.core.store import RankingStore
from offerflow.core.tracking import CHAMPION, Tracker, resolve_tracking_uri
from offerflow.synthetic.world import load_truth, true_click_probability

pytestmark = pytest.mark.flow


def test_pipeline_end_to_end(pipeline_run):
    project_dir, summary = pipeline_run
    config = load_config(project_dir / "offerflow.yaml")

    # 1. validation: every row accounted for, the clean demo world loses nothing
    v = summary["validation"]
    assert v["accepted"] + v["quarantined"] == v["rows"] and v["quarantined"] == 0

    # 2. MLflow: runs with metrics, registered models with a champion alias
    tracker = Tracker(resolve_tracking_uri(config.tracking.uri, config.root), config.path(config.tracking.artifact_root))
    goal = summary["propensity"]["purchase_14d"]
    metrics = tracker.run_metrics(goal["run_id"])
    assert {"holdout_auc", "holdout_log_loss", "holdout_brier"} <= set(metrics)
    assert metrics["holdout_auc"] > 0.7
    assert tracker.alias_version("offerflow-propensity-purchase_14d", CHAMPION) == "1"
    assert (project_dir / "mlflow.db").exists() and any((project_dir / "mlruns").iterdir())

    # 3. the personalized model learned something real on the seeded world
    web = summary["ranking_models"]["web-personalized"]
    assert web["metrics"]["holdout_auc"] > 0.6
    assert tracker.alias_version("offerflow-ranking-web-personalized", CHAMPION) == "1"

    # 4. ranking tables: at most `items` offers per profile, only allowed offers
    store = RankingStore(config.path(config.store.path))
    offers = load_offers(config.path(config.data.offers))
    for placement in config.placements:
        assert store.current_version(placement.id) == 1
    table = store.read_table("web-banner").to_pandas()
    assert table.groupby("profile_id").size().max() <= config.placement("web-banner").items
    allowed = set(offers.loc[offers.placements.map(lambda p: "web-banner" in p) & ~offers.fallback, "offer_id"])
    assert set(table["offer_id"]) <= allowed
    assert store.snapshot("email-hero").kind == "posterior"

    # 5. decisions: a known profile gets ranked offers; an opted-out profile gets the email fallback
    profiles = load_profiles(project_dir / "data" / "outputs" / "profiles_enriched.parquet")
    engine = DecisionEngine(config, store, offers, profiles, seed=0)
    known = table["profile_id"].iat[0]
    decision = engine.decide(known, ["web-banner"])
    assert [i.offer_id for i in decision.placements[0].items] == \
        table[table.profile_id == known].sort_values("rank")["offer_id"].tolist()
    opted_out = profiles.loc[~profiles.email_opt_in.astype(bool), "profile_id"].iat[0]
    fallback = engine.decide(opted_out, ["email-hero"]).placements[0]
    assert fallback.source == "fallback" and fallback.items[0].offer_id == "o-fallback"
    both = engine.decide(known, ["web-banner", "web-sidebar"])
    assert len(set(both.offer_ids())) == len(both.offer_ids())  # no duplicates across placements


def test_personalized_choice_beats_priority_on_true_click_probability(pipeline_run, world_dir):
    project_dir, _ = pipeline_run
    config = load_config(project_dir / "offerflow.yaml")
    store = RankingStore(config.path(config.store.path))
    table = store.read_table("web-banner").to_pandas()
    profiles, offers = load_truth(world_dir)
    truth = true_click_probability(profiles, offers, "web")
    p_idx = pd.Series(range(len(profiles)), index=profiles.profile_id)
    o_idx = pd.Series(range(len(offers)), index=offers.offer_id)
    first = table[table["rank"] == 1]
    model_truth = truth[p_idx[first.profile_id].to_numpy(), o_idx[first.offer_id].to_numpy()].mean()
    # priority ranking among the same eligible offers
    from offerflow.ranking.tables import eligibility_matrix
    from offerflow.ingest.catalog import offers_for_placement

    cands = offers_for_placement(offers, "web-banner")
    prof = profiles.drop(columns=["activity"])
    elig = eligibility_matrix(prof, cands.drop(columns=["quality"]))
    prio = np.where(elig, cands["priority"].to_numpy(float)[None, :] + 1e-6 * np.arange(len(cands))[None, :], -np.inf)
    best_prio = cands["offer_id"].to_numpy()[prio.argmax(axis=1)]
    prio_truth = truth[np.arange(len(profiles)), o_idx[best_prio].to_numpy()].mean()
    assert model_truth > prio_truth * 1.1, (model_truth, prio_truth)
    # auto-optimization on the same placement: the eligible offer with the best posterior mean
    # over the same 30-day window the personalized model learned from
    from offerflow.ranking.bandits import fit_posteriors
    from offerflow.core.features import open_events
    from offerflow.ranking.offer_stats import daily_stats, window_counts

    con = open_events(project_dir / "data/outputs/validated/events.parquet")
    end = pd.Timestamp("2026-11-01", tz="UTC").to_pydatetime()
    counts = window_counts(daily_stats(con, ["web-banner"], "click"), end - pd.Timedelta(days=30), end)
    post = fit_posteriors(cands[["offer_id"]].merge(counts, how="left").fillna(0), 250, 25).set_index("offer_id")
    means = (post["alpha"] / (post["alpha"] + post["beta"])).loc[cands["offer_id"]].to_numpy()
    best_auto = cands["offer_id"].to_numpy()[np.where(elig, means[None, :], -np.inf).argmax(axis=1)]
    auto_truth = truth[np.arange(len(profiles)), o_idx[best_auto].to_numpy()].mean()
    assert model_truth > auto_truth * 1.05, (model_truth, auto_truth)
    print(f"true CTR of the first offer: personalized {model_truth:.4f}, auto-optimization {auto_truth:.4f},"
          f" priority {prio_truth:.4f}")


def test_champion_loaded_from_registry_reproduces_published_scores(pipeline_run):
    from offerflow.ingest.catalog import offers_for_placement
    from offerflow.models.ranking_training import _load_champion_click_model
    project_dir, _ = pipeline_run
    config = load_config(project_dir / "offerflow.yaml")
    tracker = Tracker(resolve_tracking_uri(config.tracking.uri, config.root), config.path(config.tracking.artifact_root))
    model, version = _load_champion_click_model(tracker, "offerflow-ranking-web-personalized", [])
    assert version == "1"
    store = RankingStore(config.path(config.store.path))
    table = store.read_table("web-banner").to_pandas()
    profiles = load_profiles(project_dir / "data" / "outputs" / "profiles_enriched.parquet").head(50)
    offers = offers_for_placement(load_offers(config.path(config.data.offers)), "web-banner")
    scores = model.score_matrix(profiles, offers)
    first = table[table["rank"] == 1].set_index("profile_id")
    for i, profile_id in enumerate(profiles["profile_id"]):
        if profile_id in first.index:
            j = offers.index[offers.offer_id == first.at[profile_id, "offer_id"]][0]
            assert scores[i, j] == pytest.approx(first.at[profile_id, "score"], rel=1e-9)


def test_customer_ai_logs_charts_and_explains_scores_with_true_drivers(pipeline_run):
    project_dir, summary = pipeline_run
    config = load_config(project_dir / "offerflow.yaml")
    tracker = Tracker(resolve_tracking_uri(config.tracking.uri, config.root), config.path(config.tracking.artifact_root))
    run_id = summary["propensity"]["purchase_14d"]["run_id"]
    logged = {a.path for a in tracker.client.list_artifacts(run_id, "diagnostics")}
    assert {"diagnostics/calibration.png", "diagnostics/lift_by_decile.png", "diagnostics/cumulative_gains.png",
            "diagnostics/score_distribution.png", "diagnostics/feature_importance.png"} <= logged
    scores = pd.read_parquet(next((project_dir / "data/outputs/propensity/purchase_14d").glob("scores-*.parquet")))
    assert {"probability", "score", "percentile", "bucket", "factor_1", "factor_1_impact"} <= set(scores.columns)
    # The generator's purchase rate depends on loyalty tier, email opt-in, tenure and activity (seen
    # through display/click counts); age, country and favourite category play no part.
    top = scores["factor_1"].value_counts(normalize=True)
    drivers = top[[n for n in top.index if n in ("loyalty_tier", "email_opt_in", "tenure_days")
                   or n.startswith(("count_display", "count_click", "days_since_display", "days_since_click", "active_days_",
                                    "count_purchase", "days_since_purchase", "value_purchase",
                                    "per_day_", "active_share_"))]].sum()  # activity rates (357ff65)
    assert drivers > 0.9, top.head(8)
    # percentiles are uniform
    assert scores["percentile"].value_counts().max() < 3 * len(scores) / 100

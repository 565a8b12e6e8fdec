"""Position-aware slate estimates (`offerflow.evaluation.slates`): per-slot probabilities of ranked and random
strategies, the loader, and coverage of the TRUE expected clicks per decision on seeded slate logs
(a logger shaped like the decision engine, clicks from the world's truth with position bias)."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from offerflow.core.features import open_events
from offerflow.ranking.tables import formula_scorer, priority_scores
from offerflow.evaluation.report import load_evaluation_catalog
from offerflow.rules.expressions import schema_from_frames
from offerflow.evaluation.slates import (SlateStrategy, evaluate_slates, load_logged_slates, random_slate_policy,
                              ranked_slot_probabilities, score_slate_policy,
                              uniform_slot_probabilities)
from offerflow.evaluation.strategies import placement_offer_set
from offerflow.synthetic.simulated_logs import simulate_slate_log, true_slate_values
from offerflow.synthetic.world import WorldSpec, generate_world, load_truth, true_click_probability, true_slot_examination

sys.path.insert(0, str(Path(__file__).parent))
from test_offpolicy_world import END, fast_config  # noqa: E402

DAYS = 7


def test_ranked_slot_probabilities_split_ties_and_skip_ineligible() -> None:
    scores = np.array([[3.0, 1.0, 2.0, 2.0, 9.0]])
    eligible = np.array([[True, True, True, True, False]])
    p = ranked_slot_probabilities(scores, eligible, 3)
    assert p[0, 0].tolist() == [1.0, 0.0, 0.0]          # best eligible offer: slot 1
    assert p[0, 2].tolist() == p[0, 3].tolist() == [0.0, 0.5, 0.5]  # tied: slots 2 and 3 half each
    assert p[0, 1].sum() == 0 and p[0, 4].sum() == 0      # 4th best and ineligible: not shown
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    u = uniform_slot_probabilities(np.array([[True, False, True], [False, False, False]]), 3)
    assert u[0, :, 0].tolist() == [0.5, 0.0, 0.5] and u[0, :, 2].sum() == 0 and u[1].sum() == 0


def slate_run(world: Path, seed: int, random_share: float = 0.2, tmp: Path | None = None):
    """Simulate DAYS days of web-banner slates, evaluate random/priority/formula, return the table
    and each strategy's true expected clicks per decision."""
    out = (tmp or world) / f"slates-{seed}"
    simulate_slate_log(world, out, "web-banner", "web", 3, DAYS, random_share, seed, end_date=END)
    config = fast_config(world)
    profiles, offers = load_evaluation_catalog(config)
    placement_offers = placement_offer_set(offers, "web-banner")
    end = datetime.combine(END, datetime.min.time(), tzinfo=timezone.utc)
    logged = load_logged_slates(open_events(out), "web-banner", 3, end - timedelta(days=DAYS), end, profiles,
                                placement_offers)
    formula = formula_scorer(config.placement("web-sidebar").ranking.formula,
                             schema_from_frames(profiles=profiles, offers=placement_offers))
    strategies = [SlateStrategy("logged", "logged", "logged", None),
                  SlateStrategy("random", "random", "random", random_slate_policy),
                  SlateStrategy("priority", "priority", "priority", score_slate_policy(priority_scores)),
                  SlateStrategy("formula", "formula", "formula", score_slate_policy(formula))]
    truth_profiles, truth_offers = load_truth(world)
    p = logged.profiles[["profile_id"]].merge(truth_profiles, on="profile_id")
    o = logged.offers[["offer_id"]].merge(truth_offers, on="offer_id", how="left").fillna({"quality": 0.0})
    q = true_click_probability(p, o, "web") * ~logged.offers["fallback"].to_numpy(bool)
    # an imperfect reward model for DR: the truth with multiplicative noise
    noisy = np.clip(q * np.exp(np.random.default_rng(seed).normal(0, 0.3, q.shape)), 0, 1)
    evaluation = evaluate_slates(logged, strategies, noisy, n_bootstrap=300, seed=seed)
    return logged, evaluation, true_slate_values(evaluation, logged, q, true_slot_examination(3))


def test_loader_reads_every_slot_with_its_propensity(world_dir: Path, tmp_path: Path) -> None:
    logged, evaluation, _ = slate_run(world_dir, 1, tmp=tmp_path)
    assert logged.n > 2000 and not logged.dropped
    shown = logged.action >= 0
    assert shown[:, 0].all() and shown[:, 2].mean() > 0.5
    assert np.isfinite(logged.propensity[shown]).all() and (logged.propensity[shown] > 0).all()
    # the logged policy's estimate is the observed clicks per decision; slot 1 is clicked most
    logged_row = evaluation.table[(evaluation.table["strategy"] == "logged") & (evaluation.table["estimator"] == "ips")]
    assert logged_row["value"].iat[0] == pytest.approx(logged.reward.sum(axis=1).mean())
    assert logged.reward[:, 0].mean() > logged.reward[:, 2].mean()
    # DR's position weights recover the examination curve roughly (observed / predicted clicks)
    np.testing.assert_allclose(evaluation.position_weights, true_slot_examination(3), atol=0.15)


def test_a_decision_missing_a_slot_propensity_is_dropped_and_counted(world_dir: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "slates"
    simulate_slate_log(world_dir, out, "web-banner", "web", 3, 2, 0.2, 9, end_date=END)
    path = next(out.glob("*.parquet"))
    events = pq.read_table(path).to_pandas()
    second = events.index[(events["event_type"] == "display") & events["event_id"].str.endswith("-2")][:5]
    events.loc[second, "propensity"] = np.nan
    events.to_parquet(path)
    profiles, offers = load_evaluation_catalog(fast_config(world_dir))
    end = datetime.combine(END, datetime.min.time(), tzinfo=timezone.utc)
    logged = load_logged_slates(open_events(out), "web-banner", 3, end - timedelta(days=2), end, profiles,
                                placement_offer_set(offers, "web-banner"))
    assert logged.dropped == {"decisions dropped: a slot without a per-slot propensity in (0, 1]": 5}
    assert logged.n == events.loc[events["event_type"] == "display", "decision_id"].nunique() - 5


def coverage(runs) -> tuple[int, int, list[str]]:
    hit, total, misses = 0, 0, []
    for _, evaluation, truth in runs:
        for row in evaluation.table[evaluation.table["strategy"] != "logged"].itertuples():
            ok = row.low <= truth[row.strategy] <= row.high
            hit, total = hit + ok, total + 1
            if not ok:
                misses.append(f"{row.strategy}/{row.estimator}: {row.value:.4f} [{row.low:.4f}, {row.high:.4f}] "
                              f"true {truth[row.strategy]:.4f}")
    return hit, total, misses


def test_slate_estimates_cover_the_true_expected_clicks(world_dir: Path, tmp_path: Path) -> None:
    runs = [slate_run(world_dir, seed, tmp=tmp_path) for seed in (1, 2, 3, 4, 5)]
    hit, total, misses = coverage(runs)
    assert total == 5 * 3 * 3 and hit / total >= 0.85, misses
    # position matters: the naive first-item view would miss most of a slate's clicks
    for logged, _, truth in runs:
        assert logged.reward[:, 1:].sum() > 0.3 * logged.reward.sum()
    # the formula is truly better than random and priority on whole slates, and estimated so
    _, evaluation, truth = runs[0]
    dr = evaluation.table[evaluation.table["estimator"] == "dr"].set_index("strategy")
    assert truth["formula"] > 1.3 * max(truth["random"], truth["priority"])
    assert dr.loc["formula", "value"] > max(dr.loc["random", "value"], dr.loc["priority", "value"])


@pytest.mark.slow
def test_slate_coverage_over_seeded_worlds(tmp_path: Path) -> None:
    runs = []
    for seed in (31, 32, 33, 34, 35):
        world = tmp_path / f"w{seed}"
        generate_world(WorldSpec(profiles=3_000, offers=12, days=60, seed=seed, end_date=END), world)
        runs += [slate_run(world, s) for s in (1, 2, 3, 4)]
    hit, total, misses = coverage(runs)
    assert hit / total >= 0.9, (hit, total, misses)


def test_the_report_shows_whole_slate_estimates_from_logged_slates(world_dir: Path, tmp_path: Path) -> None:
    """The real evaluation path: the world's 60 days (single offers) before the window train the
    candidates and the reward model; the window holds 7 days of logged slates with per-slot
    propensities. The report and the MLflow metrics carry the slate estimates."""
    from offerflow.evaluation.report import EvaluationResult, add_offline, evaluation_metrics
    from offerflow.evaluation.report_html import render_html
    from offerflow.evaluation.strategies import evaluate_placement

    events = tmp_path / "events"
    events.mkdir()
    (events / "world.parquet").symlink_to(world_dir / "events.parquet")
    simulate_slate_log(world_dir, events, "web-banner", "web", 3, DAYS, 0.2, 4, end_date=END + timedelta(days=DAYS))
    # the sidebar's log lacks second-slot propensities (an older logger): first item only there
    simulate_slate_log(world_dir, tmp_path, "web-sidebar", "web", 2, DAYS, 0.2, 4, end_date=END + timedelta(days=DAYS))
    sidebar = pd.read_parquet(next(tmp_path.glob("slates-web-sidebar-*.parquet")))
    sidebar.loc[sidebar["event_id"].str.endswith("-2"), "propensity"] = np.nan
    sidebar.to_parquet(events / "sidebar.parquet")
    config = fast_config(world_dir)
    profiles, offers = load_evaluation_catalog(config)
    start = datetime.combine(END, datetime.min.time(), tzinfo=timezone.utc)
    con = open_events(events)
    result = EvaluationResult("now", str(events))
    for placement_id in ("web-banner", "web-sidebar"):
        add_offline(result, config, *evaluate_placement(con, config, placement_id, profiles, offers,
                                                        (start, start + timedelta(days=DAYS))))
    banner = result.offline["web-banner"]
    assert banner.slates is not None and banner.slates.n > 2000
    assert {"random", "priority", "web-personalized", "logged"} <= set(banner.slates.table["strategy"])
    assert result.offline["web-sidebar"].slates is None
    page = render_html(result, {}, config)
    assert "Whole slates (3 slots): expected clicks per decision" in page
    assert "No slate estimate: no decisions with a propensity in every slot in the window (first item only): " \
           f"{result.offline['web-sidebar'].n:,} decisions dropped: a slot without a per-slot propensity" in page
    metrics = evaluation_metrics(result)
    assert {"web-banner.web-personalized.slate_dr", "web-banner.random.slate_ips.low"} <= set(metrics)
    # the personalized model's list is truly better than random on whole slates, and estimated so
    truth_profiles, truth_offers = load_truth(world_dir)
    logged = load_logged_slates(con, "web-banner", 3, start, start + timedelta(days=DAYS), profiles,
                                placement_offer_set(offers, "web-banner"))
    p = logged.profiles[["profile_id"]].merge(truth_profiles, on="profile_id")
    o = logged.offers[["offer_id"]].merge(truth_offers, on="offer_id", how="left").fillna({"quality": 0.0})
    q = true_click_probability(p, o, "web") * ~logged.offers["fallback"].to_numpy(bool)
    truth = true_slate_values(banner.slates, logged, q, true_slot_examination(3))
    dr = banner.slates.table[banner.slates.table["estimator"] == "dr"].set_index("strategy")
    assert truth["web-personalized"] > 1.3 * truth["random"]
    assert dr.loc["web-personalized", "low"] > dr.loc["random", "high"]
    for name, true in truth.items():
        assert dr.loc[name, "low"] - 0.02 <= true <= dr.loc[name, "high"] + 0.02, (name, true, dr.loc[name].to_dict())

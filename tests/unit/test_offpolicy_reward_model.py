"""The DR reward model early-stops on one declared metric (AUC) and keeps the trees the data
supports: on the seeded world, where clicks depend on profile x offer, it must not stop in the
first rounds because a second, undeclared metric (LightGBM's default binary_logloss) worsened."""

from __future__ import annotations

from pathlib import Path

import yaml

from offerflow.ingest.catalog import offers_for_placement
from offerflow.core.config import parse_config
from offerflow.core.features import open_events
from offerflow.evaluation.report import load_evaluation_catalog
from offerflow.evaluation.strategies import evaluation_window, fit_reward_model, pre_window_log
from offerflow.synthetic.world import demo_config_yaml


def test_reward_model_stops_on_auc_alone_and_past_the_first_rounds(world_dir: Path) -> None:
    raw = yaml.safe_load(demo_config_yaml(str(world_dir)))
    raw["evaluation"] = {"reward_model": {"num_threads": 1}}  # otherwise the defaults: 400 trees, patience 30
    config = parse_config(raw, root=Path("/"))
    profiles, offers = load_evaluation_catalog(config)
    con = open_events(world_dir / "events.parquet")
    start, _ = evaluation_window(con, ["email-hero"], config.evaluation.window_days)
    log = pre_window_log(con, ["email-hero"], start, config.evaluation.reward_model_days)
    model = fit_reward_model(log, profiles, offers_for_placement(offers, "email-hero"), config.evaluation.reward_model,
                             config.seed)
    assert model.stopping["metric"] == "auc" and model.stopping["best_iteration"] > 10
    assert model.booster.booster_.num_trees() == model.stopping["best_iteration"]  # refitted with that many
    assert model.holdout_metrics["auc"] > 0.6

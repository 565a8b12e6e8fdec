"""`offerflow evaluate` / the `evaluate-models` flow after a real pipeline run, with a decision log
written by the real decision engine (model and holdout arms) and clicks drawn from the truth."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from offerflow.decisioning.batch import decide_batch
from offerflow.core.config import load_config
from offerflow.decisioning.switches import load_serving_config
from offerflow.decisioning.decision_log import write_decision_log
from offerflow.decisioning.engine import build_engine
from offerflow.core.schema import EVENT_SCHEMA
from offerflow.synthetic.world import load_truth, true_click_probability

pytestmark = pytest.mark.flow
FAST = """
evaluation:
  bootstrap_samples: 200
  reward_model: {n_estimators: 80, learning_rate: 0.1, num_leaves: 15, early_stopping_rounds: 10, num_threads: 1}
"""


def served_traffic(project: Path, days: int = 7, seed: int = 3) -> dict[str, float]:
    """Decide for every profile on `days` days with the real engine, log it, and write the clicks
    (each shown offer clicked with its true probability). Returns the true lift per placement of
    model over holdout decisions (chance that a decision gets at least one click)."""
    config = load_serving_config(project / "offerflow.yaml")
    engine = build_engine(config, seed=seed)
    profiles, offers = load_truth(project / "data")
    log_dir = config.path(config.data.outputs_dir) / "decision_log"
    rng = np.random.default_rng(seed)
    clicks, metas, shown = [], [], []
    start = datetime.now(timezone.utc) - timedelta(days=days)
    for d in range(days):
        result = decide_batch(engine, profiles["profile_id"], ["web-banner", "email-hero"],
                              now=start + timedelta(days=d), seed=seed + d)
        write_decision_log(result.events, result.meta, log_dir)
        metas.append(result.meta.to_pandas())
        shown.append(result.events.to_pandas())
    events, meta = pd.concat(shown), pd.concat(metas)
    events["p_true"] = np.nan
    for placement_id in ("web-banner", "email-hero"):
        rows = events["placement_id"] == placement_id
        idx_p = pd.Index(profiles["profile_id"]).get_indexer(events.loc[rows, "profile_id"])
        idx_o = pd.Index(offers["offer_id"]).get_indexer(events.loc[rows, "offer_id"])
        q = true_click_probability(profiles, offers, config.placement(placement_id).channel)
        events.loc[rows, "p_true"] = np.where(offers["fallback"].to_numpy(bool)[idx_o], 0.0, q[idx_p, idx_o])
    clicked = events[rng.random(len(events)) < events["p_true"]]
    clicks = clicked.assign(event_type="click", event_id=clicked["event_id"] + "-click", propensity=np.nan)
    pq.write_table(pa.Table.from_pandas(clicks[EVENT_SCHEMA.names].reset_index(drop=True), schema=EVENT_SCHEMA,
                                        preserve_index=False), log_dir / "clicks-served.parquet")
    # P(at least one click) per decision: 1 - the product of (1 - p) over its items (a vectorised
    # groupby product: a Python lambda per group took most of this function's time, 42,000 groups)
    missed = events.assign(missed=1 - events["p_true"]).groupby(["decision_id", "placement_id"])["missed"].prod()
    conv = (1 - missed).rename("p_convert").reset_index().merge(meta, on=["decision_id", "placement_id"])
    truth = {}
    for placement_id, rows in conv[conv["arm"].isin(["model", "holdout"])].groupby("placement_id"):
        rate = rows.groupby("arm")["p_convert"].mean()
        truth[placement_id] = float(rate["model"] / rate["holdout"] - 1)
    return truth


@pytest.fixture(scope="module")
def evaluated_project(pipeline_run, tmp_path_factory):
    source, _ = pipeline_run
    project = tmp_path_factory.mktemp("evaluate") / "project"
    shutil.copytree(source, project, ignore=shutil.ignore_patterns(".prefect", "decision_log"))
    (project / "offerflow.yaml").write_text((project / "offerflow.yaml").read_text() + FAST)
    truth = served_traffic(project)
    from offerflow.flows.evaluate import evaluate_models

    summary = evaluate_models(config_path=str(project / "offerflow.yaml"))
    return project, summary, truth


def test_flow_writes_the_report_and_one_mlflow_run(evaluated_project) -> None:
    import mlflow

    project, summary, _ = evaluated_project
    report = Path(summary["report"])
    assert report.exists() and report.parent == project / "data/outputs/evaluation"
    assert "validated" in report.read_text()  # evaluated on the validated snapshot
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    run = client.get_run(summary["mlflow_run_id"])
    metrics = run.data.metrics
    for placement in ("web-banner", "email-hero", "web-sidebar"):
        for strategy in ("random", "priority"):
            for estimator in ("ips", "snips", "dr"):
                assert f"{placement}.{strategy}.{estimator}" in metrics
                assert metrics[f"{placement}.{strategy}.{estimator}.low"] <= metrics[f"{placement}.{strategy}.{estimator}"]
    assert "web-banner.web-personalized.dr" in metrics and "email-hero.email-auto.dr" in metrics
    assert {f"serving.{p}" for p in ("web-banner", "email-hero", "web-sidebar")} <= set(run.data.tags)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"charts", "report", "serving_decisions.json", "holdout_lift.csv"} <= artifacts
    decisions = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/serving_decisions.json")["serving_decisions"]
    assert set(decisions["web-banner"]["evidence"]) >= {"lift", "low", "high"}


def test_holdout_lift_from_the_decision_engine_covers_the_truth(evaluated_project) -> None:
    project, summary, truth = evaluated_project
    lines = [line for line in summary["summary"] if "random holdout" in line]
    assert {line.split(",")[0] for line in lines} == {"On web-banner", "On email-hero"}
    from offerflow.evaluation.holdout import decision_outcomes, lift_table

    table = lift_table(decision_outcomes(project / "data/outputs/decision_log", []))
    overall = table[table["day"].isna()].set_index("placement_id")
    for placement_id, true_lift in truth.items():
        row = overall.loc[placement_id]
        assert row["displays_holdout"] > 0.05 * row["displays_model"]
        assert row["lift_low"] <= true_lift <= row["lift_high"], (placement_id, true_lift, row.to_dict())


def test_cli_evaluate_reports_a_missing_events_file_in_one_line(evaluated_project) -> None:
    from offerflow.cli import app

    project, _, _ = evaluated_project
    result = CliRunner().invoke(app, ["evaluate", "--config", str(project / "offerflow.yaml"),
                                      "--events", str(project / "nope.parquet")])
    assert result.exit_code == 1
    assert "nope.parquet: events file not found" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_switches_are_served_by_the_next_decision_and_a_person_can_revert_them(evaluated_project) -> None:
    """Whatever the rule decided on this project: a switched placement serves the winner (project
    config, published table, the engine's decision), the others serve the project file; a revert
    from the CLI puts the project file's ranking back, with the reason in MLflow."""
    import mlflow

    from offerflow.cli import app
    from offerflow.core.store import RankingStore

    project, summary, _ = evaluated_project
    path = project / "offerflow.yaml"
    served, written = load_serving_config(path), load_config(path)
    store = RankingStore(served.path(served.store.path))
    engine = build_engine(served, seed=1)
    switched = {p: s["switched"] for p, s in summary["serving"].items() if s["serve_candidate"]}
    assert switched, summary["serving"]  # on this world the email slot's formula beats Thompson sampling
    for placement_id, outcome in summary["serving"].items():
        ranking = served.placement(placement_id).ranking.model_dump(mode="json", exclude_none=True)
        if placement_id not in switched:
            assert served.placement(placement_id).ranking == written.placement(placement_id).ranking
            continue
        assert ranking == switched[placement_id]["ranking"], outcome
        meta = store.read_metadata(placement_id)
        assert meta["ranking_method"] == ranking["method"] and meta["published_by"] == "serving"
        decision = engine.decide(load_truth(project / "data")[0]["profile_id"].iloc[0], [placement_id])
        assert decision.placements[0].ranking_method == ranking["method"]
    run = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}").get_run(summary["mlflow_run_id"])
    assert {f"serving.{p}.switched_to" for p in switched} <= set(run.data.tags)
    runner = CliRunner()
    listed = runner.invoke(app, ["serving", "list", "--config", str(path)])
    assert listed.exit_code == 0 and all(p in listed.output for p in summary["serving"])
    for placement_id in switched:
        result = runner.invoke(app, ["serving", "revert", placement_id, "--reason", "test revert", "--config", str(path)])
        assert result.exit_code == 0, result.output
        assert load_serving_config(path).placement(placement_id).ranking == written.placement(placement_id).ranking
        meta = store.read_metadata(placement_id)  # re-published with the project file's ranking
        assert (meta["ranking_method"], meta.get("ai_model")) == (written.placement(placement_id).ranking.method,
                                                                  written.placement(placement_id).ranking.ai_model)


def test_a_personalized_strategy_is_refit_with_the_served_models_settings(pipeline_run, monkeypatch) -> None:
    """The evaluation refits each personalized model on the events before its window with that
    model's own `ips_weighting` and `interaction_base` (it used `fit_click_model`'s defaults, so a
    non-default model was not the one evaluated)."""
    from offerflow.core.features import open_events
    from offerflow.evaluation import strategies
    from offerflow.ingest.catalog import load_offers, load_profiles

    import yaml

    from offerflow.core.config import LightGBMParams

    project, _ = pipeline_run
    config = load_config(project / "offerflow.yaml")
    models = [m.model_copy(update={"ips_weighting": True, "interaction_base": False})
              if m.type == "personalized" else m for m in config.ai_models]
    # the reward model fitted after the candidates is not what this test checks: FAST's small trees
    reward = LightGBMParams(**yaml.safe_load(FAST)["evaluation"]["reward_model"])
    evaluation = config.evaluation.model_copy(update={"reward_model": reward})
    config = config.model_copy(update={"ai_models": models, "evaluation": evaluation})
    seen = []

    def spy(*args, **kwargs):
        seen.append((kwargs.get("ips"), kwargs.get("interactions")))
        return real(*args, **kwargs)

    real = strategies.fit_click_model
    monkeypatch.setattr(strategies, "fit_click_model", spy)
    con = open_events(project / "data/outputs/validated/events.parquet")
    start, _ = strategies.evaluation_window(con, ["web-banner"], 7)
    offers = load_offers(config.path(config.data.offers), [p.id for p in config.placements])
    profiles = load_profiles(config.paths.enriched_profiles)
    candidates = strategies.placement_candidates(con, config, "web-banner", profiles, offers, start)
    assert seen[0] == (True, False)  # the personalized model's refit (the reward model may follow)
    assert "web-personalized" in {s.label for s in candidates.strategies}

"""Customer AI through the CLI on a real pipeline run: as-of scoring with a backtest, new score
batches next to the old ones, segment export, and promotion decided on the same holdout."""

from __future__ import annotations

import re
import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from offerflow.cli import app
from offerflow.core.config import load_config
from offerflow.core.features import open_events
from offerflow.core.tracking import CHALLENGER, CHAMPION, Tracker, resolve_tracking_uri
from tests.prefect_console import prefect_console  # noqa: F401 (a fixture)

pytestmark = pytest.mark.flow
runner = CliRunner()


@pytest.fixture()
def project(pipeline_run, tmp_path):
    source, _ = pipeline_run
    copy = tmp_path / "p"
    shutil.copytree(source, copy)
    return copy


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_score_as_of_backtests_and_keeps_earlier_batches(project):
    config = str(project / "offerflow.yaml")
    scores_dir = project / "data/outputs/propensity/purchase_14d"
    before = sorted(p.name for p in scores_dir.glob("scores-*.parquet"))
    result = invoke("score", "--goal", "purchase_14d", "--as-of", "2026-10-18", "--config", config)
    assert result.exit_code == 0, result.output
    assert "as of 2026-10-18 (v1)" in result.output and "backtest vs what happened next: AUC 0." in result.output
    assert "note:" not in result.output  # the champion's last training outcomes end on 2026-10-18: no overlap
    # every profile with history before the date is scored, and the output says who is left out
    line = re.search(r"population: ([\d,]+) scored of \1 eligible \(3,000 in the profiles table\) as of 2026-10-18;"
                     r" excluded: (none|([\d,]+) no event before 2026-10-18)", " ".join(result.output.split()))
    assert line, result.output
    scored = int(line.group(1).replace(",", ""))
    assert scored + int((line.group(3) or "0").replace(",", "")) == 3000
    after = sorted(p.name for p in scores_dir.glob("scores-*.parquet"))
    assert set(before) < set(after) and "scores-2026-10-18-b00002.parquet" in after
    batch = pd.read_parquet(scores_dir / "scores-2026-10-18-b00002.parquet")
    # the registry version, as the pipeline's batches hold it (it said "v1" here and "1" there)
    assert (batch["score_date"] == "2026-10-18").all() and (batch["model_version"] == "1").all()
    assert {"factor_1", "factor_1_direction", "factor_1_importance", "percentile", "bucket"} <= set(batch.columns)

    cfg = load_config(project / "offerflow.yaml")
    tracker = Tracker(resolve_tracking_uri(cfg.tracking.uri, cfg.root), cfg.path(cfg.tracking.artifact_root))
    run = tracker.latest_run("offerflow-propensity-purchase_14d")
    assert run["tags"]["as_of"] == "2026-10-18" and 0.65 < run["metrics"]["backtest_auc"] < 1
    assert run["metrics"]["population_scored"] == run["metrics"]["population_eligible"] == scored
    assert run["metrics"]["population_excluded"] == 3000 - scored

    strict = invoke("score", "--as-of", "2026-10-18", "--refit", "--json", "--config", config)
    assert strict.exit_code == 0, strict.output
    import json

    (refit,) = json.loads(strict.output)
    assert refit["model"] == "refit before 2026-10-18" and refit["backtest"]["auc"] > 0.65
    assert refit["note"] is None  # a strict backtest: nothing to warn about
    # a week earlier, the champion's backtest scores outcomes it was trained on: the output says so
    (early,) = json.loads(invoke("score", "--as-of", "2026-10-11", "--json", "--config", config).output)
    assert early["note"] == ("purchase_14d: the @champion (v1) learned from outcomes up to 2026-10-18, after 2026-10-11:"
                             " its backtest scores outcomes it was trained on and reads too well; `--refit` trains on"
                             " the events before the date only")


def test_bare_score_writes_a_new_batch_that_rules_read(project):
    """`offerflow score` without --as-of: as of the day after the last event, with the champion,
    into the next batch beside the pipeline's; that batch is the one enrichment picks and rules read."""
    from datetime import timedelta

    from offerflow.ingest.catalog import load_profiles
    from offerflow.customer_ai.segments import latest_goal_scores
    from offerflow.core.features import event_time_range
    from offerflow.rules.expressions import parse_expression, schema_from_frames
    from offerflow.models.customer_ai_training import enrich_profiles
    config = str(project / "offerflow.yaml")
    cfg = load_config(project / "offerflow.yaml")
    scores_dir = project / "data/outputs/propensity/purchase_14d"
    before = sorted(p.name for p in scores_dir.glob("scores-*.parquet"))
    result = invoke("score", "--config", config)
    assert result.exit_code == 0, result.output
    _, last = event_time_range(open_events(cfg.paths.validated_events))
    day = (last.date() + timedelta(days=1)).isoformat()
    assert f"as of {day} (v1)" in result.output and "no events after this date to backtest against" in result.output
    after = sorted(p.name for p in scores_dir.glob("scores-*.parquet"))
    new = f"scores-{day}-b{len(before) + 1:05d}.parquet"
    assert set(after) - set(before) == {new}  # earlier batches kept, none overwritten
    batch = pd.read_parquet(scores_dir / new)
    assert (batch["score_date"] == day).all() and (batch["model_version"] == "1").all()
    assert (batch["batch"] == len(before) + 1).all()
    # the same champion as of the same day scores exactly as the pipeline's batch did
    pipeline_batch = pd.read_parquet(scores_dir / before[-1])
    pd.testing.assert_series_equal(batch["probability"], pipeline_batch["probability"])

    latest = latest_goal_scores(scores_dir)
    pd.testing.assert_frame_equal(latest, batch)
    profiles = load_profiles(cfg.path(cfg.data.profiles))
    enriched = enrich_profiles(profiles, {"purchase_14d": latest})
    rule = parse_expression("profile.propensity.purchase_14d.score > 40 and profile.propensity.purchase_14d.bucket != 'low'",
                            schema_from_frames(profiles=enriched), kind="rule")
    chosen = rule.evaluate_batch({f"profile.{c}": enriched[c] for c in enriched.columns})
    expected = batch.loc[(batch["score"] > 40) & (batch["bucket"] != "low"), "profile_id"]
    assert set(enriched.loc[chosen, "profile_id"]) == set(expected) and len(expected) > 0


def test_score_rejects_bad_dates_in_one_line(project):
    config = str(project / "offerflow.yaml")
    for args, message in [(["--as-of", "10/10/2026"], "--as-of: expected a date as YYYY-MM-DD, got '10/10/2026'"),
                          (["--as-of", "2020-01-01"], "--as-of 2020-01-01: outside the events"),
                          (["--goal", "nope"], "unknown propensity goal 'nope' (defined: purchase_14d)")]:
        result = invoke("score", *args, "--config", config)
        assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


def test_segment_export_by_bucket_and_score(project):
    config = str(project / "offerflow.yaml")
    out = project / "high.csv"
    result = invoke("segment", "--goal", "purchase_14d", "--min-score", "40", "--out", str(out), "--config", config)
    assert result.exit_code == 0, result.output
    segment = pd.read_csv(out)
    scores = pd.read_parquet(next((project / "data/outputs/propensity/purchase_14d").glob("scores-*.parquet")))
    assert list(segment.columns) == ["profile_id", "probability", "score", "percentile", "bucket"]
    assert set(segment["profile_id"]) == set(scores.loc[scores["score"] >= 40, "profile_id"]) and len(segment) > 0
    low = invoke("segment", "--goal", "purchase_14d", "--bucket", "low", "--out", str(project / "low.parquet"),
                 "--config", config)
    assert low.exit_code == 0, low.output
    assert set(pd.read_parquet(project / "low.parquet")["bucket"]) == {"low"}
    bad = invoke("segment", "--goal", "purchase_14d", "--bucket", "hot", "--config", config)
    assert bad.exit_code == 1 and "--bucket: expected low, medium or high, got 'hot'" in bad.output


def test_worse_model_is_compared_on_the_same_holdout_and_stays_challenger(project):
    from offerflow.ingest.catalog import load_profiles
    from offerflow.models.customer_ai_training import train_propensity
    cfg = load_config(project / "offerflow.yaml")
    tracker = Tracker(resolve_tracking_uri(cfg.tracking.uri, cfg.root), cfg.path(cfg.tracking.artifact_root))
    goal = cfg.propensity_goals[0]
    # one tree of 2 leaves: a clearly worse model than the champion
    weak = goal.model_copy(update={"lightgbm": goal.lightgbm.model_copy(update={"n_estimators": 1, "num_leaves": 2})})
    con = open_events(cfg.paths.validated_events)
    profiles = load_profiles(cfg.path(cfg.data.profiles))
    _, result = train_propensity(con, weak, profiles, tracker, cfg.tracking.experiment_prefix, cfg.seed)
    assert not result.promoted
    assert "does not beat champion" in result.reason and "champion v1 re-scored on this run's holdout" in result.reason
    registered = "offerflow-propensity-purchase_14d"
    assert tracker.alias_version(registered, CHAMPION) == "1"
    assert tracker.alias_version(registered, CHALLENGER) == result.model_version
    metrics = tracker.run_metrics(result.run_id)
    # the champion's figure is measured on this run's holdout (same n), not read from its own run
    assert metrics["champion_holdout_n"] == metrics["holdout_n"]
    assert metrics["champion_holdout_auc"] > metrics["holdout_auc"]
    tags = tracker.client.get_run(result.run_id).data.tags
    assert tags["dataset_version"].count("-") == 3 and tags["git_commit"] and '"outcome_window_days": 14' in tags["goal_config"]


def test_a_goal_too_long_for_the_history_is_skipped_and_the_others_train(project, prefect_harness, monkeypatch):
    """A 30-day goal on the 60-day world needs 67 days: skipped with one line; the 14-day goal
    trains, with its population (eligible, scored, excluded and why) in the summary and MLflow."""
    import yaml

    from offerflow.flows.customer_ai import train_customer_ai

    monkeypatch.chdir(project)
    raw = yaml.safe_load((project / "offerflow.yaml").read_text())
    raw["propensity_goals"].append({**raw["propensity_goals"][0], "name": "purchase_30d", "outcome_window_days": 30})
    (project / "offerflow.yaml").write_text(yaml.safe_dump(raw))
    summary = train_customer_ai(config_path=str(project / "offerflow.yaml"), use_cache=False)
    assert list(summary["skipped"]) == ["purchase_30d"]
    assert "outcome window of 30 days needs at least 67" in summary["skipped"]["purchase_30d"]
    population = summary["goals"]["purchase_14d"]["population"]
    eligible = population["eligible"]
    assert population["scored"] == eligible > 2900 and population["profiles"] == 3000
    assert population["excluded"] == {f"no event before {population['as_of']}": 3000 - eligible}
    cfg = load_config(project / "offerflow.yaml")
    tracker = Tracker(resolve_tracking_uri(cfg.tracking.uri, cfg.root), cfg.path(cfg.tracking.artifact_root))
    run = tracker.client.get_run(summary["goals"]["purchase_14d"]["run_id"]).data
    assert run.metrics["population_eligible"] == eligible and run.metrics["population_excluded"] == 3000 - eligible
    assert run.metrics["population_excluded_no_history"] == 3000 - eligible
    assert run.params["validation_split"] == "held-out profiles (20%)" and int(run.params["best_iteration"]) >= 20


def test_train_prints_each_goals_population(project, prefect_harness, monkeypatch, prefect_console):
    import os

    monkeypatch.chdir(project)
    # `offerflow train` sets these with os.environ.setdefault: set them here (the session's value, or
    # the one it would set) so that monkeypatch restores them after this test
    defaults = {"PREFECT_HOME": str(project / ".prefect"), "MLFLOW_DISABLE_TELEMETRY": "true",
                "GX_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}
    for name, value in defaults.items():
        monkeypatch.setenv(name, os.environ.get(name, value))
    result = invoke("train", "--goal", "purchase_14d", "--config", str(project / "offerflow.yaml"))
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert re.search(r"purchase_14d: holdout AUC 0\.\d+, version \d+, .*population as of \d{4}-\d\d-\d\d: ([\d,]+)"
                     r" eligible, \1 scored; excluded: [\d,]+ no event before", text), result.output
    # quiet: no Prefect INFO lines, no MLflow registration notes (a model was logged)
    terminal = result.output + prefect_console.getvalue()
    assert "INFO" not in terminal and "Successfully registered" not in terminal, terminal

"""The 15-minute auto-optimization retrain: incremental statistics, new posteriors, published."""

from __future__ import annotations

import os
import shutil

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from offerflow.core.schema import EVENT_SCHEMA
from offerflow.core.store import RankingStore

pytestmark = pytest.mark.flow


def test_retrain_updates_stats_incrementally_and_publishes(pipeline_run, tmp_path):
    from offerflow.flows.auto_optimization import retrain_auto_optimization

    source, summary = pipeline_run
    project = tmp_path / "project"
    shutil.copytree(source, project)
    config = str(project / "offerflow.yaml")
    store = RankingStore(project / "data/rankings")
    before = store.current_version("email-hero")
    tracker = __import__("offerflow.core.tracking", fromlist=["Tracker"]).Tracker(
        f"sqlite:///{project / 'mlflow.db'}", project / "mlruns")
    run_id = summary["ranking_models"]["email-auto"]["run_id"]
    trained = pd.DataFrame(tracker.load_run_dict(run_id, "posteriors.json")["posteriors"])
    # The run records what each placement publishes (per placement unless pool_placements).
    per_placement = tracker.load_run_dict(run_id, "placement_posteriors.json")
    assert set(per_placement) == {"email-hero"}
    assert tracker.run_params(run_id)["pool_placements"] == "False"
    assert "'rule': 'thompson'" in tracker.run_params(run_id)["sampling"]  # the sampling rule it serves with

    cwd = os.getcwd()
    os.chdir(project)
    try:
        first = retrain_auto_optimization(config_path=config)
        # Same events as the pipeline saw: same posteriors, published as a new version.
        assert first["published"]["email-hero"] == before + 1
        again = store.snapshot("email-hero").posteriors.set_index("offer_id")
        pd.testing.assert_series_equal(again["alpha"], trained.set_index("offer_id")["alpha"], check_names=False)

        # A new hour of traffic arrives: one offer gets 1,000 clicks out of 2,000 displays.
        path = project / "data/outputs/validated/events.parquet"
        events = pq.read_table(path).to_pandas()
        offer = again.index[again["qualified"]][0]
        start = events["timestamp"].max() + pd.Timedelta(minutes=1)
        n = 2000
        new = pd.DataFrame({"event_id": [f"new-{i}" for i in range(n)], "timestamp": start + pd.to_timedelta(range(n), "ms"),
                            "profile_id": "p0000001", "event_type": "display", "offer_id": offer,
                            "placement_id": "email-hero", "channel": "email", "value": None, "propensity": 0.5,
                            "decision_id": [f"new-d{i}" for i in range(n)]})
        clicks = new.iloc[:1000].assign(event_id=lambda f: f["event_id"] + "-c", event_type="click")
        pq.write_table(pa.Table.from_pandas(pd.concat([events, new, clicks], ignore_index=True), schema=EVENT_SCHEMA,
                                            preserve_index=False), path)
        second = retrain_auto_optimization(config_path=config)
    finally:
        os.chdir(cwd)
    assert second["published"]["email-hero"] == before + 2
    after = store.snapshot("email-hero").posteriors.set_index("offer_id")
    assert after.loc[offer, "displays"] == again.loc[offer, "displays"] + n
    assert after.loc[offer, "successes"] == again.loc[offer, "successes"] + 1000
    others = after.index.difference([offer])
    # the other offers' counts are unchanged (their alpha moves with the refitted empirical-Bayes prior)
    pd.testing.assert_frame_equal(after.loc[others, ["displays", "successes"]], again.loc[others, ["displays", "successes"]])
    state = (project / "data/outputs/offer_stats/email-auto/state.json").read_text()
    assert start.isoformat()[:10] in state  # the watermark moved to the new traffic

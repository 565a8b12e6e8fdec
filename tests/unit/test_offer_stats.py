"""Daily offer statistics: equal to counting the window directly, and incremental updates equal a rebuild."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import duckdb
import pandas as pd
import pytest

from offerflow.core.features import open_events
from offerflow.ranking.offer_stats import OfferStatsStore, daily_stats, window_counts
from offerflow.ranking.click_model import interaction_log, offer_counts

PLACEMENTS = ["email-hero", "web-banner"]


def _events_until(world_dir, tmp_path, until: datetime, name: str):
    """The world's events before `until`, as a separate file (what ingestion had seen by then)."""
    path = tmp_path / f"{name}.parquet"
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"COPY (SELECT * FROM read_parquet('{world_dir / 'events.parquet'}') WHERE timestamp < ?"
                f" ORDER BY timestamp) TO '{path}' (FORMAT parquet)", [until])
    return open_events(path)


def test_window_counts_equal_counting_the_interaction_log(world_dir):
    con = open_events(world_dir / "events.parquet")
    end = datetime(2026, 11, 1, tzinfo=timezone.utc)
    start = end - timedelta(days=14)
    stats = daily_stats(con, ["email-hero"], "click")
    from_stats = window_counts(stats, start, end).set_index("offer_id").sort_index()
    direct = offer_counts(interaction_log(con, ["email-hero"], start, end)).set_index("offer_id").sort_index()
    assert from_stats["displays"].sum() > 1000
    pd.testing.assert_frame_equal(from_stats[["displays", "successes", "value"]],
                                  direct[["displays", "successes", "value"]], check_dtype=False)


def test_incremental_update_equals_a_full_rebuild(world_dir, tmp_path):
    store = OfferStatsStore(tmp_path / "stats", PLACEMENTS, "click")
    first = store.update(_events_until(world_dir, tmp_path, datetime(2026, 10, 20, 13, tzinfo=timezone.utc), "a"))
    assert first.mode == "full"
    full_con = open_events(world_dir / "events.parquet")
    second = store.update(full_con)
    assert second.mode == "incremental"
    # recomputed from the day before the watermark's day only: 2026-10-19 onwards
    assert second.since == datetime(2026, 10, 19, tzinfo=timezone.utc)
    rebuilt = daily_stats(full_con, PLACEMENTS, "click")
    pd.testing.assert_frame_equal(store.read().reset_index(drop=True), rebuilt.reset_index(drop=True))
    assert store.update(full_con).mode == "incremental"  # nothing new: still equal
    pd.testing.assert_frame_equal(store.read().reset_index(drop=True), rebuilt.reset_index(drop=True))


def test_rewritten_history_triggers_a_rebuild(world_dir, tmp_path):
    store = OfferStatsStore(tmp_path / "stats", PLACEMENTS, "click")
    store.update(open_events(world_dir / "events.parquet"))
    # The snapshot is rebuilt without the first ten days (e.g. a retention job ran).
    cut = datetime(2026, 9, 12, tzinfo=timezone.utc)
    path = tmp_path / "trimmed.parquet"
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"COPY (SELECT * FROM read_parquet('{world_dir / 'events.parquet'}') WHERE timestamp >= ?)"
                f" TO '{path}' (FORMAT parquet)", [cut])
    trimmed = open_events(path)
    update = store.update(trimmed)
    assert update.mode == "full"
    assert pd.to_datetime(store.read()["day"]).min() >= pd.Timestamp("2026-09-12")


def test_changing_the_success_event_rebuilds(world_dir, tmp_path):
    con = open_events(world_dir / "events.parquet")
    OfferStatsStore(tmp_path / "stats", PLACEMENTS, "click").update(con)
    purchases = OfferStatsStore(tmp_path / "stats", PLACEMENTS, "purchase")
    assert purchases.update(con).mode == "full"
    assert purchases.read()["successes"].sum() == 0  # the world's purchases carry no decision id


@pytest.mark.parametrize("full", [True])
def test_full_flag_forces_rebuild(world_dir, tmp_path, full):
    con = open_events(world_dir / "events.parquet")
    store = OfferStatsStore(tmp_path / "stats", PLACEMENTS, "click")
    store.update(con)
    assert store.update(con, full=full).mode == "full"

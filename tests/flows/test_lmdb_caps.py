"""The LMDB cap store (`caps.store: lmdb`) on real LMDB files: exact caps across processes, the same
answers as the embedded store, seeded once, old windows purged, resets seen by every process, a
full map a one-line error. `offerflow serve --workers N` on it: tests/flows/test_cap_store.py."""

from __future__ import annotations

import multiprocessing
import random
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from offerflow.core.settings import CapsConfig
from offerflow.rules.cap_store import load_cap_store
from offerflow.rules.capping import CapRule, load_cap_counters
from offerflow.rules.lmdb_caps import LmdbCapStore, purger
from offerflow.rules.shared_caps import CapStoreError

pytestmark = pytest.mark.flow
NOW = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)
HAMMER_CAPS = {"o-1": (CapRule(event="display", scope="total", limit=50, reset="daily"),),
               "o-2": (CapRule(event="display", scope="per_profile", limit=3, reset="weekly"),
                       CapRule(event="decision", scope="total", limit=40, per_placement=True)),
               "o-3": (CapRule(event="display", scope="per_profile", limit=2),)}
PROFILES = [f"p{i}" for i in range(10)]


def _hammer(path: str, seed: int, requests: int) -> list[tuple[str, str, str]]:
    """One process: `requests` two-placement requests on its own store; the (offer, placement,
    profile) of every offer the store counted."""
    store, rng, granted = LmdbCapStore(HAMMER_CAPS, Path(path)), random.Random(seed), []
    for _ in range(requests):
        profile = rng.choice(PROFILES)
        request = [(rng.choice([["o-1"], ["o-2"], ["o-1", "o-2"]]), [], "web"), (["o-3"], ["o-fallback"], "app")]
        with store.lock:
            counted, _ = store.reserve_request(request, profile, NOW)
        granted += [(oid, placement, profile) for offers, _, placement in request[:counted] for oid in offers]
    return granted


def test_caps_are_exact_across_processes(tmp_path):
    path = tmp_path / "counters.lmdb"
    LmdbCapStore(HAMMER_CAPS, path).reserve(["o-3"], "app", "p0", NOW)  # the parent has it open across the fork
    with multiprocessing.get_context("fork").Pool(4) as pool:
        granted = [g for part in pool.starmap(_hammer, [(str(path), seed, 400) for seed in range(4)]) for g in part]
    granted.append(("o-3", "app", "p0"))
    offers = Counter(oid for oid, _, _ in granted)
    per_profile = Counter((oid, profile) for oid, _, profile in granted)
    assert offers["o-1"] == 50  # the total cap, exactly
    assert {per_profile[("o-2", p)] for p in PROFILES} == {3}  # 3 per profile (30, under the total of 40)
    assert {per_profile[("o-3", p)] for p in PROFILES} == {2}
    rows = {(r["offer_id"], r["rule"]): r for r in LmdbCapStore(HAMMER_CAPS, path).state(NOW)}
    assert rows[("o-1", 0)]["count"] == 50 and rows[("o-1", 0)]["capped"]
    assert rows[("o-2", 0)]["at_limit"] == 10 and rows[("o-2", 1)]["count"] == 30
    assert rows[("o-3", 0)]["count"] == 2 and rows[("o-3", 0)]["at_limit"] == 10


def test_answers_equal_the_embedded_stores(tmp_path):
    """The same random sequence of requests (up to 3 placements, checked and unchecked offers, caps
    per placement and per profile) gets the same (counted, refused) answers and counts."""
    caps = {"a": (CapRule(event="display", scope="total", limit=9),),
            "b": (CapRule(event="display", scope="per_profile", limit=2, reset="daily"),
                  CapRule(event="decision", scope="total", limit=12, per_placement=True)),
            "c": (CapRule(event="decision", scope="per_profile", limit=1, per_placement=True, reset="monthly"),),
            "d": (CapRule(event="click", scope="total", limit=1),)}  # clicks are not counted by decisions
    lmdb_store, embedded = LmdbCapStore(caps, tmp_path / "x.lmdb"), load_cap_counters(caps, None, None)
    rng, answers = random.Random(3), {"lmdb": [], "embedded": []}
    for _ in range(400):
        request = [(rng.sample(["a", "b", "c", "d", "e"], rng.randint(0, 3)), rng.sample(["f", "a"], rng.randint(0, 1)),
                    placement) for placement in rng.sample(["web", "app", "mail"], rng.randint(1, 3))]
        profile = rng.choice(["p0", "p1", "p2"])
        for name, store in (("lmdb", lmdb_store), ("embedded", embedded)):
            with store.lock:
                answers[name].append(store.reserve_request(request, profile, NOW))
    assert answers["lmdb"] == answers["embedded"]
    assert any(n < 3 and refused for n, refused in answers["lmdb"])  # refusals happened
    for family in embedded.families:
        pd.testing.assert_frame_equal(_frame(lmdb_store, family), _frame(embedded, family), check_dtype=False)


def _frame(store, family) -> pd.DataFrame:
    """A family's counts in NOW's window, in key order."""
    frame = store.counts_frame(family, NOW) if store.shared else store.counts_frame(family)
    return frame.sort_values(["offer_id", "placement_id", "profile_id"], ignore_index=True)


def _write_data(root: Path) -> tuple[Path, Path]:
    """Ingested events (displays, clicks) and a decision log (one of its displays ingested too)."""
    at = NOW - timedelta(hours=1)
    events = pd.DataFrame({"event_id": ["e1", "e2", "e3", "L1"], "timestamp": [at] * 4,
                           "profile_id": ["p0", "p0", "p1", "p0"], "offer_id": ["o-1", "o-1", "o-2", "o-1"],
                           "placement_id": ["web"] * 4, "event_type": ["display", "click", "display", "display"]})
    events.to_parquet(root / "events.parquet")
    (root / "log").mkdir()
    logged = pd.DataFrame({"event_id": ["L1", "L2", "L3"], "timestamp": [at] * 3, "profile_id": ["p0", "p1", "p1"],
                           "offer_id": ["o-1", "o-1", "o-2"], "placement_id": ["web", "app", "web"]})
    logged.to_parquet(root / "log" / "decisions-20261201T110000-abc.parquet")
    return root / "events.parquet", root / "log"


SEED_CAPS = {"o-1": (CapRule(event="display", scope="per_profile", limit=9),
                     CapRule(event="click", scope="total", limit=9)),
             "o-2": (CapRule(event="decision", scope="total", limit=9, per_placement=True, reset="daily"),)}


def _load(root: str) -> int:
    """A process starting: opens the store, seeding it if nobody did; how many families it seeded."""
    events, log = Path(root) / "events.parquet", Path(root) / "log"
    store = LmdbCapStore(SEED_CAPS, Path(root) / "caps.lmdb")
    from offerflow.rules.capping import count_cap_events

    return len(store.ensure_seeded(lambda fams: count_cap_events(fams, sorted(SEED_CAPS), events, log, NOW), NOW))


def test_seeded_once_from_the_events_and_the_decision_log(tmp_path):
    events, log = _write_data(tmp_path)
    with multiprocessing.get_context("fork").Pool(3) as pool:  # three workers starting at once
        seeded = pool.map(_load, [str(tmp_path)] * 3)
    assert sorted(seeded) == [0, 0, 3]  # one seeded the three families, the others found the markers
    assert _load(str(tmp_path)) == 0  # a restart: nothing counted twice
    store = load_cap_store(SEED_CAPS, events, log, now=NOW, lmdb_path=tmp_path / "caps.lmdb")
    embedded = load_cap_counters(SEED_CAPS, events, log, now=NOW)
    for family in embedded.families:
        pd.testing.assert_frame_equal(_frame(store, family), _frame(embedded, family), check_dtype=False)
    rows = {(r["offer_id"], r["rule"]): r["count"] for r in store.state(NOW)}
    assert rows == {("o-1", 0): 2, ("o-1", 1): 1, ("o-2", 0): 1}  # L1 once, not twice; the click; L3


def test_older_windows_are_purged(tmp_path):
    caps = {"o-1": (CapRule(event="display", scope="per_profile", limit=5, reset="daily"),
                    CapRule(event="display", scope="total", limit=500))}
    store = LmdbCapStore(caps, tmp_path / "x.lmdb")
    for day in range(3):
        for k in range(20):
            store.reserve(["o-1"], "web", f"p{k}", NOW + timedelta(days=day))
    assert purger().wait(60)
    assert _entries(store) == 20 + 1  # today's 20 per-profile counters and the never-resetting total
    assert {r["count"] for r in store.state(NOW + timedelta(days=2))} == {1, 60}
    other = LmdbCapStore(caps, tmp_path / "x.lmdb")  # a worker started yesterday, still in yesterday's window
    deleted = purger().deleted
    other._window(caps["o-1"][0].family, NOW + timedelta(days=3))  # sees a new day first
    assert purger().wait(60) and purger().deleted - deleted == 20
    assert other.state(NOW + timedelta(days=3))[1]["count"] == 60


DAILY = {"o-1": (CapRule(event="display", scope="per_profile", limit=2, reset="daily"),
                 CapRule(event="display", scope="total", limit=10_000))}
OLD_KEYS = 100_000  # at PURGE_CHUNK keys and a PURGE_PAUSE_S pause a transaction: > 0.3 s to purge


def _entries(store: LmdbCapStore) -> int:
    with store.env.begin(db=store.counters) as txn:
        return txn.stat(store.counters)["entries"]


def _old_window(path: Path, yesterday: datetime) -> None:
    """OLD_KEYS per-profile counters of `yesterday`'s window, written directly (one transaction)."""
    writer = LmdbCapStore(DAILY, path)
    family = DAILY["o-1"][0].family
    keys = [writer.key(family, yesterday, "o-1", "web", f"old-{k:06d}").encode() for k in range(OLD_KEYS)]
    with writer._write() as txn:
        for key in keys:
            txn.put(key, (1).to_bytes(8, "little"))


def test_a_request_after_the_window_rolls_returns_without_purging(tmp_path):
    """The first request of a new day is answered while the old day's counters are still there;
    the purge thread deletes them afterwards; the new day's counts are exact."""
    path, today = tmp_path / "x.lmdb", NOW + timedelta(days=1)
    _old_window(path, NOW)
    assert purger().wait(60)  # the writer's own window: nothing older
    store = LmdbCapStore(DAILY, path)
    assert store.reserve(["o-1"], "web", "first", today) == []  # the first request that sees the new day
    assert _entries(store) > OLD_KEYS // 2  # returned before the purge (a synchronous one deletes them all)
    assert not purger().wait(0)  # pending, in the purge thread
    answers = [store.reserve(["o-1"], "web", f"p{k % 10}", today) for k in range(30)]  # while it purges
    assert answers == [[]] * 20 + [["o-1"]] * 10
    assert purger().wait(120)
    assert _entries(store) == 11 + 1  # the new day's 11 profiles and the total
    counts = store.counts_frame(DAILY["o-1"][0].family, today)
    assert counts.set_index("profile_id")["n"].to_dict() == {"first": 1, **{f"p{k}": 2 for k in range(10)}}
    assert store.state(today)[1]["count"] == 21  # the never-resetting total


SHORT_LIVED = """
import sys, time
from datetime import datetime
from pathlib import Path
from offerflow.rules.capping import CapRule
from offerflow.rules.lmdb_caps import LmdbCapStore, purger
caps = {"o-1": (CapRule(event="display", scope="per_profile", limit=2, reset="daily"),
                CapRule(event="display", scope="total", limit=10_000))}
store = LmdbCapStore(caps, Path(sys.argv[1]))
started = time.perf_counter()
assert store.reserve(["o-1"], "web", "short", datetime.fromisoformat(sys.argv[2])) == []
print(time.perf_counter() - started)
"""


def test_a_short_lived_process_leaves_old_windows_that_a_later_one_purges(tmp_path):
    """`offerflow decide` style: a process that counts one decision and exits stops its purge at
    exit (the old windows stay); the next process that sees the new window deletes them."""
    import subprocess
    import sys

    path, today = tmp_path / "x.lmdb", NOW + timedelta(days=1)
    _old_window(path, NOW)
    src = str(Path(__file__).resolve().parents[2] / "src")
    done = subprocess.run([sys.executable, "-c", SHORT_LIVED, str(path), today.isoformat()], capture_output=True,
                          text=True, timeout=120, env={**__import__("os").environ, "PYTHONPATH": src})
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) < 0.1  # the request: no purge in it
    later = LmdbCapStore(DAILY, path)
    assert _entries(later) > OLD_KEYS // 2  # left by the short-lived process
    assert later.counts_frame(DAILY["o-1"][0].family, today)["n"].tolist() == [1]
    assert purger().wait(120)  # `counts_frame` saw today's window first in this process: purged
    assert _entries(later) == 1 + 1


def _forked_child(path: str, today: datetime) -> tuple[int, bool, int]:
    """In a child forked while the parent purges: its jobs and thread, then its own purge."""
    inherited = len(purger().jobs) + (purger().thread is not None)
    store = LmdbCapStore(DAILY, Path(path))
    assert store.reserve(["o-1"], "web", "child", today) == []
    return inherited, purger().wait(120), _entries(store)


def test_a_forked_child_does_not_inherit_the_purge(tmp_path):
    path, today = tmp_path / "x.lmdb", NOW + timedelta(days=1)
    _old_window(path, NOW)
    store = LmdbCapStore(DAILY, path)
    assert store.reserve(["o-1"], "web", "parent", today) == []
    assert not purger().wait(0)  # the parent purges
    with multiprocessing.get_context("fork").Pool(1) as pool:
        inherited, purged, entries = pool.apply(_forked_child, (str(path), today))
    assert (inherited, purged, entries) == (0, True, 2 + 1)  # a thread of its own, all old keys gone
    assert purger().wait(120) and _entries(store) == 2 + 1
    counts = store.counts_frame(DAILY["o-1"][0].family, today)
    assert counts.set_index("profile_id")["n"].to_dict() == {"parent": 1, "child": 1}
    assert store.state(today)[1]["count"] == 2


def _reset(path: str) -> int:
    return LmdbCapStore(HAMMER_CAPS, Path(path)).reset("o-1")


def test_a_reset_in_another_process_is_seen(tmp_path):
    path = tmp_path / "counters.lmdb"
    store = LmdbCapStore(HAMMER_CAPS, path)
    assert [store.reserve(["o-1"], "web", f"p{k}", NOW) for k in range(51)][-1] == ["o-1"]
    store.reserve(["o-3"], "web", "p0", NOW)
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply(_reset, (str(path),)) == 1  # o-1's one total counter; o-3's stays
    assert store.reserve(["o-1"], "web", "p0", NOW) == []
    assert {r["offer_id"]: r["count"] for r in store.state(NOW) if r["rule"] == 0} == {"o-1": 1, "o-2": 0, "o-3": 1}
    assert store.reset() == 2


def test_a_full_map_is_a_one_line_error(tmp_path):
    caps = {"o-1": (CapRule(event="display", scope="per_profile", limit=5),)}
    store = LmdbCapStore(caps, tmp_path / "x.lmdb", map_mib=1)
    with pytest.raises(CapStoreError) as info:
        for k in range(100_000):
            store.reserve(["o-1"], "web", f"profile-{k:08d}", NOW)
    assert str(info.value) == (f"caps.store: the LMDB cap store {tmp_path / 'x.lmdb'} is full (1 MiB mapped): "
                               "raise caps.lmdb_map_mib")
    assert store.reserve(["o-1"], "web", "profile-00000000", NOW) == []  # what fitted stays usable


def test_the_store_setting_names_a_directory(tmp_path):
    assert CapsConfig(store="lmdb").lmdb_path(tmp_path) == tmp_path / "caps" / "counters.lmdb"
    assert CapsConfig(store="lmdb:///srv/caps").lmdb_path(tmp_path) == Path("/srv/caps")
    assert CapsConfig(store="lmdb").redis_url is None and CapsConfig(store="lmdb").shared
    assert CapsConfig(store="redis://h:1/0").lmdb_path(tmp_path) is None and not CapsConfig().shared


def _killed_in_a_transaction(path: str) -> None:
    """A worker that counts once, then dies by SIGKILL holding the write mutex, mid-transaction."""
    import os
    import signal

    store = LmdbCapStore(HAMMER_CAPS, Path(path))
    store.reserve(["o-1"], "web", "p0", NOW)
    with store._write() as txn:
        txn.put(b"c:uncommitted", b"1")
        os.kill(os.getpid(), signal.SIGKILL)


def test_a_worker_killed_inside_a_transaction_blocks_nobody(tmp_path):
    """The write mutex is robust: the next writer gets it; the committed count stays, the rest goes."""
    process = multiprocessing.get_context("fork").Process(target=_killed_in_a_transaction,
                                                          args=(str(tmp_path / "x.lmdb"),))
    process.start()
    process.join(timeout=60)
    assert process.exitcode == -9
    store = LmdbCapStore(HAMMER_CAPS, tmp_path / "x.lmdb")
    assert store.reserve(["o-1"], "web", "p1", NOW) == []
    assert {r["offer_id"]: r["count"] for r in store.state(NOW) if r["rule"] == 0}["o-1"] == 2
    with store.env.begin(db=store.counters) as txn:
        assert txn.get(b"c:uncommitted") is None

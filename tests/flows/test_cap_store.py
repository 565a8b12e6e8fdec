"""The Redis cap store: exact caps under concurrency, seeded once, and `offerflow serve --workers N`
on Redis and on LMDB (`caps.store: lmdb`; its own tests: tests/flows/test_lmdb_caps.py).

The Redis tests need `redis-server` (Debian: apt-get install redis-server; `.ci/run` installs it);
skipped with the reason otherwise. Each test module starts its own Redis on a free port, without
persistence.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from offerflow.core.config import load_config
from offerflow.decisioning.decision_log import log_decisions
from offerflow.decisioning.engine import build_engine
from offerflow.ops.servers import free_port, redis_argv
from offerflow.rules.cap_store import RedisCapStore, load_cap_store
from offerflow.rules.capping import CapRule, caps_of

pytestmark = pytest.mark.flow
REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(redis_argv(port, tmp_path_factory.mktemp("redis")), stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    store = RedisCapStore({}, url, "probe")
    for _ in range(100):
        try:
            store.ping()
            break
        except Exception:
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_reserve_is_exact_under_concurrent_threads(redis_url):
    caps = {"o-1": (CapRule(event="display", scope="total", limit=7),),
            "o-2": (CapRule(event="display", scope="per_profile", limit=2, reset="daily"),
                    CapRule(event="decision", scope="total", limit=9, per_placement=True))}
    stores = [RedisCapStore(caps, redis_url, "exact") for _ in range(4)]  # four "workers"

    def one(k: int) -> list[str]:
        store = stores[k % 4]
        granted = []
        for offer in ("o-1", "o-2"):
            if not store.reserve([offer], "web", f"p{k % 3}", NOW):
                granted.append(offer)
        return granted

    with ThreadPoolExecutor(8) as pool:
        granted = [o for g in pool.map(one, range(200)) for o in g]
    assert granted.count("o-1") == 7
    assert granted.count("o-2") == 6  # 3 profiles x 2 per profile, under the total of 9
    assert stores[0].reserve(["o-1", "o-2"], "web", "p-new", NOW) == ["o-1"]  # all or nothing
    rows = {(r["offer_id"], r["rule"]): r for r in stores[1].state(NOW)}
    assert rows[("o-1", 0)]["count"] == 7 and rows[("o-1", 0)]["capped"]
    assert rows[("o-2", 1)]["count"] == 6 and not rows[("o-2", 1)]["capped"]
    assert stores[2].reset("o-1") == 1
    assert stores[3].reserve(["o-1"], "web", "p0", NOW) == []


def test_a_request_is_reserved_in_one_round_trip_in_placement_order(redis_url, tmp_path):
    """`reserve_request`: one EVALSHA for every placement of a request; each placement is checked
    after the increments of the ones before it, so an offer decided in two placements cannot pass
    its cap; it stops at the first placement with a capped offer. The embedded and LMDB stores
    answer the same."""
    import redis

    caps = {"o-1": (CapRule(event="display", scope="total", limit=3),),
            "o-2": (CapRule(event="display", scope="per_profile", limit=1),)}
    store, admin = RedisCapStore(caps, redis_url, "request"), redis.Redis.from_url(redis_url)
    embedded = load_cap_store(caps, None, None, None, NOW)
    on_lmdb = load_cap_store(caps, None, None, None, NOW, lmdb_path=tmp_path / "counters.lmdb")
    request = [(["o-1", "o-2"], [], "web"), (["o-1"], ["o-9"], "app"), (["o-1", "o-2"], [], "mail")]
    calls = admin.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
    for cap_store in (store, embedded, on_lmdb):
        with cap_store.lock:
            assert cap_store.reserve_request(request, "p0", NOW) == (2, ["o-2"])  # o-1 at 2 of 3, o-2 at 1 of 1
            assert cap_store.reserve_request([(["o-1"], [], "web"), (["o-1"], [], "app")], "p1", NOW) == (1, ["o-1"])
            assert cap_store.reserve_request([([], ["o-9"], "web")], "p1", NOW) == (1, [])
    assert admin.info("commandstats")["cmdstat_evalsha"]["calls"] - calls <= 3  # the first may be NOSCRIPT + EVAL
    for cap_store in (store, on_lmdb):
        assert {(r["offer_id"], r["count"]) for r in cap_store.state(NOW)} == {("o-1", 3), ("o-2", 1)}


def test_reserve_survives_a_lost_script_and_a_dropped_connection(redis_url):
    """`reserve` runs its script on a connection of its own: a SCRIPT FLUSH (Redis restarted) loads
    it again, a killed connection is reopened; every reserve is counted once."""
    import redis

    caps = {"o-1": (CapRule(event="display", scope="total", limit=5),)}
    store = RedisCapStore(caps, redis_url, "lost")
    admin = redis.Redis.from_url(redis_url)
    assert store.reserve(["o-1"], "web", "p0", NOW) == []  # first use: NOSCRIPT, loaded by redis-py
    admin.script_flush()
    assert store.reserve(["o-1"], "web", "p0", NOW) == []
    admin.client_kill_filter(_type="normal", skipme=True)  # every other client, the store's too
    assert store.reserve(["o-1"], "web", "p0", NOW) == []
    assert [store.reserve(["o-1"], "web", "p0", NOW) for _ in range(3)] == [[], [], ["o-1"]]
    assert {r["offer_id"]: r["count"] for r in store.state(NOW)} == {"o-1": 5}


def test_seeded_once_from_the_decision_log(redis_url, tmp_path, project_dir):
    config = load_config(project_dir / "offerflow.yaml")
    engine = build_engine(config, now=NOW)
    decisions = [engine.decide(f"p{i:07d}", ["web-sidebar"], now=NOW) for i in range(40)]
    log_decisions(decisions, tmp_path / "log")
    shown = pd.Series([i.offer_id for d in decisions for i in d.placements[0].items]).value_counts()
    caps = {oid: (CapRule(event="display", scope="total", limit=10_000),) for oid in shown.index}

    def load() -> RedisCapStore:
        return load_cap_store(caps, None, tmp_path / "log", now=NOW, redis_url=redis_url, namespace="seed")

    with ThreadPoolExecutor(3) as pool:  # three processes starting at once: one seeds, the others wait
        stores = list(pool.map(lambda _: load(), range(3)))
    load()  # a restart: seeded already, nothing counted twice
    counts = stores[0].counts_frame(stores[0].families[0], NOW).set_index("offer_id")["n"]
    assert counts.sort_index().to_dict() == shown.sort_index().to_dict()


def _project_with_small_caps(root: Path, store: str) -> Path:
    """The bench's project (300 profiles, published tables) with small total and per-profile caps
    on every offer but the fallbacks, and `caps.store` set to `store` (lmdb, or a Redis URL: its db 1)."""
    from bench.decision_bench import build_project

    config_path = build_project(root, 300, seed=5)
    offers_path = root / "data" / "offers.yaml"
    catalog = yaml.safe_load(offers_path.read_text())
    for offer in catalog["offers"]:
        if not offer.get("fallback"):
            offer["caps"] = [{"event": "display", "scope": "total", "limit": 25, "reset": "daily"},
                             {"event": "display", "scope": "per_profile", "limit": 1, "reset": "never"}]
    offers_path.write_text(yaml.safe_dump(catalog, sort_keys=False))
    config_path.write_text(config_path.read_text() + f"caps:\n  store: {store.replace('/0', '/1')}\n")
    return config_path


@pytest.mark.parametrize("store", ["redis", "lmdb"])
def test_several_workers_never_show_an_offer_over_its_cap(store, request, tmp_path):
    from bench.decision_bench import wait_healthy

    url = request.getfixturevalue("redis_url") if store == "redis" else store
    config_path = _project_with_small_caps(tmp_path, url)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "offerflow.cli", "serve", "--config", str(config_path),
                               "--port", str(port), "--workers", "3"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_healthy(port, server, tmp_path / "serve.log", timeout_s=120)
        _assert_connections_spread(server, port, tmp_path / "serve.log", workers=3)
        profiles = pd.read_parquet(tmp_path / "data/profiles.parquet")["profile_id"].astype(str).tolist()
        lock, statuses = threading.Lock(), []

        def post(k: int) -> None:
            body = json.dumps({"profile_id": profiles[k % 60], "placements": ["web-banner", "web-sidebar"]})
            request = urllib.request.Request(f"http://127.0.0.1:{port}/decisions", body.encode(),
                                             {"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as response:
                with lock:
                    statuses.append(response.status)

        with ThreadPoolExecutor(24) as pool:
            list(pool.map(post, range(600)))
        assert statuses.count(200) == 600
        # the admin commands read and reset the counters the running workers share
        rows = _cli(env, "caps", "show", "--config", str(config_path), "--json")
        assert max(r["count"] for r in rows if r["rule"] == 0) == 25
        assert max(r["count"] for r in rows if r["rule"] == 1) == 1
        assert _cli(env, "caps", "reset", "--config", str(config_path), "--json")["status"] == "reset"
        assert {r["count"] for r in _cli(env, "caps", "show", "--config", str(config_path), "--json")} == {0}
        if store == "redis":  # the counters themselves, not only the log read after the reset
            config = load_config(config_path)
            shared = RedisCapStore(caps_of(build_engine(config).offers), config.caps.redis_url, config.project)
            assert {r["count"] for r in shared.state()} == {0}
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()
    displays = _logged(config_path)
    config = load_config(config_path)
    capped = set(caps_of(build_engine(config).offers))
    shown = displays[displays["offer_id"].isin(capped)]
    assert len(displays) >= 600 * 2  # every decision was logged, by whichever worker made it
    assert shown.groupby("offer_id").size().max() == 25  # the total cap bit, exactly
    assert shown.groupby(["offer_id", "profile_id"]).size().max() == 1


def _cli(env: dict, *args: str) -> Any:
    """The JSON an `offerflow` command prints (in a process of its own, as an administrator runs it)."""
    done = subprocess.run([sys.executable, "-m", "offerflow.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def _assert_connections_spread(server: subprocess.Popen, port: int, log: Path, workers: int) -> None:
    """32 connections opened at once reach every worker (each has a socket of its own, SO_REUSEPORT;
    on one shared socket the first worker to wake could accept them all). Counted from /proc: the
    established server-side sockets on `port` each worker process holds."""
    import socket

    deadline = time.monotonic() + 120
    while log.read_text(errors="replace").count("Application startup complete") < workers:
        assert time.monotonic() < deadline and server.poll() is None, log.read_text(errors="replace")[-2000:]
        time.sleep(0.2)
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(32)]
    try:
        time.sleep(0.5)  # let the workers accept
        established = set()
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "01" and int(fields[1].split(":")[1], 16) == port:  # ESTABLISHED, local port
                established.add(f"socket:[{fields[9]}]")
        held = {}
        for pid in _children(server.pid):
            fds = Path(f"/proc/{pid}/fd")
            held[pid] = sum(1 for fd in fds.iterdir() if os.readlink(fd) in established)
    finally:
        for client in clients:
            client.close()
    assert sum(held.values()) == 32 and len(held) == workers and min(held.values()) > 0, held


def _children(pid: int) -> list[int]:
    """The worker processes of a server (its children but multiprocessing's resource tracker)."""
    pids = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return [p for p in pids if b"resource_tracker" not in Path(f"/proc/{p}/cmdline").read_bytes()]


def _logged(config_path: Path) -> pd.DataFrame:
    config = load_config(config_path)
    files = sorted(config.paths.decision_log.glob("decisions-*.parquet"))
    assert files, "no decision-log files were written"
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def _batch_world(root: Path, store: str) -> tuple[Any, list[str]]:
    """The small-caps project on `store`, with 20 decisions of a running service counted in the
    store and logged (a seeded world); the project's config and every profile id."""
    config = load_config(_project_with_small_caps(root, store))
    service = build_engine(config, now=NOW)
    profiles = pd.read_parquet(root / "data/profiles.parquet")["profile_id"].astype(str).tolist()
    log_decisions([service.decide(p, ["web-banner", "web-sidebar"], now=NOW) for p in profiles[:20]],
                  config.paths.decision_log)
    return config, profiles


def _expected_counts(before: pd.DataFrame, decisions: pd.DataFrame, family: Any, capped: set[str]) -> dict:
    """A family's counts after a batch: the counts before plus one per decided item of a capped offer."""
    items = decisions[decisions["offer_id"].isin(capped)]
    profile = items["profile_id"] if family.scope == "per_profile" else ""
    placement = items["placement_id"] if family.per_placement else ""
    added = items.assign(placement_id=placement, profile_id=profile).groupby(
        ["offer_id", "placement_id", "profile_id"]).size()
    counts = before.set_index(["offer_id", "placement_id", "profile_id"])["n"]
    return counts.add(added, fill_value=0).astype(int).to_dict()


@pytest.mark.parametrize("store", ["lmdb", "redis"])
def test_decide_batch_adds_its_decisions_to_the_shared_store(store, request, tmp_path):
    """After `decide_batch`, the shared store's counts are what it held plus what the batch decided,
    per (offer, placement, profile); a service deciding afterwards refuses what the batch capped;
    the batch's answers are those it gives on the embedded store."""
    from offerflow.decisioning.batch import decide_batch

    url = request.getfixturevalue("redis_url").replace("/0", "/2") if store == "redis" else store
    config, profiles = _batch_world(tmp_path, url)
    engine = build_engine(config, now=NOW)
    assert engine.caps.shared
    families = engine.caps.families
    before = {f: engine.caps.counts_frame(f, NOW) for f in families}
    assert sum(int(b["n"].sum()) for b in before.values()) > 0  # the service's 20 decisions
    result = decide_batch(engine, profiles, ["web-banner", "web-sidebar"], now=NOW, seed=3, chunk_size=64)
    decided = result.decisions.to_pandas()
    capped = set(engine.caps.caps)
    for family in families:
        after = engine.caps.counts_frame(family, NOW).set_index(["offer_id", "placement_id", "profile_id"])["n"]
        assert after.to_dict() == _expected_counts(before[family], decided, family, capped)
    totals = decided[decided["offer_id"].isin(capped)].groupby("offer_id").size()
    at_cap = [oid for oid, n in engine.caps.counts_frame(families[0], NOW).groupby("offer_id")["n"].sum().items()
              if n == 25]
    assert at_cap and set(at_cap) <= set(totals.index)  # the batch took offers to their total cap of 25
    service = build_engine(config, now=NOW)  # a worker of the running service (the same store)
    later = [service.decide(p, ["web-banner", "web-sidebar"], now=NOW) for p in profiles[20:80]]
    shown = {(p, i.offer_id) for p, d in zip(profiles[20:80], later) for r in d.placements for i in r.items}
    assert not {oid for _, oid in shown} & set(at_cap)
    batch_shown = set(zip(decided["profile_id"], decided["offer_id"]))
    assert not {(p, oid) for p, oid in shown if oid in capped} & batch_shown  # per profile: 1, ever
    embedded = build_engine(config.model_copy(update={"caps": config.caps.model_copy(update={"store": "embedded"})}),
                            now=NOW)
    assert not embedded.caps.shared
    alone = decide_batch(embedded, profiles, ["web-banner", "web-sidebar"], now=NOW, seed=3, chunk_size=64)
    columns = ["profile_id", "placement_id", "rank", "offer_id", "arm"]
    pd.testing.assert_frame_equal(decided[columns], alone.decisions.to_pandas()[columns])


@pytest.mark.parametrize("store", ["lmdb", "redis"])
def test_decide_batch_reads_what_a_service_counted_during_the_batch(store, request, tmp_path):
    """A service that decides for a profile of a later chunk while the batch runs (here: right after
    the batch's first chunk is in the store) has counted that profile's capped offers (1 per profile,
    ever); the batch, reading per-profile counts per chunk, does not show them to it again."""
    from offerflow.decisioning.batch import decide_batch

    url = request.getfixturevalue("redis_url").replace("/0", "/3") if store == "redis" else store
    config, profiles = _batch_world(tmp_path, url)
    engine, service = build_engine(config, now=NOW), build_engine(config, now=NOW)
    capped = set(engine.caps.caps)
    later = [p for p in sorted(profiles)[64:] if p not in profiles[:20]]  # chunks after the first, no earlier decisions
    service_shown: dict[str, set[str]] = {}
    record = engine.caps.record_decided

    def record_then_serve(decided, now):  # the first chunk counted; a running service decides meanwhile
        counted = record(decided, now)
        if not service_shown:
            for profile in later[:40]:
                d = service.decide(profile, ["web-banner", "web-sidebar"], now=NOW)
                service_shown[profile] = {i.offer_id for r in d.placements for i in r.items} & capped
        return counted

    engine.caps.record_decided = record_then_serve
    decided = decide_batch(engine, profiles, ["web-banner", "web-sidebar"], now=NOW, seed=3,
                           chunk_size=64).decisions.to_pandas()
    assert sum(map(len, service_shown.values())) >= 10  # the service did show capped offers to them
    batch_shown = decided[decided["profile_id"].isin(service_shown)].groupby("profile_id")["offer_id"].agg(set)
    twice = {p: offers & service_shown[p] for p, offers in batch_shown.items() if offers & service_shown[p]}
    assert not twice, f"shown again by the batch over a per-profile cap of 1: {twice}"

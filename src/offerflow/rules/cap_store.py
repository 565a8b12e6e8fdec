"""Where cap counters live: one interface, the in-process store (embedded default), Redis and LMDB.

`CapStore` is what the decision engine needs: `capped` (a hint while ranking), `reserve` (the
atomic "count these offers as decided if none is capped, else say which are"), `reserve_request`
(the same for each placement of a request, in order), `reset`, `state` and `counts_frame`. `CapCounters` (`capping`) is the embedded store: exact within one process.
`RedisCapStore` keeps the counters in Redis, shared by every worker and machine serving a project:
one Lua script per request (one round trip) checks every rule of every chosen offer of each
placement and increments their counters only if none is at its limit, so totals and per-profile
caps stay exact however many workers decide at once. Counter keys carry their window's start and expire when it ends.
`LmdbCapStore` (`lmdb_caps`) does the same for the workers of one machine in a memory-mapped file,
one write transaction per request. What the shared stores have in common is in `shared_caps`.

Redis starts empty: the first process to find a cap family without its `seeded` marker counts it
from the ingested events and the decision log (DuckDB, as the embedded store does) and writes the
counts; the others wait for the marker. A family is seeded once per Redis lifetime, so a restart of
`offerflow serve` does not count a decision twice.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from offerflow.rules.capping import CapCounters, CapRule, Family, count_cap_events, load_cap_counters, read_cap_resets
from offerflow.rules.shared_caps import SEED_WAIT_S, SEP, CapStoreError, Group, SharedCapStore, family_name

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

# The placements of one request, in order, as groups. ARGV[1]: the number of groups; then, per group:
# its number of counters to check c and to increment n, the c limits, the n times to live (seconds,
# 0: never). KEYS: per group, its c counters to check, then its n counters to increment. Each group
# is checked (seeing the increments of the groups before it) and, if no check is at its limit,
# counted; the first group with one at its limit stops the script, which returns {group, the
# 1-based indices of its checks at their limit}; {} when every group was counted.
RESERVE_LUA = """
local a, k = 2, 0
for g = 1, tonumber(ARGV[1]) do
  local n_check, n_incr = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local refused = {g}
  for i = 1, n_check do
    local n = tonumber(redis.call('GET', KEYS[k + i]) or '0')
    if n >= tonumber(ARGV[a + 1 + i]) then refused[#refused + 1] = i end
  end
  if #refused > 1 then return refused end
  for i = 1, n_incr do
    local n = redis.call('INCR', KEYS[k + n_check + i])
    local at = tonumber(ARGV[a + 1 + n_check + i])
    if n == 1 and at > 0 then redis.call('EXPIRE', KEYS[k + n_check + i], at) end
  end
  a, k = a + 2 + n_check + n_incr, k + n_check + n_incr
end
return {}
"""


class CapStore(Protocol):
    """Cap counters as the decision engine uses them (see the module docstring)."""

    caps: dict[str, tuple[CapRule, ...]]
    lock: Any
    shared: bool  # True: every engine of the project sees the same counts (nothing to hand over)
    hits: int  # offers this process skipped or was refused because a cap was reached (service metrics)

    @property
    def families(self) -> list[Family]: ...

    def capped(self, offer_id: str, placement_id: str, profile_id: str, now: datetime) -> bool: ...

    def reserve(self, offer_ids: Sequence[str], placement_id: str, profile_id: str, now: datetime,
                unchecked: Sequence[str] = ()) -> list[str]: ...

    def reserve_request(self, placements: Sequence[tuple[Sequence[str], Sequence[str], str]], profile_id: str,
                        now: datetime) -> tuple[int, list[str]]: ...

    def record(self, offer_ids: Sequence[str], placement_id: str, profile_id: str, now: datetime) -> None: ...

    def reset(self, offer_id: str | None = None) -> int: ...

    def counts_frame(self, family: Family) -> pd.DataFrame: ...

    def state(self, now: datetime | None = None, profile_id: str | None = None) -> list[dict[str, Any]]: ...


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisCapStore(SharedCapStore):
    """Cap counters in Redis (`url`), under keys ``offerflow:<namespace>:...``."""

    def __init__(self, caps: Mapping[str, Sequence[CapRule]], url: str, namespace: str, client: Any = None) -> None:
        import redis

        super().__init__(caps)
        self.url = url
        self.redis = client if client is not None else redis.Redis.from_url(url, socket_timeout=5)
        self.prefix = f"offerflow:{namespace}"
        self._reserve = self.redis.register_script(RESERVE_LUA)
        self._connection: Any = None  # reserve's own connection (see `_run_reserve`), made on first use

    def _head(self, family: Family, start: int) -> str:
        return f"{self.prefix}:c:{family_name(family)}:{start}:"

    def _expiry(self, family: Family, now: datetime) -> int:
        """Seconds a counter of the window containing `now` lives (0: forever): to its end, plus a minute."""
        end = self._window(family, now)[1]
        return 0 if end == float("inf") else int(end - now.timestamp()) + 60

    def ping(self) -> None:
        import redis

        try:
            self.redis.ping()
        except redis.RedisError as exc:
            raise CapStoreError(f"caps.store: cannot reach Redis at {self.url}: {exc}") from None

    def _reserve_groups(self, groups: list[Group], now: datetime) -> tuple[int, list[int]]:
        """One round trip: the reserve script over every group's keys (see RESERVE_LUA)."""
        keys: list[str] = []
        args: list[Any] = [len(groups)]
        for checks, check_keys, records, record_keys, _ in groups:
            keys += check_keys
            keys += record_keys
            args += [len(checks), len(records), *(limit for _, _, limit in checks),
                     *(self._expiry(f, now) for _, f in records)]
        refused = self._run_reserve(keys, args)
        if not refused:
            return len(groups), []
        return int(refused[0]) - 1, [int(i) - 1 for i in refused[1:]]

    def _run_reserve(self, keys: list[str], args: list[Any]) -> list[int]:
        """The reserve script by EVALSHA on a connection of this store's own, under `lock`: redis-py's
        client path (its pool, retry and per-call bookkeeping) cost more CPU than the rest of a
        reserve. A script Redis lost (restart, SCRIPT FLUSH) is loaded again by redis-py's `Script`;
        a broken connection is reopened once, as the client's default retry does."""
        import redis

        with self.lock:
            for attempt in (0, 1):
                if self._connection is None:
                    self._connection = self.redis.connection_pool.make_connection()
                try:
                    self._connection.send_command("EVALSHA", self._reserve.sha, len(keys), *keys, *args)
                    return self._connection.read_response()
                except redis.exceptions.NoScriptError:
                    return self._reserve(keys=keys, args=args)
                except (redis.ConnectionError, redis.TimeoutError):
                    self._connection.disconnect()
                    if attempt:
                        raise
        raise AssertionError("unreachable")

    def _scan(self, pattern: str) -> list[bytes]:
        return list(self.redis.scan_iter(match=pattern, count=1000))

    def reset(self, offer_id: str | None = None) -> int:
        """Delete the counters of one offer (None: all); returns how many were deleted."""
        offer = "*" if offer_id is None else _glob_escape(offer_id) + SEP + "*"
        keys = self._scan(f"{_glob_escape(self.prefix)}:c:*:*:{offer}")
        self._hints.clear()
        for lo in range(0, len(keys), 1000):
            self.redis.delete(*keys[lo:lo + 1000])
        return len(keys)

    def _counts(self, family: Family, now: datetime, offer_id: str | None = None) -> dict[tuple[str, str, str], int]:
        head = self._window(family, now)[0]
        offer = "*" if offer_id is None else _glob_escape(offer_id) + SEP + "*"
        keys = self._scan(_glob_escape(head) + offer)
        values = self.redis.mget(keys) if keys else []
        out = {}
        for key, value in zip(keys, values):
            if value is not None:
                offer_part, placement, profile = key.decode()[len(head):].split(SEP)
                out[(offer_part, placement, profile)] = int(value)
        return out

    def ensure_seeded(self, count: Callable[[list[Family]], Mapping[Family, pd.DataFrame]], now: datetime,
                      wait_s: float = SEED_WAIT_S) -> list[Family]:
        """Seed every family without its marker from `count(families)`, once across all processes
        (a Redis lock; the others wait for the markers). Returns the families this call seeded."""
        deadline = time.monotonic() + wait_s
        lock, token = f"{self.prefix}:seeding", uuid.uuid4().hex
        while True:
            missing = [f for f in self._families if not self.redis.exists(self._marker(f))]
            if not missing:
                return []
            if self.redis.set(lock, token, nx=True, px=int(wait_s * 1000)):
                try:
                    missing = [f for f in self._families if not self.redis.exists(self._marker(f))]
                    self._write_seed(count(missing) if missing else {}, missing, now)
                    return missing
                finally:
                    if self.redis.get(lock) == token.encode():
                        self.redis.delete(lock)
            if time.monotonic() > deadline:
                raise CapStoreError(f"caps.store: the cap counters in {self.url} were not seeded within "
                                    f"{wait_s:.0f} s (another process holds {lock})")
            time.sleep(0.1)

    def _marker(self, family: Family) -> str:
        return f"{self.prefix}:seeded:{family_name(family)}"

    def _write_seed(self, counts: Mapping[Family, pd.DataFrame], families: list[Family], now: datetime) -> None:
        self._incr(self.seed_items(counts, families, now), now)
        pipe = self.redis.pipeline(transaction=False)
        for family in families:
            pipe.set(self._marker(family), now.isoformat())
        pipe.execute()

    def _add_counts(self, groups: list[tuple[Family, np.ndarray, np.ndarray]], now: datetime) -> None:
        self._incr(((family, key, int(n)) for family, keys, ns in groups for key, n in zip(keys, ns)), now)

    def _incr(self, items: Iterable[tuple[Family, str, int]], now: datetime, batch: int = 10_000) -> None:
        """INCRBY each (family, key, n), and EXPIRE the key as the reserve script does (to its
        window's end plus a minute; never for `never`), in pipelines of `batch` counters."""
        expiries: dict[Family, int] = {}
        pipe, queued = self.redis.pipeline(transaction=False), 0
        for family, key, n in items:
            expiry = expiries.get(family)
            if expiry is None:
                expiry = expiries[family] = self._expiry(family, now)
            pipe.incrby(key, n)
            if expiry:
                pipe.expire(key, expiry)
            queued += 1
            if queued == batch:
                pipe.execute()
                pipe, queued = self.redis.pipeline(transaction=False), 0
        if queued:
            pipe.execute()

    def read_counts(self, keys: Sequence[str], batch: int = 10_000) -> list[int]:
        """MGET in batches of `batch` keys (a chunk of a `decide-batch` reads one key per profile)."""
        values = [value for lo in range(0, len(keys), batch) for value in self.redis.mget(list(keys[lo:lo + batch]))]
        return [0 if value is None else int(value) for value in values]


def load_cap_store(caps: Mapping[str, Sequence[CapRule]], events_path: Path | None, decision_log_dir: Path | None,
                   resets_path: Path | None = None, now: datetime | None = None, redis_url: str | None = None,
                   namespace: str = "offerflow", lmdb_path: Path | None = None,
                   lmdb_map_mib: int = 1024) -> CapCounters | SharedCapStore:
    """The cap store of a project: embedded counters counted from the data (`redis_url` and
    `lmdb_path` None), or the Redis store, or the LMDB store in the directory `lmdb_path`
    (`lmdb_caps`), either seeded from the same data the first time (see the module docstring)."""
    now = now or datetime.now(timezone.utc)
    store: SharedCapStore
    if lmdb_path is not None:
        from offerflow.rules.lmdb_caps import LmdbCapStore

        store = LmdbCapStore(caps, lmdb_path, lmdb_map_mib)
    elif redis_url is not None:
        store = RedisCapStore(caps, redis_url, namespace)
        store.ping()
    else:
        return load_cap_counters(caps, events_path, decision_log_dir, resets_path, now)
    resets = read_cap_resets(resets_path) if resets_path is not None else {}
    store.ensure_seeded(lambda families: count_cap_events(families, sorted(store.caps), events_path,
                                                          decision_log_dir, now, resets), now)
    return store

"""Where cap counters live: one interface, the in-process store (embedded default) and Redis.

`CapStore` is what the decision engine needs: `capped` (a hint while ranking), `reserve` (the
atomic "count these offers as decided if none is capped, else say which are"), `reserve_request`
(the same for each placement of a request, in order), `reset`, `state` and `counts_frame`. `CapCounters` (`capping`) is the embedded store: exact within one process.
`RedisCapStore` keeps the counters in Redis, shared by every worker and machine serving a project:
one Lua script per request (one round trip) checks every rule of every chosen offer of each
placement and increments their counters only if none is at its limit, so totals and per-profile
caps stay exact however many workers decide at once. Counter keys carry their window's start and expire when it ends.

Redis starts empty: the first process to find a cap family without its `seeded` marker counts it
from the ingested events and the decision log (DuckDB, as the embedded store does) and writes the
counts; the others wait for the marker. A family is seeded once per Redis lifetime, so a restart of
`offerflow serve` does not count a decision twice.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from offerflow.rules.cap_windows import cap_state_rows, next_window_start, window_start
from offerflow.rules.capping import (ALL, DECIDED_EVENTS, CapCounters, CapRule, Family, count_cap_events,
                                     load_cap_counters, read_cap_resets)

if TYPE_CHECKING:
    import pandas as pd

SEP = "\x1f"  # between the offer, placement and profile parts of a counter key (never in an id we accept)
#: How long a worker remembers that a counter was at its limit (an admin reset elsewhere shows within this).
CAPPED_HINT_S = 2.0
SEED_WAIT_S = 300.0

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


class CapStoreError(RuntimeError):
    """The cap store cannot be used (Redis unreachable, seeding never finished); one line."""


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


def family_name(family: Family) -> str:
    return f"{family.event}.{family.scope}.{family.reset}.{'placement' if family.per_placement else 'all'}"


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisCapStore:
    """Cap counters in Redis (`url`), under keys ``offerflow:<namespace>:...``."""

    shared = True

    def __init__(self, caps: Mapping[str, Sequence[CapRule]], url: str, namespace: str, client: Any = None) -> None:
        import redis

        self.caps = {oid: tuple(rules) for oid, rules in caps.items() if rules}
        self.hits = 0  # this process's capped offers (hints and refusals), for the service's metrics
        self.lock = threading.RLock()  # the engine's interface; exactness comes from the script
        self.url = url
        self.redis = client if client is not None else redis.Redis.from_url(url, socket_timeout=5)
        self.prefix = f"offerflow:{namespace}"
        self._reserve = self.redis.register_script(RESERVE_LUA)
        self._connection: Any = None  # reserve's own connection (see `_run_reserve`), made on first use
        self._families = list(dict.fromkeys(r.family for rules in self.caps.values() for r in rules))
        self._checks = {oid: [(r.family, r.limit) for r in rules] for oid, rules in self.caps.items()}
        self._recorded = {oid: [f for f in dict.fromkeys(r.family for r in rules) if f.event in DECIDED_EVENTS]
                          for oid, rules in self.caps.items()}
        self._hints: dict[tuple[Family, str, str, str], float] = {}  # counters seen at their limit
        self._windows: dict[Family, tuple[str, float, float]] = {}  # key head, window end, start

    @property
    def families(self) -> list[Family]:
        return list(self._families)

    def _window(self, family: Family, now: datetime) -> tuple[str, float]:
        """The key head of `family`'s window containing `now` and when that window ends (unix
        seconds, inf for `never`); cached until it ends (datetime arithmetic is a third of a reserve)."""
        cached = self._windows.get(family)
        stamp = now.timestamp()
        if cached is not None and cached[2] <= stamp < cached[1]:
            return cached[0], cached[1]
        start = window_start(family.reset, now)
        end = float("inf") if family.reset == "never" else next_window_start(family.reset, now).timestamp()
        head = f"{self.prefix}:c:{family_name(family)}:{int(start.timestamp())}:"
        self._windows[family] = (head, end, start.timestamp())
        return head, end

    def key(self, family: Family, now: datetime, offer_id: str, placement_id: str, profile_id: str) -> str:
        head = self._window(family, now)[0]
        return (f"{head}{offer_id}{SEP}{placement_id if family.per_placement else ALL}"
                f"{SEP}{profile_id if family.scope == 'per_profile' else ALL}")

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

    def capped(self, offer_id: str, placement_id: str, profile_id: str, now: datetime) -> bool:
        """A hint from this worker's recent refusals (no round trip); `reserve` has the last word."""
        checks = self._checks.get(offer_id)
        if not checks or not self._hints:
            return False
        clock = time.monotonic()
        for family, _ in checks:
            until = self._hints.get((family, *family.key(offer_id, placement_id, profile_id)))
            if until is not None and until > clock:
                self.hits += 1
                return True
        return False

    def reserve(self, offer_ids: Sequence[str], placement_id: str, profile_id: str, now: datetime,
                unchecked: Sequence[str] = ()) -> list[str]:
        """One round trip: count these offers as decided if none of them is capped, else return the
        capped ones (nothing counted). `unchecked` offers are counted without a check."""
        return self.reserve_request([(offer_ids, unchecked, placement_id)], profile_id, now)[1]

    def reserve_request(self, placements: Sequence[tuple[Sequence[str], Sequence[str], str]], profile_id: str,
                        now: datetime) -> tuple[int, list[str]]:
        """The placements of one request, (offers, unchecked offers, placement) each, in one round
        trip: counted in order, each as `reserve` does, up to the first with a capped offer. Returns
        how many were counted and the capped offers of the next one (empty: all counted)."""
        keys: list[str] = []
        args: list[Any] = [len(placements)]
        groups = []
        for offer_ids, unchecked, placement_id in placements:
            checks = [(oid, f, limit) for oid in offer_ids for f, limit in self._checks.get(oid, ())]
            records = [(oid, f) for oid in (*offer_ids, *unchecked) for f in self._recorded.get(oid, ())]
            keys += [self.key(f, now, oid, placement_id, profile_id) for oid, f, _ in checks]
            keys += [self.key(f, now, oid, placement_id, profile_id) for oid, f in records]
            args += [len(checks), len(records), *(limit for _, _, limit in checks),
                     *(self._expiry(f, now) for _, f in records)]
            groups.append((checks, placement_id))
        refused = self._run_reserve(keys, args) if keys else []
        if not refused:
            return len(placements), []
        checks, placement_id = groups[int(refused[0]) - 1]
        if len(self._hints) > 100_000:
            self._hints.clear()
        until = time.monotonic() + CAPPED_HINT_S
        for i in refused[1:]:
            oid, family, _ = checks[int(i) - 1]
            self._hints[(family, *family.key(oid, placement_id, profile_id))] = until
        denied = list(dict.fromkeys(checks[int(i) - 1][0] for i in refused[1:]))
        self.hits += len(denied)
        return int(refused[0]) - 1, denied

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

    def record(self, offer_ids: Sequence[str], placement_id: str, profile_id: str, now: datetime) -> None:
        """Count these offers as decided, unchecked."""
        self.reserve((), placement_id, profile_id, now, unchecked=offer_ids)

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

    def counts_frame(self, family: Family, now: datetime | None = None) -> pd.DataFrame:
        """The counts of one family's current window: columns offer_id, placement_id, profile_id, n."""
        import pandas as pd

        items = list(self._counts(family, now or datetime.now(timezone.utc)).items())
        frame = pd.DataFrame({"offer_id": [k[0] for k, _ in items], "placement_id": [k[1] for k, _ in items],
                              "profile_id": [k[2] for k, _ in items]}, dtype=object)
        return frame.assign(n=np.asarray([n for _, n in items], dtype=np.int64))

    def state(self, now: datetime | None = None, profile_id: str | None = None) -> list[dict[str, Any]]:
        """As `CapCounters.state`, read from Redis (a scan per offer and rule: for admins, not requests)."""
        now = now or datetime.now(timezone.utc)
        return cap_state_rows(self.caps, lambda family, offer_id: self._counts(family, now, offer_id), now, profile_id)

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
        pipe = self.redis.pipeline(transaction=False)
        for family in families:
            frame = counts.get(family)
            expiry = self._expiry(family, now)
            if frame is not None:
                for offer, placement, profile, n in zip(frame["offer_id"], frame["placement_id"],
                                                        frame["profile_id"], frame["n"]):
                    key = self.key(family, now, str(offer), str(placement), str(profile))
                    pipe.incrby(key, int(n))
                    if expiry:
                        pipe.expire(key, expiry)
            pipe.set(self._marker(family), now.isoformat())
        pipe.execute()


def load_cap_store(caps: Mapping[str, Sequence[CapRule]], events_path: Path | None, decision_log_dir: Path | None,
                   resets_path: Path | None = None, now: datetime | None = None, redis_url: str | None = None,
                   namespace: str = "offerflow") -> CapCounters | RedisCapStore:
    """The cap store of a project: embedded counters counted from the data (`redis_url` None), or
    the Redis store, seeded from the same data the first time (see the module docstring)."""
    now = now or datetime.now(timezone.utc)
    if redis_url is None:
        return load_cap_counters(caps, events_path, decision_log_dir, resets_path, now)
    store = RedisCapStore(caps, redis_url, namespace)
    store.ping()
    resets = read_cap_resets(resets_path) if resets_path is not None else {}
    store.ensure_seeded(lambda families: count_cap_events(families, sorted(store.caps), events_path,
                                                          decision_log_dir, now, resets), now)
    return store

"""What the shared cap stores (Redis, `cap_store.RedisCapStore`; LMDB, `lmdb_caps.LmdbCapStore`)
have in common: counter keys with their window's start, the per-worker hints of counters seen at
their limit, the grouping of a request's placements into checks and increments, reading the
refusal back, seeding rows, and the admin views (`counts_frame`, `state`).

A store supplies `_head` (the key prefix of a family's window), `_reserve_groups` (one atomic
check-then-count of a request's groups), `_counts` (a window's counters, for admins), and for
`decide-batch` `_add_counts` (counts added in bulk) and `read_counts` (a few counters' values).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np

from offerflow.rules.cap_windows import cap_state_rows, next_window_start, window_start
from offerflow.rules.capping import ALL, DECIDED_EVENTS, CapRule, Family

if TYPE_CHECKING:
    import pandas as pd

SEP = "\x1f"  # between the offer, placement and profile parts of a counter key (never in an id we accept)
#: How long a worker remembers that a counter was at its limit (an admin reset elsewhere shows within this).
CAPPED_HINT_S = 2.0
SEED_WAIT_S = 300.0

#: One placement of a request as a store reserves it: its checks (offer, family, limit), their
#: keys, the counters it increments (offer, family), their keys, and the placement.
Group = tuple[list[tuple[str, Family, int]], list[str], list[tuple[str, Family]], list[str], str]


class CapStoreError(RuntimeError):
    """The cap store cannot be used (Redis unreachable, seeding never finished, LMDB full); one line."""


def family_name(family: Family) -> str:
    return f"{family.event}.{family.scope}.{family.reset}.{'placement' if family.per_placement else 'all'}"


class Window:
    """A family's current counting window in this process: its key head, start and end (unix
    seconds; a window not yet seen: an empty range) and whether its keys split by placement and profile."""

    __slots__ = ("family", "head", "start", "end", "by_placement", "by_profile")

    def __init__(self, family: Family) -> None:
        self.family, self.head, self.start, self.end = family, "", float("inf"), float("-inf")
        self.by_placement, self.by_profile = family.per_placement, family.scope == "per_profile"


class SharedCapStore:
    """The part of a shared cap store that does not depend on where the counters live."""

    shared = True

    def __init__(self, caps: Mapping[str, Sequence[CapRule]]) -> None:
        self.caps = {oid: tuple(rules) for oid, rules in caps.items() if rules}
        self.hits = 0  # this process's capped offers (hints and refusals), for the service's metrics
        self.lock = threading.RLock()  # the engine's interface; exactness comes from the store
        self._families = list(dict.fromkeys(r.family for rules in self.caps.values() for r in rules))
        self._windows = {f: Window(f) for f in self._families}
        # the hot path, resolved once per offer: each rule's family, limit and window; the distinct
        # families a decided offer counts in, with their windows
        self._checks = {oid: [(r.family, r.limit, self._windows[r.family]) for r in rules]
                        for oid, rules in self.caps.items()}
        self._recorded = {oid: [(f, self._windows[f]) for f in dict.fromkeys(r.family for r in rules)
                                if f.event in DECIDED_EVENTS] for oid, rules in self.caps.items()}
        self._hints: dict[tuple[Family, str, str, str], float] = {}  # counters seen at their limit

    @property
    def families(self) -> list[Family]:
        return list(self._families)

    def _head(self, family: Family, start: int) -> str:
        """The key prefix of `family`'s window starting at `start` (unix seconds)."""
        raise NotImplementedError

    def _new_window(self, family: Family, start: int) -> None:
        """Called when this process first sees a window of `family` (LMDB purges the older ones)."""

    def _roll(self, window: Window, now: datetime) -> None:
        """Make `window` the one containing `now` (a new key head; the store told of it)."""
        family = window.family
        start = window_start(family.reset, now)
        window.end = float("inf") if family.reset == "never" else next_window_start(family.reset, now).timestamp()
        window.start, window.head = start.timestamp(), self._head(family, int(start.timestamp()))
        self._new_window(family, int(start.timestamp()))

    def _window(self, family: Family, now: datetime) -> tuple[str, float]:
        """The key head of `family`'s window containing `now` and when that window ends (unix
        seconds, inf for `never`); kept until it ends (datetime arithmetic is a third of a reserve)."""
        window = self._windows.get(family)
        if window is None:
            window = self._windows[family] = Window(family)
        if not window.start <= now.timestamp() < window.end:
            self._roll(window, now)
        return window.head, window.end

    def key(self, family: Family, now: datetime, offer_id: str, placement_id: str, profile_id: str) -> str:
        head = self._window(family, now)[0]
        return (f"{head}{offer_id}{SEP}{placement_id if family.per_placement else ALL}"
                f"{SEP}{profile_id if family.scope == 'per_profile' else ALL}")

    def capped(self, offer_id: str, placement_id: str, profile_id: str, now: datetime) -> bool:
        """A hint from this worker's recent refusals (no store access); `reserve` has the last word."""
        checks = self._checks.get(offer_id)
        if not checks or not self._hints:
            return False
        clock = time.monotonic()
        for family, _, _ in checks:
            until = self._hints.get((family, *family.key(offer_id, placement_id, profile_id)))
            if until is not None and until > clock:
                self.hits += 1
                return True
        return False

    def reserve(self, offer_ids: Sequence[str], placement_id: str, profile_id: str, now: datetime,
                unchecked: Sequence[str] = ()) -> list[str]:
        """One store call: count these offers as decided if none of them is capped, else return the
        capped ones (nothing counted). `unchecked` offers are counted without a check."""
        return self.reserve_request([(offer_ids, unchecked, placement_id)], profile_id, now)[1]

    def record(self, offer_ids: Sequence[str], placement_id: str, profile_id: str, now: datetime) -> None:
        """Count these offers as decided, unchecked."""
        self.reserve((), placement_id, profile_id, now, unchecked=offer_ids)

    def reserve_request(self, placements: Sequence[tuple[Sequence[str], Sequence[str], str]], profile_id: str,
                        now: datetime) -> tuple[int, list[str]]:
        """The placements of one request, (offers, unchecked offers, placement) each, in one store
        call: counted in order, each as `reserve` does, up to the first with a capped offer. Returns
        how many were counted and the capped offers of the next one (empty: all counted)."""
        groups: list[Group] = []
        stamp = now.timestamp()
        for offer_ids, unchecked, placement_id in placements:
            checks, check_keys, records, record_keys = [], [], [], []
            for oid in offer_ids:
                for family, limit, w in self._checks.get(oid, ()):
                    if not w.start <= stamp < w.end:
                        self._roll(w, now)
                    checks.append((oid, family, limit))
                    check_keys.append(f"{w.head}{oid}{SEP}{placement_id if w.by_placement else ALL}"
                                      f"{SEP}{profile_id if w.by_profile else ALL}")
            for oid in (*offer_ids, *unchecked):
                for family, w in self._recorded.get(oid, ()):
                    if not w.start <= stamp < w.end:
                        self._roll(w, now)
                    records.append((oid, family))
                    record_keys.append(f"{w.head}{oid}{SEP}{placement_id if w.by_placement else ALL}"
                                       f"{SEP}{profile_id if w.by_profile else ALL}")
            groups.append((checks, check_keys, records, record_keys, placement_id))
        if not any(g[1] or g[3] for g in groups):
            return len(placements), []
        counted, refused = self._reserve_groups(groups, now)
        if not refused:
            return len(placements), []
        checks, placement_id = groups[counted][0], groups[counted][4]
        if len(self._hints) > 100_000:
            self._hints.clear()
        until = time.monotonic() + CAPPED_HINT_S
        for i in refused:
            oid, family, _ = checks[i]
            self._hints[(family, *family.key(oid, placement_id, profile_id))] = until
        denied = list(dict.fromkeys(checks[i][0] for i in refused))
        self.hits += len(denied)
        return counted, denied

    def record_decided(self, decided: Iterable[tuple[str, np.ndarray, np.ndarray]], now: datetime) -> int:
        """Count decisions made in bulk (a `decide-batch` chunk), unchecked, as `record` counts each:
        `decided` is (placement, offer ids, profile ids) per placement, one item a row (object
        arrays of str). Keys are `key`'s (its prefix for a profile, the profile ids appended); equal
        keys are summed and written in key order (`_add_counts`). Returns how many counters changed."""
        import pandas as pd

        parts: dict[Family, tuple[list[np.ndarray], list[np.ndarray]]] = {}
        for placement_id, offer_ids, profile_ids in decided:
            profile_ids = np.asarray(profile_ids, dtype=object)
            codes, uniques = pd.factorize(np.asarray(offer_ids, dtype=object))
            for code, offer_id in enumerate(uniques):
                recorded = self._recorded.get(offer_id)
                if not recorded:
                    continue
                rows = codes == code
                for family, _ in recorded:
                    prefix = self.key(family, now, offer_id, placement_id, "")
                    keys, ns = parts.setdefault(family, ([], []))
                    if family.scope == "per_profile":
                        keys.append(prefix + profile_ids[rows])  # an object array: str + per element
                        ns.append(np.ones(int(rows.sum()), dtype=np.int64))
                    else:
                        keys.append(np.array([prefix], dtype=object))
                        ns.append(np.array([rows.sum()], dtype=np.int64))
        groups = []
        for family, (keys, ns) in parts.items():
            summed = pd.Series(np.concatenate(ns), index=np.concatenate(keys)).groupby(level=0, sort=True).sum()
            groups.append((family, summed.index.to_numpy(dtype=object), summed.to_numpy(dtype=np.int64)))
        if groups:
            self._add_counts(groups, now)
        return sum(len(keys) for _, keys, _ in groups)

    def _add_counts(self, groups: list[tuple[Family, np.ndarray, np.ndarray]], now: datetime) -> None:
        """Add each n to its counter key, per family (keys sorted), in bulk."""
        raise NotImplementedError

    def read_counts(self, keys: Sequence[str]) -> list[int]:
        """The current value of each counter key (0: absent), in one read."""
        raise NotImplementedError

    def _reserve_groups(self, groups: list[Group], now: datetime) -> tuple[int, list[int]]:
        """Check and count the groups in order, atomically, up to the first with a check at its
        limit: how many were counted and that one's checks at their limit (0-based; empty: all)."""
        raise NotImplementedError

    def _counts(self, family: Family, now: datetime, offer_id: str | None = None) -> dict[tuple[str, str, str], int]:
        """The counters of `family`'s window containing `now` (of one offer, or all)."""
        raise NotImplementedError

    def seed_items(self, counts: Mapping[Family, Any], families: list[Family],
                   now: datetime) -> Iterator[tuple[Family, str, int]]:
        """(family, counter key, n) of counted rows (`count_cap_events`'s frames) to add when seeding."""
        for family in families:
            frame = counts.get(family)
            if frame is None:
                continue
            columns = [frame[c] for c in ("offer_id", "placement_id", "profile_id", "n")]
            columns = [c.to_pylist() if hasattr(c, "to_pylist") else list(c) for c in columns]
            for offer, placement, profile, n in zip(*columns):
                yield family, self.key(family, now, str(offer), str(placement), str(profile)), int(n)

    def counts_frame(self, family: Family, now: datetime | None = None) -> pd.DataFrame:
        """The counts of one family's current window: columns offer_id, placement_id, profile_id, n."""
        import pandas as pd

        items = list(self._counts(family, now or datetime.now(timezone.utc)).items())
        frame = pd.DataFrame({"offer_id": [k[0] for k, _ in items], "placement_id": [k[1] for k, _ in items],
                              "profile_id": [k[2] for k, _ in items]}, dtype=object)
        return frame.assign(n=np.asarray([n for _, n in items], dtype=np.int64))

    def state(self, now: datetime | None = None, profile_id: str | None = None) -> list[dict[str, Any]]:
        """As `CapCounters.state`, read from the store (a range read per offer and rule: for admins)."""
        now = now or datetime.now(timezone.utc)
        return cap_state_rows(self.caps, lambda family, offer_id: self._counts(family, now, offer_id), now, profile_id)

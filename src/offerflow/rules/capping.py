"""Frequency caps: how often an offer may be proposed, shown or clicked before it is withheld.

An offer carries up to several cap rules (`caps:` in the catalog). Each rule counts one kind of
event (`display`, `click` or `decision`), either in total or per profile, in a window that resets
daily, weekly (Monday) or monthly at 00:00 UTC, or never, across all placements or per placement.
An offer is capped for a request as soon as any of its rules has reached its limit.

Counters start from the data, counted in DuckDB: ingested interaction events (the validated
snapshot) plus the decision log. A decision the engine logged is a `display` event in the log and
may come back through ingestion with the same `event_id`; it is counted once. `decision` events are
the offers the engine proposed (the decision log only). From there the serving process counts in
memory: every decided offer adds one display and one decision, so caps hold between reloads.

Catalog form (YAML; a CSV or Parquet catalog carries the same list as JSON in a `caps` column)::

    caps:
      - {event: display, scope: per_profile, limit: 3, reset: daily}
      - {event: click, scope: total, limit: 500, reset: never, per_placement: true}
"""

from __future__ import annotations

import fnmatch
import json
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from offerflow.core.columns import Table, column_names, column_values, empty_table
from offerflow.core.paths import LOGGED_DISPLAYS_GLOB, logged_display_files
from offerflow.rules.cap_windows import cap_state_rows, next_window_start, window_start

if TYPE_CHECKING:
    import pandas as pd

CAP_EVENTS = ("display", "click", "decision")
#: Counted for every offer the engine decides: it is logged as a display, and it is a decision.
DECIDED_EVENTS = ("display", "decision")
RESETS = ("daily", "weekly", "monthly", "never")
ALL = ""  # the placement / profile part of a counter key when the rule does not split by it
COUNT_KEYS = ("offer_id", "placement_id", "profile_id")  # a counter key's columns in `count_cap_events`


class CapError(ValueError):
    """A cap rule that cannot be used; the message says which offer and which field."""


class CapRule(BaseModel):
    """One cap: at most `limit` `event`s per window, in total or per profile."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    event: Literal["display", "click", "decision"] = "display"
    scope: Literal["total", "per_profile"] = "per_profile"
    limit: int = Field(ge=1, description="The offer is capped once the count reaches this.")
    reset: Literal["daily", "weekly", "monthly", "never"] = "never"
    per_placement: bool = Field(False, description="Count each placement separately.")

    @property
    def family(self) -> Family:
        return Family(self.event, self.scope, self.reset, self.per_placement)

    def describe(self) -> str:
        where = "per placement" if self.per_placement else "all placements"
        event = self.event if self.limit == 1 else f"{self.event}s"
        return f"{self.limit} {event} {self.scope.replace('_', ' ')}, {self.reset}, {where}"


@dataclass(frozen=True)
class Family:
    """Rules that share one set of counters: same event, scope, window and placement split."""

    event: str
    scope: str
    reset: str
    per_placement: bool

    def key(self, offer_id: str, placement_id: str, profile_id: str) -> tuple[str, str, str]:
        return (offer_id, placement_id if self.per_placement else ALL,
                profile_id if self.scope == "per_profile" else ALL)


def parse_caps(value: Any, where: str) -> tuple[CapRule, ...]:
    """The cap rules of one catalog cell: a list of mappings, its JSON text, or empty.

    Raises CapError located as ``<where>: caps[1].limit: ...``.
    """
    if value is None or (isinstance(value, float) and np.isnan(value)) or (isinstance(value, str) and not value.strip()):
        return ()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise CapError(f"{where}: caps: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, Mapping):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise CapError(f"{where}: caps: expected a list of cap rules, got {type(value).__name__}")
    rules = []
    for i, raw in enumerate(value):
        if not isinstance(raw, Mapping):
            raise CapError(f"{where}: caps[{i}]: expected a mapping like {{event: display, limit: 3}}")
        try:
            rules.append(CapRule.model_validate(dict(raw)))
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            raise CapError(f"{where}: caps[{i}]{'.' + field if field else ''}: "
                           f"{first['msg'].removeprefix('Value error, ')}") from None
    return tuple(rules)


def caps_of(offers: Table) -> dict[str, tuple[CapRule, ...]]:
    """offer_id -> its cap rules, for offers that have any (the `caps` column of a catalog's rows or DataFrame)."""
    if "caps" not in column_names(offers):
        return {}
    ids, caps = (column_values(offers, c) for c in ("offer_id", "caps"))
    return {str(oid): tuple(rules) for oid, rules in zip(ids, caps) if rules}


def count_cap_events(families: Iterable[Family], offer_ids: Sequence[str], events_path: Path | None,
                     decision_log_dir: Path | None, now: datetime,
                     resets: Mapping[str, datetime] | None = None,
                     profile_ids: Sequence[str] | None = None,
                     log_files: Sequence[Path] | None = None) -> dict[Family, pa.Table]:
    """Counts per family from the data: columns offer_id, placement_id, profile_id, n.

    `placement_id` / `profile_id` are "" when the family does not split by them. Displays are the
    ingested `display` events plus the decision log's, deduplicated on `event_id`; clicks come from
    the ingested events, decisions from the decision log. `resets` (offer_id -> time, "*" for all)
    drops events before an administrator's counter reset. `profile_ids`: per-profile families
    count only these profiles (total families count everyone), for deciding a few profiles.
    `log_files`: these decision-log files rather than every one in `decision_log_dir`.
    """
    families = list(dict.fromkeys(families))
    empty = empty_table(pa.schema([*((c, pa.string()) for c in COUNT_KEYS), ("n", pa.int64())]))
    if not families or not offer_ids:
        return {f: empty for f in families}
    has_ingested = events_path is not None and Path(events_path).exists()
    logs = list(log_files) if log_files is not None else logged_display_files(decision_log_dir)
    if not has_ingested and not logs:  # nothing counted yet (and DuckDB not even imported)
        return {f: empty for f in families}
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    # tables from list parameters (registering Arrow or pandas data imports pandas, ~0.2 s)
    con.execute("CREATE TEMP TABLE capped_offers AS SELECT unnest(?::VARCHAR[]) AS offer_id", [list(offer_ids)])
    cols = "event_id, timestamp, profile_id, offer_id, placement_id"
    parts = []
    if has_ingested:
        con.execute(f"CREATE TEMP VIEW ingested AS SELECT {cols}, event_type FROM read_parquet({_literal(events_path)}) "
                    "WHERE event_type IN ('display', 'click') AND offer_id IN (SELECT offer_id FROM capped_offers)")
        parts.append("SELECT event_type, timestamp, profile_id, offer_id, placement_id FROM ingested")
    if logs:
        files = "[" + ", ".join(_literal(p) for p in logs) + "]"
        con.execute(f"CREATE TEMP VIEW logged AS SELECT {cols} FROM read_parquet({files}, union_by_name = true) "
                    "WHERE offer_id IN (SELECT offer_id FROM capped_offers)")
        dedupe = (" WHERE NOT EXISTS (SELECT 1 FROM ingested i WHERE i.event_type = 'display' "
                  "AND i.event_id = l.event_id)") if has_ingested else ""
        parts.append(f"SELECT 'display' AS event_type, timestamp, profile_id, offer_id, placement_id FROM logged l{dedupe}")
        parts.append("SELECT 'decision' AS event_type, timestamp, profile_id, offer_id, placement_id FROM logged")
    # a view, not a table: each family's query scans the Parquet files with its own filters pushed
    # down (cheaper than materializing every event once, ~0.3 s of 0.5 s on 900,000 logged rows)
    con.execute("CREATE TEMP VIEW cap_events AS " + " UNION ALL ".join(parts))
    reset_rows = [(k, v) for k, v in (resets or {}).items()]
    con.execute("CREATE TEMP TABLE cap_resets AS SELECT unnest(?::VARCHAR[]) AS offer_id, unnest(?::TIMESTAMPTZ[]) "
                "AS reset_at", [[k for k, _ in reset_rows], [v for _, v in reset_rows]])
    con.execute("CREATE TEMP TABLE wanted_profiles AS SELECT unnest(?::VARCHAR[]) AS profile_id",
                [[str(p) for p in profile_ids or []]])
    out = {}
    for family in families:
        sql = _family_sql(family, profile_ids is not None and family.scope == "per_profile", bool(reset_rows))
        table = con.sql(sql, params=[family.event, window_start(family.reset, now)]).to_arrow_table()
        out[family] = table if table.num_rows else empty
    con.close()
    return out


def _family_sql(family: Family, wanted_only: bool, after_resets: bool) -> str:
    """One family's counts over `cap_events` (parameters: event type, window start); `wanted_only`:
    the profiles of `wanted_profiles` only; `after_resets`: events after their offer's last reset."""
    placement = "placement_id" if family.per_placement else "''"
    profile = "profile_id" if family.scope == "per_profile" else "''"
    wanted = "AND profile_id IN (SELECT profile_id FROM wanted_profiles) " if wanted_only else ""
    after_reset = ("AND timestamp >= coalesce((SELECT max(reset_at) FROM cap_resets r "
                   "WHERE r.offer_id = e.offer_id OR r.offer_id = '*'), TIMESTAMPTZ '1970-01-01 00:00:00+00') "
                   if after_resets else "")
    return (f"SELECT offer_id, coalesce({placement}, '') AS placement_id, {profile} AS profile_id, "
            f"count(*)::BIGINT AS n FROM cap_events e WHERE event_type = ? AND timestamp >= ? {wanted}"
            f"{after_reset}GROUP BY ALL")


def _literal(path: Path) -> str:
    """A path as a SQL string literal (DuckDB cannot take parameters in a view definition)."""
    return "'" + str(path).replace("'", "''") + "'"


class CapCounters:
    """The live cap state of a serving process: counts per counter key, rolled at UTC boundaries.

    Thread-safe: the decision engine takes `lock` around check-then-record, so a total cap holds
    even with concurrent requests. The embedded `CapStore` (`offerflow.rules.cap_store`): one process.
    """

    shared = False  # counts live in this process only (a reload's new engine must count what it missed)

    def __init__(self, caps: Mapping[str, Sequence[CapRule]], now: datetime | None = None,
                 counts: Mapping[Family, Table] | None = None) -> None:
        now = now or datetime.now(timezone.utc)
        self.caps = {oid: tuple(rules) for oid, rules in caps.items() if rules}
        self.lock = threading.RLock()
        #: Names of the decision-log files these counts include (`load_cap_counters`, `absorb_logs`).
        self.counted_logs: set[str] = set()
        self._log_dir_stamp: int | None = None  # the log directory's mtime at the last `absorb_logs` listing
        #: Times an offer was skipped because it was capped (the service's `offerflow_cap_hits_total`).
        self.hits = 0
        self._counts: dict[Family, dict[tuple[str, str, str], int]] = {}
        self._window: dict[Family, datetime] = {}
        for rules in self.caps.values():
            for rule in rules:
                self._counts.setdefault(rule.family, {})
                self._window[rule.family] = window_start(rule.reset, now)
        for family, frame in (counts or {}).items():
            if family in self._counts and len(frame):
                self._counts[family].update(_counted(frame))
        self._next_roll = min((next_window_start(f.reset, now) for f in self._counts), default=None)
        # The hot path of every decision, resolved once per offer: each rule's counter dict (never
        # replaced, only cleared, so these references stay live), how its key splits, its limit;
        # and the distinct families a decided offer counts in.
        self._checks = {oid: [(self._counts[r.family], r.per_placement, r.scope == "per_profile", r.limit)
                              for r in rules] for oid, rules in self.caps.items()}
        self._recorded = {oid: [(self._counts[f], f.per_placement, f.scope == "per_profile", f.event)
                                for f in dict.fromkeys(r.family for r in rules)] for oid, rules in self.caps.items()}

    @property
    def families(self) -> list[Family]:
        return list(self._counts)

    def _roll(self, now: datetime) -> None:
        """Start new windows that began since the last call (counts of a finished window drop)."""
        if self._next_roll is None or now < self._next_roll:
            return
        for family in self._counts:
            start = window_start(family.reset, now)
            if start != self._window[family]:
                self._counts[family].clear()
                self._window[family] = start
        self._next_roll = min(next_window_start(f.reset, now) for f in self._counts)

    def count(self, rule: CapRule, offer_id: str, placement_id: str, profile_id: str,
              now: datetime | None = None) -> int:
        with self.lock:
            self._roll(now or datetime.now(timezone.utc))
            return self._counts[rule.family].get(rule.family.key(offer_id, placement_id, profile_id), 0)

    def capped(self, offer_id: str, placement_id: str, profile_id: str, now: datetime) -> bool:
        """True as soon as one of the offer's rules has reached its limit."""
        checks = self._checks.get(offer_id)
        if not checks:
            return False
        self._roll(now)
        for counts, by_placement, by_profile, limit in checks:
            key = (offer_id, placement_id if by_placement else ALL, profile_id if by_profile else ALL)
            if counts.get(key, 0) >= limit:
                self.hits += 1
                return True
        return False

    def record(self, offer_ids: Iterable[str], placement_id: str, profile_id: str, now: datetime,
               events: Sequence[str] = DECIDED_EVENTS) -> None:
        """Count `events` of these offers (by default: they were just decided, so logged as displays)."""
        self._roll(now)
        for offer_id in offer_ids:
            for counts, by_placement, by_profile, event in self._recorded.get(offer_id, ()):
                if event in events:
                    key = (offer_id, placement_id if by_placement else ALL, profile_id if by_profile else ALL)
                    counts[key] = counts.get(key, 0) + 1

    def reserve(self, offer_ids: Sequence[str], placement_id: str, profile_id: str, now: datetime,
                unchecked: Sequence[str] = ()) -> list[str]:
        """Count these offers as decided if none of them is capped (all or nothing); returns the
        capped ones (empty: counted). `unchecked` offers (fallbacks) are counted without a check.
        The caller holds `lock`, so check-then-count is one step."""
        refused = [oid for oid in offer_ids if self.capped(oid, placement_id, profile_id, now)]
        if not refused:
            self.record([*offer_ids, *unchecked], placement_id, profile_id, now)
        return refused

    def reserve_request(self, placements: Sequence[tuple[Sequence[str], Sequence[str], str]], profile_id: str,
                        now: datetime) -> tuple[int, list[str]]:
        """`reserve` for each (offers, unchecked offers, placement) of one request, in order, up to
        the first with a capped offer: how many were counted and that one's capped offers."""
        for counted, (offer_ids, unchecked, placement_id) in enumerate(placements):
            refused = self.reserve(offer_ids, placement_id, profile_id, now, unchecked)
            if refused:
                return counted, refused
        return len(placements), []

    def absorb_logs(self, decision_log_dir: Path, own: Iterable[str] = (), resets_path: Path | None = None,
                    now: datetime | None = None) -> int:
        """Count the decision-log files that appeared since these counts were made, but this process's
        `own` (names; counted as it decided): what other processes (`offerflow decide`, `decide-batch`,
        `offerflow.decide`) decided meanwhile. A server calls it every 2 s. Returns the files counted."""
        self.counted_logs.update(own)
        try:  # names only, and only when a file came or went: ~1.2 us a file (0.2 s for 170,000)
            stamp = os.stat(decision_log_dir).st_mtime_ns
            if stamp == self._log_dir_stamp:
                return 0
            names = set(os.listdir(decision_log_dir)) - self.counted_logs
        except FileNotFoundError:
            return 0
        new = [Path(decision_log_dir) / n for n in sorted(names) if fnmatch.fnmatchcase(n, LOGGED_DISPLAYS_GLOB)]
        # a directory changed in the last second is listed again: a file can come in the same mtime tick
        settled = stamp if stamp < time.time_ns() - 1_000_000_000 else None
        if not new:
            self._log_dir_stamp = settled
            return 0
        now = now or datetime.now(timezone.utc)
        resets = read_cap_resets(resets_path) if resets_path is not None else {}
        counts = count_cap_events(self.families, sorted(self.caps), None, None, now, resets, log_files=new)
        with self.lock:
            self._roll(now)
            for family, frame in counts.items():
                target = self._counts[family]
                for key, n in _counted(frame):
                    target[key] = target.get(key, 0) + n
            self.counted_logs.update(p.name for p in new)
        self._log_dir_stamp = settled
        return len(new)

    def reset(self, offer_id: str | None = None) -> int:
        """Forget the counts of one offer (None: all offers); returns how many counters were cleared."""
        cleared = 0
        with self.lock:
            for family, counts in self._counts.items():
                if offer_id is None:
                    cleared += len(counts)
                    counts.clear()
                else:
                    doomed = [k for k in counts if k[0] == offer_id]
                    for k in doomed:
                        del counts[k]
                    cleared += len(doomed)
        return cleared

    def counts_frame(self, family: Family) -> pd.DataFrame:
        """The counts of one family as columns offer_id, placement_id, profile_id, n (for batch work)."""
        import pandas as pd

        with self.lock:
            counts = dict(self._counts.get(family, {}))
        if not counts:
            return pd.DataFrame({"offer_id": [], "placement_id": [], "profile_id": [], "n": []}).astype(
                {"offer_id": object, "placement_id": object, "profile_id": object, "n": np.int64})
        frame = pd.DataFrame(list(counts), columns=["offer_id", "placement_id", "profile_id"])  # from tuples: fast
        frame["n"] = np.fromiter(counts.values(), dtype=np.int64, count=len(counts))
        return frame

    def state(self, now: datetime | None = None, profile_id: str | None = None) -> list[dict[str, Any]]:
        """The counters as `cap_state_rows` says, read under the lock after rolling the windows."""
        now = now or datetime.now(timezone.utc)
        with self.lock:
            self._roll(now)
            return cap_state_rows(self.caps, lambda family, offer_id: self._counts[family], now, profile_id)


def _counted(counts: Table) -> Iterator[tuple[tuple[str, str, str], int]]:
    """(counter key, n) of `count_cap_events` rows (an Arrow table; lists first: faster per value)."""
    keys = zip(*([str(v) for v in column_values(counts, c).tolist()] for c in COUNT_KEYS))
    return zip(keys, column_values(counts, "n").astype(np.int64).tolist())


def read_cap_resets(path: Path) -> dict[str, datetime]:
    """Administrator resets: offer_id (or "*") -> time; counts before it are ignored."""
    if not path.exists():
        return {}
    raw = json.loads(path.read_text(encoding="utf-8"))
    return {str(k): datetime.fromisoformat(v) for k, v in raw.items()}


def write_cap_reset(path: Path, offer_id: str | None, now: datetime) -> datetime:
    """Record a reset at `now` (returned) so a reload (or another process) does not count the old
    events again."""
    resets = {k: v.isoformat() for k, v in read_cap_resets(path).items()}
    resets[offer_id or "*"] = now.isoformat()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(resets, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
    return now


def load_cap_counters(caps: Mapping[str, Sequence[CapRule]], events_path: Path | None,
                      decision_log_dir: Path | None, resets_path: Path | None = None,
                      now: datetime | None = None, profile_ids: Sequence[str] | None = None) -> CapCounters:
    """Cap counters of a project, counted from the ingested events and the decision log
    (`profile_ids`: per-profile counters of these profiles only, see `count_cap_events`)."""
    now = now or datetime.now(timezone.utc)
    caps = {oid: rules for oid, rules in caps.items() if rules}
    families = [r.family for rules in caps.values() for r in rules]
    resets = read_cap_resets(resets_path) if resets_path is not None else {}
    logs = logged_display_files(decision_log_dir)
    counts = count_cap_events(families, sorted(caps), events_path, decision_log_dir, now, resets, profile_ids, logs)
    counters = CapCounters(caps, now, counts)
    counters.counted_logs.update(p.name for p in logs)
    return counters

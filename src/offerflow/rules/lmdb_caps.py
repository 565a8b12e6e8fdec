"""Cap counters shared by the workers of one machine in an LMDB file (`caps.store: lmdb`).

LMDB is a memory-mapped B-tree whose write transactions are serialized across processes by a
robust mutex in its lock file: `reserve_request` is one write transaction per request that checks
every rule of each placement's chosen offers and increments their counters only if none is at its
limit (the same check-then-count as Redis's reserve script, `cap_store.RESERVE_LUA`), a few
microseconds and no server process. For workers on several machines, use Redis.

Layout (directory `<outputs>/caps/counters.lmdb` by default): database ``counters`` holds
``c:<family>:<window start, 12 digits>:<offer>␟<placement>␟<profile>`` -> count (8 bytes, little
endian), so one window's keys are one contiguous range and older windows sort before it; database
``meta`` holds ``seeded:<family>`` markers. When a process first sees a window of a family, it
deletes that family's older windows, a few thousand keys a transaction, so the file stays bounded.

Durability: the environment is opened with `writemap`, `sync=False` and `metasync=False`. A
committed transaction is in the shared page cache at once, so a process that dies (even by
`kill -9`, even inside a transaction: the mutex is robust) loses nothing; an operating-system
crash may lose the last transactions or leave the file inconsistent: delete the directory and
the next start seeds it again from the events and the decision log.

An environment must not cross a fork nor be opened twice in one process: each process opens it
once (`open_env`, keyed by process id and path) and every store of that process shares it; a
forked child closes the copies it inherited (which leaves the parent's open) and opens its own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lmdb

from offerflow.rules.capping import CapRule, Family
from offerflow.rules.shared_caps import SEP, CapStoreError, Group, SharedCapStore, family_name

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_MAP_MIB = 1024
PURGE_CHUNK = 5000  # keys deleted per write transaction when purging old windows
_ENVS: dict[tuple[int, str], Any] = {}
_ENVS_LOCK = threading.Lock()


def open_env(path: Path, map_mib: int = DEFAULT_MAP_MIB) -> lmdb.Environment:
    """This process's environment of the LMDB directory `path` (created if missing)."""
    path = Path(path).resolve()
    key = (os.getpid(), str(path))
    with _ENVS_LOCK:
        env = _ENVS.get(key)
        if env is None:
            for stale in [k for k in _ENVS if k[0] != key[0]]:  # inherited through a fork: closed in the
                _ENVS.pop(stale).close()  # child (its own mapping and descriptors; the parent's stay open)
            try:
                path.mkdir(parents=True, exist_ok=True)
                env = lmdb.open(str(path), map_size=map_mib << 20, max_dbs=2, lock=True, sync=False,
                                metasync=False, writemap=True, max_readers=256)
                env.reader_check()  # reader slots of processes that died
            except (lmdb.Error, OSError) as exc:
                raise CapStoreError(f"caps.store: cannot open the LMDB cap store {path}: {exc}") from None
            _ENVS[key] = env
    return env


class LmdbCapStore(SharedCapStore):
    """Cap counters in the LMDB directory `path`, shared by every process of this machine that opens it."""

    def __init__(self, caps: Mapping[str, Sequence[CapRule]], path: Path, map_mib: int = DEFAULT_MAP_MIB) -> None:
        super().__init__(caps)
        self.path = Path(path)
        self.map_mib = map_mib
        self._stale: set[tuple[Family, int]] = set()  # windows seen first here: their family's older ones to purge
        self._env_pid = -1
        self._open()

    def _open(self) -> None:
        self.env = open_env(self.path, self.map_mib)
        self.counters = self.env.open_db(b"counters")
        self.meta = self.env.open_db(b"meta")
        self._env_pid = os.getpid()

    def _environment(self) -> Any:
        if self._env_pid != os.getpid():  # this store crossed a fork: open the child's own environment
            self._open()
        return self.env

    @contextmanager
    def _write(self) -> Iterator[Any]:
        """A write transaction (the cross-process mutex), committed on leaving; a full map is a
        CapStoreError."""
        env = self._environment()
        with self.lock:
            try:
                txn = env.begin(write=True, db=self.counters)
            except lmdb.MapResizedError:  # another process opened it with a larger map: adopt that size
                env.set_mapsize(0)
                txn = env.begin(write=True, db=self.counters)
            try:
                with txn:
                    yield txn
            except lmdb.MapFullError:
                raise self._full() from None

    def _full(self) -> CapStoreError:
        return CapStoreError(f"caps.store: the LMDB cap store {self.path} is full ({self.map_mib} MiB mapped): "
                             "raise caps.lmdb_map_mib")

    def _head(self, family: Family, start: int) -> str:
        return f"c:{family_name(family)}:{start:012d}:"

    def _new_window(self, family: Family, start: int) -> None:
        if start > 0:  # `never` windows start at the epoch: nothing older
            self._stale.add((family, start))

    def purge(self) -> int:
        """Delete the keys of the windows older than the ones this process has seen; returns how many."""
        deleted = 0
        while self._stale:
            family, start = self._stale.pop()
            prefix, head = f"c:{family_name(family)}:".encode(), self._head(family, start).encode()
            while True:
                with self._write() as txn:
                    cursor, n = txn.cursor(), 0
                    found = cursor.set_range(prefix)
                    while found and n < PURGE_CHUNK and cursor.key() < head and cursor.key().startswith(prefix):
                        found = cursor.delete()
                        n += 1
                deleted += n
                if n < PURGE_CHUNK:
                    break
        return deleted

    def _reserve_groups(self, groups: list[Group], now: datetime) -> tuple[int, list[int]]:
        """One write transaction over every group (see RESERVE_LUA for the same in Redis); the
        transaction begun directly (this is every request's path; `_write` costs ~1.7 us more)."""
        if self._stale:
            self.purge()
        env = self.env if self._env_pid == os.getpid() else self._environment()
        try:
            with self.lock, env.begin(write=True, db=self.counters) as txn:
                return _check_and_count(txn, groups)
        except lmdb.MapFullError:
            raise self._full() from None
        except lmdb.MapResizedError:  # another process opened it with a larger map: adopt that size, again
            env.set_mapsize(0)
            with self._write() as txn:
                return _check_and_count(txn, groups)

    def reset(self, offer_id: str | None = None) -> int:
        """Delete the counters of one offer (None: all) in every window; returns how many were deleted."""
        self._hints.clear()
        with self._write() as txn:
            if offer_id is None:
                deleted = txn.stat(self.counters)["entries"]
                txn.drop(self.counters, delete=False)
                return deleted
            cursor, deleted, offer = txn.cursor(), 0, (offer_id + SEP).encode()
            found = cursor.first()
            while found:
                key = cursor.key()
                head = key[:key.index(b":", 2) + 14]  # c:<family>:<12 digits>:
                target = head + offer
                found = cursor.set_range(target)
                while found and cursor.key().startswith(target):
                    found = cursor.delete()
                    deleted += 1
                found = cursor.set_range(head + b"\xff")  # the next window (no UTF-8 byte is 0xff)
        return deleted

    def _counts(self, family: Family, now: datetime, offer_id: str | None = None) -> dict[tuple[str, str, str], int]:
        head = self._window(family, now)[0]
        prefix = (head + ("" if offer_id is None else offer_id + SEP)).encode()
        out = {}
        with self._environment().begin(db=self.counters) as txn:
            cursor = txn.cursor()
            found = cursor.set_range(prefix)
            while found and cursor.key().startswith(prefix):
                offer, placement, profile = cursor.key().decode()[len(head):].split(SEP)
                out[(offer, placement, profile)] = int.from_bytes(cursor.value(), "little")
                found = cursor.next()
        return out

    def ensure_seeded(self, count: Callable[[list[Family]], Mapping[Family, pd.DataFrame]],
                      now: datetime) -> list[Family]:
        """Seed every family without its marker from `count(families)`, once per file: the markers
        are checked again and the counts written in one write transaction, so a process that waits
        for the mutex finds the markers set. Returns the families this call seeded."""
        with self._environment().begin(db=self.meta) as txn:
            if all(txn.get(self._marker(f)) is not None for f in self._families):
                return []
        for family in self._families:
            self._window(family, now)  # every key head made (and old windows found) before the transaction
        if self._stale:
            self.purge()
        with self._write() as txn:
            missing = [f for f in self._families if txn.get(self._marker(f), db=self.meta) is None]
            for _, key, n in (self.seed_items(count(missing), missing, now) if missing else ()):
                _add(txn, key.encode(), n)
            for family in missing:
                txn.put(self._marker(family), now.isoformat().encode(), db=self.meta)
        return missing

    @staticmethod
    def _marker(family: Family) -> bytes:
        return f"seeded:{family_name(family)}".encode()


def _check_and_count(txn: Any, groups: list[Group]) -> tuple[int, list[int]]:
    """In one write transaction: each group's checks, then, if none is at its limit, its increments;
    stops at the first group with a check at its limit (see `SharedCapStore._reserve_groups`)."""
    get = txn.get
    for g, (checks, check_keys, _, record_keys, _) in enumerate(groups):
        refused = []
        for i, key in enumerate(check_keys):
            value = get(key.encode())
            if value is not None and int.from_bytes(value, "little") >= checks[i][2]:
                refused.append(i)
        if refused:
            return g, refused
        for key in record_keys:
            _add(txn, key.encode(), 1)
    return len(groups), []


def _add(txn: Any, key: bytes, n: int) -> None:
    """Add `n` to the counter `key` (8 bytes, little endian; absent: 0)."""
    value = txn.get(key)
    txn.put(key, ((int.from_bytes(value, "little") if value is not None else 0) + n).to_bytes(8, "little"))

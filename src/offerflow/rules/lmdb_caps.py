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
hands the deleting of that family's older windows to its purge thread (`_Purger`: one daemon thread
per process, `PURGE_CHUNK` keys a write transaction, a pause between them), so the file stays
bounded and no request purges; correctness does not depend on it (keys carry their window start).

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

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lmdb

from offerflow.rules.capping import CapRule, Family
from offerflow.rules.shared_caps import SEP, CapStoreError, Group, SharedCapStore, family_name

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

DEFAULT_MAP_MIB = 1024
#: Keys deleted per write transaction when purging old windows: ~0.13 ms holding the writer mutex on
#: average (bench/cap_purge_bench.py), so another worker's reserve never waits long for it.
PURGE_CHUNK = 256
PURGE_PAUSE_S = 0.001  # the purge thread's pause between two transactions (the other writers go first)
#: Counters `decide-batch` adds per write transaction (`_add_counts`), each followed by a PURGE_PAUSE_S pause.
ADD_CHUNK = 1000
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


class _Purger:
    """This process's deleting of old windows, off the request path: one daemon thread, started with
    the first store (idle until a store first sees a new window: a request only queues the job and
    wakes it), deletes `PURGE_CHUNK` keys a write transaction and pauses `PURGE_PAUSE_S` between
    them. Jobs: (directory, family prefix) -> (environment, database, the newest window head seen);
    the keys of that family before the head go. At exit the thread stops after its transaction
    (what is left, the next process that sees the window deletes); a forked child starts with no
    jobs and no thread (the parent finishes its own)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # the jobs and the thread handle
        self.txn_lock = threading.Lock()  # held for each transaction: a fork and `set_mapsize` wait for it
        self.wake = threading.Event()
        self.jobs: dict[tuple[str, bytes], tuple[Any, Any, bytes]] = {}
        self.thread: threading.Thread | None = None
        self.stopping = False
        self.forking = False  # `_before_fork` holds `txn_lock`
        self.deleted = self.transactions = 0  # for the bench and the tests
        self.longest_s = self.held_s = 0.0  # the longest and total time purge transactions held the writer mutex

    def start(self) -> None:
        """Start the thread if it is not running (a thread start can cost a request milliseconds on
        a busy machine: stores call this when they open, outside requests)."""
        with self.lock:
            if self.thread is None and not self.stopping:
                self.thread = threading.Thread(target=self._run, name="offerflow-lmdb-purge", daemon=True)
                self.thread.start()

    def add(self, directory: str, env: Any, db: Any, prefix: bytes, head: bytes) -> None:
        with self.lock:
            job = self.jobs.get((directory, prefix))
            if job is None or job[2] < head:
                self.jobs[(directory, prefix)] = (env, db, head)
        self.start()
        self.wake.set()

    def _run(self) -> None:
        try:
            while not self.stopping:
                self.wake.wait()
                self.wake.clear()  # before reading the jobs: one added from now on wakes it again
                while not self.stopping:
                    with self.lock:
                        jobs = list(self.jobs.items())
                    if not jobs:
                        break
                    for key, (env, db, head) in jobs:
                        self._step(key, env, db, head)
                        if self.stopping:
                            break
        finally:
            with self.lock:
                if self.thread is threading.current_thread():
                    self.thread = None

    def _step(self, key: tuple[str, bytes], env: Any, db: Any, head: bytes) -> None:
        """One transaction of one job; the job is done when it deletes less than a chunk."""
        try:
            n = self.delete(env, db, key[1], head)
        except lmdb.Error as exc:  # e.g. another process grew the map: the next process purges
            logging.getLogger(__name__).warning("LMDB cap store %s: old windows not purged: %s", key[0], exc)
            n = 0
        if n < PURGE_CHUNK:
            with self.lock:
                if self.jobs.get(key, (None, None, b""))[2] == head:
                    del self.jobs[key]
        if n:
            time.sleep(PURGE_PAUSE_S)

    def delete(self, env: Any, db: Any, prefix: bytes, head: bytes) -> int:
        """Up to `PURGE_CHUNK` keys from `prefix` up to (not including) `head`, in one write
        transaction (none when a read finds nothing to delete); how many were deleted."""
        with self.txn_lock:  # every transaction of the thread under it (a fork, `set_mapsize` wait for them)
            with env.begin(db=db) as txn:
                cursor = txn.cursor()
                if not cursor.set_range(prefix) or cursor.key() >= head:
                    return 0
            txn = env.begin(write=True, db=db)
            started = time.perf_counter()
            with txn:
                cursor, n = txn.cursor(), 0
                found = cursor.set_range(prefix)
                while found and n < PURGE_CHUNK and cursor.key() < head:  # [prefix, head): the family's older keys
                    found = cursor.delete()
                    n += 1
            held = time.perf_counter() - started
            self.longest_s, self.held_s = max(self.longest_s, held), self.held_s + held
        self.deleted, self.transactions = self.deleted + n, self.transactions + 1
        return n

    def wait(self, timeout: float) -> bool:
        """Wait until every job is done (True) or `timeout` seconds passed (False)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if not self.jobs:
                    return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)


_PURGER = _Purger()


def purger() -> _Purger:
    """This process's purger (its figures: `deleted`, `transactions`, `longest_s`; `wait`)."""
    return _PURGER


def _before_fork() -> None:
    """No purge transaction is open while the process forks (at most one is waited for)."""
    _PURGER.forking = _PURGER.txn_lock.acquire(timeout=5.0)


def _after_fork_in_parent() -> None:
    if _PURGER.forking:
        _PURGER.forking = False
        _PURGER.txn_lock.release()


def _after_fork_in_child() -> None:
    global _PURGER
    _PURGER = _Purger()  # the parent's thread is not in the child; the parent finishes its jobs


def _stop_purging() -> None:
    """At exit: the purge thread stops after its current transaction."""
    _PURGER.stopping = True
    _PURGER.wake.set()
    thread = _PURGER.thread
    if thread is not None:
        thread.join(timeout=5.0)


_HOOKS: list[bool] = []


def _install_hooks() -> None:
    """The fork and exit hooks of the purger, installed when the first store opens (not at import;
    a forked child inherits them, so they are installed once per process tree)."""
    if not _HOOKS:
        os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                            after_in_child=_after_fork_in_child)
        atexit.register(_stop_purging)
        _HOOKS.append(True)


class LmdbCapStore(SharedCapStore):
    """Cap counters in the LMDB directory `path`, shared by every process of this machine that opens it."""

    def __init__(self, caps: Mapping[str, Sequence[CapRule]], path: Path, map_mib: int = DEFAULT_MAP_MIB) -> None:
        super().__init__(caps)
        self.path = Path(path)
        self.map_mib = map_mib
        self._directory = str(self.path.resolve())
        self._env_pid = -1
        self._open()

    def _open(self) -> None:
        self.env = open_env(self.path, self.map_mib)
        self.counters = self.env.open_db(b"counters")
        self.meta = self.env.open_db(b"meta")
        self._env_pid = os.getpid()
        _install_hooks()
        _PURGER.start()

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
                with _PURGER.txn_lock:  # no purge transaction open in this process meanwhile
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
        """This process sees `family`'s window `start` first: its purge thread deletes the older
        windows (this call only queues them: a request never purges)."""
        if start > 0:  # `never` windows start at the epoch: nothing older
            env = self._environment()
            _PURGER.add(self._directory, env, self.counters, f"c:{family_name(family)}:".encode(),
                        self._head(family, start).encode())

    def _reserve_groups(self, groups: list[Group], now: datetime) -> tuple[int, list[int]]:
        """One write transaction over every group (see RESERVE_LUA for the same in Redis); the
        transaction begun directly (this is every request's path; `_write` costs ~1.7 us more)."""
        env = self.env if self._env_pid == os.getpid() else self._environment()
        try:
            with self.lock, env.begin(write=True, db=self.counters) as txn:
                return _check_and_count(txn, groups)
        except lmdb.MapFullError:
            raise self._full() from None
        except lmdb.MapResizedError:  # another process opened it with a larger map: adopt that size, again
            with _PURGER.txn_lock:  # no purge transaction open in this process meanwhile
                env.set_mapsize(0)
            with self._write() as txn:
                return _check_and_count(txn, groups)

    def _add_counts(self, groups: list[tuple[Family, np.ndarray, np.ndarray]], now: datetime) -> None:
        """`ADD_CHUNK` counters a write transaction (read with one `getmulti`, written with one
        `putmulti`; new counters, the usual case, take their value as made before the transaction),
        with a pause between two: LMDB's mutex is not fair, so a process that takes it again at
        once keeps the other workers waiting through all its transactions."""
        keys = [key.encode() for _, part, _ in groups for key in part]
        ns = [int(n) for _, _, part in groups for n in part]
        values = [n.to_bytes(8, "little") for n in ns]
        for lo in range(0, len(keys), ADD_CHUNK):
            part = slice(lo, lo + ADD_CHUNK)
            if lo:
                time.sleep(PURGE_PAUSE_S)
            with self._write() as txn:
                cursor = txn.cursor()
                found = dict(cursor.getmulti(keys[part]))
                items = zip(keys[part], values[part], ns[part])
                cursor.putmulti([(key, value if key not in found else
                                  (int.from_bytes(found[key], "little") + n).to_bytes(8, "little"))
                                 for key, value, n in items])

    def read_counts(self, keys: Sequence[str]) -> list[int]:
        with self._environment().begin(db=self.counters) as txn:
            values = [txn.get(key.encode()) for key in keys]
        return [0 if value is None else int.from_bytes(value, "little") for value in values]

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
        for family in self._families:  # every key head made (older windows queued for purging) first
            self._window(family, now)
        with self._environment().begin(db=self.meta) as txn:
            if all(txn.get(self._marker(f)) is not None for f in self._families):
                return []
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

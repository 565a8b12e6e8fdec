"""One writer per project at a time (issue 19): two `offerflow run` in the same project used to both
train and publish.

Every command that writes (the pipeline, training, scoring and publishing flows, however started:
the CLI, a deployment, Python) holds an exclusive `fcntl.flock` on `<outputs>/offerflow.lock`
(`ProjectPaths.lock`) while it works. The kernel releases it when the holder exits, even on
kill -9, so a crashed run never leaves the project locked. A second command waits up to its
timeout, then stops with one line naming the holder (command, pid, host, start time), which the
holder writes into the file.

The lock is re-entrant within a process: the CLI takes it before starting Prefect (so a locked
project fails in a second, not after the server started) and the flow it then runs takes it again.
Locks on network filesystems (NFS) follow that filesystem's flock semantics.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["ProjectLocked", "project_lock", "lock_holder"]

_HELD: dict[Path, list[int]] = {}  # lock path -> [file descriptor, depth] held by this process
_GUARD = threading.Lock()


class ProjectLocked(RuntimeError):
    """Another command holds the project's lock (one line: who, since when, what to do)."""


def lock_holder(path: Path) -> dict[str, object]:
    """What the current holder wrote into the lock file ({} when nothing readable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _locked_message(path: Path, waited: float) -> str:
    holder = lock_holder(path)
    who = (f"{holder.get('command', 'a command')} (pid {holder.get('pid', '?')} on {holder.get('host', '?')},"
           f" started {holder.get('started_at', '?')})") if holder else "another offerflow command"
    wait = f"after waiting {waited:g} s" if waited else "now"
    return (f"{path}: the project is locked by {who}; it is still running {wait}: wait for it to finish"
            " (or give a longer wait), or stop it (the lock is released when it exits)")


def _acquire(path: Path, command: str, timeout_seconds: float, poll_seconds: float) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    started = time.monotonic()
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            waited = time.monotonic() - started
            if waited >= timeout_seconds:
                os.close(fd)
                raise ProjectLocked(_locked_message(path, round(timeout_seconds, 1))) from None
            time.sleep(min(poll_seconds, max(timeout_seconds - waited, 0.01)))
    holder = {"command": command, "pid": os.getpid(), "host": socket.gethostname(),
              "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(holder).encode(), 0)
    return fd


@contextmanager
def project_lock(path: Path, command: str, timeout_seconds: float = 0.0,
                 poll_seconds: float = 0.2) -> Iterator[None]:
    """Hold the project lock at `path` (see the module docstring) while the block runs: wait up to
    `timeout_seconds` for another holder, then raise `ProjectLocked`. Re-entrant in one process."""
    path = Path(path).resolve()
    with _GUARD:
        held = _HELD.get(path)
        if held is not None:
            held[1] += 1
    if held is None:
        fd = _acquire(path, command, timeout_seconds, poll_seconds)
        with _GUARD:
            _HELD[path] = held = [fd, 1]
    try:
        yield
    finally:
        with _GUARD:
            held[1] -= 1
            last = held[1] == 0
            if last:
                del _HELD[path]
        if last:
            os.ftruncate(held[0], 0)
            fcntl.flock(held[0], fcntl.LOCK_UN)
            os.close(held[0])

"""File-level helpers of the ranking store (`offerflow.core.store`): `StoreError`, the on-disk
names, version directories and their numbering, the CURRENT pointer of stores written before the
manifest, the per-placement lock and durable (fsync'ed) writes. Only `offerflow.core.store` uses them."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TABLE_FILE, METADATA_FILE, CURRENT_FILE, LOCK_FILE, TMP_PREFIX, LAST_VERSION_FILE = (
    "table.parquet", "metadata.json", "CURRENT", ".lock", ".tmp-", ".last_version")
VERSION_DIR = re.compile(r"v(\d{6,})")


class StoreError(Exception):
    """A ranking table that cannot be published or read; the one-line message says why."""


def version_name(version: int) -> str:
    return f"v{version:06d}"


def versions_text(versions: list[int]) -> str:
    """Versions for a message: `1, 2, 5` (`none` when there are none)."""
    return ", ".join(map(str, versions)) or "none"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def load_metadata(version_dir: Path) -> dict[str, Any]:
    return json.loads((version_dir / METADATA_FILE).read_text(encoding="utf-8"))


def read_current(placement_dir: Path) -> int | None:
    try:
        text = (placement_dir / CURRENT_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    if not text.isdigit():
        raise StoreError(f"{placement_dir / CURRENT_FILE}: expected a version number, got {text[:40]!r}")
    return int(text)


def version_list(placement_dir: Path) -> list[int]:
    if not placement_dir.is_dir():
        return []
    return sorted(int(m.group(1)) for p in placement_dir.iterdir() if (m := VERSION_DIR.fullmatch(p.name)))


@contextlib.contextmanager
def locked(placement_dir: Path) -> Iterator[None]:
    fd = os.open(placement_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released by the kernel if the process dies
        yield
    finally:
        os.close(fd)


def remove_leftovers(placement_dir: Path) -> None:
    """Remove what killed publishes left behind (call with the lock held)."""
    for path in placement_dir.iterdir():
        if path.name.startswith(TMP_PREFIX) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.name.startswith(TMP_PREFIX):
            path.unlink(missing_ok=True)
        elif path.name.startswith(CURRENT_FILE + TMP_PREFIX):
            path.unlink(missing_ok=True)


def next_version(placement_dir: Path, manifest: Any) -> int:
    """One more than any version on disk, in the manifest or ever staged (call with the lock held)."""
    try:
        last = int((placement_dir / LAST_VERSION_FILE).read_text(encoding="utf-8").strip() or 0)
    except (FileNotFoundError, ValueError):
        last = 0
    published = manifest.published.get(placement_dir.name, ())
    return max([*version_list(placement_dir), *published, manifest.version(placement_dir.name) or 0, last]) + 1


def mark_version(placement_dir: Path, version: int) -> None:
    """Remember `version` as the highest ever staged, so an orphan's number is never reused."""
    tmp = placement_dir / f"{TMP_PREFIX}{uuid.uuid4().hex}"
    write_durably(tmp, f"{version}\n")
    os.replace(tmp, placement_dir / LAST_VERSION_FILE)


def staged_by(placement_dir: Path, version: int) -> str | None:
    """The run id that staged a version (None: unknown)."""
    try:
        return load_metadata(placement_dir / version_name(version)).get("staged_by")
    except (FileNotFoundError, ValueError):
        return None


def remove_versions(placement_dir: Path, versions: list[int]) -> None:
    """Delete version directories (call with the lock held), each renamed away first so a
    directory named ``vNNNNNN`` is never half deleted."""
    for version in versions:
        doomed = placement_dir / f"{TMP_PREFIX}{uuid.uuid4().hex}"
        try:
            os.rename(placement_dir / version_name(version), doomed)
        except FileNotFoundError:
            continue
        shutil.rmtree(doomed, ignore_errors=True)

"""File-level helpers of the ranking store (`offerflow.core.store`): `StoreError`, the on-disk
names, version directories, the CURRENT pointer, the per-placement lock and durable (fsync'ed)
writes. Only `offerflow.core.store` uses them."""

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

TABLE_FILE, METADATA_FILE, CURRENT_FILE, LOCK_FILE, TMP_PREFIX = (
    "table.parquet", "metadata.json", "CURRENT", ".lock", ".tmp-")
VERSION_DIR = re.compile(r"v(\d{6,})")


class StoreError(Exception):
    """A ranking table that cannot be published or read; the one-line message says why."""


def version_name(version: int) -> str:
    return f"v{version:06d}"


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
        if path.name.startswith(TMP_PREFIX):
            shutil.rmtree(path, ignore_errors=True)
        elif path.name.startswith(CURRENT_FILE + TMP_PREFIX):
            path.unlink(missing_ok=True)


def set_current(placement_dir: Path, version: int) -> None:
    tmp = placement_dir / f"{CURRENT_FILE}{TMP_PREFIX}{uuid.uuid4().hex}"
    write_durably(tmp, f"{version}\n")
    os.replace(tmp, placement_dir / CURRENT_FILE)
    fsync_dir(placement_dir)

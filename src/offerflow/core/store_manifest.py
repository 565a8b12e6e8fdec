"""The manifest of the ranking store (`offerflow.core.store`): the one file that says which version
of every placement serves, switched for all placements at once. Only `offerflow.core.store` uses it.

``<root>/MANIFEST.json``::

    {"format": 1, "run_id": "<the run that switched it>", "switched_at": "<UTC ISO time>",
     "placements": {"web-banner": {"version": 7, "run_id": "<the run that switched to it>",
                                   "staged_by": "<the run that wrote it>", "kind": "ranking",
                                   "row_count": 90000, "sha256": "..."}, ...},
     "published": {"web-banner": [3, 4, 5, 6, 7], ...}}

`placements` is what readers serve; `published` lists, per placement, the versions ever switched
to that are still on disk (what `rollback` may go back to). A version directory named in neither
is staged (its run is still going) or an orphan of a run that died before its switch.

The manifest is replaced atomically (written to ``MANIFEST.json.tmp-<uuid>``, fsynced,
``os.replace``d, directory fsynced), under ``<root>/.lock``, so a reader sees one switch or the
next, never a mix, and a kill at any moment leaves the previous manifest whole. A store written
before manifests existed has a ``CURRENT`` file per placement instead: its manifest is built from
them when first read (and written at the next switch).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from offerflow.core.store_files import (CURRENT_FILE, TMP_PREFIX, StoreError, fsync_dir, locked, read_current,
                                        version_list, write_durably)

MANIFEST_FILE = "MANIFEST.json"
FORMAT = 1
#: Where runs that stage versions hold their lock: ``<root>/.staging/<run id>.lock``.
STAGING_DIR = ".staging"


@dataclass(frozen=True)
class Manifest:
    """Which version of each placement serves (`placements`), switched by run `run_id`."""

    run_id: str | None = None
    switched_at: str | None = None
    placements: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    published: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def version(self, placement_id: str) -> int | None:
        """The serving version of the placement, None if nothing was published."""
        entry = self.placements.get(placement_id)
        return None if entry is None else int(entry["version"])

    def versions(self) -> dict[str, int]:
        """Placement -> serving version, for every published placement."""
        return {p: int(e["version"]) for p, e in sorted(self.placements.items())}

    def to_json(self) -> str:
        record = {"format": FORMAT, "run_id": self.run_id, "switched_at": self.switched_at,
                  "placements": {p: dict(e) for p, e in sorted(self.placements.items())},
                  "published": {p: list(v) for p, v in sorted(self.published.items())}}
        return json.dumps(record, indent=2, sort_keys=True) + "\n"

    def switched(self, entries: Mapping[str, Mapping[str, Any]], run_id: str | None) -> Manifest:
        """A new manifest: `entries` replace theirs, the other placements keep theirs."""
        published = dict(self.published)
        for placement_id, entry in entries.items():
            published[placement_id] = tuple(sorted({*published.get(placement_id, ()), int(entry["version"])}))
        return Manifest(run_id, datetime.now(UTC).isoformat(), {**self.placements, **entries}, published)

    def pruned(self, placement_id: str, kept: list[int]) -> Manifest:
        published = {**self.published, placement_id: tuple(v for v in self.published.get(placement_id, ())
                                                            if v in kept)}
        return replace(self, published=published)


def parse_manifest(text: str, path: Path) -> Manifest:
    try:
        record = json.loads(text)
        if record.get("format") != FORMAT:
            raise ValueError(f"unknown format {record.get('format')!r}")
        placements = {str(p): dict(e) for p, e in record["placements"].items()}
        for placement_id, entry in placements.items():
            if not isinstance(entry.get("version"), int):
                raise ValueError(f"placements.{placement_id}.version is not an integer")
        published = {str(p): tuple(int(v) for v in vs) for p, vs in record.get("published", {}).items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StoreError(f"{path}: not a ranking store manifest ({exc})") from None
    return Manifest(record.get("run_id"), record.get("switched_at"), placements, published)


def read_manifest(root: Path) -> Manifest:
    """The store's manifest; for a store without one, the manifest its CURRENT files describe."""
    path = root / MANIFEST_FILE
    try:
        return parse_manifest(path.read_text(encoding="utf-8"), path)
    except FileNotFoundError:
        return legacy_manifest(root)


def legacy_manifest(root: Path) -> Manifest:
    """The manifest of a store written before manifests: each placement's CURRENT version serves,
    every version on disk counts as published."""
    if not root.is_dir():
        return Manifest()
    placements: dict[str, dict[str, Any]] = {}
    published: dict[str, tuple[int, ...]] = {}
    for placement_dir in sorted(p for p in root.iterdir() if (p / CURRENT_FILE).is_file()):
        version = read_current(placement_dir)
        if version is None:
            continue
        placements[placement_dir.name] = {"version": version, "run_id": None}
        published[placement_dir.name] = tuple(version_list(placement_dir))
    return Manifest(placements=placements, published=published)


def write_manifest(root: Path, manifest: Manifest) -> None:
    """Replace the manifest atomically (call with `manifest_lock` held)."""
    for path in root.glob(f"{MANIFEST_FILE}{TMP_PREFIX}*"):  # left by a killed switch
        path.unlink(missing_ok=True)
    tmp = root / f"{MANIFEST_FILE}{TMP_PREFIX}{uuid.uuid4().hex}"
    write_durably(tmp, manifest.to_json())
    os.replace(tmp, root / MANIFEST_FILE)
    fsync_dir(root)


def manifest_stamp(root: Path | str) -> tuple[int, int] | None:
    """(inode, mtime_ns) of the manifest, None without one: it changes at every switch. (A str
    `root` saves the pathlib work: a serving process calls this on every request.)"""
    try:
        st = os.stat(os.path.join(root, MANIFEST_FILE))
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


@contextlib.contextmanager
def manifest_lock(root: Path) -> Iterator[None]:
    """``<root>/.lock``, held while the manifest is switched (released by the kernel on a kill)."""
    root.mkdir(parents=True, exist_ok=True)
    with locked(root):
        yield


def _staging_lock_path(root: Path, run_id: str) -> Path:
    if not run_id or "/" in run_id or run_id.startswith("."):
        raise StoreError(f"invalid run id {run_id!r} for staging")
    return root / STAGING_DIR / f"{run_id}.lock"


@contextlib.contextmanager
def staging_lock(root: Path, run_id: str) -> Iterator[None]:
    """Held by a run while it stages versions: the lock says their run is alive."""
    path = _staging_lock_path(root, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def run_alive(root: Path, run_id: str | None) -> bool:
    """Whether a run holds its staging lock (in any process, this one included)."""
    if not run_id:
        return False
    try:
        fd = os.open(_staging_lock_path(root, run_id), os.O_RDWR)
    except (FileNotFoundError, StoreError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False

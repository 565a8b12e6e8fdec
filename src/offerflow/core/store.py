"""The ranking store: the only module that reads and writes published ranking tables (with its
private helpers `offerflow.core.store_files` and `offerflow.core.store_tables`).

On-disk layout under the store root (e.g. ``data/rankings``)::

    <root>/<placement_id>/CURRENT                   "7\\n": the version readers use
    <root>/<placement_id>/.lock                     flock'ed by publish and rollback
    <root>/<placement_id>/v000007/table.parquet     RANKING_SCHEMA or POSTERIOR_SCHEMA rows
    <root>/<placement_id>/v000007/metadata.json     caller metadata + version, published_at,
                                                    row_count, kind, sha256 of table.parquet

Atomicity: a version directory is complete before it gets its name. `publish` writes both files
into ``.tmp-<uuid>``, fsyncs them and the directory, then renames it to ``vNNNNNN`` (rename is
atomic), fsyncs the placement directory, and only then points CURRENT at it by writing
``CURRENT.tmp-<uuid>``, fsyncing and ``os.replace``-ing it over CURRENT (atomic as well). A reader
reads CURRENT, then that version directory, so it sees the old or the new version, never a mix.
A publish killed at any point leaves CURRENT naming the old, complete version; its leftovers
(``.tmp-*``) are invisible to readers and removed by the next publish or rollback, which hold the
lock, so no leftover can belong to a live publisher. Pruning renames a version away before
deleting it, so a directory named ``vNNNNNN`` is always whole. Versions only grow: a new one is
one more than the largest version on disk or in CURRENT.

Personalized tables are stored sorted by (profile_id, rank); `RankingSnapshot` relies on it to
answer per-profile lookups with one binary search. A table scored in partitions is published
from its sorted Parquet parts with `publish_parts`, which sort-merges them into the version's one
table.parquet with memory bounded by the parts' batch size (same atomicity as `publish`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from offerflow.core.store_files import (CURRENT_FILE, METADATA_FILE, TABLE_FILE, TMP_PREFIX, StoreError, fsync_dir,
                                        load_metadata, locked, read_current, remove_leftovers, set_current,
                                        version_list, version_name, write_durably)
from offerflow.core.store_tables import KIND_SCHEMAS, conform, merge_sorted_parts, sorted_ranking, write_table

__all__ = ["KIND_SCHEMAS", "RankingSnapshot", "RankingStore", "StoreError"]

_PLACEMENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_T = TypeVar("_T")


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


@dataclass(frozen=True, eq=False)
class RankingSnapshot:
    """One published version of a placement, loaded for serving; immutable.

    Kind "ranking": `lookup(profile_id)` binary-searches the sorted unique profile ids (shape
    (n_profiles,)) and slices rows offsets[i]:offsets[i + 1] (offsets: shape (n_profiles + 1,)) out
    of the flat offer id and score arrays (shape (n_rows,)). Kind "posterior": `posteriors`.
    """

    placement_id: str
    version: int
    metadata: Mapping[str, Any]
    kind: str
    _profile_ids: np.ndarray = field(default_factory=lambda: np.empty(0, object), repr=False)
    _offsets: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64), repr=False)
    _offer_ids: np.ndarray = field(default_factory=lambda: np.empty(0, object), repr=False)
    _scores: np.ndarray = field(default_factory=lambda: np.empty(0, np.float64), repr=False)
    _posteriors: pd.DataFrame | None = field(default=None, repr=False)

    @classmethod
    def from_table(cls, placement_id: str, version: int, metadata: Mapping[str, Any],
                   table: pa.Table) -> RankingSnapshot:
        """Index a table as written by `RankingStore.publish` (rankings sorted by profile_id, rank)."""
        kind, n = str(metadata.get("kind")), table.num_rows
        head = dict(placement_id=placement_id, version=version, metadata=MappingProxyType(dict(metadata)), kind=kind)
        if kind == "posterior":
            return cls(**head, _posteriors=table.to_pandas())
        if kind != "ranking":
            raise StoreError(f"placement '{placement_id}' version {version}: unknown kind {kind!r}")
        if n == 0:
            return cls(**head)
        pid = table.column("profile_id").combine_chunks()
        changes = pc.not_equal(pid.slice(1), pid.slice(0, n - 1)).to_numpy(zero_copy_only=False)
        starts = np.concatenate(([0], np.flatnonzero(changes) + 1)).astype(np.int64)
        unique = pid.take(pa.array(starts))  # strictly increasing unless the table is not sorted
        if len(unique) > 1 and not pc.all(pc.greater(unique.slice(1), unique.slice(0, len(unique) - 1))).as_py():
            raise StoreError(f"placement '{placement_id}' version {version}: table is not sorted by profile_id")
        offers = pc.dictionary_encode(table.column("offer_id")).combine_chunks()  # few distinct offer ids
        offer_names = offers.dictionary.to_numpy(zero_copy_only=False).astype(object)
        return cls(**head, _profile_ids=_frozen(unique.to_numpy(zero_copy_only=False).astype(object)),
                   _offsets=_frozen(np.append(starts, n)),
                   _offer_ids=_frozen(offer_names[offers.indices.to_numpy(zero_copy_only=False)]),
                   _scores=_frozen(table.column("score").to_numpy().astype(np.float64)))

    def lookup(self, profile_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(offer_ids, scores) of one profile, each shape (k,), best rank first, read-only views;
        empty arrays for an unknown profile. One np.searchsorted, O(log n_profiles), no pandas."""
        if self.kind != "ranking":
            raise StoreError(f"placement '{self.placement_id}' version {self.version} is a {self.kind} table: "
                             "use .posteriors")
        ids = self._profile_ids
        i = int(np.searchsorted(ids, profile_id))
        start, stop = (self._offsets[i], self._offsets[i + 1]) if i < len(ids) and ids[i] == profile_id else (0, 0)
        return self._offer_ids[start:stop], self._scores[start:stop]

    @property
    def posteriors(self) -> pd.DataFrame:
        """Copy of the posterior table: POSTERIOR_SCHEMA columns, one row per offer (kind "posterior")."""
        if self._posteriors is None:
            raise StoreError(f"placement '{self.placement_id}' version {self.version} is a {self.kind} table: "
                             "use .lookup()")
        return self._posteriors.copy()


class RankingStore:
    """Versioned ranking tables per placement under `root` (see the module docstring for the layout)."""

    def __init__(self, root: Path, keep_versions: int = 5) -> None:
        if not isinstance(keep_versions, int) or keep_versions < 1:
            raise StoreError(f"keep_versions must be an integer >= 1, got {keep_versions!r}")
        self.root = Path(root)
        self.keep_versions = keep_versions
        self._current_paths: dict[str, str] = {}

    def publish(self, placement_id: str, table: pa.Table | pd.DataFrame, metadata: Mapping[str, Any]) -> int:
        """Publish `table` as the new current version of the placement and return its number.

        `metadata["kind"]` selects the schema: "ranking" (RANKING_SCHEMA rows, up to 30 per
        profile, stored sorted by profile_id, rank) or "posterior" (POSTERIOR_SCHEMA, one row per
        offer). Compatible column types are cast; anything else raises StoreError. metadata.json
        gets `metadata` plus version, published_at, row_count, kind and sha256 (these win).
        """
        placement_dir = self._placement_dir(placement_id)
        kind = metadata.get("kind") if isinstance(metadata, Mapping) else None
        if kind not in KIND_SCHEMAS:
            raise StoreError(f"metadata['kind'] must be one of {sorted(KIND_SCHEMAS)}, got {kind!r}")
        conformed = conform(table, kind)
        if kind == "ranking":
            conformed = sorted_ranking(conformed)
        elif pc.count_distinct(conformed.column("offer_id")).as_py() != conformed.num_rows:
            raise StoreError("posterior table: column 'offer_id' has duplicate values")
        return self._publish_written(placement_dir, kind, metadata,
                                     lambda path: write_table(conformed, path))

    def publish_parts(self, placement_id: str, parts: Sequence[Path], metadata: Mapping[str, Any],
                      batch_rows: int = 262_144) -> int:
        """Publish Parquet parts of one ranking table as one new version, atomically, like `publish`.

        Each part must hold RANKING_SCHEMA rows sorted by (profile_id, rank) (as
        `publishing.write_ranking_part` writes them); parts hold disjoint profiles, e.g. one hash
        partition each. They are sort-merged into the version's single table.parquet in rounds:
        each round reads at most `batch_rows` rows per part, so memory is bounded by
        len(parts) x batch_rows rows, never by the whole table. Any row out of (profile_id, rank)
        order across the merged output (an unsorted part, a profile in two parts) is a StoreError
        and nothing is published.
        """
        placement_dir = self._placement_dir(placement_id)
        if not isinstance(metadata, Mapping) or metadata.get("kind") != "ranking":
            raise StoreError("publish_parts publishes ranking tables: metadata['kind'] must be 'ranking'")
        if batch_rows < 1:
            raise StoreError(f"batch_rows must be >= 1, got {batch_rows!r}")
        files = [Path(p) for p in parts]
        for path in files:
            if not path.is_file():
                raise StoreError(f"ranking part {path} does not exist")
        return self._publish_written(placement_dir, "ranking", metadata,
                                     lambda path: merge_sorted_parts(files, path, batch_rows))

    def _publish_written(self, placement_dir: Path, kind: str, metadata: Mapping[str, Any],
                         write: Callable[[Path], int]) -> int:
        """The atomic part of publishing: `write(path)` writes table.parquet into a private
        directory and returns its row count; then metadata, fsyncs, rename, CURRENT, pruning."""
        try:
            json.dumps(dict(metadata))
        except (TypeError, ValueError) as exc:
            raise StoreError(f"metadata is not JSON-serializable: {exc}") from None
        placement_dir.mkdir(parents=True, exist_ok=True)
        with locked(placement_dir):
            remove_leftovers(placement_dir)
            version = max([*version_list(placement_dir), read_current(placement_dir) or 0]) + 1
            tmp = placement_dir / f"{TMP_PREFIX}{uuid.uuid4().hex}"
            tmp.mkdir()
            try:
                row_count = write(tmp / TABLE_FILE)
                with open(tmp / TABLE_FILE, "rb") as f:
                    os.fsync(f.fileno())
                    digest = hashlib.file_digest(f, "sha256").hexdigest()
                record = {**metadata, "version": version, "published_at": datetime.now(UTC).isoformat(),
                          "row_count": row_count, "kind": kind, "sha256": digest}
                write_durably(tmp / METADATA_FILE, json.dumps(record, indent=2, sort_keys=True) + "\n")
                fsync_dir(tmp)
                os.rename(tmp, placement_dir / version_name(version))
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            fsync_dir(placement_dir)
            set_current(placement_dir, version)
            self._prune(placement_dir, version)
        return version

    def rollback(self, placement_id: str, version: int | None = None) -> int:
        """Make `version` (None: the newest version older than the current one) current; returns it."""
        placement_dir = self._placement_dir(placement_id)
        if read_current(placement_dir) is None:
            raise StoreError(f"no published ranking for placement '{placement_id}' in {self.root}")
        with locked(placement_dir):
            current, available = read_current(placement_dir) or 0, version_list(placement_dir)
            if version is None:
                older = [v for v in available if v < current]
                if not older:
                    raise StoreError(f"cannot roll back placement '{placement_id}': no version before {current} "
                                     f"in {self.root}")
                version = older[-1]
            elif version not in available:
                raise StoreError(f"cannot roll back placement '{placement_id}' to version {version}: "
                                 f"not in {self.root} (available: {available})")
            if version != current:
                remove_leftovers(placement_dir)
                set_current(placement_dir, version)
        return version

    def current_version(self, placement_id: str) -> int | None:
        """The current version of the placement, None if nothing was published."""
        return read_current(self._placement_dir(placement_id))

    def current_stamp(self, placement_id: str) -> tuple[int, int] | None:
        """(inode, mtime_ns) of the placement's CURRENT pointer, None if nothing is published. It
        changes whenever CURRENT is replaced: one cheap stat for readers polling for new versions."""
        try:
            st = os.stat(self._current_paths.get(placement_id) or self._current_path(placement_id))
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns

    def _current_path(self, placement_id: str) -> str:
        path = self._current_paths[placement_id] = str(self._placement_dir(placement_id) / CURRENT_FILE)
        return path

    def versions(self, placement_id: str) -> list[int]:
        """Versions kept on disk for the placement, ascending."""
        return version_list(self._placement_dir(placement_id))

    def placements(self) -> list[str]:
        """Placements with a current version, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if _PLACEMENT_ID.fullmatch(p.name) and (p / CURRENT_FILE).is_file())

    def read_table(self, placement_id: str, version: int | None = None) -> pa.Table:
        """The table of `version` (None: current), in RANKING_SCHEMA or POSTERIOR_SCHEMA."""
        return self._read(placement_id, version, lambda d: pq.read_table(d / TABLE_FILE))[1]

    def read_metadata(self, placement_id: str, version: int | None = None) -> dict[str, Any]:
        """The metadata.json record of `version` (None: current)."""
        return self._read(placement_id, version, load_metadata)[1]

    def snapshot(self, placement_id: str) -> RankingSnapshot:
        """The current version, metadata and table from the same version, indexed for serving."""
        version, (metadata, table) = self._read(
            placement_id, None, lambda d: (load_metadata(d), pq.read_table(d / TABLE_FILE)))
        if metadata.get("row_count") != table.num_rows:
            raise StoreError(f"placement '{placement_id}' version {version}: table has {table.num_rows} rows, "
                             f"metadata says {metadata.get('row_count')}")
        return RankingSnapshot.from_table(placement_id, version, metadata, table)

    def _placement_dir(self, placement_id: str) -> Path:
        if not isinstance(placement_id, str) or not _PLACEMENT_ID.fullmatch(placement_id):
            raise StoreError(f"invalid placement id {placement_id!r}: use letters, digits, '.', '_', '-'")
        return self.root / placement_id

    def _read(self, placement_id: str, version: int | None, load: Callable[[Path], _T]) -> tuple[int, _T]:
        placement_dir = self._placement_dir(placement_id)
        for _ in range(3):  # CURRENT may move on and the version be pruned while we read: retry
            resolved = read_current(placement_dir) if version is None else version
            if resolved is None:
                raise StoreError(f"no published ranking for placement '{placement_id}' in {self.root}")
            try:
                return resolved, load(placement_dir / version_name(resolved))
            except FileNotFoundError:
                if version is not None:
                    break
        raise StoreError(f"placement '{placement_id}' has no version {resolved} in {self.root} "
                         f"(available: {version_list(placement_dir)})")

    def _prune(self, placement_dir: Path, current: int) -> None:
        """Delete versions older than the newest `keep_versions`, never the current one."""
        available = version_list(placement_dir)
        keep = set(available[-self.keep_versions:]) | {current}
        for version in available:
            if version not in keep:  # rename first so a `vNNNNNN` directory is never half deleted
                doomed = placement_dir / f"{TMP_PREFIX}{uuid.uuid4().hex}"
                os.rename(placement_dir / version_name(version), doomed)
                shutil.rmtree(doomed, ignore_errors=True)

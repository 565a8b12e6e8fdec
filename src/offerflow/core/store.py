"""The ranking store: the only module that reads and writes published ranking tables.

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

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
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

from offerflow.core.schema import POSTERIOR_SCHEMA, RANKING_SCHEMA

KIND_SCHEMAS: dict[str, pa.Schema] = {"ranking": RANKING_SCHEMA, "posterior": POSTERIOR_SCHEMA}
TABLE_FILE, METADATA_FILE, CURRENT_FILE, LOCK_FILE, TMP_PREFIX = (
    "table.parquet", "metadata.json", "CURRENT", ".lock", ".tmp-")
_VERSION_DIR = re.compile(r"v(\d{6,})")
_PLACEMENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_T = TypeVar("_T")


class StoreError(Exception):
    """A ranking table that cannot be published or read; the one-line message says why."""


def _version_name(version: int) -> str:
    return f"v{version:06d}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _load_metadata(version_dir: Path) -> dict[str, Any]:
    return json.loads((version_dir / METADATA_FILE).read_text(encoding="utf-8"))


def _read_current(placement_dir: Path) -> int | None:
    try:
        text = (placement_dir / CURRENT_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    if not text.isdigit():
        raise StoreError(f"{placement_dir / CURRENT_FILE}: expected a version number, got {text[:40]!r}")
    return int(text)


def _version_list(placement_dir: Path) -> list[int]:
    if not placement_dir.is_dir():
        return []
    return sorted(int(m.group(1)) for p in placement_dir.iterdir() if (m := _VERSION_DIR.fullmatch(p.name)))


@contextlib.contextmanager
def _locked(placement_dir: Path) -> Iterator[None]:
    fd = os.open(placement_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released by the kernel if the process dies
        yield
    finally:
        os.close(fd)


def _remove_leftovers(placement_dir: Path) -> None:
    """Remove what killed publishes left behind (call with the lock held)."""
    for path in placement_dir.iterdir():
        if path.name.startswith(TMP_PREFIX):
            shutil.rmtree(path, ignore_errors=True)
        elif path.name.startswith(CURRENT_FILE + TMP_PREFIX):
            path.unlink(missing_ok=True)


def _set_current(placement_dir: Path, version: int) -> None:
    tmp = placement_dir / f"{CURRENT_FILE}{TMP_PREFIX}{uuid.uuid4().hex}"
    _write_durably(tmp, f"{version}\n")
    os.replace(tmp, placement_dir / CURRENT_FILE)
    _fsync_dir(placement_dir)


def _castable(source: pa.DataType, target: pa.DataType) -> bool:
    """Strings from any string type, numbers from any number (the safe cast then checks the values);
    all-null columns pass here to fail the null check with a clearer message."""
    source = source.value_type if pa.types.is_dictionary(source) else source
    if pa.types.is_null(source) or source == target:
        return True
    if pa.types.is_string(target):
        return source in (pa.large_string(), pa.string_view())
    numeric = (pa.types.is_integer, pa.types.is_floating)
    return any(f(target) for f in numeric) and any(f(source) for f in numeric)


def _conform(table: pa.Table | pd.DataFrame, kind: str) -> pa.Table:
    """`table` with exactly the columns and types of the kind's schema, or StoreError."""
    schema = KIND_SCHEMAS[kind]
    if isinstance(table, pd.DataFrame):
        try:
            table = pa.Table.from_pandas(table, preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise StoreError(f"{kind} table: cannot convert the DataFrame to Arrow: {exc}".split("\n")[0]) from None
    elif not isinstance(table, pa.Table):
        raise StoreError(f"{kind} table: expected a pyarrow Table or pandas DataFrame, got {type(table).__name__}")
    names = table.column_names
    missing, extra = [n for n in schema.names if n not in names], [n for n in names if n not in schema.names]
    if missing or extra or len(set(names)) != len(names):
        raise StoreError(f"{kind} table: columns {names} do not match {schema.names} "
                         f"(missing {missing}, unexpected {extra})")
    columns = []
    for fld in schema:
        column = table.column(fld.name)
        if not _castable(column.type, fld.type):
            raise StoreError(f"{kind} table: column '{fld.name}' has type {column.type}, expected {fld.type}")
        try:
            column = column.cast(fld.type, safe=True)
        except pa.ArrowException as exc:
            reason = str(exc).split("\n")[0] or type(exc).__name__
            raise StoreError(f"{kind} table: column '{fld.name}' cannot be cast to {fld.type}: {reason}") from None
        if column.null_count:
            raise StoreError(f"{kind} table: column '{fld.name}' has {column.null_count} null values")
        if pa.types.is_floating(fld.type) and (nans := pc.sum(pc.is_nan(column)).as_py() or 0):
            raise StoreError(f"{kind} table: column '{fld.name}' has {nans} NaN values")
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)


def _ordered(table: pa.Table) -> np.ndarray:
    """Shape (n - 1,): True where row i + 1 comes strictly after row i in (profile_id, rank)."""
    n, pid, rank = table.num_rows, table.column("profile_id"), table.column("rank")
    p0, p1, r0, r1 = pid.slice(0, n - 1), pid.slice(1), rank.slice(0, n - 1), rank.slice(1)
    return pc.or_(pc.greater(p1, p0), pc.and_(pc.equal(p1, p0), pc.greater(r1, r0))).to_numpy(zero_copy_only=False)


def _sorted_ranking(table: pa.Table) -> pa.Table:
    """The ranking table sorted by (profile_id, rank); StoreError on bad or duplicate ranks."""
    if table.num_rows and pc.min(table.column("rank")).as_py() < 1:
        raise StoreError("ranking table: column 'rank' must be >= 1")
    if table.num_rows < 2 or _ordered(table).all():
        return table
    table = table.sort_by([("profile_id", "ascending"), ("rank", "ascending")])
    bad = np.flatnonzero(~_ordered(table))
    if bad.size:
        row = table.slice(int(bad[0]), 1).to_pylist()[0]
        raise StoreError(f"ranking table: {bad.size} duplicate (profile_id, rank) pairs, "
                         f"e.g. profile '{row['profile_id']}' rank {row['rank']}")
    return table


def _write_table(table: pa.Table, path: Path) -> int:
    pq.write_table(table, path)
    return table.num_rows


def _key(table: pa.Table, row: int) -> tuple[str, int]:
    return table.column("profile_id")[row].as_py(), table.column("rank")[row].as_py()


def _merge_sorted_parts(parts: list[Path], path: Path, batch_rows: int) -> int:
    """K-way merge of sorted ranking parts into one Parquet file at `path`, round by round.

    A round takes, from every part's buffered batch, the rows whose profile_id is <= the smallest
    last-buffered profile_id among parts with unread batches (nothing later can sort before it),
    sorts those rows (a few batches) and appends them as a row group. Returns the row count."""
    readers = [pq.ParquetFile(p).iter_batches(batch_size=batch_rows) for p in parts]
    buffers: list[pa.Table | None] = [None] * len(parts)
    pending = [True] * len(parts)  # the part may have unread batches
    written, last = 0, None
    with pq.ParquetWriter(path, RANKING_SCHEMA) as writer:
        while True:
            for i, reader in enumerate(readers):
                while pending[i] and (buffers[i] is None or buffers[i].num_rows == 0):
                    batch = next(reader, None)
                    if batch is None:
                        pending[i] = False
                    else:
                        buffers[i] = _conform(pa.Table.from_batches([batch]), "ranking")
                        if buffers[i].num_rows and pc.min(buffers[i].column("rank")).as_py() < 1:
                            raise StoreError(f"ranking part {parts[i]}: column 'rank' must be >= 1")
            live = [b for b in buffers if b is not None and b.num_rows]
            if not live:
                break
            bounds = [b.column("profile_id")[-1] for b, more in zip(buffers, pending)
                      if more and b is not None and b.num_rows]
            bound = min(bounds, key=lambda s: s.as_py()) if bounds else None
            taken = []
            for i, buffer in enumerate(buffers):
                if buffer is None or buffer.num_rows == 0:
                    continue
                if bound is None:
                    n_take = buffer.num_rows
                else:  # rows are sorted: the first row past the bound ends the take
                    n_take = int(pc.sum(pc.less_equal(buffer.column("profile_id"), bound)).as_py() or 0)
                taken.append(buffer.slice(0, n_take))
                buffers[i] = buffer.slice(n_take)
            chunk = pa.concat_tables(taken).combine_chunks()
            chunk = chunk.sort_by([("profile_id", "ascending"), ("rank", "ascending")])
            if chunk.num_rows == 0:
                continue
            bad = np.flatnonzero(~_ordered(chunk)) if chunk.num_rows > 1 else np.empty(0, int)
            first = _key(chunk, 0)
            if bad.size or (last is not None and first <= last):
                pid, rank = _key(chunk, int(bad[0]) + 1) if bad.size else first
                raise StoreError(f"ranking parts: profile '{pid}' rank {rank} is duplicated or out of order "
                                 "(each part must be sorted by profile_id, rank, and hold its own profiles)")
            writer.write_table(chunk)
            written += chunk.num_rows
            last = _key(chunk, chunk.num_rows - 1)
    return written


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
        conformed = _conform(table, kind)
        if kind == "ranking":
            conformed = _sorted_ranking(conformed)
        elif pc.count_distinct(conformed.column("offer_id")).as_py() != conformed.num_rows:
            raise StoreError("posterior table: column 'offer_id' has duplicate values")
        return self._publish_written(placement_dir, kind, metadata,
                                     lambda path: _write_table(conformed, path))

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
                                     lambda path: _merge_sorted_parts(files, path, batch_rows))

    def _publish_written(self, placement_dir: Path, kind: str, metadata: Mapping[str, Any],
                         write: Callable[[Path], int]) -> int:
        """The atomic part of publishing: `write(path)` writes table.parquet into a private
        directory and returns its row count; then metadata, fsyncs, rename, CURRENT, pruning."""
        try:
            json.dumps(dict(metadata))
        except (TypeError, ValueError) as exc:
            raise StoreError(f"metadata is not JSON-serializable: {exc}") from None
        placement_dir.mkdir(parents=True, exist_ok=True)
        with _locked(placement_dir):
            _remove_leftovers(placement_dir)
            version = max([*_version_list(placement_dir), _read_current(placement_dir) or 0]) + 1
            tmp = placement_dir / f"{TMP_PREFIX}{uuid.uuid4().hex}"
            tmp.mkdir()
            try:
                row_count = write(tmp / TABLE_FILE)
                with open(tmp / TABLE_FILE, "rb") as f:
                    os.fsync(f.fileno())
                    digest = hashlib.file_digest(f, "sha256").hexdigest()
                record = {**metadata, "version": version, "published_at": datetime.now(UTC).isoformat(),
                          "row_count": row_count, "kind": kind, "sha256": digest}
                _write_durably(tmp / METADATA_FILE, json.dumps(record, indent=2, sort_keys=True) + "\n")
                _fsync_dir(tmp)
                os.rename(tmp, placement_dir / _version_name(version))
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            _fsync_dir(placement_dir)
            _set_current(placement_dir, version)
            self._prune(placement_dir, version)
        return version

    def rollback(self, placement_id: str, version: int | None = None) -> int:
        """Make `version` (None: the newest version older than the current one) current; returns it."""
        placement_dir = self._placement_dir(placement_id)
        if _read_current(placement_dir) is None:
            raise StoreError(f"no published ranking for placement '{placement_id}' in {self.root}")
        with _locked(placement_dir):
            current, available = _read_current(placement_dir) or 0, _version_list(placement_dir)
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
                _remove_leftovers(placement_dir)
                _set_current(placement_dir, version)
        return version

    def current_version(self, placement_id: str) -> int | None:
        """The current version of the placement, None if nothing was published."""
        return _read_current(self._placement_dir(placement_id))

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
        return _version_list(self._placement_dir(placement_id))

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
        return self._read(placement_id, version, _load_metadata)[1]

    def snapshot(self, placement_id: str) -> RankingSnapshot:
        """The current version, metadata and table from the same version, indexed for serving."""
        version, (metadata, table) = self._read(
            placement_id, None, lambda d: (_load_metadata(d), pq.read_table(d / TABLE_FILE)))
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
            resolved = _read_current(placement_dir) if version is None else version
            if resolved is None:
                raise StoreError(f"no published ranking for placement '{placement_id}' in {self.root}")
            try:
                return resolved, load(placement_dir / _version_name(resolved))
            except FileNotFoundError:
                if version is not None:
                    break
        raise StoreError(f"placement '{placement_id}' has no version {resolved} in {self.root} "
                         f"(available: {_version_list(placement_dir)})")

    def _prune(self, placement_dir: Path, current: int) -> None:
        """Delete versions older than the newest `keep_versions`, never the current one."""
        available = _version_list(placement_dir)
        keep = set(available[-self.keep_versions:]) | {current}
        for version in available:
            if version not in keep:  # rename first so a `vNNNNNN` directory is never half deleted
                doomed = placement_dir / f"{TMP_PREFIX}{uuid.uuid4().hex}"
                os.rename(placement_dir / _version_name(version), doomed)
                shutil.rmtree(doomed, ignore_errors=True)

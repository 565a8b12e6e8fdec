"""The ranking store: the only module that reads and writes published ranking tables (with its
private helpers `offerflow.core.store_files`, `offerflow.core.store_tables` and, for the loaded
versions it serves, `offerflow.core.store_snapshot`).

On-disk layout under the store root (e.g. ``data/rankings``)::

    <root>/MANIFEST.json                            placement -> serving version, run id, switch
                                                    time (`offerflow.core.store_manifest`)
    <root>/.lock                                    flock'ed while the manifest is switched
    <root>/.staging/<run id>.lock                   flock'ed by a run while it stages versions
    <root>/<placement_id>/.lock                     flock'ed while a version is written or removed
    <root>/<placement_id>/v000007/table.parquet     RANKING_SCHEMA or POSTERIOR_SCHEMA rows
    <root>/<placement_id>/v000007/metadata.json     caller metadata + version, published_at,
                                                    row_count, kind, sha256, staged_by (run id)

Two steps. A run first *stages* each placement's new version (`stage`, `stage_parts`): the
table and metadata are written into ``.tmp-<uuid>``, fsynced, and the directory renamed to
``vNNNNNN`` (atomic), so a version directory is complete before it gets its name, and never
changes after. Nothing serves it yet. The run then *commits* (`commit`): one new manifest naming
every placement's version replaces the old one atomically, so all placements switch together.
Readers resolve versions only through the manifest, so they see one run's versions or the next
run's, never a mix. A run killed or failing at any moment before the switch leaves the previous
manifest: every placement keeps serving its previous version. Its staged versions are orphans
(named in no manifest, their run's staging lock free) and its ``.tmp-*`` leftovers are private;
the next stage removes both. `publish`, `publish_parts` and `rollback` switch one placement the
same way (a new manifest copying the other placements' entries). Pruning keeps the newest
`keep_versions` published versions and the serving one; it drops old versions from the manifest
before deleting them, renaming each away first, so a directory named ``vNNNNNN`` is always whole.
Versions only grow (``.last_version`` remembers the highest number ever staged). A store written
before manifests (a ``CURRENT`` file per placement) is read through the manifest its CURRENT files
describe, written at the next switch.

Personalized tables are stored sorted by (profile_id, rank); `RankingSnapshot` relies on it to
answer per-profile lookups with one binary search. A table scored in partitions is published
from its sorted Parquet parts with `publish_parts`, which sort-merges them into the version's one
table.parquet with memory bounded by the parts' batch size (same atomicity as `publish`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from offerflow.core.store_files import (METADATA_FILE, TABLE_FILE, TMP_PREFIX, StoreError, fsync_dir, load_metadata,
                                        locked, mark_version, next_version, remove_leftovers, remove_versions,
                                        staged_by, version_list, version_name, versions_text, write_durably)
from offerflow.core.store_manifest import (Manifest, manifest_lock, manifest_stamp, read_manifest, run_alive,
                                           staging_lock, write_manifest)
from offerflow.core.columns import string_array
from offerflow.core.parquet_rows import read_rows_of
from offerflow.core.store_snapshot import RankingSnapshot
from offerflow.core.store_tables import KIND_SCHEMAS, conform, merge_sorted_parts, sorted_ranking, write_table

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["KIND_SCHEMAS", "Manifest", "Publication", "RankingSnapshot", "RankingStore", "StoreError"]

_PLACEMENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_T = TypeVar("_T")


class RankingStore:
    """Versioned ranking tables per placement under `root` (see the module docstring for the layout)."""

    def __init__(self, root: Path, keep_versions: int = 5, profile_ids: Collection[str] | None = None) -> None:
        """`profile_ids`: snapshots hold only these profiles' rows, read with a Parquet filter (a
        reader for a few profiles, such as `offerflow decide`); None: every row."""
        if not isinstance(keep_versions, int) or keep_versions < 1:
            raise StoreError(f"keep_versions must be an integer >= 1, got {keep_versions!r}")
        self.root = Path(root)
        self._root_text = str(self.root)  # for `manifest_stamp`, on every decision
        self.keep_versions = keep_versions
        self.profile_ids = None if profile_ids is None else sorted({str(p) for p in profile_ids})

    # --- writing: stage versions, switch them together ---------------------------------------

    def publish(self, placement_id: str, table: pa.Table | pd.DataFrame, metadata: Mapping[str, Any]) -> int:
        """Stage `table` and switch the manifest to it (the other placements keep their versions);
        returns the new version. See `stage` for the table and metadata."""
        run_id = f"publish-{uuid.uuid4().hex}"
        with self.staging(run_id):
            version = self.stage(placement_id, table, metadata, run_id)
            self.commit({placement_id: version}, run_id)
        return version

    def publish_parts(self, placement_id: str, parts: Sequence[Path], metadata: Mapping[str, Any],
                      batch_rows: int = 262_144) -> int:
        """`stage_parts` and switch the manifest to the new version, like `publish`."""
        run_id = f"publish-{uuid.uuid4().hex}"
        with self.staging(run_id):
            version = self.stage_parts(placement_id, parts, metadata, run_id, batch_rows)
            self.commit({placement_id: version}, run_id)
        return version

    def staging(self, run_id: str) -> contextlib.AbstractContextManager[None]:
        """Hold while run `run_id` stages and commits: versions staged by a run that holds it are
        never taken for orphans (a run killed before its switch releases it with its process)."""
        return staging_lock(self.root, run_id)

    def publication(self, run_id: str) -> Publication:
        """A `publish`/`publish_parts` look-alike that stages under `run_id` and switches nothing."""
        return Publication(self, run_id)

    def stage(self, placement_id: str, table: pa.Table | pd.DataFrame, metadata: Mapping[str, Any],
              run_id: str) -> int:
        """Write `table` as a new, complete version of the placement, not yet serving; its number.

        `metadata["kind"]` selects the schema: "ranking" (RANKING_SCHEMA rows, up to 30 per
        profile, stored sorted by profile_id, rank) or "posterior" (POSTERIOR_SCHEMA, one row per
        offer). Compatible column types are cast; anything else raises StoreError. metadata.json
        gets `metadata` plus version, published_at, row_count, kind, sha256 and staged_by (these win).
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
        return self._stage_written(placement_dir, kind, metadata, run_id,
                                   lambda path: write_table(conformed, path))

    def stage_parts(self, placement_id: str, parts: Sequence[Path], metadata: Mapping[str, Any], run_id: str,
                    batch_rows: int = 262_144) -> int:
        """Stage Parquet parts of one ranking table as one new version, like `stage`.

        Each part must hold RANKING_SCHEMA rows sorted by (profile_id, rank) (as
        `publishing.write_ranking_part` writes them); parts hold disjoint profiles, e.g. one hash
        partition each. They are sort-merged into the version's single table.parquet in rounds:
        each round reads at most `batch_rows` rows per part, so memory is bounded by
        len(parts) x batch_rows rows, never by the whole table. Any row out of (profile_id, rank)
        order across the merged output (an unsorted part, a profile in two parts) is a StoreError
        and nothing is staged.
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
        return self._stage_written(placement_dir, "ranking", metadata, run_id,
                                   lambda path: merge_sorted_parts(files, path, batch_rows))

    def _stage_written(self, placement_dir: Path, kind: str, metadata: Mapping[str, Any], run_id: str,
                       write: Callable[[Path], int]) -> int:
        """`write(path)` writes table.parquet into a private directory and returns its row count;
        then metadata, fsyncs and the rename to the next version number."""
        try:
            json.dumps(dict(metadata))
        except (TypeError, ValueError) as exc:
            raise StoreError(f"metadata is not JSON-serializable: {exc}") from None
        placement_dir.mkdir(parents=True, exist_ok=True)
        self._clean(placement_dir)
        with locked(placement_dir):
            version = next_version(placement_dir, self.manifest())
            tmp = placement_dir / f"{TMP_PREFIX}{uuid.uuid4().hex}"
            tmp.mkdir()
            try:
                row_count = write(tmp / TABLE_FILE)
                with open(tmp / TABLE_FILE, "rb") as f:
                    os.fsync(f.fileno())
                    digest = hashlib.file_digest(f, "sha256").hexdigest()
                record = {**metadata, "version": version, "published_at": datetime.now(UTC).isoformat(),
                          "row_count": row_count, "kind": kind, "sha256": digest, "staged_by": run_id}
                write_durably(tmp / METADATA_FILE, json.dumps(record, indent=2, sort_keys=True) + "\n")
                fsync_dir(tmp)
                mark_version(placement_dir, version)  # first: a number once staged is never reused
                os.rename(tmp, placement_dir / version_name(version))
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            fsync_dir(placement_dir)
        return version

    def commit(self, versions: Mapping[str, int], run_id: str) -> Manifest:
        """Switch every placement in `versions` to its staged version in one atomic step (one
        manifest replaced); the other placements keep theirs. Returns the manifest now serving.
        Nothing changes (no new manifest) when every placement already serves that version."""
        with manifest_lock(self.root):
            manifest = self.manifest()
            entries = {p: self._entry(p, int(v), run_id) for p, v in versions.items()
                       if manifest.version(p) != v}  # an unchanged placement keeps its entry
            if not entries:
                return manifest
            switched = manifest.switched(entries, run_id)
            doomed = {}
            for placement_id in entries:
                kept = self._kept(switched, placement_id)
                switched = switched.pruned(placement_id, kept)
                doomed[placement_id] = [v for v in manifest.published.get(placement_id, ()) if v not in kept]
            write_manifest(self.root, switched)
            for placement_id, old in doomed.items():
                with locked(self._placement_dir(placement_id)):
                    remove_versions(self._placement_dir(placement_id), old)
        return switched

    def _entry(self, placement_id: str, version: int, run_id: str) -> dict[str, Any]:
        try:
            meta = load_metadata(self._placement_dir(placement_id) / version_name(version))
        except FileNotFoundError:
            raise StoreError(f"cannot switch placement '{placement_id}' to version {version}: not staged "
                             f"in {self.root}") from None
        return {"version": version, "run_id": run_id, "staged_by": meta.get("staged_by"), "kind": meta.get("kind"),
                "row_count": meta.get("row_count"), "sha256": meta.get("sha256")}

    def _kept(self, manifest: Manifest, placement_id: str) -> list[int]:
        """The published versions pruning keeps: the newest `keep_versions` and the serving one."""
        published = list(manifest.published.get(placement_id, ()))
        return sorted({*published[-self.keep_versions:], manifest.version(placement_id) or 0} & set(published))

    def _clean(self, placement_dir: Path) -> None:
        """Remove what killed runs left behind: private directories and orphan versions (staged by
        a run that is gone, never switched to). Holds the manifest lock, then the placement's."""
        with manifest_lock(self.root), locked(placement_dir):
            remove_leftovers(placement_dir)
            manifest = self.manifest()
            listed = set(manifest.published.get(placement_dir.name, ()))
            orphans = [v for v in version_list(placement_dir) if v not in listed
                       and not run_alive(self.root, staged_by(placement_dir, v))]
            remove_versions(placement_dir, orphans)

    def rollback_target(self, placement_id: str, version: int | None = None) -> int:
        """The version `rollback` switches to: `version` if published (None: the newest published
        version older than the current one)."""
        self._placement_dir(placement_id)
        current = self.manifest().version(placement_id)
        if current is None:
            raise StoreError(f"no published ranking for placement '{placement_id}' in {self.root}")
        available = self.versions(placement_id)
        if version is None:
            older = [v for v in available if v < current]
            if not older:
                raise StoreError(f"cannot roll back placement '{placement_id}': no version before {current} "
                                 f"in {self.root}")
            version = older[-1]
        elif version not in available:
            raise StoreError(f"cannot roll back placement '{placement_id}' to version {version}: "
                             f"not in {self.root} (available: {versions_text(available)})")
        return version

    def rollback(self, placement_id: str, version: int | None = None) -> int:
        """Switch the placement to `version` (see `rollback_target`) with a new manifest; returns it."""
        version = self.rollback_target(placement_id, version)
        if version != self.manifest().version(placement_id):
            run_id = f"rollback-{uuid.uuid4().hex}"
            with self.staging(run_id):
                self.commit({placement_id: version}, run_id)
        return version

    # --- reading: through the manifest only --------------------------------------------------

    def manifest(self) -> Manifest:
        """The manifest readers follow: which version of every placement serves."""
        return read_manifest(self.root)

    def current_version(self, placement_id: str) -> int | None:
        """The serving version of the placement, None if nothing was published."""
        self._placement_dir(placement_id)
        return self.manifest().version(placement_id)

    def manifest_stamp(self) -> tuple[int, int] | None:
        """(inode, mtime_ns) of the manifest, None when there is none yet. It changes at every
        switch: one cheap stat for readers polling for new versions."""
        return manifest_stamp(self._root_text)

    def versions(self, placement_id: str) -> list[int]:
        """Published versions kept on disk for the placement, ascending (staged ones excluded)."""
        published = set(self.manifest().published.get(placement_id, ()))
        return [v for v in version_list(self._placement_dir(placement_id)) if v in published]

    def placements(self) -> list[str]:
        """Placements with a serving version, sorted."""
        return sorted(self.manifest().placements)

    def read_table(self, placement_id: str, version: int | None = None) -> pa.Table:
        """The table of `version` (None: current), in RANKING_SCHEMA or POSTERIOR_SCHEMA."""
        return self._read(placement_id, version, lambda d: pq.read_table(d / TABLE_FILE))[1]

    def read_metadata(self, placement_id: str, version: int | None = None) -> dict[str, Any]:
        """The metadata.json record of `version` (None: current)."""
        return self._read(placement_id, version, load_metadata)[1]

    def snapshot(self, placement_id: str, version: int | None = None) -> RankingSnapshot:
        """A version (None: the current one), metadata and table from the same version, indexed for serving."""
        version, (metadata, table, rows) = self._read(placement_id, version, self._snapshot_files)
        if metadata.get("row_count") != rows:
            raise StoreError(f"placement '{placement_id}' version {version}: table has {rows} rows, "
                             f"metadata says {metadata.get('row_count')}")
        return RankingSnapshot.from_table(placement_id, version, metadata, table)

    def _snapshot_files(self, version_dir: Path) -> tuple[dict[str, Any], pa.Table, int]:
        """Metadata, table (only `profile_ids`' rows of a ranking table when set) and the file's row count."""
        metadata, path = load_metadata(version_dir), version_dir / TABLE_FILE
        if self.profile_ids is None or metadata.get("kind") != "ranking":
            table = pq.ParquetFile(path).read()  # not pq.read_table: its dataset layer imports pandas
            return metadata, table, table.num_rows
        table, rows = read_rows_of(path, "profile_id", string_array(self.profile_ids))
        return metadata, table, rows

    def verify(self) -> list[str]:
        """What is wrong with what serves, one line each (empty: nothing): every version the
        manifest names must be on disk, whole (sha256 of table.parquet as recorded), with the row
        count the manifest and metadata.json say, and staged by the run the manifest names."""
        problems = []
        for placement_id, entry in sorted(self.manifest().placements.items()):
            version_dir = self._placement_dir(placement_id) / version_name(int(entry["version"]))
            where = f"placement '{placement_id}' version {entry['version']}"
            try:
                meta, table = load_metadata(version_dir), pq.read_table(version_dir / TABLE_FILE)
                with open(version_dir / TABLE_FILE, "rb") as f:
                    digest = hashlib.file_digest(f, "sha256").hexdigest()
            except (OSError, ValueError, pa.ArrowException) as exc:
                problems.append(f"{where}: unreadable ({type(exc).__name__}: {exc})".split("\n")[0])
                continue
            if meta.get("staged_by") != entry.get("staged_by", meta.get("staged_by")):
                problems.append(f"{where}: staged by run {meta.get('staged_by')}, the manifest says "
                                f"{entry.get('staged_by')}")
            for name, value in (("manifest", entry.get("row_count", table.num_rows)), ("metadata", meta.get("row_count"))):
                if value != table.num_rows:
                    problems.append(f"{where}: table has {table.num_rows} rows, {name} says {value}")
            if digest != meta.get("sha256"):
                problems.append(f"{where}: table.parquet does not match its sha256")
        return problems

    def _placement_dir(self, placement_id: str) -> Path:
        if not isinstance(placement_id, str) or not _PLACEMENT_ID.fullmatch(placement_id):
            raise StoreError(f"invalid placement id {placement_id!r}: use letters, digits, '.', '_', '-'")
        return self.root / placement_id

    def _read(self, placement_id: str, version: int | None, load: Callable[[Path], _T]) -> tuple[int, _T]:
        placement_dir = self._placement_dir(placement_id)
        for _ in range(3):  # the manifest may move on and the version be pruned while we read: retry
            resolved = self.manifest().version(placement_id) if version is None else version
            if resolved is None:
                raise StoreError(f"no published ranking for placement '{placement_id}' in {self.root}")
            try:
                return resolved, load(placement_dir / version_name(resolved))
            except FileNotFoundError:
                if version is not None:
                    break
        raise StoreError(f"placement '{placement_id}' has no version {resolved} in {self.root} "
                         f"(available: {versions_text(self.versions(placement_id))})")


@dataclass(frozen=True)
class Publication:
    """Stages versions for one run through the `publish`/`publish_parts` interface (what
    `ranking.publishing` calls); the run switches them together with `RankingStore.commit`."""

    store: RankingStore
    run_id: str

    def publish(self, placement_id: str, table: pa.Table | pd.DataFrame, metadata: Mapping[str, Any]) -> int:
        return self.store.stage(placement_id, table, metadata, self.run_id)

    def publish_parts(self, placement_id: str, parts: Sequence[Path], metadata: Mapping[str, Any],
                      batch_rows: int = 262_144) -> int:
        return self.store.stage_parts(placement_id, parts, metadata, self.run_id, batch_rows)

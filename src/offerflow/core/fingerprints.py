"""Fingerprints of what a step's result depends on: file contents, frame contents, config, code.

Re-running a flow on unchanged data should skip its expensive steps and give the same outputs; the
flows key their task caches on a digest of these fingerprints. A file is fingerprinted by its
content (SHA-256, ~1.3 GB/s on one core), so copying or touching it does not invalidate anything;
the hash is remembered next to the file's size, mtime and inode in a small memo file and
recomputed only when one of those changes. Nothing here knows about Prefect.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import weakref
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel

_HASH = "sha256"


def digest(parts: Mapping[str, Any]) -> str:
    """A stable hex digest of a JSON-able mapping (keys sorted; pydantic models dumped)."""
    def plain(value: Any) -> Any:
        if isinstance(value, BaseModel):
            return value.model_dump(mode="json")
        return str(value)

    text = json.dumps(parts, sort_keys=True, default=plain)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


_FRAME_MEMO: dict[int, tuple[weakref.ref, tuple[Any, ...], str]] = {}


def frame_fingerprint(frame: pd.DataFrame | None) -> str:
    """Content digest of a frame: column names, dtypes and values (vectorized per column;
    columns holding lists or dicts, such as an offer's placements, are hashed as text).

    ~2.4 s for 1M rows x 7 columns, so the digest of a frame object is remembered while it lives
    (one flow run hands the same profiles to several tasks); frames are never changed in place
    once built (transforms return new frames; a column added in place is noticed)."""
    if frame is None:
        return "none"
    shape = (frame.shape, tuple(map(str, frame.columns)))
    known = _FRAME_MEMO.get(id(frame))
    if known is not None and known[0]() is frame and known[1] == shape:
        return known[2]
    result = _frame_digest(frame)
    key = id(frame)
    _FRAME_MEMO[key] = (weakref.ref(frame, lambda _: _FRAME_MEMO.pop(key, None)), shape, result)
    return result


def _frame_digest(frame: pd.DataFrame) -> str:
    h = hashlib.sha256(json.dumps([[str(c), str(t)] for c, t in frame.dtypes.items()]).encode())
    h.update(pd.util.hash_pandas_object(frame.index).to_numpy().tobytes())
    for _, column in frame.items():
        try:
            values = pd.util.hash_pandas_object(column, index=False)
        except TypeError:  # unhashable cells (lists, dicts)
            values = pd.util.hash_pandas_object(column.astype(str), index=False)
        h.update(values.to_numpy().tobytes())
    return h.hexdigest()[:32]


class FileFingerprints:
    """Content fingerprints of files and directories, memoized in `memo_path` by (size, mtime, inode)."""

    def __init__(self, memo_path: Path) -> None:
        self.memo_path = memo_path
        try:
            self._memo: dict[str, list[Any]] = json.loads(memo_path.read_text())
        except (FileNotFoundError, ValueError):
            self._memo = {}
        self._dirty = False

    def of(self, path: Path) -> str:
        """`missing`, the content hash of a file, or for a directory (a Parquet dataset) the digest
        of its files' relative paths and hashes (names starting with `.` or `_` skipped)."""
        path = Path(path)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file()
                           and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts))
            result = digest({str(p.relative_to(path)): self._file(p) for p in files})
        elif path.exists():
            result = self._file(path)
        else:
            result = "missing"
        self._save()
        return result

    def _file(self, path: Path) -> str:
        stat = path.stat()
        token = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
        key = str(path.resolve())
        known = self._memo.get(key)
        if known is not None and known[:3] == token:
            return known[3]
        with path.open("rb") as handle:
            content = hashlib.file_digest(handle, _HASH).hexdigest()[:32]
        self._memo[key] = [*token, content]
        self._dirty = True
        return content

    def _save(self) -> None:
        if not self._dirty:
            return
        self.memo_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.memo_path.with_name(f".{self.memo_path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self._memo))
        tmp.replace(self.memo_path)
        self._dirty = False


@lru_cache(maxsize=8)
def source_fingerprint(directories: tuple[Path, ...]) -> str:
    """Digest of every `*.py` file under `directories`: the code version a cached result belongs to
    (any edit to the library or the flows invalidates every cached step)."""
    return digest({name: hashlib.sha256(p.read_bytes()).hexdigest() for name, p in _python_files(directories)})


def _python_files(directories: Iterable[Path]) -> list[tuple[str, Path]]:
    """(name relative to the directory's parent, path): the same code in another checkout has the
    same version."""
    return sorted((str(p.relative_to(Path(d).parent)), p) for d in directories for p in Path(d).rglob("*.py")
                  if "__pycache__" not in p.parts)


def code_version() -> str:
    """The git commit of the offerflow checkout (with `+dirty` if it has local changes), or
    `unknown` outside a git checkout: a tag that says which code trained a model."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")

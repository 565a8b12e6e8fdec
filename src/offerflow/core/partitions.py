"""Profiles split into partitions by a stable hash of profile_id.

A partition is the unit of scoring work: it is ranked on its own (in-process or as a task on a Dask
worker) and written as one Parquet part, so peak memory follows the partition size, not the number
of profiles. The hash must give the same partition in every process, on every machine and in every
Python run (Python's `hash()` of a string does not: it is salted per process), so it is pandas'
SipHash-2-4 of the UTF-8 bytes with pandas' fixed key (`pandas.util.hash_array`), vectorized in C.
`tests/unit/test_partitions.py` pins a few values so a change of the hash cannot go unnoticed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from offerflow.core.schema import PROFILE_ID

PART_NAME = "part-{:05d}.parquet"


class PartitionError(ValueError):
    """Profiles that cannot be partitioned; the one-line message says why."""


def partition_of(profile_ids: Sequence[str] | np.ndarray | pd.Series | pa.Array | pa.ChunkedArray,
                 n: int) -> np.ndarray:
    """The partition of every profile id, shape (len(profile_ids),), int32 in [0, n).

    Stable across processes and machines (SipHash with a fixed key over the UTF-8 bytes)."""
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise PartitionError(f"the number of partitions must be an integer >= 1, got {n!r}")
    if isinstance(profile_ids, (pa.Array, pa.ChunkedArray)):
        profile_ids = profile_ids.to_numpy(zero_copy_only=False)
    ids = np.asarray(profile_ids, dtype=object)
    if ids.ndim != 1:
        raise PartitionError(f"profile ids must be one-dimensional, got shape {ids.shape}")
    if n == 1 or len(ids) == 0:
        return np.zeros(len(ids), dtype=np.int32)
    if pd.isna(ids).any():
        raise PartitionError(f"{int(pd.isna(ids).sum())} profile ids are missing; every profile needs an id")
    hashes = pd.util.hash_array(ids, categorize=False)
    return (hashes % np.uint64(n)).astype(np.int32)


_SAMPLE_RESOLUTION = 1_000_000


def sample_share(limit: int | None, n: int) -> float:
    """The share of `n` rows (or profiles) that keeps about `limit` of them; 1.0 without a limit."""
    return 1.0 if limit is None or n <= limit else limit / n


def in_sample(profile_ids: Sequence[str] | np.ndarray | pd.Series, share: float) -> np.ndarray:
    """Whether each profile is in a stable hash sample holding `share` of all profiles: the same
    profiles in every run, on every machine and in every table keyed by profile, so a sampled
    profile keeps all of its rows (every cut-off of Customer AI, every display of a click model)."""
    if share >= 1.0:
        return np.ones(len(profile_ids), dtype=bool)
    ids = profile_ids.to_numpy(dtype=object) if isinstance(profile_ids, pd.Series) else profile_ids
    return partition_of(ids, _SAMPLE_RESOLUTION) < round(share * _SAMPLE_RESOLUTION)


def split_profiles(profiles: pd.DataFrame, n: int) -> Iterator[tuple[int, pd.DataFrame]]:
    """(partition, profiles of that partition) for every partition 0..n-1, empty ones included,
    each in the profiles' original order (one stable argsort, then contiguous slices)."""
    if PROFILE_ID not in profiles.columns:
        raise PartitionError(f"profiles have no '{PROFILE_ID}' column")
    parts = partition_of(profiles[PROFILE_ID].to_numpy(dtype=object), n)
    order = np.argsort(parts, kind="stable")
    bounds = np.searchsorted(parts[order], np.arange(n + 1))
    for p in range(n):
        yield p, profiles.iloc[order[bounds[p]:bounds[p + 1]]].reset_index(drop=True)


def write_profile_partitions(profiles: pd.DataFrame, n: int, directory: Path) -> list[Path]:
    """Write the profiles as n Parquet parts `part-00000.parquet`... (empty parts keep the schema),
    so that workers read only their own partition; returns the paths in partition order."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for p, part in split_profiles(profiles, n):
        path = directory / PART_NAME.format(p)
        part.to_parquet(path, index=False)
        paths.append(path)
    return paths

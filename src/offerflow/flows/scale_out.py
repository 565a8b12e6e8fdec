"""Partitioned score-and-publish, in this process or on a Dask cluster (`compute:` in offerflow.yaml).

`publish_partitioned` splits the profiles by a stable hash of profile_id into
`compute.partitions_for(len(profiles))` Parquet files (`partitions: auto`, the default, gives one
per 250,000 profiles, so small projects keep one table), ranks every partition as a `rank-partition` task and publishes the sorted parts as
one version. With `compute.dask_address` the `score-partitions` subflow runs under prefect-dask's
`DaskTaskRunner(address=...)`, so the partitions are ranked in parallel on the cluster's workers
(which must see the outputs directory, e.g. on a shared file system); without it, the same tasks run
one after the other in this process, so memory is bounded by one partition.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait

from offerflow.core.config import ProjectConfig
from offerflow.core.partitions import write_profile_partitions
from offerflow.ranking.publishing import (ScoringPlan, partition_workdir, plan_scoring, publish_partitioned_parts,
                                  rank_partition_file, ranking_part_paths)
from offerflow.core.store import RankingStore


def uses_partitions(config: ProjectConfig, profiles: int = 0) -> bool:
    """Whether score-and-publish of `profiles` profiles goes through the partitioned path."""
    return config.compute.partitions_for(profiles) > 1 or config.compute.dask_address is not None


def cluster_client(config: ProjectConfig):
    """A `distributed.Client` on the configured cluster (None without an address)."""
    if config.compute.dask_address is None:
        return None
    from distributed import Client

    return Client(config.compute.dask_address)


@task(name="split-profiles", cache_policy=NO_CACHE)
def split_profiles_task(profiles, partitions: int, directory: Path) -> list[Path]:
    return write_profile_partitions(profiles, partitions, directory)


@task(name="rank-partition", retries=1, retry_delay_seconds=[2], cache_policy=NO_CACHE)
def rank_partition_task(plan: ScoringPlan, profiles_path: Path, part_path: Path) -> int:
    return rank_partition_file(plan, profiles_path, part_path)


@flow(name="score-partitions")
def score_partitions(plan: ScoringPlan, sources: list[Path], parts: list[Path], parallel: bool = False) -> int:
    """Rank every partition; in parallel on the flow's task runner (Dask) or one after the other."""
    if not parallel:
        return sum(rank_partition_task(plan, s, p) for s, p in zip(sources, parts))
    futures = [rank_partition_task.submit(plan, s, p) for s, p in zip(sources, parts)]
    wait(futures)
    return sum(f.result() for f in futures)


@task(name="publish-parts", retries=2, retry_delay_seconds=[1, 5], cache_policy=NO_CACHE)
def publish_parts_task(config: ProjectConfig, placement_id: str, model, parts: list[Path], run_id: str) -> int:
    store = RankingStore(config.path(config.store.path), config.store.keep_versions)
    return publish_partitioned_parts(store, config.placement(placement_id), model, parts,
                                     {"pipeline_run_id": run_id, "dask": config.compute.dask_address is not None},
                                     len(parts))


def publish_partitioned(config: ProjectConfig, placement_id: str, profiles, offers, model, run_id: str) -> int:
    """Score one placement in partitions (on Dask with an address) and publish it atomically."""
    placement, n = config.placement(placement_id), config.compute.partitions_for(len(profiles))
    workdir = partition_workdir(config.path(config.data.outputs_dir), placement_id)
    try:
        sources = split_profiles_task(profiles, n, workdir / "profiles")
        parts = ranking_part_paths(workdir, n)
        plan = plan_scoring(placement, profiles, offers, model)
        if config.compute.dask_address is None:
            score_partitions(plan, sources, parts)
        else:
            from prefect_dask import DaskTaskRunner

            runner = DaskTaskRunner(address=config.compute.dask_address)
            score_partitions.with_options(task_runner=runner)(plan, sources, parts, parallel=True)
        return publish_parts_task(config, placement_id, model, parts, run_id)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

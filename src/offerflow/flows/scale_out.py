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

from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait

from offerflow.core.config import ProjectConfig
from offerflow.core.paths import ranking_store
from offerflow.ranking.publishing import (ScoringPlan, partition_workdir, publish_placement_partitioned,
                                          rank_partition_file)


def uses_partitions(config: ProjectConfig, profiles: int = 0) -> bool:
    """Whether score-and-publish of `profiles` profiles goes through the partitioned path."""
    return config.compute.partitions_for(profiles) > 1 or config.compute.dask_address is not None


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


def publish_partitioned(config: ProjectConfig, placement_id: str, profiles, offers, model, run_id: str) -> int:
    """Score one placement in partitions (on Dask with an address) and stage it as one version for
    run `run_id`: the library's `publish_placement_partitioned`, with the partitions ranked as
    Prefect tasks (`pipeline.published_together` switches it)."""
    address = config.compute.dask_address

    def rank_parts(plan: ScoringPlan, sources, parts) -> int:
        if address is None:
            return score_partitions(plan, list(sources), list(parts))
        from prefect_dask import DaskTaskRunner

        runner = DaskTaskRunner(address=address)
        return score_partitions.with_options(task_runner=runner)(plan, list(sources), list(parts), parallel=True)

    return publish_placement_partitioned(
        ranking_store(config).publication(run_id), config.placement(placement_id), profiles, offers, model,
        config.compute.partitions_for(len(profiles)), partition_workdir(config.paths.outputs, placement_id),
        {"pipeline_run_id": run_id, "dask": address is not None}, rank_parts=rank_parts, strict=config.strict)

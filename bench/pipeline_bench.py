"""Run the pipeline's stages on a generated world and print per-stage wall seconds and peak memory.

    python bench/pipeline_bench.py --profiles 100000 [--days 60] [--offers 12] [--workdir /tmp/ofb]
    python bench/pipeline_bench.py --profiles 1000000 --offers 50 --world /tmp/w1m50 --workdir /tmp/ofb1m

Stages are called through the library (the same functions the Prefect flow's tasks call), so
the figures are the work itself, without the orchestrator. Peak memory is the process's resident
high-water mark during each stage (Linux: reset through /proc/self/clear_refs before the stage).
`--world DIR` reuses a world generated earlier with the same size and seed (`offerflow generate
--out DIR --profiles N --offers M --seed 7 --end-date 2026-11-01`; generated there if missing),
so "generate" is not redone. Score-and-publish uses the configured partitions (`compute.partitions:
auto`: one per 250,000 profiles) as the pipeline does; `--dask-workers N` starts a local Dask
cluster and sets `compute.dask_address`, so the personalized model trains with lightgbm.dask and
partitions are ranked on the workers. Prints one JSON document, with the load average.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
from contextlib import contextmanager
from datetime import date
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import bench_parser, reset_peak_rss, status_mib  # noqa: E402


@contextmanager
def stage(results: list[dict], name: str, rows: int | None = None):
    reset_peak_rss()
    start, cpu_start = time.perf_counter(), time.process_time()
    record: dict = {"stage": name}
    yield record
    seconds = time.perf_counter() - start
    # CPU seconds of this process (all its threads): on a shared machine wall seconds stretch with
    # the load, CPU seconds much less; wall ~ CPU / 2 when the stage keeps both cores busy.
    record.update(seconds=round(seconds, 2), cpu_seconds=round(time.process_time() - cpu_start, 2),
                  load_1min=round(os.getloadavg()[0], 2), peak_rss_mib=round(status_mib("VmHWM"), 1),
                  rss_after_mib=round(status_mib("VmRSS"), 1))
    rows = record.pop("rows", rows)
    if rows:
        record.update(rows=rows, rows_per_second=round(rows / seconds))
    results.append(record)
    print(json.dumps(record), file=sys.stderr, flush=True)


def main() -> None:
    args = bench_parser(
        __doc__, profiles=100_000, offers=12, days=60, seed=7, workdir=Path("bench/results/work"), world=Path,
        partitions=str, dask_workers=0, skip_decisions=False, reuse_validated=False,
        helps={"world": "reuse (or generate into) this world directory",
               "partitions": "override compute.partitions (an integer or auto)",
               "dask_workers": "train and rank on a local Dask cluster",
               "reuse_validated": "keep the validated snapshot of an earlier run in --workdir and skip read + validate"
                                  " (its stage is then missing from the output; everything else starts from scratch)"},
    ).parse_args()
    load_before = os.getloadavg()

    from offerflow.ingest.catalog import offers_for_placement
    from offerflow.core.config import load_config
    from offerflow.decisioning.engine import DecisionEngine
    from offerflow.core.features import open_events
    from offerflow.ingest.snapshot import ingest_events, load_catalog, validated_events
    from offerflow.ranking.publishing import publish_placement, publish_placement_partitioned
    from offerflow.core.store import RankingStore
    from offerflow.core.tracking import Tracker, resolve_tracking_uri
    from offerflow.models.customer_ai_training import enrich_profiles, score_propensity, train_propensity
    from offerflow.models.ranking_training import train_ranking_model
    from offerflow.synthetic.world import WorldSpec, demo_config_yaml, generate_world

    work = args.workdir
    kept = work / "data" / "outputs" / "validated"
    reuse = args.reuse_validated and (kept / "events.parquet").exists()
    if reuse:
        shutil.move(kept, work.parent / f".{work.name}-validated")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    if reuse:
        kept.parent.mkdir(parents=True)
        shutil.move(work.parent / f".{work.name}-validated", kept)
    repo_gx = Path(__file__).resolve().parents[1] / "great_expectations"
    shutil.copytree(repo_gx, work / "great_expectations", ignore=shutil.ignore_patterns("uncommitted"))
    results: list[dict] = []
    cluster = None
    compute = {}
    if args.partitions is not None:
        compute["partitions"] = args.partitions if args.partitions == "auto" else int(args.partitions)
    if args.dask_workers:
        from distributed import LocalCluster

        cluster = LocalCluster(n_workers=args.dask_workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        compute["dask_address"] = cluster.scheduler_address
    (work / "offerflow.yaml").write_text(demo_config_yaml("data") + (
        "compute:\n" + "".join(f"  {k}: {v}\n" for k, v in compute.items()) if compute else ""))

    spec = WorldSpec(profiles=args.profiles, offers=args.offers, days=args.days, seed=args.seed,
                     end_date=date(2026, 11, 1))
    world = args.world or work / "data"
    if not (world / "events.parquet").exists():
        with stage(results, "generate") as rec:
            files = generate_world(spec, world)
            rec["rows"] = files.event_count
    if world != work / "data":
        (work / "data").mkdir(exist_ok=True)
        for name in ("events.parquet", "profiles.parquet", "offers.yaml"):
            (work / "data" / name).symlink_to((world / name).resolve())
    event_count = pq_rows(work / "data" / "events.parquet")
    config = load_config(work / "offerflow.yaml")
    tracker = Tracker(resolve_tracking_uri(config.tracking.uri, config.root), config.path(config.tracking.artifact_root))
    with stage(results, "read_and_check_catalog") as rec:  # the profiles suite runs on every profile
        profiles, offers = load_catalog(config)
        rec["rows"] = len(profiles)
    run_id = uuid.uuid4().hex
    if len(profiles) != args.profiles:
        raise SystemExit(f"{world}: {len(profiles)} profiles, not {args.profiles}: use another --world")
    if reuse:
        validated = validated_events(config)
    else:
        with stage(results, "read_and_validate", event_count):
            validated = ingest_events(config, offers, run_id, build_docs=True).validated_path
    con = open_events(validated)
    scores = {}
    for goal in config.propensity_goals:
        with stage(results, f"train_propensity:{goal.name}") as rec:
            model, result = train_propensity(con, goal, profiles, tracker, "bench", args.seed,
                                             dask_address=config.compute.dask_address)
            rec["holdout_auc"] = round(result.metrics["auc"], 4)
            rec["trainer"] = tracker.run_params(result.run_id).get("trainer")
        with stage(results, f"score_propensity:{goal.name}") as rec:
            scores[goal.name], _ = score_propensity(con, model, goal, profiles, None, result.model_version,
                                                    config.path(config.data.outputs_dir) / "propensity" / goal.name)
            rec["rows"] = len(scores[goal.name])
    enriched = enrich_profiles(profiles, scores, config.path(config.data.outputs_dir) / "profiles_enriched.parquet")
    ranking = {}
    for model_cfg in config.ai_models:
        with stage(results, f"train_ranking:{model_cfg.name}") as rec:
            ranking[model_cfg.name] = train_ranking_model(con, model_cfg, enriched, offers, tracker, "bench", args.seed,
                                                          dask_address=config.compute.dask_address)
            rec["rows"] = int(ranking[model_cfg.name].metrics["displays"])
            if model_cfg.type == "personalized":
                rec["trainer"] = tracker.run_params(ranking[model_cfg.name].run_id).get("trainer")
            auc = ranking[model_cfg.name].metrics.get("holdout_auc")
            if auc is not None:
                rec["holdout_auc"] = round(auc, 4)
    store = RankingStore(config.path(config.store.path), config.store.keep_versions)
    partitions = config.compute.partitions_for(len(enriched))
    for placement in config.placements:
        model = ranking.get(placement.ranking.ai_model) if placement.ranking.ai_model else None
        with stage(results, f"score_and_publish:{placement.id}", len(enriched)) as rec:
            if partitions > 1 and config.compute.dask_address is None:
                publish_placement_partitioned(store, placement, enriched, offers, model, partitions,
                                              config.path(config.data.outputs_dir) / "partitions" / placement.id)
            elif config.compute.dask_address is not None:
                from offerflow.flows.scale_out import publish_partitioned  # the flow's path: tasks on the workers

                publish_partitioned(config, placement.id, enriched, offers, model, run_id)
            else:
                publish_placement(store, placement, enriched, offers, model)
            rec["partitions"] = partitions
            rec["candidates"] = int(len(offers_for_placement(offers, placement.id)))
    if not args.skip_decisions:
        engine = DecisionEngine(config, store, offers, enriched, seed=0)
        ids = enriched["profile_id"].sample(min(2000, len(enriched)), random_state=0).tolist()
        with stage(results, "decide_in_process", len(ids)):
            for profile_id in ids:
                engine.decide(profile_id, ["web-banner", "email-hero"])
    if cluster is not None:
        cluster.close()
    pipeline = [r for r in results if r["stage"] not in ("generate", "decide_in_process")]
    print(json.dumps({"profiles": args.profiles, "offers": int(len(offers)), "days": args.days,
                      "reused_validated_snapshot": reuse,
                      "events": event_count, "partitions": partitions,
                      "dask_workers": args.dask_workers,
                      "pipeline_seconds": round(sum(r["seconds"] for r in pipeline), 1),
                      "pipeline_cpu_seconds": round(sum(r["cpu_seconds"] for r in pipeline), 1),
                      "pipeline_peak_rss_mib": max(r["peak_rss_mib"] for r in pipeline),
                      "load_average_before": [round(x, 2) for x in load_before],
                      "load_average_after": [round(x, 2) for x in os.getloadavg()],
                      "cpus": os.cpu_count(), "stages": results}, indent=2))


def pq_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


if __name__ == "__main__":
    main()

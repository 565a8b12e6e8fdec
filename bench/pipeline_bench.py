"""Run the pipeline's stages on a generated world and print per-stage wall seconds and peak memory.

    python bench/pipeline_bench.py --profiles 100000 [--days 60] [--offers 12] [--workdir /tmp/ofb]

Stages are called through the library (the same functions the Prefect flow's tasks call), so
the figures are the work itself, without the orchestrator. Peak memory is the process's resident
high-water mark during each stage (Linux: reset through /proc/self/clear_refs before the stage).
Prints one JSON document.
"""

from __future__ import annotations

import argparse
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


def _rss_hwm_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_hwm() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


@contextmanager
def stage(results: list[dict], name: str, rows: int | None = None):
    _reset_hwm()
    start = time.perf_counter()
    record: dict = {"stage": name}
    yield record
    seconds = time.perf_counter() - start
    record.update(seconds=round(seconds, 2), peak_rss_mib=round(_rss_hwm_mib(), 1))
    rows = record.pop("rows", rows)
    if rows:
        record.update(rows=rows, rows_per_second=round(rows / seconds))
    results.append(record)
    print(json.dumps(record), file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--offers", type=int, default=12)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", type=Path, default=Path("bench/results/work"))
    args = parser.parse_args()

    from offerflow.config import load_config
    from offerflow.decisioning import DecisionEngine
    from offerflow.features import open_events
    from offerflow.ingestion import ingest_events, load_catalog
    from offerflow.publishing import publish_placement
    from offerflow.store import RankingStore
    from offerflow.tracking import Tracker, resolve_tracking_uri
    from offerflow.training import enrich_profiles, score_propensity, train_propensity, train_ranking_model
    from offerflow.world import WorldSpec, demo_config_yaml, generate_world

    work = args.workdir
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    repo_gx = Path(__file__).resolve().parents[1] / "great_expectations"
    shutil.copytree(repo_gx, work / "great_expectations", ignore=shutil.ignore_patterns("uncommitted"))
    (work / "offerflow.yaml").write_text(demo_config_yaml("data"))
    results: list[dict] = []

    spec = WorldSpec(profiles=args.profiles, offers=args.offers, days=args.days, seed=args.seed,
                     end_date=date(2026, 11, 1))
    with stage(results, "generate") as rec:
        files = generate_world(spec, work / "data")
        rec["rows"] = files.event_count
    config = load_config(work / "offerflow.yaml")
    tracker = Tracker(resolve_tracking_uri(config.tracking.uri, config.root), config.path(config.tracking.artifact_root))
    profiles, offers = load_catalog(config)
    run_id = uuid.uuid4().hex
    with stage(results, "read_and_validate", files.event_count):
        ingestion = ingest_events(config, offers, run_id, build_docs=True)
    con = open_events(ingestion.validated_path)
    scores = {}
    for goal in config.propensity_goals:
        with stage(results, f"train_propensity:{goal.name}") as rec:
            model, result = train_propensity(con, goal, profiles, tracker, "bench", args.seed)
            rec["holdout_auc"] = round(result.metrics["auc"], 4)
        with stage(results, f"score_propensity:{goal.name}") as rec:
            scores[goal.name], _ = score_propensity(con, model, goal, profiles, None, result.model_version,
                                                    config.path(config.data.outputs_dir) / "propensity" / goal.name)
            rec["rows"] = len(scores[goal.name])
    enriched = enrich_profiles(profiles, scores, config.path(config.data.outputs_dir) / "profiles_enriched.parquet")
    ranking = {}
    for model_cfg in config.ai_models:
        with stage(results, f"train_ranking:{model_cfg.name}") as rec:
            ranking[model_cfg.name] = train_ranking_model(con, model_cfg, enriched, offers, tracker, "bench", args.seed)
            rec["rows"] = int(ranking[model_cfg.name].metrics["displays"])
            auc = ranking[model_cfg.name].metrics.get("holdout_auc")
            if auc is not None:
                rec["holdout_auc"] = round(auc, 4)
    store = RankingStore(config.path(config.store.path), config.store.keep_versions)
    for placement in config.placements:
        model = ranking.get(placement.ranking.ai_model) if placement.ranking.method == "ai_model" else None
        with stage(results, f"score_and_publish:{placement.id}", len(enriched)):
            publish_placement(store, placement, enriched, offers, model)
    engine = DecisionEngine(config, store, offers, enriched, seed=0)
    ids = enriched["profile_id"].sample(min(2000, len(enriched)), random_state=0).tolist()
    with stage(results, "decide_in_process", len(ids)):
        for profile_id in ids:
            engine.decide(profile_id, ["web-banner", "email-hero"])
    total = sum(r["seconds"] for r in results if r["stage"] != "generate")
    print(json.dumps({"profiles": args.profiles, "offers": args.offers, "days": args.days,
                      "events": files.event_count, "pipeline_seconds_excluding_generate": round(total, 1),
                      "stages": results}, indent=2))


if __name__ == "__main__":
    main()

"""Score-and-publish at scale: one table in one process vs hash partitions, wall seconds and peak memory.

    python bench/scale_bench.py --profiles 1000000 [--offers 50] [--partitions 8] [--dask-workers 0]

Profiles and offers come from the seeded world's generators (no events: this measures scoring,
ranking and publishing only); the personalized click model is trained on 200,000 displays clicked
with the world's true click probability. For each placement (personalized, items 3; formula,
items 2) it runs `publish_placement` (whole table) and `publish_placement_partitioned` (profile
hash partitions ranked one after the other, parts sort-merged by the store), checks that both
published tables are equal, and with --dask-workers N also ranks the partitions on a local Dask
cluster of N single-threaded worker processes (the library calls the flow's tasks make). Peak RSS
is this process's high-water mark during the stage (Dask workers are separate processes: their
peak is reported separately). Prints one JSON document; per-stage lines go to stderr.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import bench_parser, status_mib  # noqa: E402
from pipeline_bench import stage  # noqa: E402  (the same per-stage figures as the pipeline benchmark)

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def _rss_mib() -> float:
    return round(status_mib("VmRSS"), 1)


def _click_model(profiles: pd.DataFrame, offers: pd.DataFrame, truth_profiles, truth_offers, seed: int):
    from offerflow.core.config import LightGBMParams
    from offerflow.ranking.click_model import fit_click_model, training_frame
    from offerflow.ranking.ai_models import RankingModelResult
    from offerflow.synthetic.world import true_click_probability

    rng = np.random.default_rng(seed)
    n = 200_000
    p_idx = rng.integers(0, len(profiles), n)
    o_idx = rng.integers(0, len(offers), n)
    sub = truth_profiles.iloc[np.unique(p_idx)]
    where = np.searchsorted(np.unique(p_idx), p_idx)
    truth = true_click_probability(sub, truth_offers, "web")[where, o_idx]
    log = pd.DataFrame({"profile_id": profiles["profile_id"].to_numpy()[p_idx],
                        "offer_id": offers["offer_id"].to_numpy()[o_idx], "placement_id": "web-banner",
                        "timestamp": pd.Timestamp("2026-10-01", tz="UTC") + pd.to_timedelta(np.arange(n), "s"),
                        "propensity": 1.0 / len(offers), "success": (rng.random(n) < truth).astype(np.int8)})
    click = fit_click_model(training_frame(log, profiles, offers), LightGBMParams(), offers["offer_id"].tolist(), seed)
    return RankingModelResult("web-personalized", "bench", "1", {}, True, "", kind="personalized", click_model=click)


def main() -> None:
    args = bench_parser(__doc__, profiles=100_000, offers=50, partitions=8, dask_workers=0, seed=7,
                        workdir=Path("bench/results/scale")).parse_args()

    from offerflow.core.config import PlacementConfig
    from offerflow.ranking.publishing import (partition_workdir, plan_scoring, publish_partitioned_parts,
                                      publish_placement, publish_placement_partitioned, rank_partition_file,
                                      ranking_part_paths)
    from offerflow.core.partitions import write_profile_partitions
    from offerflow.core.store import RankingStore
    from offerflow.synthetic.world import make_offers, make_profiles

    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    results: list[dict] = []
    rng = np.random.default_rng(args.seed)
    with stage(results, "make_profiles_and_offers", args.profiles):
        truth_profiles = make_profiles(args.profiles, rng)
        truth_offers = make_offers(args.offers, rng)
        truth_offers["placements"] = [["web-banner", "web-sidebar"]] * len(truth_offers)
        profiles = truth_profiles.drop(columns=["activity"])
        offers = truth_offers.drop(columns=["quality"])
    with stage(results, "train_click_model", 200_000) as rec:
        model = _click_model(profiles, offers, truth_profiles, truth_offers, args.seed)
        rec["holdout_auc"] = round(model.click_model.holdout_metrics["auc"], 4)
    pairs = args.profiles * args.offers
    with stage(results, "compile_click_model"):  # cached by model text: neither scoring run pays it
        model.click_model.predictor().expect_rows(pairs)
        rec_compiled = model.click_model.predictor().compiled
    placements = [
        PlacementConfig(id="web-banner", channel="web", items=3,
                        ranking={"method": "ai_model", "ai_model": "web-personalized"}),
        PlacementConfig(id="web-sidebar", channel="web", items=2, ranking={
            "method": "formula",
            "formula": "if(offer.category == profile.favorite_category, offer.priority * 2, offer.priority)"}),
    ]
    client = cluster = None
    if args.dask_workers:
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=args.dask_workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    equal = {}
    for placement in placements:
        used = model if placement.ranking.method == "ai_model" else None
        single, parted = RankingStore(work / "single"), RankingStore(work / "partitioned")
        with stage(results, f"score_and_publish:{placement.id}:one_table", pairs) as rec:
            rec["rss_before_mib"] = _rss_mib()
            publish_placement(single, placement, profiles, offers, used)
        with stage(results, f"score_and_publish:{placement.id}:{args.partitions}_partitions", pairs) as rec:
            rec["rss_before_mib"] = _rss_mib()
            publish_placement_partitioned(parted, placement, profiles, offers, used, args.partitions,
                                          partition_workdir(work, placement.id))
        expected = single.read_table(placement.id)
        equal[placement.id] = parted.read_table(placement.id).equals(expected)
        if client is not None:
            on_dask = RankingStore(work / "dask")
            with stage(results, f"score_and_publish:{placement.id}:dask_{args.dask_workers}_workers", pairs) as rec:
                rec["rss_before_mib"] = _rss_mib()
                workdir = partition_workdir(work, placement.id)
                sources = write_profile_partitions(profiles, args.partitions, workdir / "profiles")
                parts = ranking_part_paths(workdir, args.partitions)
                plan = plan_scoring(placement, profiles, offers, used)
                futures = client.map(rank_partition_file, [plan] * len(parts), sources, parts, pure=False)
                client.gather(futures)
                publish_partitioned_parts(on_dask, placement, used, parts, partitions=args.partitions)
                shutil.rmtree(workdir)
                rec["worker_peak_rss_mib"] = max(client.run(
                    lambda: int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024).values())
            equal[f"{placement.id}:dask"] = on_dask.read_table(placement.id).equals(expected)
        del expected
    if client is not None:
        client.close()
        cluster.close()
    print(json.dumps({"profiles": args.profiles, "offers": args.offers, "partitions": args.partitions,
                      "dask_workers": args.dask_workers, "compiled": rec_compiled, "cpus": os.cpu_count(),
                      "tables_equal": equal, "stages": results}, indent=2))


if __name__ == "__main__":
    main()

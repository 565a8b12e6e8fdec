"""Train `web-personalized` with lightgbm.dask (a 2-worker LocalCluster, 1 thread each) on the
validated events and enriched profiles a `bench/pipeline_bench.py` run left in its workdir, through
the pipeline's own `train_ranking_model(..., dask_address=...)`; prints one JSON line.

    python bench/dask_training_bench.py /tmp/ofb1m
"""
import json, os, sys, time
from pathlib import Path

def main():
    import pandas as pd
    from distributed import LocalCluster
    from offerflow.ingest.catalog import read_offers
    from offerflow.core.config import load_config
    from offerflow.core.features import open_events
    from offerflow.core.tracking import Tracker, resolve_tracking_uri
    from offerflow.models.ranking_training import train_ranking_model
    work = Path(sys.argv[1])
    config = load_config(work / "offerflow.yaml")
    tracker = Tracker(resolve_tracking_uri(config.tracking.uri, config.root), config.path(config.tracking.artifact_root))
    offers = read_offers(work / "data" / "offers.yaml")
    enriched = pd.read_parquet(work / "data" / "outputs" / "profiles_enriched.parquet")
    validated = work / "data" / "outputs" / "validated" / "events.parquet"
    con = open_events(validated)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        load0 = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), time.process_time()
        r = train_ranking_model(con, config.ai_model("web-personalized"), enriched, offers, tracker, "bench-dask", 7,
                                dask_address=cluster.scheduler_address)
        out = {"seconds": round(time.perf_counter() - t0, 1), "client_cpu_seconds": round(time.process_time() - c0, 1),
               "load_before": load0, "load_after": os.getloadavg()[0],
               "holdout_auc": r.metrics.get("holdout_auc"), "params": tracker.run_params(r.run_id)}
    print(json.dumps(out, default=str))

if __name__ == "__main__":
    main()

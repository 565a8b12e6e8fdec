"""Customer AI scoring alone, on a workdir a `pipeline_bench.py` run left behind.

    python bench/rescore_bench.py /tmp/ofb10m

Loads the `@champion` of the first propensity goal from the workdir's MLflow registry, the
profiles and the validated events snapshot, then times `training.score_propensity` (features,
probabilities, top factors, the written batch) and prints one JSON document: rows, wall and CPU
seconds, peak RSS of the scoring (Linux VmHWM, reset before it) and the load average.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def main() -> None:
    from offerflow.ingest.catalog import load_profiles
    from offerflow.models.registry import load_propensity_champion, propensity_model_name
    from offerflow.core.config import load_config
    from offerflow.core.features import open_events
    from offerflow.ingest.snapshot import validated_events
    from offerflow.core.tracking import Tracker, resolve_tracking_uri
    from offerflow.models.customer_ai_training import score_propensity
    work = Path(sys.argv[1])
    config = load_config(work / "offerflow.yaml")
    tracker = Tracker(resolve_tracking_uri(config.tracking.uri, config.root),
                      config.path(config.tracking.artifact_root))
    goal = config.propensity_goals[0]
    champion = load_propensity_champion(tracker, propensity_model_name("bench", goal.name))
    if champion is None:
        raise SystemExit(f"{work}: no registered bench-propensity-{goal.name}; run bench/pipeline_bench.py there first")
    model, version = champion
    profiles = load_profiles(config.path(config.data.profiles))
    con = open_events(validated_events(config))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    load_before = os.getloadavg()
    start, cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as out:
        scores, _ = score_propensity(con, model, goal, profiles, None, version, Path(out))
    seconds = time.perf_counter() - start
    with open("/proc/self/status") as status:
        hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    print(json.dumps({"rows": len(scores), "seconds": round(seconds, 1),
                      "cpu_seconds": round(time.process_time() - cpu, 1), "peak_rss_mib": round(hwm),
                      "load_average_before": [round(x, 2) for x in load_before],
                      "load_average_after": [round(x, 2) for x in os.getloadavg()]}, indent=2))


if __name__ == "__main__":
    main()

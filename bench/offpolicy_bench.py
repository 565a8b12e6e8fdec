"""Off-policy evaluation against the truth over many seeded worlds: interval coverage per
estimator, wrong orderings, and seconds per world.

    python bench/offpolicy_bench.py --seeds 20 --profiles 3000 [--workdir /tmp/ofr-ope]

For each seed: generate a world, evaluate every placement's strategies (random, priority, the
formula, the auto-optimization and personalized models trained before the 7-day window) with
IPS, SNIPS and DR, and compare each 95% interval with the strategy's true first-item click rate
(`world.true_click_probability` of the strategy's choices on the evaluated displays). A wrong
ordering is a pair whose true rates differ by more than the wider DR interval but whose DR
estimates are in the other order. Prints one JSON document.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from datetime import date
from pathlib import Path

import yaml

from offerflow.core.config import parse_config
from offerflow.core.features import open_events
from offerflow.evaluation.report import load_evaluation_catalog, run_evaluation
from offerflow.synthetic.simulated_logs import true_first_item_rates
from offerflow.synthetic.world import WorldSpec, demo_config_yaml, generate_world

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import bench_parser  # noqa: E402

ESTIMATORS = ("ips", "snips", "dr")


def main() -> None:
    args = bench_parser(__doc__, seeds=20, first_seed=100, profiles=3_000, days=60,
                        workdir=Path("/tmp/offerflow-offpolicy-bench")).parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    hits = {e: 0 for e in ESTIMATORS}
    total, wrong, seconds, misses = 0, [], [], []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        started = time.perf_counter()
        world = args.workdir / f"world-{seed}"
        generate_world(WorldSpec(profiles=args.profiles, days=args.days, seed=seed, end_date=date(2026, 11, 1)), world)
        config = parse_config(yaml.safe_load(demo_config_yaml(str(world))), root=Path("/"))
        profiles, offers = load_evaluation_catalog(config)
        con = open_events(world / "events.parquet")
        result = run_evaluation(con, config, profiles, offers, str(world / "events.parquet"))
        truth = true_first_item_rates(con, config, world, result.offline, profiles, offers)
        for (placement_id, name), true in truth.items():
            evaluation = result.offline[placement_id]
            total += 1
            for estimator in ESTIMATORS:
                row = evaluation.estimate(name, estimator)
                ok = row["low"] <= true <= row["high"]
                hits[estimator] += ok
                if not ok:
                    misses.append({"seed": seed, "placement": placement_id, "strategy": name, "estimator": estimator,
                                   "estimate": round(row["value"], 4), "low": round(row["low"], 4),
                                   "high": round(row["high"], 4), "true": round(true, 4)})
            for (p2, other), true2 in truth.items():
                if p2 != placement_id:
                    continue
                a, b = evaluation.estimate(name, "dr"), evaluation.estimate(other, "dr")
                width = max(a["high"] - a["low"], b["high"] - b["low"])
                if true - true2 > width and not a["value"] > b["value"]:
                    wrong.append({"seed": seed, "placement": placement_id, "better": name, "worse": other})
        seconds.append(time.perf_counter() - started)
        print(f"seed {seed}: {seconds[-1]:.1f} s", file=sys.stderr)
    print(json.dumps({
        "seeds": args.seeds, "profiles": args.profiles, "strategy_estimates_per_estimator": total,
        "coverage": {e: round(hits[e] / total, 4) for e in ESTIMATORS},
        "wrong_orderings": wrong, "misses": misses,
        "seconds_per_world": round(sum(seconds) / len(seconds), 1),
    }, indent=2))


if __name__ == "__main__":
    main()

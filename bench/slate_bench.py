"""Position-aware slate estimates against the truth over many seeded worlds: interval coverage per
estimator, mean bias, and seconds per world.

    python bench/slate_bench.py --seeds 10 --logs 2 --profiles 3000 [--workdir /tmp/ofr-slates]

For each seed: generate a world (60 days of single-offer displays), then `--logs` times simulate 7
more days of logged slates on web-banner (3 slots) and web-sidebar (2 slots) with per-slot
propensities (`synthetic.simulated_logs.simulate_slate_log`: an imperfect model's list or, for 20% of decisions, a
random order; clicks = the world's slot examination x true click probability), and run the real
`strategies.evaluate_placement` on world + slates: candidates (random, priority, formulas, the
personalized model) and the DR reward model are trained on the 60 days before the window. Every
slate interval is compared with the strategy's TRUE expected clicks per decision
(`slates.true_slate_values`). Prints one JSON document.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import yaml

from offerflow.core.config import parse_config
from offerflow.core.features import open_events
from offerflow.evaluation.report import load_evaluation_catalog
from offerflow.synthetic.simulated_logs import simulate_slate_log, true_slate_values
from offerflow.evaluation.strategies import evaluate_placement
from offerflow.synthetic.world import WorldSpec, demo_config_yaml, generate_world, load_truth, true_click_probability
from offerflow.synthetic.world import true_slot_examination

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import bench_parser  # noqa: E402

ESTIMATORS = ("ips", "snips", "dr")
END = date(2026, 11, 1)
SLATE_DAYS = 7
PLACEMENTS = {"web-banner": ("web", 3), "web-sidebar": ("web", 2)}


def evaluate_world_slates(world: Path, log_seed: int, workdir: Path, config):
    """Slate estimates and truth per placement for one simulated slate log on `world`."""
    events = workdir / f"events-{world.name}-{log_seed}"
    shutil.rmtree(events, ignore_errors=True)
    events.mkdir(parents=True)
    (events / "world.parquet").symlink_to(world / "events.parquet")
    for placement_id, (channel, items) in PLACEMENTS.items():
        simulate_slate_log(world, events, placement_id, channel, items, SLATE_DAYS, 0.2, log_seed,
                           end_date=END + timedelta(days=SLATE_DAYS))
    profiles, offers = load_evaluation_catalog(config)
    con = open_events(events)
    start = datetime.combine(END, datetime.min.time(), tzinfo=timezone.utc)
    truth_profiles, truth_offers = load_truth(world)
    out = {}
    for placement_id, (channel, items) in PLACEMENTS.items():
        evaluation, _ = evaluate_placement(con, config, placement_id, profiles, offers,
                                           (start, start + timedelta(days=SLATE_DAYS)))
        slates = evaluation.slates
        if slates is None:
            raise RuntimeError(f"{placement_id}: no slate estimate: {evaluation.slate_note}")
        from offerflow.evaluation.slates import load_logged_slates
        from offerflow.evaluation.strategies import placement_offer_set

        logged = load_logged_slates(con, placement_id, items, start, start + timedelta(days=SLATE_DAYS), profiles,
                                    placement_offer_set(offers, placement_id))
        p = logged.profiles[["profile_id"]].merge(truth_profiles, on="profile_id")
        o = logged.offers[["offer_id"]].merge(truth_offers, on="offer_id", how="left").fillna({"quality": 0.0})
        q = true_click_probability(p, o, channel) * ~logged.offers["fallback"].to_numpy(bool)
        out[placement_id] = (slates, true_slate_values(slates, logged, q, true_slot_examination(items)))
    shutil.rmtree(events, ignore_errors=True)
    return out


def main() -> None:
    args = bench_parser(__doc__, seeds=10, logs=2, first_seed=200, profiles=3_000,
                        workdir=Path("/tmp/offerflow-slate-bench"),
                        helps={"logs": "slate logs simulated per world"}).parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    hits = {e: 0 for e in ESTIMATORS}
    unwarned = {e: [0, 0] for e in ESTIMATORS}  # hits, total among estimates without a warning
    errors: dict[str, list[float]] = {e: [] for e in ESTIMATORS}
    totals = {e: 0 for e in ESTIMATORS}
    misses, seconds, strategies = [], [], set()
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        started = time.perf_counter()
        world = args.workdir / f"world-{seed}"
        generate_world(WorldSpec(profiles=args.profiles, days=60, seed=seed, end_date=END), world)
        raw = yaml.safe_load(demo_config_yaml(str(world)))
        raw["evaluation"] = {"bootstrap_samples": 300}
        config = parse_config(raw, root=Path("/"))
        for log_seed in range(args.logs):
            for placement_id, (slates, truth) in evaluate_world_slates(world, log_seed, args.workdir, config).items():
                for row in slates.table[slates.table["strategy"] != "logged"].itertuples():
                    true = truth[row.strategy]
                    strategies.add(f"{placement_id}/{row.strategy}")
                    ok = row.low <= true <= row.high
                    hits[row.estimator] += ok
                    totals[row.estimator] += 1
                    errors[row.estimator].append(row.value - true)
                    if not row.warnings:
                        unwarned[row.estimator][0] += ok
                        unwarned[row.estimator][1] += 1
                    if not ok:
                        misses.append({"seed": seed, "log": log_seed, "placement": placement_id,
                                       "strategy": row.strategy, "estimator": row.estimator,
                                       "estimate": round(row.value, 4), "low": round(row.low, 4),
                                       "high": round(row.high, 4), "true": round(true, 4),
                                       "ess": round(row.ess, 1), "warned": bool(row.warnings)})
        seconds.append(time.perf_counter() - started)
        print(f"seed {seed}: {seconds[-1]:.1f} s", file=sys.stderr)
        shutil.rmtree(world, ignore_errors=True)
    print(json.dumps({
        "seeds": args.seeds, "logs_per_world": args.logs, "profiles": args.profiles,
        "strategies": sorted(strategies), "estimates_per_estimator": totals,
        "coverage": {e: round(hits[e] / max(totals[e], 1), 4) for e in ESTIMATORS},
        "coverage_without_warning": {e: {"coverage": round(h / max(t, 1), 4), "estimates": t}
                                     for e, (h, t) in unwarned.items()},
        "mean_error": {e: round(float(np.mean(errors[e])), 5) for e in ESTIMATORS},
        "rmse": {e: round(float(np.sqrt(np.mean(np.square(errors[e])))), 5) for e in ESTIMATORS},
        "misses": misses, "seconds_per_world": round(sum(seconds) / len(seconds), 1),
    }, indent=2))


if __name__ == "__main__":
    main()

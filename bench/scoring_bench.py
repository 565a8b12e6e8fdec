"""Customer AI scoring with influential factors: plain `pred_contrib` against the grouped path.

    python bench/scoring_bench.py [--profiles 100000] [--rows 1000000] [--plain-rows 100000]

Generates (or reuses) a seeded world, trains the demo goal `purchase_14d` twice (the configured,
early-stopped model and a fixed 100-tree model), builds the scoring features as of the end of the
data, and tiles them to `--rows` rows. For each model it prints, as JSON: holdout AUC, rows/s of
LightGBM's plain `pred_contrib` (timed on `--plain-rows` rows), rows/s of
`offerflow.contributions.grouped_contributions` on all rows, the largest absolute difference
between the two, and the share of rows whose top-3 factors are the same. Feature building is
timed separately (it runs on the world's real profiles, not the tiled rows).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import yaml


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--plain-rows", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", type=Path, default=Path("bench/results/scoring"))
    args = parser.parse_args()

    from offerflow.config import parse_config
    from offerflow.contributions import grouped_contributions
    from offerflow.evaluation import classification_metrics
    from offerflow.features import event_time_range, open_events
    from offerflow.goals import eligible_profiles
    from offerflow.propensity import (build_examples, feature_frame, fit_propensity_model, plan_cutoffs,
                                      top_factors)
    from offerflow.world import WorldSpec, demo_config_yaml, generate_world

    world = args.workdir / f"world-{args.profiles}-{args.seed}"
    if not (world / "events.parquet").exists():
        generate_world(WorldSpec(profiles=args.profiles, seed=args.seed, end_date=date(2026, 11, 1)), world)
    goal = parse_config(yaml.safe_load(demo_config_yaml(str(world)))).propensity_goals[0]
    profiles = pd.read_parquet(world / "profiles.parquet")
    con = open_events(world / "events.parquet")
    plan = plan_cutoffs(*event_time_range(con), goal)
    examples = build_examples(con, goal, profiles, plan.train)
    holdout = build_examples(con, goal, profiles, [plan.holdout])
    start = time.perf_counter()
    ids = eligible_profiles(con, goal, plan.scoring)
    frame = feature_frame(con, goal, profiles, ids, plan.scoring)
    feature_seconds = time.perf_counter() - start
    tiled = pd.concat([frame] * -(-args.rows // len(frame)), ignore_index=True).iloc[: args.rows]

    results = []
    variants = {"configured (early stopping)": {},
                "100 trees": {"n_estimators": 100, "early_stopping_rounds": 10_000}}
    for name, update in variants.items():
        model = fit_propensity_model(examples, goal.lightgbm.model_copy(update=update), args.seed)
        auc = classification_metrics(holdout["label"].to_numpy(), model.predict(holdout))["auc"]
        X = model.numeric_matrix(tiled)
        sample = tiled.iloc[: args.plain_rows]
        start = time.perf_counter()
        plain = model.booster.predict(model.matrix(sample), pred_contrib=True)
        plain_seconds = time.perf_counter() - start
        start = time.perf_counter()
        fast = grouped_contributions(model.booster.booster_, X, model.n_trees)
        fast_seconds = time.perf_counter() - start
        names = model.feature_columns
        same = (top_factors(plain[:, :-1], names, 3)[["factor_1", "factor_2", "factor_3"]].to_numpy()
                == top_factors(fast[: len(plain), :-1], names, 3)[["factor_1", "factor_2", "factor_3"]].to_numpy())
        record = {"model": name, "trees": model.n_trees, "holdout_auc": round(auc, 4),
                  "plain_rows": len(sample), "plain_seconds": round(plain_seconds, 2),
                  "plain_rows_per_second": round(len(sample) / plain_seconds),
                  "grouped_rows": len(X), "grouped_seconds": round(fast_seconds, 2),
                  "grouped_rows_per_second": round(len(X) / fast_seconds),
                  "speedup": round((len(X) / fast_seconds) / (len(sample) / plain_seconds), 1),
                  "max_abs_difference": float(np.abs(plain - fast[: len(plain)]).max()),
                  "same_top3_factors_share": float(same.all(axis=1).mean())}
        print(json.dumps(record), flush=True, file=__import__("sys").stderr)
        results.append(record)
    print(json.dumps({"profiles": args.profiles, "eligible": len(frame), "cores": os.cpu_count(),
                      "feature_seconds": round(feature_seconds, 2),
                      "feature_rows_per_second": round(len(frame) / feature_seconds),
                      "n_features": len(frame.columns) - 1, "rows": args.rows, "models": results}, indent=2))


if __name__ == "__main__":
    main()

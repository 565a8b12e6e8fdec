"""Customer AI scoring with influential factors: plain `pred_contrib` against the grouped path.

    python bench/scoring_bench.py [--profiles 100000] [--rows 1000000] [--plain-rows 100000]

Generates (or reuses) a seeded world, trains the demo goal `purchase_14d` twice (the configured,
early-stopped model and a fixed 100-tree model), builds the scoring features as of the end of the
data, and tiles them to `--rows` rows. For each model it prints, as JSON: holdout AUC, rows/s of
LightGBM's plain `pred_contrib` (timed on `--plain-rows` rows), rows/s of
`offerflow.customer_ai.contributions.grouped_contributions` on all rows, the largest absolute difference
between the two, and the share of rows whose top-3 factors are the same. Feature building is
timed separately (it runs on the world's real profiles, not the tiled rows).

    python bench/scoring_bench.py --end-to-end --world /tmp/w1m [--out-dir DIR]

Customer AI end to end on a real world (no tiling): training examples (labels + point-in-time
features at every training cut-off), fit (early stopping + refit), holdout evaluation (AUC, and
the AUC of the generator's true probabilities and of the best estimate from the observable
history, `world.best_estimates_from_history`), scoring features of every eligible profile as of
the end of the data, probabilities with top factors (grouped contributions), and the versioned
Parquet batch (named and written as `training.score_propensity` does). Prints per stage: wall seconds,
rows/s and the peak resident memory during the stage (VmHWM, reset before each stage).
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import bench_parser, reset_peak_rss, status_mib  # noqa: E402


def main() -> None:
    parser = bench_parser(
        __doc__, profiles=100_000, rows=1_000_000, plain_rows=100_000, seed=7, workdir=Path("bench/results/scoring"),
        end_to_end=False, world=Path, out_dir=Path,
        helps={"end_to_end": "features + train + score + write on --world",
               "world": "an existing world (offerflow generate --out DIR)",
               "out_dir": "where the score batch goes (default: a temp dir)"})
    args = parser.parse_args()
    if args.end_to_end:
        if args.world is None:
            parser.error("--end-to-end needs --world")
        end_to_end(args.world, args.out_dir, args.seed)
        return

    from offerflow.core.config import parse_config
    from offerflow.customer_ai.contributions import grouped_contributions
    from offerflow.core.metrics import classification_metrics
    from offerflow.core.features import event_time_range, open_events
    from offerflow.customer_ai.goals import eligible_profiles
    from offerflow.customer_ai.propensity import (build_examples, feature_frame, fit_propensity_model, plan_cutoffs,
                                      top_factors)
    from offerflow.synthetic.world import WorldSpec, demo_config_yaml, generate_world

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


@contextmanager
def _stage(results: list[dict], name: str):
    """Time a stage and record the peak RSS during it (the high-water mark is reset first)."""
    reset_peak_rss()
    record: dict = {"stage": name}
    start = time.perf_counter()
    yield record
    record["seconds"] = round(time.perf_counter() - start, 2)
    record["peak_rss_mib"] = round(status_mib("VmHWM"))
    record["load_average_1m"] = round(os.getloadavg()[0], 1)  # the machine is shared: seconds are noisy
    if "rows" in record:
        record["rows_per_second"] = round(record["rows"] / record["seconds"])
    print(json.dumps(record), flush=True, file=sys.stderr)
    results.append(record)


def _best_from_history(con, profiles: pd.DataFrame, cutoff, first, prior: np.ndarray, window: int,
                       chunk: int = 50_000) -> np.ndarray:
    """`world.best_estimates_from_history` (the AUC ceiling from observable history), in chunks."""
    from offerflow.core.features import query_frame
    from offerflow.synthetic.world import best_estimates_from_history

    seen = query_frame(con, """SELECT profile_id,
        count(DISTINCT CAST(timestamp AS DATE)) FILTER (WHERE channel = 'web') AS web_days,
        count(DISTINCT CAST(timestamp AS DATE)) FILTER (WHERE event_type = 'purchase') AS purchase_days
        FROM events WHERE timestamp < ? GROUP BY profile_id""", [cutoff])
    seen = profiles[["profile_id"]].merge(seen, on="profile_id", how="left").fillna(0)
    days = (pd.Timestamp(cutoff) - pd.Timestamp(first).floor("D")).days
    return np.concatenate([
        best_estimates_from_history(profiles.iloc[i: i + chunk], seen["web_days"].to_numpy()[i: i + chunk],
                                    seen["purchase_days"].to_numpy()[i: i + chunk], days, window, prior)["purchase"]
        for i in range(0, len(profiles), chunk)])


def end_to_end(world: Path, out_dir: Path | None, seed: int) -> None:
    """Customer AI on a real world, stage by stage, as the training and scoring tasks run it."""
    import tempfile

    from offerflow.core.config import parse_config
    from offerflow.core.metrics import classification_metrics
    from offerflow.core.features import event_time_range, open_events
    from offerflow.customer_ai.goals import eligible_profiles
    from offerflow.customer_ai.propensity import build_examples, feature_frame, fit_propensity_model, plan_cutoffs, score_table
    from offerflow.synthetic.world import demo_config_yaml, load_truth, true_purchase_probability

    goal = parse_config(yaml.safe_load(demo_config_yaml(str(world)))).propensity_goals[0]
    profiles = pd.read_parquet(world / "profiles.parquet")
    con = open_events(world / "events.parquet")
    first, last = event_time_range(con)
    plan = plan_cutoffs(first, last, goal)
    out_dir = out_dir or Path(tempfile.mkdtemp(prefix="offerflow-scoring-bench-"))
    stages: list[dict] = []
    total = time.perf_counter()
    with _stage(stages, "training examples (labels + features)") as r:
        examples = build_examples(con, goal, profiles, plan.train)
        r.update(rows=len(examples), cutoffs=len(plan.train), features=len(examples.columns) - 3)
    with _stage(stages, "fit (early stopping + refit)") as r:
        model = fit_propensity_model(examples, goal.lightgbm, seed)
        r.update(rows=len(examples), trees=model.n_trees)
    del examples
    with _stage(stages, "holdout examples + evaluation") as r:
        holdout = build_examples(con, goal, profiles, [plan.holdout])
        y = holdout["label"].to_numpy()
        r.update(rows=len(holdout), auc=round(classification_metrics(y, model.predict(holdout))["auc"], 4))
    with _stage(stages, "truth check: oracle and best-from-history AUC (bench only)") as r:
        truth, _ = load_truth(world)
        with_truth = holdout[["profile_id"]].merge(profiles, on="profile_id").merge(
            truth[["profile_id", "activity"]], on="profile_id")
        true_p = true_purchase_probability(with_truth, goal.outcome_window_days)
        r["true_probability_auc"] = round(classification_metrics(y, true_p)["auc"], 4)
        best = _best_from_history(con, with_truth, plan.holdout, first, truth["activity"].to_numpy(),
                                  goal.outcome_window_days)
        r["best_from_history_auc"] = round(classification_metrics(y, best)["auc"], 4)
    del holdout
    with _stage(stages, "scoring features (eligible profiles)") as r:
        ids = eligible_profiles(con, goal, plan.scoring)
        frame = feature_frame(con, goal, profiles, ids, plan.scoring)
        r.update(rows=len(frame))
    with _stage(stages, "probability + top factors") as r:
        probability, factors = model.predict_with_factors(frame, top=goal.top_factors)
        r.update(rows=len(frame), top_factors=goal.top_factors)
    with _stage(stages, "score table + write batch (Parquet)") as r:
        scores = pd.concat([score_table(probability, ids, goal.buckets.medium_from, goal.buckets.high_from),
                            factors], axis=1).assign(model_version="bench", score_date=plan.scoring.date().isoformat())
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"scores-{plan.scoring.date().isoformat()}-b00001.parquet"
        scores.assign(batch=1).to_parquet(path, index=False)
        r.update(rows=len(scores), path=str(path), mib=round(path.stat().st_size / 2**20, 1))
    events = con.execute("SELECT count(*) FROM events").fetchall()[0][0]
    print(json.dumps({"world": str(world), "profiles": len(profiles), "events": events, "cores": os.cpu_count(),
                      "goal": goal.name, "lookback_days": goal.lookback_days,
                      "total_seconds": round(time.perf_counter() - total, 1),
                      "peak_rss_mib": max(s["peak_rss_mib"] for s in stages), "stages": stages}, indent=2))


if __name__ == "__main__":
    main()

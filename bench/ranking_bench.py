"""Rank N profiles x M offers and publish the tables: per-stage wall seconds and peak memory.

    python bench/ranking_bench.py --profiles 1000000 --offers 50 [--workdir /tmp/ofr]

Two rankings of the same profiles, each with the offers' eligibility rules:
- a ranking formula (the demo's favourite-category formula), scored, ranked and published;
- the personalized click model (LightGBM, trained here on 200,000 displays simulated from the
  world's true click probabilities), scored, ranked and published. Its scoring time is compared
  with the time LightGBM's own `Booster.predict` needs for the same profile x offer rows, built
  beforehand: the ratio is the overhead of our pair assembly, eligibility and top-k.
Prints one JSON document; per-stage lines go to stderr as they finish.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import bench_parser  # noqa: E402
from pipeline_bench import stage  # noqa: E402  (same stage timer and peak-memory probe)

FORMULA = "if(offer.category == profile.favorite_category, offer.priority * 2, offer.priority)"


def main() -> None:
    args = bench_parser(__doc__, profiles=1_000_000, offers=50, items=3, chunk_profiles=50_000, seed=7,
                        workdir=Path("/tmp/offerflow-ranking-bench")).parse_args()

    from offerflow.core.config import LightGBMParams
    from offerflow.ranking.click_model import fit_click_model, training_frame
    from offerflow.ranking.tables import formula_scorer, rank_profiles
    from offerflow.rules.expressions import schema_from_frames
    from offerflow.core.store import RankingStore
    from offerflow.synthetic.world import make_offers, make_profiles, true_click_probability

    if args.workdir.exists():
        shutil.rmtree(args.workdir)
    store = RankingStore(args.workdir / "rankings", keep_versions=2)
    rng = np.random.default_rng(args.seed)
    results: list[dict] = []
    with stage(results, "make_world", args.profiles):
        truth_profiles = make_profiles(args.profiles, rng)
        truth_offers = make_offers(args.offers, rng)
        truth_offers = truth_offers[~truth_offers["fallback"]].reset_index(drop=True)
        profiles = truth_profiles.drop(columns=["activity"])
        offers = truth_offers.drop(columns=["quality"])

    def publish(name: str, score_fn) -> int:
        parts = list(rank_profiles(profiles, offers, score_fn, args.items, args.chunk_profiles))
        table = pd.concat(parts, ignore_index=True)
        return store.publish(name, table, {"kind": "ranking", "items": args.items})

    schema = schema_from_frames(profiles=profiles, offers=offers)
    with stage(results, "formula_rank_and_publish", args.profiles * len(offers)) as rec:
        rec["version"] = publish("formula", formula_scorer(FORMULA, schema))

    # A click model trained on displays simulated from the truth (uniform logging).
    n_displays = 200_000
    p_idx = rng.integers(0, min(args.profiles, 200_000), n_displays)
    o_idx = rng.integers(0, len(offers), n_displays)
    truth = true_click_probability(truth_profiles.iloc[p_idx], truth_offers, "web")[np.arange(n_displays), o_idx]
    log = pd.DataFrame({"profile_id": profiles["profile_id"].to_numpy()[p_idx],
                        "offer_id": offers["offer_id"].to_numpy()[o_idx], "placement_id": "bench",
                        "timestamp": pd.Timestamp("2026-10-01", tz="UTC") + pd.to_timedelta(np.arange(n_displays), "s"),
                        "propensity": 1.0 / len(offers),
                        "success": (rng.random(n_displays) < truth).astype(np.int8)})
    with stage(results, "train_click_model", n_displays) as rec:
        model = fit_click_model(training_frame(log, profiles, offers), LightGBMParams(), offers["offer_id"].tolist(),
                                seed=args.seed)
        rec.update(trees=int(model.booster.best_iteration_ or model.booster.n_estimators),
                   holdout_auc=round(model.holdout_metrics["auc"], 4))

    scoring_seconds = 0.0

    def timed_scores(chunk: pd.DataFrame, candidates: pd.DataFrame) -> np.ndarray:
        nonlocal scoring_seconds
        start = time.perf_counter()
        out = model.score_matrix(chunk, candidates)
        scoring_seconds += time.perf_counter() - start
        return out

    with stage(results, "personalized_rank_and_publish", args.profiles * len(offers)) as rec:
        start = time.perf_counter()
        model.predictor().expect_rows(args.profiles * len(offers))  # compiles (lleaves) when it pays off
        rec.update(compiled=model.predictor().compiled, compile_seconds=round(time.perf_counter() - start, 2))
        rec["version"] = publish("personalized", timed_scores)
        rec["scoring_seconds"] = round(scoring_seconds, 2)

    # LightGBM alone on the same rows: each pair block is built first (not timed), then predicted.
    booster = model.booster.booster_
    predict_seconds = 0.0
    with stage(results, "lightgbm_predict_only", args.profiles * len(offers)) as rec:
        for _, _, block in model.pair_blocks(profiles, offers):
            t0 = time.perf_counter()
            booster.predict(block)
            predict_seconds += time.perf_counter() - t0
        rec["predict_seconds"] = round(predict_seconds, 2)
    print(json.dumps({"profiles": args.profiles, "offers": len(offers), "items": args.items,
                      "pairs": args.profiles * len(offers),
                      "scoring_over_lightgbm_predict": round(scoring_seconds / predict_seconds, 3),
                      "personalized_total_over_lightgbm_predict": round(
                          next(r["seconds"] for r in results if r["stage"] == "personalized_rank_and_publish")
                          / predict_seconds, 3),
                      "stages": results}, indent=2))


if __name__ == "__main__":
    main()

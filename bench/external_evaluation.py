"""External benchmark, evaluation section: off-policy intervals on the Open Bandit Dataset samples
against each behaviour policy's observed click rate (the standard OBD protocol).

For every campaign (all, men, women) the sample holds two logs of the same week: one served by a
uniformly random policy, one by Bernoulli Thompson sampling (BTS). Each policy's click rate is
estimated off-policy from the OTHER policy's log with offerflow's own evaluation code, and compared
with the click rate observed on its own log:

- `random` on the BTS log: the `random` strategy of `strategies.evaluate_placement`, run on the
  written project with the default `window_days: 7` (the whole 7-day log: nothing before it, so no
  AI models and no DR reward model; the headline falls back to SNIPS), and with `window_days: 2`
  (DR and SNIPS on the last 2 days, the reward model learning from the 5 days before);
- BTS on the random log: `offpolicy.evaluate` with a strategy that puts item a at position k with
  the BTS log's frequency of a at k (the time-average of the BTS policy, which was updated during
  the week: the logged propensities of one item at one position vary by a factor of 2 and more).

One OBD row is one impression (its position is a profile attribute of that row's profile, see
`external_data.py`); estimates pool the three positions, as the observed click rates do. Each row:
the estimate, its 95% interval, whether the observed click rate of the policy's own log lies inside
it, whether the interval lies inside [0, 1], and whether a warning fired (few clicks, tiny
effective sample).

    python bench/external_evaluation.py [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from external_data import CAMPAIGNS, obd_available, read_obd, write_obd_project  # noqa: E402

ESTIMATORS = ("snips", "ips")


def frequency_policy(log: pd.DataFrame, offer_ids: list[str]) -> np.ndarray:
    """(3, n_offers): P(item at position k) as served in `log` (rows: positions 1-3)."""
    index = {offer: j for j, offer in enumerate(offer_ids)}
    table = np.zeros((3, len(offer_ids)))
    for (position, item), count in log.groupby(["position", "item_id"]).size().items():
        table[int(position) - 1, index[f"item-{int(item):02d}"]] = count
    return table / table.sum(axis=1, keepdims=True)


def _row(campaign: str, target: str, source: str, estimator: str, estimate: pd.Series, observed: float,
         observed_clicks: int, warnings: list[str]) -> dict:
    inside = bool(estimate["low"] <= observed <= estimate["high"])
    bounded = bool(0 <= estimate["low"] <= estimate["high"] <= 1)
    warned = bool(warnings)
    clipped = f" (raw {estimate['raw']:.4f}, clipped)" if estimate["raw"] != estimate["value"] else ""
    note = (f"95% CI [{estimate['low']:.4f}, {estimate['high']:.4f}]{clipped}; observed CTR inside: {'yes' if inside else 'NO'}; "
            f"inside [0,1]: {'yes' if bounded else 'NO'}; {int(estimate['clicks'])} clicks in the {source} log, "
            f"{estimate['effective_clicks']:.1f} effective; warning: {'yes' if warned else 'no'}"
            + (f" ({warnings[0] if len(warnings[0]) <= 70 else warnings[0][:67] + '...'})" if warned else ""))
    return {"dataset": f"OBD {campaign}: {target} CTR from the {source} log", "measure": f"CTR ({estimator.upper()})",
            "ours": float(estimate["value"]), "baseline": float(observed),
            "baseline_name": f"{target} log's observed CTR ({observed_clicks} clicks)", "ceiling": None,
            "target": "interval contains baseline, inside [0,1]", "note": note, "low": float(estimate["low"]),
            "high": float(estimate["high"]), "raw": float(estimate["raw"]), "contains_observed": inside, "inside_0_1": bounded, "warned": warned}


def evaluate_campaign(campaign: str, workdir: Path) -> list[dict]:
    """The two cross-log estimates of one campaign, each with every estimator in ESTIMATORS."""
    from offerflow.core.config import load_config
    from offerflow.core.features import open_events
    from offerflow.evaluation.logged_displays import load_logged_displays
    from offerflow.evaluation.offpolicy import evaluate
    from offerflow.evaluation.policies import Strategy
    from offerflow.evaluation.report import load_evaluation_catalog
    from offerflow.evaluation.strategies import evaluate_placement, evaluation_window, placement_offer_set, warning_limits

    logs = {b: read_obd(b, campaign) for b in ("random", "bts")}
    observed = {b: (float(log["click"].mean()), int(log["click"].sum())) for b, log in logs.items()}
    rows = []
    # random, estimated from the BTS log with the project's whole evaluation path
    config = load_config(write_obd_project(workdir / f"bts-{campaign}", "bts", campaign, layout="single"))
    config = config.model_copy(update={"evaluation": config.evaluation.model_copy(update={"window_days": 7})})
    profiles, offers = load_evaluation_catalog(config)
    con = open_events(config.path(config.data.events))
    evaluation, _ = evaluate_placement(con, config, "obd", profiles, offers)
    for estimator in ESTIMATORS:
        est = evaluation.estimate("random", estimator)
        rows.append(_row(campaign, "random", "BTS", estimator, est, *observed["random"],
                         ([evaluation.too_few] if evaluation.too_few else []) + list(est["warnings"])))
    # DR needs a reward model trained before the window: random on the BTS log's last 2 days, the
    # reward model (and the AI models) learning from the 5 days before
    short = config.model_copy(update={"evaluation": config.evaluation.model_copy(update={"window_days": 2})})
    evaluation, _ = evaluate_placement(con, short, "obd", profiles, offers)
    for estimator in ("dr", "snips"):
        est = evaluation.estimate("random", estimator)
        rows.append(_row(campaign, "random", "BTS (last 2 days)", estimator, est, *observed["random"],
                         ([evaluation.too_few] if evaluation.too_few else []) + list(est["warnings"])))
    # BTS (its time-average), estimated from the random log
    config = load_config(write_obd_project(workdir / f"random-{campaign}", "random", campaign, layout="single"))
    profiles, offers = load_evaluation_catalog(config)
    con = open_events(config.path(config.data.events))
    start, end = evaluation_window(con, ["obd"], 7)
    logged = load_logged_displays(con, "obd", start, end, profiles, placement_offer_set(offers, "obd"))
    by_position = frequency_policy(logs["bts"], logged.offers["offer_id"].tolist())

    def bts_policy(p: pd.DataFrame, o: pd.DataFrame, eligible: np.ndarray) -> np.ndarray:
        return np.where(eligible, by_position[p["position"].to_numpy(int) - 1], 0.0)

    evaluation = evaluate(logged, [Strategy("logged", "logged", "logged", None),
                                   Strategy("bts", "Bernoulli TS (time-average)", "formula", bts_policy)],
                          None, n_bootstrap=config.evaluation.bootstrap_samples, seed=config.seed,
                          limits=warning_limits(config.evaluation))
    for estimator in ESTIMATORS:
        est = evaluation.estimate("bts", estimator)
        rows.append(_row(campaign, "BTS", "random", estimator, est, *observed["bts"],
                         ([evaluation.too_few] if evaluation.too_few else []) + list(est["warnings"])))
    return rows


def rows(quick: bool = False) -> list[dict]:
    """One row per campaign x (target policy, other log) x estimator; [] with a message without obp."""
    if not obd_available():
        return []
    out = []
    with tempfile.TemporaryDirectory(prefix="offerflow-obd-") as tmp:
        for campaign in (("all",) if quick else CAMPAIGNS):
            out += evaluate_campaign(campaign, Path(tmp))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="campaign 'all' only")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = rows(args.quick)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for row in result:
        print(f"{row['dataset']:<42} {row['measure']:<13} ours {row['ours']:.4f}  observed {row['baseline']:.4f}  "
              f"{row['note']}")


if __name__ == "__main__":
    main()

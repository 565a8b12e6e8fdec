"""Customer AI on repeat-purchase data no one here wrote, against BG/NBD and recency alone.

    python bench/external_customer_ai.py            # every dataset, full size
    python bench/external_customer_ai.py --quick    # smaller samples (the lead's table)
    python bench/external_customer_ai.py --tune     # the same, one outcome window earlier (for tuning)

Datasets (read from the installed `lifetimes` package's data files, or generated with a seed;
nothing is downloaded or committed):

* `cdnow`: lifetimes' CDNOW_master.txt, 23,570 customers of an online CD store, 1997-01 to
  1998-06 (18 months, all acquired in the first quarter of 1997); 90-day outcome window.
* `example_transactions`: lifetimes' example_transactions.csv, 5,000 customers over 2014,
  acquired from January to September; 60-day outcome window.
* `bgnbd_world`: purchases drawn from the BG/NBD model itself (gamma purchase rates, beta
  dropout after each repeat purchase, acquisition spread over the first half), so the true
  probabilities are known: the oracle's (true rate and alive state) and the Bayes-optimal one
  given the observable history under the true parameters; 90-day window.
* `offerflow_world`: offerflow's own synthetic world (`offerflow.world`), 14-day purchase goal,
  true probability from `world.true_purchase_probability`.

Each dataset becomes offerflow's inputs (purchase events with the contract's columns + a profiles
table) and goes through the library functions the pipeline uses: `plan_cutoffs`, `build_examples`,
`fit_propensity_model` (the goal's defaults: only the window and the minimum examples are set),
and the AUC at the holdout cut-off (one window before the end of the data) of every profile with
history before it. The baselines see exactly the same profiles and the same history: BG/NBD
fitted by maximum likelihood on the history before the holdout cut-off, ranked by
P(at least one purchase in the window), and recency alone (days since the last purchase).

`--tune` moves everything one outcome window earlier (events after the holdout cut-off are
dropped), so choices are made without looking at the reported holdout.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from offerflow.core.config import PropensityGoalConfig  # noqa: E402
from offerflow.customer_ai import bgnbd  # noqa: E402
from offerflow.core.metrics import classification_metrics  # noqa: E402
from offerflow.core.features import event_time_range, open_events  # noqa: E402
from offerflow.customer_ai.propensity import build_examples, fit_propensity_model, plan_cutoffs  # noqa: E402

SEED = 7
EVENT_COLUMNS = ["event_id", "timestamp", "profile_id", "event_type", "offer_id", "placement_id", "channel",
                 "value", "propensity", "decision_id"]


# --- BG/NBD (Fader, Hardie & Lee 2005): likelihood, fit, P(purchase in a window) ---------------

def fit_bgnbd(x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Maximum-likelihood (r, alpha, a, b), optimised on their logarithms (Nelder-Mead, then L-BFGS),
    of the library's likelihood (`offerflow.customer_ai.bgnbd.log_likelihood`) on every customer.
    Not the library's `fit`: that one samples at most 20,000 customers, starts with L-BFGS and
    gives up on small data; the baseline here keeps its own search."""
    def loss(log_params: np.ndarray) -> float:
        return -float(bgnbd.log_likelihood(np.exp(log_params), x, t_x, T).sum())

    start = np.log([0.5, max(float(np.mean(T)), 1.0), 1.0, 1.0])
    first = minimize(loss, start, method="Nelder-Mead", options={"maxiter": 4000, "xatol": 1e-6, "fatol": 1e-6})
    best = minimize(loss, first.x, method="L-BFGS-B")
    return np.exp(best.x if best.fun <= first.fun else first.x)


def bgnbd_p_purchase(params: np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray, window: float) -> np.ndarray:
    """P(at least one purchase in (T, T + window] | x, t_x, T) under BG/NBD: the library's
    `bgnbd.predictions(...)["p_any"]` (P(alive at T) times 1 - E[exp(-lambda * window)] under the
    same posterior)."""
    return bgnbd.predictions(params, x, t_x, T, window)["p_any"]


def rfm_summary(purchases: pd.DataFrame, ids: pd.Series, cutoff: pd.Timestamp, unit_days: float = 7.0) -> pd.DataFrame:
    """BG/NBD's sufficient statistics per profile of `ids` from purchases before `cutoff`: x
    (purchase days after the first), t_x (last minus first purchase day), T (cut-off minus first
    purchase day), in units of `unit_days`; and days since the last purchase (recency)."""
    before = purchases[purchases["timestamp"] < cutoff]
    day = before["timestamp"].dt.floor("D")
    g = before.assign(day=day).groupby("profile_id")["day"]
    stats = pd.DataFrame({"first": g.min(), "last": g.max(), "days": g.nunique()})
    stats = stats.reindex(ids.to_numpy())
    unit = pd.Timedelta(days=unit_days)
    out = pd.DataFrame({"profile_id": ids.to_numpy(),
                        "x": (stats["days"] - 1).to_numpy(dtype=float),
                        "t_x": ((stats["last"] - stats["first"]) / unit).to_numpy(dtype=float),
                        "T": ((cutoff.floor("D") - stats["first"]) / unit).to_numpy(dtype=float),
                        "recency_days": ((cutoff - stats["last"]) / pd.Timedelta(days=1)).to_numpy(dtype=float)})
    return out


# --- datasets as offerflow inputs ---------------------------------------------------------------

@dataclass
class Dataset:
    name: str
    purchases: pd.DataFrame  # profile_id, timestamp (UTC), value
    window_days: int
    note: str
    truth: object = None  # callable(holdout frame, cutoff) -> dict of ceiling name -> probabilities


def _lifetimes_file(name: str) -> Path:
    spec = importlib.util.find_spec("lifetimes")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the lifetimes package is not installed: pip install --no-deps lifetimes")
    return Path(spec.submodule_search_locations[0]) / "datasets" / name


def _sample_customers(frame: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    if n is None:
        return frame
    ids = frame["profile_id"].drop_duplicates().sample(n=n, random_state=seed)
    return frame[frame["profile_id"].isin(set(ids))]


def cdnow(quick: bool) -> Dataset:
    raw = pd.read_csv(_lifetimes_file("CDNOW_master.txt"), sep=r"\s+", header=None, skiprows=1,
                      names=["profile_id", "date", "cds", "value"], dtype={"profile_id": str, "date": str})
    purchases = pd.DataFrame({"profile_id": "c" + raw["profile_id"],
                              "timestamp": pd.to_datetime(raw["date"], format="%Y%m%d", utc=True) + pd.Timedelta(hours=12),
                              "value": raw["value"].astype(float)})
    return Dataset("cdnow", _sample_customers(purchases, 8_000 if quick else None, SEED), 90,
                   "lifetimes CDNOW_master, 90-day window")


def example_transactions(quick: bool) -> Dataset:
    raw = pd.read_csv(_lifetimes_file("example_transactions.csv"))
    purchases = pd.DataFrame({"profile_id": "e" + raw["id"].astype(str),
                              "timestamp": pd.to_datetime(raw["date"], utc=True) + pd.Timedelta(hours=12),
                              "value": np.nan})
    return Dataset("example_transactions", purchases, 60, "lifetimes example_transactions, 60-day window")


#: BG/NBD parameters (per week) of the generated world: close to those fitted on CDNOW (r 0.24,
#: alpha 4.4, a 0.79, b 2.43), a rate a little higher so that a 90-day window is not all zeros.
BGNBD_TRUE = np.array([0.35, 4.0, 0.8, 2.5])


def bgnbd_world(quick: bool, customers: int = 8_000, weeks: int = 78, acquisition_weeks: int = 39) -> Dataset:
    """Purchases drawn from BG/NBD: lambda ~ Gamma(r, alpha), p ~ Beta(a, b); the first purchase at
    acquisition (uniform over the first `acquisition_weeks`), then purchases at rate lambda, each
    repeat purchase followed by dropout with probability p. Values: gamma-distributed per customer."""
    rng = np.random.default_rng(SEED)
    n = 3_000 if quick else customers
    r, alpha, a, b = BGNBD_TRUE
    rate = rng.gamma(r, 1.0 / alpha, n)  # purchases per week
    dropout = rng.beta(a, b, n)
    start = rng.uniform(0, acquisition_weeks, n)
    spend = rng.gamma(2.0, 15.0, n)
    ids, times, alive_until = [], [], np.full(n, np.inf)
    for i in range(n):
        t = start[i]
        ids.append(i), times.append(t)
        while True:
            t += rng.exponential(1.0 / rate[i])
            if t > weeks:
                break
            ids.append(i), times.append(t)
            if rng.random() < dropout[i]:
                alive_until[i] = t
                break
    origin = pd.Timestamp("2024-01-01", tz="UTC")
    ids, times = np.asarray(ids), np.asarray(times)
    purchases = pd.DataFrame({"profile_id": [f"b{i:05d}" for i in ids],
                              "timestamp": origin + pd.to_timedelta(times * 7, unit="D"),
                              "value": np.round(rng.gamma(4.0, spend[ids] / 4.0), 2)})
    latent = pd.DataFrame({"profile_id": [f"b{i:05d}" for i in range(n)], "rate": rate,
                           "dead_at": origin + pd.to_timedelta(np.where(np.isinf(alive_until), 5_000.0, alive_until) * 7, unit="D")})

    def truth(holdout: pd.DataFrame, cutoff: pd.Timestamp, window_days: int, rfm: pd.DataFrame) -> dict[str, np.ndarray]:
        known = holdout[["profile_id"]].merge(latent, on="profile_id", how="left")
        alive = (known["dead_at"] > cutoff).to_numpy()
        oracle = alive * (1 - np.exp(-known["rate"].to_numpy() * window_days / 7))
        bayes = bgnbd_p_purchase(BGNBD_TRUE, rfm["x"].to_numpy(), rfm["t_x"].to_numpy(), rfm["T"].to_numpy(),
                                 window_days / 7)
        return {"oracle (true rate and alive state)": oracle, "Bayes-optimal from history (true BG/NBD)": bayes}

    return Dataset("bgnbd_world", purchases, 90, f"BG/NBD generative world, {n:,} customers, 90-day window",
                   truth)


def as_events(purchases: pd.DataFrame) -> pd.DataFrame:
    """Purchases as events of the data contract (docs/data-contract.md)."""
    n = len(purchases)
    return pd.DataFrame({"event_id": [f"x{i}" for i in range(n)], "timestamp": purchases["timestamp"].to_numpy(),
                         "profile_id": purchases["profile_id"].to_numpy(), "event_type": "purchase",
                         "offer_id": None, "placement_id": None, "channel": None,
                         "value": purchases["value"].to_numpy(dtype=float), "propensity": np.nan,
                         "decision_id": None})[EVENT_COLUMNS]


# --- one dataset through Customer AI and the baselines -------------------------------------------

def goal_for(window_days: int, **extra: object) -> PropensityGoalConfig:
    return PropensityGoalConfig.model_validate({
        "name": f"purchase_{window_days}d", "goal": {"all_of": [{"field": "event_type", "value": "purchase"}]},
        "outcome_window_days": window_days, "min_positives": 50, "min_negatives": 50,
        "lightgbm": {"num_threads": 2}, **extra})


def evaluate(dataset: Dataset, tune: bool = False, goal_extra: dict | None = None) -> dict[str, object]:
    """Customer AI, BG/NBD and recency on the dataset's holdout cut-off (with `tune`, one window
    earlier on events cut there). Returns AUCs, trees, sizes and timings."""
    goal = goal_for(dataset.window_days, **(goal_extra or {}))
    purchases = dataset.purchases
    if tune:
        full_end = pd.Timestamp(purchases["timestamp"].max()).ceil("D")
        purchases = purchases[purchases["timestamp"] < full_end - pd.Timedelta(days=dataset.window_days)]
    profiles = pd.DataFrame({"profile_id": np.sort(purchases["profile_id"].unique())})
    with tempfile.TemporaryDirectory(prefix="offerflow-external-") as tmp:
        path = Path(tmp) / "events.parquet"
        as_events(purchases).to_parquet(path, index=False)
        plan, examples, model, holdout, seconds = fit_with_holdout(open_events(path), goal, profiles)
    y = holdout["label"].to_numpy()
    cutoff = pd.Timestamp(plan.holdout)
    rfm = rfm_summary(purchases, holdout["profile_id"], cutoff)
    fit_rows = rfm  # BG/NBD learns from the same history before the holdout cut-off
    params = fit_bgnbd(fit_rows["x"].to_numpy(), fit_rows["t_x"].to_numpy(), fit_rows["T"].to_numpy())
    scores = {"customer_ai": model.predict(holdout),
              "bgnbd": bgnbd_p_purchase(params, rfm["x"].to_numpy(), rfm["t_x"].to_numpy(), rfm["T"].to_numpy(),
                                        dataset.window_days / 7),
              "recency": 1.0 / (1.0 + rfm["recency_days"].to_numpy())}  # scores in [0, 1], as metrics expect
    if dataset.truth is not None:
        scores.update(dataset.truth(holdout, cutoff, dataset.window_days, rfm))
    auc = {name: classification_metrics(y, s)["auc"] for name, s in scores.items()}
    return {"dataset": dataset.name, "note": dataset.note, "holdout_cutoff": f"{cutoff:%Y-%m-%d}",
            "train_cutoffs": len(plan.train), "train_examples": len(examples), "holdout_profiles": len(holdout),
            "base_rate": float(y.mean()), "trees": model.n_trees, "features": len(model.feature_columns),
            "bgnbd_params": [round(float(p), 4) for p in params], "auc": auc, "seconds": round(seconds, 1)}


def fit_with_holdout(con, goal, profiles: pd.DataFrame):
    """What the pipeline does for a goal, on these events: plan the cut-offs, fit on the training
    snapshots, build the holdout snapshot. Returns (plan, examples, model, holdout, seconds)."""
    plan = plan_cutoffs(*event_time_range(con), goal)
    started = time.perf_counter()
    examples = build_examples(con, goal, profiles, plan.train)
    model = fit_propensity_model(examples, goal.lightgbm, SEED)
    holdout = build_examples(con, goal, profiles, [plan.holdout])
    return plan, examples, model, holdout, time.perf_counter() - started


def offerflow_world(quick: bool, tune: bool = False, goal_extra: dict | None = None) -> dict[str, object]:
    """Customer AI on offerflow's own synthetic world against its true purchase probability."""
    from offerflow.synthetic.world import WorldSpec, generate_world, load_truth, true_purchase_probability

    goal = goal_for(14, **{"min_positives": 200, "min_negatives": 200, **(goal_extra or {})})
    profiles_n, days = (5_000, 90) if quick else (20_000, 120)
    with tempfile.TemporaryDirectory(prefix="offerflow-world-") as tmp:
        out = Path(tmp)
        generate_world(WorldSpec(profiles=profiles_n, offers=12, days=days, seed=11), out)
        events_path = out / "events.parquet"
        if tune:
            events = pd.read_parquet(events_path)
            end = events["timestamp"].max().ceil("D")
            events[events["timestamp"] < end - pd.Timedelta(days=14)].to_parquet(out / "tuned.parquet", index=False)
            events_path = out / "tuned.parquet"
        profiles = pd.read_parquet(out / "profiles.parquet")
        plan, examples, model, holdout, seconds = fit_with_holdout(open_events(events_path), goal, profiles)
        truth, _ = load_truth(out)
    holdout = holdout.merge(truth[["profile_id", "activity", "daily_purchase_rate"]], on="profile_id")
    y = holdout["label"].to_numpy()
    auc = {"customer_ai": classification_metrics(y, model.predict(holdout))["auc"],
           "oracle (true probability)": classification_metrics(y, true_purchase_probability(holdout, 14))["auc"]}
    return {"dataset": "offerflow_world", "note": f"offerflow.world {profiles_n:,} profiles x {days} days, seed 11,"
            " 14-day purchase goal", "holdout_cutoff": f"{pd.Timestamp(plan.holdout):%Y-%m-%d}",
            "train_cutoffs": len(plan.train), "train_examples": len(examples), "holdout_profiles": len(holdout),
            "base_rate": float(y.mean()), "trees": model.n_trees, "features": len(model.feature_columns),
            "auc": auc, "seconds": round(seconds, 1)}


def measure(quick: bool = False, tune: bool = False) -> list[dict[str, object]]:
    results = [evaluate(load(quick), tune) for load in (cdnow, example_transactions, bgnbd_world)]
    return results + [offerflow_world(quick, tune)]


def rows(quick: bool = False) -> list[dict]:
    """The lead's table: per dataset, Customer AI's holdout AUC against BG/NBD (+0.02) and recency,
    and on the generated worlds against the true-probability ceiling (within 0.02)."""
    out = []
    for r in measure(quick):
        auc, name = r["auc"], r["dataset"]
        note = (f"{r['note']}; {r['holdout_profiles']:,} holdout profiles, base rate {r['base_rate']:.3f},"
                f" {r['train_cutoffs']} training cut-offs, {r['trees']} trees")
        if "bgnbd" in auc:
            out.append({"dataset": name, "measure": "Customer AI holdout AUC vs BG/NBD", "ours": auc["customer_ai"],
                        "baseline": auc["bgnbd"], "baseline_name": "BG/NBD (ML fit)",
                        "ceiling": auc.get("oracle (true rate and alive state)"), "target": ">= baseline + 0.02",
                        "note": note})
            out.append({"dataset": name, "measure": "Customer AI holdout AUC vs recency alone",
                        "ours": auc["customer_ai"], "baseline": auc["recency"], "baseline_name": "recency alone",
                        "ceiling": None, "target": "> baseline", "note": note})
        for ceiling in [k for k in auc if k.startswith(("oracle", "Bayes"))]:
            out.append({"dataset": name, "measure": f"Customer AI holdout AUC vs {ceiling}", "ours": auc["customer_ai"],
                        "baseline": None, "baseline_name": None, "ceiling": auc[ceiling],
                        "target": ">= ceiling - 0.02", "note": note})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller samples (minutes, not tens of minutes)")
    parser.add_argument("--tune", action="store_true", help="one outcome window earlier: for choosing settings")
    parser.add_argument("--json", action="store_true", help="the full measurements as JSON")
    parser.add_argument("--only", choices=["cdnow", "example_transactions", "bgnbd_world", "offerflow_world"])
    parser.add_argument("--goal", default="{}", help="goal settings to change, as JSON (with --tune, to compare)")
    args = parser.parse_args()
    extra = json.loads(args.goal)
    loaders = {"cdnow": cdnow, "example_transactions": example_transactions, "bgnbd_world": bgnbd_world}
    if args.only or args.json or args.tune:
        names = [args.only] if args.only else [*loaders, "offerflow_world"]
        for name in names:
            result = (offerflow_world(args.quick, args.tune, extra) if name == "offerflow_world"
                      else evaluate(loaders[name](args.quick), args.tune, extra))
            result["goal_changes"] = extra
            print(json.dumps(result), flush=True)
        return
    for row in rows(args.quick):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

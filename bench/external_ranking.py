"""How good the ranking AI models are against the truth: two synthetic offer worlds (and the Open
Bandit Dataset samples when `bench/external_data.py` is there).

On each synthetic world, generated with a seed into a temporary directory and read back through
offerflow's own readers (events in DuckDB, the catalog, the profiles):

- **personalized first choice**: the click model is trained as `train_ranking_model` trains it
  (same window, qualification, features, weights, early stopping: `fit_personalized_model`),
  scores every profile shown the placement in the window against every eligible offer, and its first
  choice's TRUE click probability is averaged over those displays; the ceiling is the oracle (the
  offer with the highest true click probability for that profile), the baselines the best single
  offer (one fixed order of offers by true click rate) and the marketer's priority;
- **auto-optimization**: from a cold start, in a closed loop (`simulate_auto_optimization`): the
  model's own traffic, retrained 4 times a day on its rolling window, each shown offer clicked
  with its true probability; the expected true click rate of what it served over the last 7 of
  28 days against the best single offer (per placement, and pooled where a model has several).

On the Open Bandit Dataset samples (`bench/external_data.py`, when `obp` is installed): the
personalized click model's AUC on the last 20% of each log against a click rate per item and
position, and auto-optimization's cold start simulated on each log's own item click rates.

    python bench/external_ranking.py [--quick] [--seed 2] [--auto-only --auto-repeats 6]

prints one JSON row per figure (keys: dataset, measure, ours, baseline, baseline_name, ceiling,
target, note). `rows()` is what `bench/external.py` calls. Tune on another seed than the one
reported (the default report seed is 2; seeds 1 and 3 were the tuning seeds).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

REPORT_SEED = 2
PERSONALIZED_TARGET = 0.93
AUTO_TARGET = 0.97


@dataclass
class WorldUnderTest:
    """A generated world as the benchmark needs it."""

    name: str
    events: Path
    profiles: pd.DataFrame  # public columns only
    offers: pd.DataFrame    # the catalog as loaded
    personalized_placement: str
    auto_placements: list[str]

    def truth(self, profiles: pd.DataFrame, offers: pd.DataFrame, placement: str) -> np.ndarray:
        raise NotImplementedError

    def visits(self, placement: str) -> np.ndarray:
        """Daily chance that each of `self.profiles` is shown the placement, shape (n_profiles,)."""
        raise NotImplementedError


class OfferflowWorld(WorldUnderTest):
    def __init__(self, directory: Path, seed: int, quick: bool) -> None:
        from offerflow.ingest.catalog import load_offers, load_profiles
        from offerflow.synthetic.world import WorldSpec, generate_world, load_truth

        generate_world(WorldSpec(profiles=8_000 if quick else 20_000, offers=50, days=30, seed=seed), directory)
        self.truth_profiles, self.truth_offers = load_truth(directory)
        super().__init__("offerflow.world", directory / "events.parquet", load_profiles(directory / "profiles.parquet"),
                         load_offers(directory / "offers.yaml"), "web-banner", ["email-hero"])

    def truth(self, profiles: pd.DataFrame, offers: pd.DataFrame, placement: str) -> np.ndarray:
        from offerflow.synthetic.world import true_click_probability

        p = profiles[["profile_id"]].merge(self.truth_profiles, on="profile_id", how="left")
        o = offers[["offer_id"]].merge(self.truth_offers, on="offer_id", how="left").fillna({"quality": 0.0})
        return true_click_probability(p, o, "email" if placement == "email-hero" else "web")

    def visits(self, placement: str) -> np.ndarray:
        truth = self.profiles[["profile_id"]].merge(self.truth_profiles, on="profile_id", how="left")
        if placement == "email-hero":
            return 0.25 * truth["email_opt_in"].to_numpy(float)
        return truth["activity"].to_numpy(float)


class ExternalWorld(WorldUnderTest):
    def __init__(self, directory: Path, seed: int, quick: bool) -> None:
        from external_world import FEED, HERO, ExternalWorldSpec, generate

        from offerflow.ingest.catalog import load_offers, load_profiles

        self.world = generate(ExternalWorldSpec(profiles=12_000 if quick else 30_000, seed=seed), directory)
        super().__init__("external_world", directory / "events.parquet", load_profiles(directory / "profiles.parquet"),
                         load_offers(directory / "offers.yaml"), HERO, list(FEED))

    def truth(self, profiles: pd.DataFrame, offers: pd.DataFrame, placement: str) -> np.ndarray:
        from external_world import true_click_probability

        p = profiles[["profile_id"]].merge(self.world.profiles, on="profile_id", how="left")
        o = offers.merge(self.world.offers[["offer_id", "quality"]], on="offer_id", how="left")
        return true_click_probability(p, o, self.world.affinity, placement)

    def visits(self, placement: str) -> np.ndarray:
        engagement = self.profiles[["profile_id"]].merge(self.world.profiles, on="profile_id")["engagement"]
        return engagement.to_numpy(float) * (1.0 if placement == self.personalized_placement else 0.5)


def _traffic(con, placement: str, start: datetime, end: datetime) -> pd.DataFrame:
    """Profiles shown the placement in [start, end) and how often: what a ranking is judged on."""
    from offerflow.ranking.click_model import displays_per_profile

    return displays_per_profile(con, [placement], start, end)


def _best_single_order(true: np.ndarray, eligible: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Per row, the first eligible offer of ONE fixed order (offers by their true click rate over the
    traffic): the best a non-personalized ranking can do."""
    w = weight[:, None] * eligible
    rate = (true * w).sum(axis=0) / np.maximum(w.sum(axis=0), 1e-12)
    order = np.argsort(-rate, kind="stable")
    first_eligible = eligible[:, order].argmax(axis=1)
    return order[first_eligible]


def _weighted(values: np.ndarray, weight: np.ndarray) -> float:
    return float((values * weight).sum() / weight.sum())


def measure_personalized(world: WorldUnderTest, seed: int, model_cfg=None) -> dict[str, float]:
    """True click rate of the personalized model's first choice, the oracle's, and baselines."""
    from offerflow.ingest.catalog import offers_for_placement
    from offerflow.core.config import AIModelConfig
    from offerflow.core.features import open_events
    from offerflow.ranking.offer_stats import daily_stats
    from offerflow.ranking.tables import eligibility_matrix
    from offerflow.models.ranking_training import fit_personalized_model, fit_placement_posteriors, ranking_window
    cfg = model_cfg or AIModelConfig(name="personalized", type="personalized",
                                     placements=[world.personalized_placement])
    cfg = cfg.model_copy(update={"lightgbm": cfg.lightgbm.model_copy(update={"num_threads": 2})})
    con = open_events(world.events)
    start, end = ranking_window(con, cfg)
    stats = daily_stats(con, cfg.placements, cfg.success_event)
    pooled, _ = fit_placement_posteriors(stats, world.offers, cfg, start, end)
    qualified = pooled.loc[pooled["qualified"], "offer_id"].tolist()
    model, _, frame, _ = fit_personalized_model(con, cfg, world.profiles, world.offers, qualified, seed, start, end)
    traffic = _traffic(con, world.personalized_placement, start, end)
    profiles = traffic[["profile_id"]].merge(world.profiles, on="profile_id", how="left")
    weight = traffic["displays"].to_numpy(float)
    candidates = offers_for_placement(world.offers, world.personalized_placement).reset_index(drop=True)
    eligible = eligibility_matrix(profiles, candidates)
    true = world.truth(profiles, candidates, world.personalized_placement)
    scores = model.score_matrix(profiles, candidates)
    rows_idx = np.arange(len(profiles))
    pick = np.where(eligible, scores, -np.inf).argmax(axis=1)
    oracle = np.where(eligible, true, -np.inf).max(axis=1)
    priority = np.where(eligible, candidates["priority"].to_numpy(float)[None, :], -np.inf).argmax(axis=1)
    single = _best_single_order(true, eligible, weight)
    return {"model": _weighted(true[rows_idx, pick], weight), "oracle": _weighted(oracle, weight),
            "best_single": _weighted(true[rows_idx, single], weight),
            "priority": _weighted(true[rows_idx, priority], weight),
            "random": _weighted((true * eligible).sum(axis=1) / np.maximum(eligible.sum(axis=1), 1), weight),
            "holdout_auc": model.holdout_metrics["auc"], "trees": float(model.holdout_metrics.get("best_iteration", 0)),
            "training_rows": float(len(frame)), "qualified": float(len(qualified)), "offers": float(len(candidates))}


def simulate_auto_optimization(true: dict[str, np.ndarray], eligible: np.ndarray, weight: np.ndarray, model_cfg,
                                days: int, visits_per_day: int, seed: int, batches_per_day: int = 4) -> dict[str, dict]:
    """Auto-optimization in a closed loop, from a cold start: every visit gets one decision per
    placement, ranked by Thompson sampling on the posteriors of the model's rolling window
    (`fit_posteriors`, retrained `batches_per_day` times a day, per placement or pooled as the
    model says), with its exploration share; each shown offer is clicked with its true probability.

    Args:
        true: placement -> true click probability, shape (n_profiles, n_offers), same offers for all.
        eligible: shape (n_profiles, n_offers); weight: shape (n_profiles,), visit rate per profile.
    Returns, per placement: `daily` expected true click rate of what was served each day,
    `best_single` (one fixed order of offers by true rate), `to_97` displays served until a day's
    rate first reached 97% of the best single offer's (None if never), `best_leads_after` the
    displays until the first day the best single offer was the most shown one, and its share of
    the last day's displays.
    """
    from offerflow.ranking.bandits import fit_posteriors, sampled_offers, thompson_first_choices

    rng = np.random.default_rng(seed)
    placements = list(true)
    n, m = eligible.shape
    visit_p = weight / weight.sum()
    window_batches = model_cfg.training_window_days * batches_per_day
    history = {p: [] for p in placements}  # per batch: (displays, successes) per offer
    daily = {p: [] for p in placements}
    shown = {p: [] for p in placements}  # per day: displays per offer
    for day in range(days):
        served = {p: [] for p in placements}
        for _ in range(batches_per_day):
            who = rng.choice(n, size=visits_per_day // batches_per_day, p=visit_p)
            elig = eligible[who]
            for p in placements:
                sources = placements if model_cfg.pool_placements else [p]
                window = [b for q in sources for b in history[q][-window_batches:]]
                d = np.sum([b[0] for b in window], axis=0) if window else np.zeros(m)
                s = np.sum([b[1] for b in window], axis=0) if window else np.zeros(m)
                post = fit_posteriors(pd.DataFrame({"offer_id": np.arange(m).astype(str), "displays": d, "successes": s}),
                                      model_cfg.min_displays, model_cfg.min_successes,
                                      empirical_prior=model_cfg.samples_every_offer, sharpening=model_cfg.posterior_sharpening)
                post = post.set_index("offer_id").loc[np.arange(m).astype(str)]
                everything = [b for q in sources for b in history[q]]  # qualification: the whole history
                if everything:
                    lifetime_d = np.sum([b[0] for b in everything], axis=0)
                    lifetime_s = np.sum([b[1] for b in everything], axis=0)
                    post["qualified"] = (lifetime_d >= model_cfg.min_displays) & (lifetime_s >= model_cfg.min_successes)
                sampled = sampled_offers(post["qualified"].to_numpy(bool), model_cfg.new_offers)
                choice = thompson_first_choices(post["alpha"].to_numpy(float), post["beta"].to_numpy(float),
                                                sampled, elig, model_cfg.exploration_share, rng, model_cfg.sampling)
                rate = true[p][who, choice]
                clicks = rng.random(len(who)) < rate
                history[p].append((np.bincount(choice, minlength=m), np.bincount(choice, weights=clicks, minlength=m)))
                served[p].append(rate)
        for p in placements:
            daily[p].append(float(np.concatenate(served[p]).mean()))
            shown[p].append(np.sum([b[0] for b in history[p][-batches_per_day:]], axis=0))
    out = {}
    for p in placements:
        single = _best_single_order(true[p], eligible, weight)
        best = _weighted(true[p][np.arange(n), single], weight)
        reached = [i for i, r in enumerate(daily[p]) if r >= AUTO_TARGET * best]
        top = int(np.bincount(single, weights=weight, minlength=m).argmax())  # the best single offer
        leads = [i for i, counts in enumerate(shown[p]) if counts.argmax() == top]
        out[p] = {"daily": daily[p], "best_single": best, "best_share_last_day": float(shown[p][-1][top] / shown[p][-1].sum()),
                  "best_leads_after": (leads[0] + 1) * visits_per_day if leads else None,
                  "random": _weighted((true[p] * eligible).sum(axis=1) / np.maximum(eligible.sum(axis=1), 1), weight),
                  "to_97": (reached[0] + 1) * visits_per_day if reached else None}
    return out


def measure_auto_closed_loop(world: WorldUnderTest, seed: int, model_cfg, days: int = 28) -> dict[str, dict]:
    """`simulate_auto_optimization` on a world's profiles, offers and truth for its auto placements."""
    from offerflow.ingest.catalog import offers_for_placement
    from offerflow.ranking.tables import eligibility_matrix

    candidates = offers_for_placement(world.offers, model_cfg.placements[0]).reset_index(drop=True)
    eligible = eligibility_matrix(world.profiles, candidates)
    weight = world.visits(model_cfg.placements[0])
    keep = weight > 0
    true = {p: world.truth(world.profiles[keep], candidates, p) for p in model_cfg.placements}
    per_day = int(round(weight.sum()))
    return simulate_auto_optimization(true, eligible[keep], weight[keep], model_cfg, days, per_day, seed)


def _personalized_row(world: WorldUnderTest, seed: int, cfg, label: str) -> dict:
    p = measure_personalized(world, seed, cfg)
    return {"dataset": world.name, "measure": f"personalized first choice, share of the oracle's true click rate "
            f"({world.personalized_placement}; {label})",
            "ours": p["model"] / p["oracle"], "baseline": p["best_single"] / p["oracle"],
            "baseline_name": "best single offer", "ceiling": 1.0, "target": f">= {PERSONALIZED_TARGET}",
            "note": (f"true CTR: model {p['model']:.4f}, oracle {p['oracle']:.4f}, best single {p['best_single']:.4f},"
                     f" priority {p['priority']:.4f}, random {p['random']:.4f}; holdout AUC {p['holdout_auc']:.3f},"
                     f" {int(p['trees'])} trees, {int(p['training_rows'])} training displays in"
                     f" {cfg.training_window_days} days, {int(p['qualified'])}/{int(p['offers'])} offers qualified")}


def world_rows(world: WorldUnderTest, seed: int, auto_overrides: dict | None = None,
               auto_only: bool = False, personalized_only: bool = False, auto_repeats: int = 1) -> list[dict]:
    """Personalized and auto-optimization rows for one world; `auto_overrides` changes the auto model's
    settings (e.g. `training_window_days`); `auto_repeats` closed loops (seeds differ) are averaged."""
    from offerflow.core.config import AIModelConfig

    rows = []
    default = AIModelConfig(name="personalized", type="personalized", placements=[world.personalized_placement])
    other = default.model_copy(update={"interaction_base": not default.interaction_base})
    variants = (("model defaults", default),
                (f"interaction_base {'on' if other.interaction_base else 'off'}", other))
    for label, cfg in () if auto_only else variants:
        rows.append(_personalized_row(world, seed, cfg, label))
    if personalized_only:
        return rows

    a_cfg = AIModelConfig(name="auto", type="auto_optimization", placements=world.auto_placements,
                          **(auto_overrides or {}))
    variants = [a_cfg] + ([a_cfg.model_copy(update={"pool_placements": True})] if len(a_cfg.placements) > 1 else [])
    for cfg in variants:
        rows += _auto_rows(world, seed, cfg, auto_repeats)
    return rows


def _auto_rows(world: WorldUnderTest, seed: int, a_cfg, repeats: int = 1) -> list[dict]:
    """A row per placement: `ours` the mean of `repeats` runs (seeds `seed`, 1000 seed + r), the first's details."""
    rows = []
    served_by = (f"{a_cfg.sampling.rule} sampling over every offer" if a_cfg.samples_every_offer
                 else f"incl. the {a_cfg.exploration_share:.0%} exploration share")
    runs = [measure_auto_closed_loop(world, seed if r == 0 else 1000 * seed + r, a_cfg) for r in range(repeats)]
    for placement, a in runs[0].items():
        tail = float(np.mean(a["daily"][-7:]))
        shares = [float(np.mean(run[placement]["daily"][-7:])) / a["best_single"] for run in runs]
        runs_note = f"mean of {repeats} runs: {' '.join(f'{x:.3f}' for x in shares)}; first run: " if repeats > 1 else ""
        pooled = "pooled" if a_cfg.pool_placements else "per placement"
        rows.append({"dataset": world.name, "measure": f"auto-optimization from a cold start, last 7 of {len(a['daily'])}"
                     f" days, share of the best single offer's true click rate ({placement}, {pooled})",
                     "ours": float(np.mean(shares)), "baseline": a["random"] / a["best_single"], "baseline_name": "random",
                     "ceiling": 1.0, "target": f">= {AUTO_TARGET}",
                     "note": (runs_note + f"true CTR served ({served_by}) {tail:.4f},"
                              f" best single {a['best_single']:.4f}, random {a['random']:.4f}; first day at >= 97%"
                              f" of best single after {a['to_97'] if a['to_97'] is not None else 'never'} displays;"
                              f" the best single offer the most shown from {a['best_leads_after'] or 'never'} displays,"
                              f" {a['best_share_last_day']:.0%} of the last day")})
    return rows


def _obd_frame(behavior: str, campaign: str, directory: Path):
    """An OBD log written as an offerflow project and read back: (training frame of every
    position's displays, offers, events connection)."""
    from external_data import placement_ids, write_obd_project

    from offerflow.ingest.catalog import load_offers, load_profiles
    from offerflow.core.features import event_time_range, open_events
    from offerflow.ranking.click_model import interaction_log, training_frame

    write_obd_project(directory, behavior, campaign)
    con = open_events(directory / "data" / "events.parquet")
    first, last = event_time_range(con)
    log = interaction_log(con, placement_ids("per_position"), first, last + pd.Timedelta(seconds=1))
    offers = load_offers(directory / "data" / "offers.yaml")
    profiles = load_profiles(directory / "data" / "profiles.parquet")
    return training_frame(log, profiles, offers[~offers["fallback"]]), offers


def obd_personalized(behavior: str, campaign: str, directory: Path, seed: int) -> dict[str, float]:
    """The personalized click model's AUC on the log's last 20% (time split, as `fit_click_model`
    holds it out) against a click-rate-per-item (and position) baseline learnt from the first 80%."""
    from offerflow.core.config import AIModelConfig
    from offerflow.core.metrics import classification_metrics
    from offerflow.ranking.click_model import fit_click_model

    frame, offers = _obd_frame(behavior, campaign, directory)
    cfg = AIModelConfig(name="p", type="personalized", placements=["obd-pos1"])
    params = cfg.lightgbm.model_copy(update={"num_threads": 2})
    model = fit_click_model(frame, params, offers["offer_id"].tolist(), seed)
    ordered = frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
    cut = int(len(ordered) * 0.8)
    past, holdout = ordered.iloc[:cut], ordered.iloc[cut:]
    overall = past["success"].mean()
    rate = past.groupby(["offer_id", "placement_id"])["success"].agg(["sum", "count"])
    smooth = (rate["sum"] + 10 * overall) / (rate["count"] + 10)  # 10 displays of prior at the overall rate
    keys = pd.MultiIndex.from_frame(holdout[["offer_id", "placement_id"]])
    baseline = smooth.reindex(keys).fillna(overall).to_numpy()
    base = classification_metrics(holdout["success"].to_numpy(), baseline)
    return {"auc": model.holdout_metrics["auc"], "baseline_auc": base["auc"], "rows": float(len(ordered)),
            "holdout_clicks": float(holdout["success"].sum()), "holdout": float(len(holdout)),
            "trees": float(model.holdout_metrics.get("best_iteration", 0))}


def obd_cold_start(behavior: str, campaign: str, seed: int, days: int = 14,
                   displays_per_day: int = 10_000) -> dict[str, dict]:
    """Auto-optimization from a cold start (`simulate_auto_optimization`, per placement = position)
    where each item's true click rate is the log's own: its clicks / displays, pooled over the
    positions (shrunk toward the log's rate with 100 displays of prior, the sample has ~125
    displays per item) times each position's share of the clicks."""
    from external_data import read_obd

    from offerflow.core.config import AIModelConfig

    log = read_obd(behavior, campaign)
    overall = log["click"].mean()
    items = log.groupby("item_id")["click"].agg(["sum", "count"])
    item_rate = ((items["sum"] + 100 * overall) / (items["count"] + 100)).to_numpy()
    position = (log.groupby("position")["click"].mean() / overall).to_dict()
    placements = [f"obd-pos{k}" for k in (1, 2, 3)]
    true = {p: (item_rate * position[k])[None, :] for k, p in zip((1, 2, 3), placements)}
    cfg = AIModelConfig(name="auto", type="auto_optimization", placements=placements)
    return simulate_auto_optimization(true, np.ones((1, len(item_rate)), bool), np.ones(1), cfg, days,
                                      displays_per_day, seed, batches_per_day=8)


def obd_rows(quick: bool, seed: int) -> list[dict]:
    """The Open Bandit Dataset part (skipped with a note when the `obp` data is not installed)."""
    from external_data import obd_root

    if obd_root() is None:
        return [{"dataset": "obd", "measure": "skipped", "ours": None, "baseline": None, "baseline_name": "",
                 "ceiling": None, "target": "", "note": "the obp package (its bundled data) is not installed"}]
    out = []
    campaigns = ("men",) if quick else ("all", "men", "women")
    for behavior in ("random", "bts"):
        for campaign in campaigns:
            name = f"obd-{behavior}-{campaign}"
            with tempfile.TemporaryDirectory(prefix="offerflow-obd-") as tmp:
                p = obd_personalized(behavior, campaign, Path(tmp), seed)
            out.append({"dataset": name, "measure": "personalized click model, AUC on the last 20% of the log (time split)",
                        "ours": p["auc"], "baseline": p["baseline_auc"], "baseline_name": "click rate per item and position",
                        "ceiling": None, "target": ">= baseline",
                        "note": (f"{int(p['holdout'])} holdout displays with {int(p['holdout_clicks'])} clicks"
                                 f" ({int(p['rows'])} in all), {int(p['trees'])} trees")})
            a = obd_cold_start(behavior, campaign, seed, days=7 if quick else 14)
            for placement, r in a.items():
                tail = float(np.mean(r["daily"][-3:]))
                out.append({"dataset": name, "measure": f"auto-optimization cold start, last 3 of {len(r['daily'])} days,"
                            f" share of the best item's click rate ({placement})",
                            "ours": tail / r["best_single"], "baseline": r["random"] / r["best_single"],
                            "baseline_name": "random", "ceiling": 1.0, "target": f">= {AUTO_TARGET}",
                            "note": (f"simulated at 10,000 displays a day per position, items' true rates = the log's"
                                     f" (shrunk); served CTR {tail:.5f}, best item {r['best_single']:.5f}; best item"
                                     f" first the most shown after {r['best_leads_after'] or 'never'} displays, its"
                                     f" share of the last day {r['best_share_last_day']:.0%}; >= 97% after"
                                     f" {r['to_97'] or 'never'} displays")})
    return out


def rows(quick: bool = False, seed: int = REPORT_SEED, auto_overrides: dict | None = None,
         worlds_only: bool = False, auto_only: bool = False, personalized_only: bool = False,
         auto_repeats: int = 1) -> list[dict]:
    """Every figure of this benchmark, one dict per row (the convention of bench/external.py)."""
    out: list[dict] = []
    for make in (OfferflowWorld, ExternalWorld):
        with tempfile.TemporaryDirectory(prefix="offerflow-external-ranking-") as tmp:
            world = make(Path(tmp), seed, quick)
            out.extend(world_rows(world, seed, auto_overrides, auto_only, personalized_only, auto_repeats))
    if not (worlds_only or auto_only or personalized_only):
        out.extend(obd_rows(quick, seed))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller worlds (about a minute)")
    parser.add_argument("--seed", type=int, default=REPORT_SEED, help="world and model seed (1 is for tuning)")
    parser.add_argument("--auto-window-days", type=int, help="auto-optimization training window (default: the model's)")
    parser.add_argument("--exploration-share", type=float, help="auto-optimization exploration share (default: the model's)")
    parser.add_argument("--posterior-sharpening", type=float, help="auto-optimization's (default: the model's)")
    parser.add_argument("--new-offers", choices=["empirical_bayes", "exploration_share"], help="auto-optimization's")
    parser.add_argument("--sampling", choices=["thompson", "top_two"], help="auto-optimization's sampling rule")
    parser.add_argument("--auto-repeats", type=int, default=1, help="closed loops averaged per auto row (seeds differ)")
    parser.add_argument("--auto-only", action="store_true", help="only the synthetic worlds' auto-optimization rows")
    parser.add_argument("--worlds-only", action="store_true", help="skip the Open Bandit Dataset rows")
    parser.add_argument("--personalized-only", action="store_true", help="only the personalized rows (both worlds)")
    args = parser.parse_args()
    settings = {"training_window_days": args.auto_window_days, "exploration_share": args.exploration_share,
                "new_offers": args.new_offers, "posterior_sharpening": args.posterior_sharpening,
                "sampling": args.sampling and {"rule": args.sampling}}
    for row in rows(args.quick, args.seed, {key: value for key, value in settings.items() if value is not None},
                    args.worlds_only, args.auto_only, args.personalized_only, args.auto_repeats):
        print(json.dumps(row))


if __name__ == "__main__":
    main()

"""A seeded synthetic world whose true probabilities are known.

`generate_world` writes profiles, an offer catalog and N days of events (displays and clicks of
offers chosen by an exploring logging policy, plus purchases) in the data contract's formats. The
truth is a formula (`true_click_probability`, `true_purchase_probability`), so tests and
benchmarks can check what the models learn against what really drives behaviour.

The world, in words:
- A profile clicks an offer more when the offer's category is the profile's favourite one, when
  the discount is large and the profile is in a low loyalty tier (discount hunters), and when the
  category suits the profile's age. Each offer also has a hidden `quality` the models never see.
- The marketer's `priority` is only loosely related to quality, so ranking by priority is good but
  not the best: a model that learns the truth beats it.
- The logging policy shows one offer per decision: with probability 0.3 uniformly among the
  eligible offers, otherwise by a softmax of priority. Every display records the probability with
  which its offer was chosen (`propensity`).
- Purchases arrive at a per-profile daily rate driven by loyalty tier, email opt-in, tenure and
  how active the profile is (visible through its displays), independent of the offers shown.

Generation runs day by day with NumPy, so memory is bounded by one day of events plus the
profile arrays: 1,000,000 profiles and 20,000,000 events fit easily in 24 GiB.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from offerflow.ranking.tables import eligibility_matrix
from offerflow.core.schema import EVENT_SCHEMA

CATEGORIES = ("electronics", "fashion", "home", "beauty", "sports", "grocery")
TIERS = ("bronze", "silver", "gold", "platinum")
COUNTRIES = ("DE", "FR", "US", "GB", "ES")
#: How much younger profiles (below 40) prefer each category, per 20 years of age difference.
YOUTH_AFFINITY = {"electronics": 0.6, "sports": 0.5, "fashion": 0.3, "beauty": 0.0,
                  "home": -0.4, "grocery": -0.3}
#: Clicks per 10 points of discount above 20%, by loyalty tier (discount hunters are bronze).
DISCOUNT_SENSITIVITY = {"bronze": 0.45, "silver": 0.30, "gold": 0.10, "platinum": -0.05}
CHANNEL_BASE_LOGIT = {"web": -3.0, "email": -3.3}
FAVOURITE_CATEGORY_BOOST = 1.5
LOGGING_EXPLORATION = 0.3
LOGGING_PRIORITY_TEMPERATURE = 2.0

#: The demo's placements: (id, channel, items).
DEMO_PLACEMENTS = (("web-banner", "web", 3), ("email-hero", "email", 1), ("web-sidebar", "web", 2))
FALLBACK_OFFER_ID = "o-fallback"
#: Frequency caps of a few demo offers (see `offerflow.rules.capping`); they change no generated event.
DEMO_CAPS = {
    "o-001": [{"event": "display", "scope": "per_profile", "limit": 3, "reset": "daily"}],
    "o-002": [{"event": "click", "scope": "per_profile", "limit": 1, "reset": "weekly"},
              {"event": "decision", "scope": "total", "limit": 50_000, "reset": "daily", "per_placement": True}],
    "o-005": [{"event": "display", "scope": "total", "limit": 200_000, "reset": "monthly"}],
}


@dataclass(frozen=True)
class WorldSpec:
    profiles: int = 5_000
    offers: int = 12
    days: int = 60
    seed: int = 7
    end_date: date = field(default_factory=lambda: datetime.now(timezone.utc).date())


@dataclass(frozen=True)
class WorldFiles:
    profiles: Path
    offers: Path
    events: Path
    truth: Path
    event_count: int


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def make_profiles(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Profiles with observable attributes and the hidden `activity` rate (truth only)."""
    tier = rng.choice(len(TIERS), size=n, p=[0.5, 0.3, 0.15, 0.05])
    return pd.DataFrame(
        {
            "profile_id": pd.Series(np.arange(1, n + 1)).map("p{:07d}".format).to_numpy(dtype=object),
            "age": rng.integers(18, 80, size=n),
            "loyalty_tier": np.asarray(TIERS, dtype=object)[tier],
            "country": np.asarray(COUNTRIES, dtype=object)[rng.choice(5, size=n, p=[.3, .2, .25, .15, .1])],
            "tenure_days": np.minimum(rng.exponential(500, size=n).astype(np.int64), 4000),
            "favorite_category": np.asarray(CATEGORIES, dtype=object)[rng.integers(0, len(CATEGORIES), n)],
            "email_opt_in": rng.random(n) < 0.6,
            # hidden: daily probability of visiting the web site
            "activity": rng.beta(2.0, 10.0, size=n),
        }
    )


def make_offers(m: int, rng: np.random.Generator) -> pd.DataFrame:
    """An offer catalog: m regular offers plus one fallback offer valid in every placement."""
    if m < 4:
        raise ValueError(f"a demo world needs at least 4 offers, got {m}")
    ids = [f"o-{j:03d}" for j in range(1, m + 1)]
    categories = [CATEGORIES[j % len(CATEGORIES)] for j in range(m)]
    quality = rng.normal(0.0, 0.5, size=m)
    # Marketers' priority correlates only loosely with the hidden quality.
    priority = np.clip(np.round(5 + 2.0 * quality + rng.normal(0, 2.0, m)), 1, 10).astype(int)
    rules: list[str | None] = [None] * m
    placements: list[list[str]] = []
    for j in range(m):
        spots = ["web-banner", "web-sidebar"] if j % 4 != 3 else ["web-sidebar"]
        if j % 2 == 0:
            spots.append("email-hero")
        placements.append(spots)
        if j % 5 == 2:
            rules[j] = "profile.age >= 25"
        elif j % 5 == 4:
            rules[j] = 'profile.loyalty_tier in ["gold", "platinum"]'
    for j in range(m):
        if "email-hero" in placements[j]:
            # Email offers may only go to profiles that opted in.
            rules[j] = "profile.email_opt_in" if rules[j] is None else f"profile.email_opt_in and {rules[j]}"
    offers = pd.DataFrame(
        {
            "offer_id": ids,
            "name": [f"{c.title()} offer {j + 1}" for j, c in enumerate(categories)],
            "priority": priority,
            "placements": placements,
            "eligibility": rules,
            "fallback": False,
            "category": categories,
            "discount_pct": rng.choice([5, 10, 15, 20, 25, 30, 40, 50], size=m).astype(float),
            "quality": quality,
            "caps": [DEMO_CAPS.get(oid) for oid in ids],
        }
    )
    fallback = {
        "offer_id": FALLBACK_OFFER_ID, "name": "Free shipping on your next order", "priority": 0,
        "placements": [p for p, _, _ in DEMO_PLACEMENTS], "eligibility": None, "fallback": True,
        "category": "grocery", "discount_pct": 0.0, "quality": 0.0, "caps": None,
    }
    return pd.concat([offers, pd.DataFrame([fallback])], ignore_index=True)


def _click_logit(p: pd.DataFrame, o: pd.DataFrame, channel: str, pairwise: bool) -> np.ndarray:
    """The truth formula on profile and offer columns: all pairs (2-D) or aligned rows (1-D)."""
    def prof(values: np.ndarray) -> np.ndarray:
        return values[:, None] if pairwise else values

    def off(values: np.ndarray) -> np.ndarray:
        return values[None, :] if pairwise else values

    fav = prof(p["favorite_category"].to_numpy()) == off(o["category"].to_numpy())
    sensitivity = prof(p["loyalty_tier"].map(DISCOUNT_SENSITIVITY).to_numpy(float))
    discount = (off(o["discount_pct"].to_numpy(float)) - 20.0) / 10.0
    youth = (40.0 - prof(p["age"].to_numpy(float))) / 20.0
    affinity = off(o["category"].map(YOUTH_AFFINITY).to_numpy(float))
    return (CHANNEL_BASE_LOGIT[channel] + off(o["quality"].to_numpy(float))
            + FAVOURITE_CATEGORY_BOOST * fav + sensitivity * discount + youth * affinity)


def true_click_logit(profiles: pd.DataFrame, offers: pd.DataFrame, channel: str) -> np.ndarray:
    """True log-odds of a click, shape (n_profiles, n_offers), for displays on `channel`."""
    return _click_logit(profiles, offers, channel, pairwise=True)


def true_click_probability(profiles: pd.DataFrame, offers: pd.DataFrame, channel: str) -> np.ndarray:
    """True click probability, shape (n_profiles, n_offers). Needs the truth columns."""
    return _sigmoid(true_click_logit(profiles, offers, channel))


def true_slot_examination(items: int) -> np.ndarray:
    """Position bias for slates: the chance a profile looks at slot k (1-based) of a placement's list,
    1 / (1 + 0.5 (k - 1)): 1, 0.67, 0.5, ... The click probability of an offer shown in slot k is
    this times `true_click_probability` (a position-based click model). The generated event log
    shows one offer per decision (slot 1); slate simulations (`simulated_logs.simulate_slate_log`) use it."""
    return 1.0 / (1.0 + 0.5 * np.arange(items))


def true_daily_purchase_rate(profiles: pd.DataFrame) -> np.ndarray:
    """True probability that a profile purchases on a given day, shape (n_profiles,)."""
    tier = profiles["loyalty_tier"].map({t: i for i, t in enumerate(TIERS)}).to_numpy(float)
    logit = (-5.0 + 0.5 * tier + 0.5 * profiles["email_opt_in"].to_numpy(float)
             + 12.0 * (profiles["activity"].to_numpy(float) - 0.17)
             + 0.3 * np.log1p(profiles["tenure_days"].to_numpy(float) / 365.0))
    return _sigmoid(logit)


def true_purchase_probability(profiles: pd.DataFrame, window_days: int) -> np.ndarray:
    """True probability of at least one purchase within the next `window_days`."""
    return 1.0 - (1.0 - true_daily_purchase_rate(profiles)) ** window_days


def best_estimates_from_history(profiles: pd.DataFrame, web_days: np.ndarray, purchase_days: np.ndarray,
                                history_days: int, window_days: int, prior_activity: np.ndarray,
                                grid_size: int = 200) -> dict[str, np.ndarray]:
    """The best predictions the observable history allows: posterior means under the generator.

    The hidden activity shows in events only as the days with a web visit (Binomial(history_days,
    activity)) and, through the purchase rate it drives, the days with a purchase (Binomial(
    history_days, daily purchase rate)); clicks do not depend on it. With `prior_activity` (the
    true activities of the world, as equal-mass quantiles) as prior, returns per profile the
    posterior mean of the purchase probability within `window_days` (`purchase`) and of the chance
    of no web visit in it (`no_visit`): the AUC ceiling of any model of these goals.
    """
    grid = np.quantile(np.asarray(prior_activity, float), (np.arange(grid_size) + 0.5) / grid_size)
    grid = np.clip(grid, 1e-9, 1 - 1e-9)
    rate = np.column_stack([true_daily_purchase_rate(profiles.assign(activity=a)) for a in grid])
    k = np.asarray(web_days, float)[:, None]
    m = np.asarray(purchase_days, float)[:, None]
    n = float(history_days)
    log_like = k * np.log(grid) + (n - k) * np.log1p(-grid) + m * np.log(rate) + (n - m) * np.log1p(-rate)
    weight = np.exp(log_like - log_like.max(axis=1, keepdims=True))
    weight /= weight.sum(axis=1, keepdims=True)
    return {"purchase": (weight * (1 - (1 - rate) ** window_days)).sum(axis=1),
            "no_visit": (weight * (1 - grid) ** window_days).sum(axis=1)}


def logging_probabilities(eligible: np.ndarray, priority: np.ndarray) -> np.ndarray:
    """The logging policy's choice probabilities over offers, shape like `eligible` (rows sum to 1)."""
    n_eligible = eligible.sum(axis=1, keepdims=True)
    uniform = np.where(eligible, 1.0 / np.maximum(n_eligible, 1), 0.0)
    weights = np.where(eligible, np.exp(priority[None, :] / LOGGING_PRIORITY_TEMPERATURE), 0.0)
    softmax = weights / np.maximum(weights.sum(axis=1, keepdims=True), 1e-300)
    return LOGGING_EXPLORATION * uniform + (1.0 - LOGGING_EXPLORATION) * softmax


def _sample_rows(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One column index per row drawn from that row's probabilities (vectorized inverse CDF)."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random((probs.shape[0], 1)) * cdf[:, -1:]
    return np.minimum((cdf < u).sum(axis=1), probs.shape[1] - 1)


class _EventWriter:
    """Appends one day of events at a time to a Parquet file with the contract's schema."""

    def __init__(self, path: Path) -> None:
        self._writer = pq.ParquetWriter(path, EVENT_SCHEMA, compression="zstd")
        self.count = 0
        self.decisions = 0

    def write(self, columns: dict[str, np.ndarray]) -> None:
        n = len(columns["timestamp"])
        if n == 0:
            return
        order = np.argsort(columns["timestamp"], kind="stable")
        ids = np.char.add("e", (np.arange(self.count, self.count + n)).astype(str))
        arrays = {"event_id": ids}
        arrays.update({k: v[order] for k, v in columns.items()})
        table = pa.table({name: pa.array(arrays[name], type=EVENT_SCHEMA.field(name).type)
                          for name in EVENT_SCHEMA.names}, schema=EVENT_SCHEMA)
        self._writer.write_table(table, row_group_size=1_000_000)
        self.count += n

    def close(self) -> None:
        self._writer.close()


def _day_events(day_start: np.datetime64, profiles: pd.DataFrame, offers: pd.DataFrame,
                placement_offers: dict[str, np.ndarray], eligible: np.ndarray,
                channel_of: dict[str, str], daily_purchase: np.ndarray, writer: _EventWriter,
                rng: np.random.Generator) -> dict[str, np.ndarray]:
    """All events of one day as column arrays (not yet sorted)."""
    n = len(profiles)
    pid = profiles["profile_id"].to_numpy(dtype=object)
    seconds = np.int64(86_400 * 1_000_000)
    parts: list[dict[str, np.ndarray]] = []
    visitors = {
        "web": np.flatnonzero(rng.random(n) < profiles["activity"].to_numpy()),
        "email": np.flatnonzero(profiles["email_opt_in"].to_numpy() & (rng.random(n) < 0.25)),
    }
    for placement, offer_idx in placement_offers.items():
        channel = channel_of[placement]
        who = visitors[channel]
        if placement == "web-sidebar":
            who = who[rng.random(len(who)) < 0.5]
        elig = eligible[np.ix_(who, offer_idx)]
        has_any = elig.any(axis=1)
        who, elig = who[has_any], elig[has_any]
        if len(who) == 0:
            continue
        probs = logging_probabilities(elig, offers["priority"].to_numpy(float)[offer_idx])
        choice = _sample_rows(probs, rng)
        propensity = probs[np.arange(len(who)), choice]
        chosen = offer_idx[choice]
        p_click = _sigmoid(_click_logit(profiles.iloc[who], offers.iloc[chosen], channel, pairwise=False))
        clicked = rng.random(len(who)) < p_click
        ts = day_start + (rng.random(len(who)) * (seconds - 600_000_000)).astype("timedelta64[us]")
        decision_ids = np.char.add("d", np.arange(writer.decisions, writer.decisions + len(who)).astype(str))
        writer.decisions += len(who)
        offer_ids = offers["offer_id"].to_numpy(dtype=object)[chosen]
        base = {"profile_id": pid[who], "offer_id": offer_ids, "placement_id": np.full(len(who), placement, dtype=object),
                "channel": np.full(len(who), channel, dtype=object), "value": np.full(len(who), np.nan),
                "propensity": propensity, "decision_id": decision_ids}
        parts.append({**base, "timestamp": ts, "event_type": np.full(len(who), "display", dtype=object)})
        delay = np.minimum(rng.exponential(60.0, len(who)), 500.0) * 1_000_000
        click = {k: v[clicked] for k, v in base.items()}
        click.update(timestamp=(ts + delay.astype("timedelta64[us]"))[clicked],
                     event_type=np.full(int(clicked.sum()), "click", dtype=object))
        parts.append(click)
    buyers = np.flatnonzero(rng.random(n) < daily_purchase)
    k = len(buyers)
    parts.append({"profile_id": pid[buyers], "offer_id": np.full(k, None, dtype=object),
                  "placement_id": np.full(k, None, dtype=object), "channel": np.full(k, None, dtype=object),
                  "value": np.round(rng.lognormal(3.5, 0.6, k), 2), "propensity": np.full(k, np.nan),
                  "decision_id": np.full(k, None, dtype=object),
                  "timestamp": day_start + (rng.random(k) * seconds).astype("timedelta64[us]"),
                  "event_type": np.full(k, "purchase", dtype=object)})
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def generate_world(spec: WorldSpec, out_dir: Path) -> WorldFiles:
    """Write `profiles.parquet`, `offers.yaml`, `events.parquet` and `truth/` under `out_dir`."""
    rng = np.random.default_rng(spec.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "truth").mkdir(exist_ok=True)
    profiles = make_profiles(spec.profiles, rng)
    offers = make_offers(spec.offers, rng)
    eligible = eligibility_matrix(profiles.drop(columns=["activity"]), offers)
    placement_offers = {
        placement: np.flatnonzero(
            offers["placements"].map(lambda spots, p=placement: p in spots).to_numpy()
            & ~offers["fallback"].to_numpy(bool))
        for placement, _, _ in DEMO_PLACEMENTS
    }
    channel_of = {placement: channel for placement, channel, _ in DEMO_PLACEMENTS}
    daily_purchase = true_daily_purchase_rate(profiles)

    events_path = out_dir / "events.parquet"
    writer = _EventWriter(events_path)
    first_day = np.datetime64(spec.end_date, "us") - np.timedelta64(spec.days, "D")
    try:
        for d in range(spec.days):
            day_start = first_day + np.timedelta64(d, "D")
            writer.write(_day_events(day_start, profiles, offers, placement_offers, eligible,
                                     channel_of, daily_purchase, writer, rng))
    finally:
        writer.close()

    profiles.drop(columns=["activity"]).to_parquet(out_dir / "profiles.parquet", index=False)
    truth = profiles[["profile_id", "activity"]].assign(daily_purchase_rate=daily_purchase)
    truth.to_parquet(out_dir / "truth" / "profiles_truth.parquet", index=False)
    offers[["offer_id", "quality"]].to_parquet(out_dir / "truth" / "offers_truth.parquet", index=False)
    (out_dir / "truth" / "world.json").write_text(json.dumps(
        {**asdict(spec), "end_date": spec.end_date.isoformat(), "event_count": writer.count}, indent=2))
    offers_path = out_dir / "offers.yaml"
    write_offers_yaml(offers.drop(columns=["quality"]), offers_path)
    return WorldFiles(out_dir / "profiles.parquet", offers_path, events_path, out_dir / "truth", writer.count)


def write_offers_yaml(offers: pd.DataFrame, path: Path) -> None:
    """The catalog as readable YAML (what a marketer would edit)."""
    records = []
    for row in offers.to_dict(orient="records"):
        row = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
        for optional in ("eligibility", "caps"):
            value = row.get(optional)
            if not isinstance(value, (str, list)) or not value:  # None, NaN or empty
                row.pop(optional, None)
        records.append(row)
    path.write_text(yaml.safe_dump({"offers": records}, sort_keys=False), encoding="utf-8")


def load_truth(data_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Profiles and offers joined with their hidden truth columns (for tests and benchmarks)."""
    from offerflow.ingest.catalog import load_offers

    profiles = pd.read_parquet(data_dir / "profiles.parquet").merge(
        pd.read_parquet(data_dir / "truth" / "profiles_truth.parquet"), on="profile_id")
    offers = load_offers(data_dir / "offers.yaml").merge(
        pd.read_parquet(data_dir / "truth" / "offers_truth.parquet"), on="offer_id")
    return profiles, offers


def demo_config_yaml(data_dir: str = "data") -> str:
    """The project file `offerflow demo` writes next to the generated world."""
    return f"""\
# offerflow project file: the data, the placements, the AI models and the propensity goals.
project: demo
seed: 7
data:
  events: {data_dir}/events.parquet
  profiles: {data_dir}/profiles.parquet
  offers: {data_dir}/offers.yaml
placements:
  - id: web-banner
    channel: web
    items: 3
    ranking: {{method: ai_model, ai_model: web-personalized}}
  - id: email-hero
    channel: email
    items: 1
    ranking: {{method: ai_model, ai_model: email-auto}}
  - id: web-sidebar
    channel: web
    items: 2
    ranking:
      method: formula
      formula: "if(offer.category == profile.favorite_category, offer.priority * 2, offer.priority)"
ai_models:
  - name: web-personalized
    description: Click probability per profile and offer on the web banner
    type: personalized
    placements: [web-banner]
    training_window_days: 30
    min_displays: 250
    min_successes: 25
  - name: email-auto
    description: Thompson sampling on each offer's click rate in the email hero slot
    type: auto_optimization
    placements: [email-hero]
    training_window_days: 14
propensity_goals:
  - name: purchase_14d
    type: conversion
    goal:
      all_of:
        - {{field: event_type, operator: "==", value: purchase}}
    outcome_window_days: 14
    lookback_days: [7, 30, 90]
    min_positives: 200
    min_negatives: 200
tracking:
  uri: sqlite:///mlflow.db
  artifact_root: mlruns
store:
  path: {data_dir}/rankings
  keep_versions: 5
"""

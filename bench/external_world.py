"""A second synthetic offer world, shaped unlike `offerflow.world`, to judge the ranking models on.

`offerflow.world` clicks follow a favourite-category match, a discount x loyalty-tier slope and an
age x category slope. This world shares none of that click model (nor any code of it): it is a
media app with 60 offers and weak signal (base click rate about 2%), where what drives clicks is a
set of interactions the features have to find:

- region x category: a random affinity matrix (each region likes some categories, dislikes others);
- price x income: high-income profiles click expensive offers more, low-income ones cheap offers;
- age x category: gaming and music pull the young, travel and finance the older;
- a hidden segment, a rule over observable attributes that no column names (25-39 year olds in
  the north or east, and tablet users earning over 60k): its members click video offers much more
  and text offers less;
- membership x tier: members click premium offers more;
- position x format (the feed placements feed-1..feed-3): a video autoplays only at the top, so
  videos lose clicks further down and text offers gain; examination also falls with position;
- each offer's hidden quality.

The behaviour policy is not uniform: 20% uniform over the eligible offers, 80% a softmax of the
marketer's priority plus a targeting rule (premium offers pushed to high incomes, video to mobile),
and every display records its propensity. The true click probability of every (profile, offer,
placement) is known (`true_click_probability`), so the oracle's first choice is computable.

    python bench/external_world.py --out /tmp/ext-world [--profiles 30000 --days 28 --seed 11]

writes `profiles.parquet`, `offers.yaml`, `events.parquet` (offerflow's data contract) and
`truth/` (hidden columns), plus `offerflow.yaml`, a project file that runs the pipeline on it.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from offerflow.synthetic.world import WorldSpec

REGIONS = ("north", "south", "east", "west", "central", "islands")
DEVICES = ("mobile", "desktop", "tablet")
CATEGORIES = ("travel", "finance", "gaming", "books", "fitness", "food", "music", "fashion")
TIERS = ("budget", "standard", "premium")
FORMATS = ("image", "video", "text")
#: (placement id, examination: chance the slot is looked at, which visitors reach it)
HERO = "home-hero"
FEED = ("feed-1", "feed-2", "feed-3")
PLACEMENTS = (HERO, *FEED)
CHANNEL = "app"
BASE_LOGIT = -3.75
#: Log-odds shift per feed position, and per format at each position (autoplay only at the top).
POSITION_LOGIT = {HERO: 0.0, "feed-1": 0.0, "feed-2": -0.35, "feed-3": -0.7}
POSITION_FORMAT = {"feed-1": {"video": 0.3}, "feed-2": {}, "feed-3": {"video": -0.8, "text": 0.45}}
#: Slope per 15 years of age above 35, by category.
AGE_SLOPE = {"gaming": -0.45, "music": -0.35, "fashion": -0.15, "travel": 0.3, "finance": 0.35, "books": 0.15}
SEGMENT_FORMAT = {"video": 0.8, "text": -0.4, "image": 0.0}
PRICE_X_INCOME = 0.45
MEMBER_PREMIUM = 0.35
BEHAVIOUR_UNIFORM = 0.2
BEHAVIOUR_TEMPERATURE = 2.5


@dataclass(frozen=True)
class ExternalWorldSpec(WorldSpec):
    """The demo world's spec (`offerflow.synthetic.world.WorldSpec`: the same fields, in the same
    order, and the same `end_date` default: today) with this world's sizes and seed."""
    profiles: int = 30_000
    offers: int = 60
    days: int = 28
    seed: int = 11


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def make_profiles(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Observable attributes plus the hidden `engagement` (daily visit probability)."""
    age = rng.integers(18, 76, size=n)
    region = np.asarray(REGIONS, dtype=object)[rng.choice(len(REGIONS), n, p=[.22, .2, .18, .18, .14, .08])]
    device = np.asarray(DEVICES, dtype=object)[rng.choice(3, n, p=[.6, .28, .12])]
    income = np.round(np.exp(rng.normal(3.65, 0.45, n)), 1)  # thousands a year, median ~38k
    return pd.DataFrame({
        "profile_id": pd.Series(np.arange(1, n + 1)).map("u{:06d}".format).to_numpy(dtype=object),
        "age": age, "region": region, "device": device, "income_k": income,
        "member": rng.random(n) < 0.3,
        "signup_days": np.minimum(rng.exponential(400, n).astype(np.int64), 3000),
        "engagement": rng.beta(2.0, 7.0, n),
    })


def hidden_segment(profiles: pd.DataFrame) -> np.ndarray:
    """Members of the segment no column names: a rule over observable attributes."""
    age = profiles["age"].to_numpy(float)
    region = profiles["region"].to_numpy(dtype=object)
    return (((age >= 25) & (age < 40) & np.isin(region, ["north", "east"]))
            | ((profiles["device"].to_numpy(dtype=object) == "tablet") & (profiles["income_k"].to_numpy(float) > 60)))


def make_offers(m: int, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    """The catalog (m regular offers + one fallback per world) and the region x category affinity."""
    if m < 8:
        raise ValueError(f"the external world needs at least 8 offers, got {m}")
    category = np.asarray(CATEGORIES, dtype=object)[rng.integers(0, len(CATEGORIES), m)]
    tier = np.asarray(TIERS, dtype=object)[rng.choice(3, m, p=[.35, .4, .25])]
    base_price = {"budget": 8.0, "standard": 25.0, "premium": 80.0}
    price = np.round(np.array([base_price[t] for t in tier]) * np.exp(rng.normal(0, 0.4, m)), 2)
    fmt = np.asarray(FORMATS, dtype=object)[rng.choice(3, m, p=[.45, .3, .25])]
    quality = rng.normal(0.0, 0.25, m)
    priority = np.clip(np.round(5 + 2.0 * quality / 0.25 * 0.5 + rng.normal(0, 2.0, m)), 1, 10).astype(int)
    rules = [None] * m
    for j in range(m):
        if category[j] == "finance":
            rules[j] = "profile.age >= 21"
        elif j % 11 == 5:
            rules[j] = 'profile.region != "islands"'
    offers = pd.DataFrame({
        "offer_id": [f"x-{j:03d}" for j in range(1, m + 1)],
        "name": [f"{c.title()} {t} {f} {j + 1}" for j, (c, t, f) in enumerate(zip(category, tier, fmt))],
        "priority": priority, "placements": [list(PLACEMENTS)] * m, "eligibility": rules, "fallback": False,
        "category": category, "tier": tier, "price": price, "format": fmt, "quality": quality,
    })
    fallback = {"offer_id": "x-fallback", "name": "Discover what is new", "priority": 0,
                "placements": list(PLACEMENTS), "eligibility": None, "fallback": True, "category": "books",
                "tier": "budget", "price": 0.0, "format": "text", "quality": 0.0}
    affinity = rng.normal(0.0, 0.4, (len(REGIONS), len(CATEGORIES)))
    return pd.concat([offers, pd.DataFrame([fallback])], ignore_index=True), affinity


def click_logit(profiles: pd.DataFrame, offers: pd.DataFrame, affinity: np.ndarray, placement: str) -> np.ndarray:
    """True log-odds of a click, shape (n_profiles, n_offers). Needs `quality` on the offers."""
    region = pd.Index(REGIONS).get_indexer(profiles["region"])
    category = pd.Index(CATEGORIES).get_indexer(offers["category"])
    fmt = offers["format"].to_numpy(dtype=object)
    z_income = (np.log(profiles["income_k"].to_numpy(float)) - 3.65) / 0.45
    price = offers["price"].to_numpy(float)
    z_price = (np.log(np.maximum(price, 1.0)) - np.log(25.0)) / 1.0
    age = (profiles["age"].to_numpy(float) - 35.0) / 15.0
    age_slope = offers["category"].map(AGE_SLOPE).fillna(0.0).to_numpy(float)
    segment = hidden_segment(profiles).astype(float)
    seg_fmt = pd.Series(fmt).map(SEGMENT_FORMAT).to_numpy(float)
    premium = (offers["tier"].to_numpy(dtype=object) == "premium").astype(float)
    pos_fmt = pd.Series(fmt).map(POSITION_FORMAT.get(placement, {})).fillna(0.0).to_numpy(float)
    return (BASE_LOGIT + POSITION_LOGIT[placement] + offers["quality"].to_numpy(float)[None, :] + pos_fmt[None, :]
            + affinity[region][:, category]
            + PRICE_X_INCOME * z_income[:, None] * z_price[None, :]
            + age[:, None] * age_slope[None, :]
            + segment[:, None] * seg_fmt[None, :]
            + MEMBER_PREMIUM * profiles["member"].to_numpy(float)[:, None] * premium[None, :])


def true_click_probability(profiles: pd.DataFrame, offers: pd.DataFrame, affinity: np.ndarray,
                           placement: str) -> np.ndarray:
    """True click probability per (profile, offer) on a placement, shape (n_profiles, n_offers)."""
    return _sigmoid(click_logit(profiles, offers, affinity, placement))


def behaviour_probabilities(profiles: pd.DataFrame, offers: pd.DataFrame, eligible: np.ndarray) -> np.ndarray:
    """The logging policy per profile, shape (n, m), rows summing to 1 over eligible offers."""
    rich = profiles["income_k"].to_numpy(float) > 50
    mobile = profiles["device"].to_numpy(dtype=object) == "mobile"
    premium = offers["tier"].to_numpy(dtype=object) == "premium"
    video = offers["format"].to_numpy(dtype=object) == "video"
    score = (offers["priority"].to_numpy(float)[None, :] / BEHAVIOUR_TEMPERATURE
             + 1.0 * (rich[:, None] & premium[None, :]) + 0.8 * (mobile[:, None] & video[None, :]))
    weights = np.where(eligible, np.exp(score - score.max()), 0.0)
    softmax = weights / np.maximum(weights.sum(axis=1, keepdims=True), 1e-300)
    uniform = eligible / np.maximum(eligible.sum(axis=1, keepdims=True), 1)
    return BEHAVIOUR_UNIFORM * uniform + (1 - BEHAVIOUR_UNIFORM) * softmax


@dataclass(frozen=True)
class ExternalWorld:
    """A generated world: where its files are, and its truth (hidden columns included)."""

    directory: Path
    profiles: pd.DataFrame  # with `engagement`
    offers: pd.DataFrame    # regular offers with `quality` (fallback excluded)
    affinity: np.ndarray
    event_count: int

    def true_click_probability(self, profiles: pd.DataFrame, placement: str) -> np.ndarray:
        """True click probabilities of `profiles` (ids of this world) against the regular offers."""
        truth = profiles[["profile_id"]].merge(self.profiles, on="profile_id", how="left")
        return true_click_probability(truth, self.offers, self.affinity, placement)


def generate(spec: ExternalWorldSpec, out_dir: Path) -> ExternalWorld:
    """Write the world's profiles, catalog, events and truth under `out_dir`."""
    from offerflow.ranking.tables import eligibility_matrix
    from offerflow.synthetic.world import _EventWriter, write_offers_yaml

    rng = np.random.default_rng(spec.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "truth").mkdir(exist_ok=True)
    profiles = make_profiles(spec.profiles, rng)
    catalog, affinity = make_offers(spec.offers, rng)
    offers = catalog[~catalog["fallback"]].reset_index(drop=True)
    public = profiles.drop(columns=["engagement"])
    eligible = eligibility_matrix(public, offers.drop(columns=["quality"]))
    behaviour = behaviour_probabilities(public, offers, eligible)
    true_p = {p: true_click_probability(profiles, offers, affinity, p) for p in PLACEMENTS}
    writer = _EventWriter(out_dir / "events.parquet")
    first_day = np.datetime64(spec.end_date, "us") - np.timedelta64(spec.days, "D")
    pid = profiles["profile_id"].to_numpy(dtype=object)
    oid = offers["offer_id"].to_numpy(dtype=object)
    day_us = 86_400 * 1_000_000
    try:
        for d in range(spec.days):
            day_start = first_day + np.timedelta64(d, "D")
            visitors = np.flatnonzero(rng.random(len(profiles)) < profiles["engagement"].to_numpy())
            scrollers = visitors[rng.random(len(visitors)) < 0.5]
            ts = day_start + (rng.random(len(profiles)) * (day_us - 900_000_000)).astype("timedelta64[us]")
            parts = []
            for k, placement in enumerate(PLACEMENTS):
                who = visitors if placement == HERO else scrollers
                probs = behaviour[who]
                cdf = np.cumsum(probs, axis=1)
                choice = np.minimum((cdf < rng.random((len(who), 1)) * cdf[:, -1:]).sum(axis=1), len(oid) - 1)
                clicked = rng.random(len(who)) < true_p[placement][who, choice]
                decisions = np.char.add("q", np.arange(writer.decisions, writer.decisions + len(who)).astype(str))
                writer.decisions += len(who)
                when = ts[who] + np.timedelta64(k, "s")
                base = {"profile_id": pid[who], "offer_id": oid[choice],
                        "placement_id": np.full(len(who), placement, dtype=object),
                        "channel": np.full(len(who), CHANNEL, dtype=object), "value": np.full(len(who), np.nan),
                        "propensity": probs[np.arange(len(who)), choice], "decision_id": decisions}
                parts.append({**base, "timestamp": when, "event_type": np.full(len(who), "display", dtype=object)})
                delay = (np.minimum(rng.exponential(40.0, len(who)), 600.0) * 1_000_000).astype("timedelta64[us]")
                click = {key: v[clicked] for key, v in base.items()}
                click.update(timestamp=(when + delay)[clicked],
                             event_type=np.full(int(clicked.sum()), "click", dtype=object))
                parts.append(click)
            writer.write({key: np.concatenate([p[key] for p in parts]) for key in parts[0]})
    finally:
        writer.close()
    public.to_parquet(out_dir / "profiles.parquet", index=False)
    profiles[["profile_id", "engagement"]].assign(segment=hidden_segment(profiles)).to_parquet(
        out_dir / "truth" / "profiles_truth.parquet", index=False)
    offers[["offer_id", "quality"]].to_parquet(out_dir / "truth" / "offers_truth.parquet", index=False)
    np.save(out_dir / "truth" / "affinity.npy", affinity)
    (out_dir / "truth" / "world.json").write_text(json.dumps(
        {**asdict(spec), "end_date": spec.end_date.isoformat(), "event_count": writer.count}, indent=2))
    write_offers_yaml(catalog.drop(columns=["quality"]), out_dir / "offers.yaml")
    (out_dir / "offerflow.yaml").write_text(project_yaml(), encoding="utf-8")
    return ExternalWorld(out_dir, profiles, offers, affinity, writer.count)


def project_yaml() -> str:
    """A project file for the pipeline on this world: personalized on the hero, auto on the feed."""
    feed = "\n".join(f"  - id: {p}\n    channel: {CHANNEL}\n    items: 1\n"
                     f"    ranking: {{method: ai_model, ai_model: feed-auto}}" for p in FEED)
    return f"""\
project: external-world
seed: 7
data:
  events: events.parquet
  profiles: profiles.parquet
  offers: offers.yaml
placements:
  - id: {HERO}
    channel: {CHANNEL}
    items: 1
    ranking: {{method: ai_model, ai_model: hero-personalized}}
{feed}
ai_models:
  - name: hero-personalized
    type: personalized
    placements: [{HERO}]
  - name: feed-auto
    type: auto_optimization
    placements: [{", ".join(FEED)}]
propensity_goals: []
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--profiles", type=int, default=ExternalWorldSpec.profiles)
    parser.add_argument("--offers", type=int, default=ExternalWorldSpec.offers)
    parser.add_argument("--days", type=int, default=ExternalWorldSpec.days)
    parser.add_argument("--seed", type=int, default=ExternalWorldSpec.seed)
    args = parser.parse_args()
    world = generate(ExternalWorldSpec(args.profiles, args.offers, args.days, args.seed), args.out)
    print(json.dumps({"directory": str(world.directory), "events": world.event_count}), file=sys.stdout)


if __name__ == "__main__":
    main()

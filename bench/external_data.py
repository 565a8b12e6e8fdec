"""The Open Bandit Dataset samples bundled in the `obp` package, as frames and as offerflow projects.

The samples (ZOZOTOWN fashion e-commerce, Saito et al. 2020) are 10,000 logged impressions per
behaviour policy (`random`: uniform; `bts`: Bernoulli Thompson sampling) and campaign (`all`: 80
items, `men`: 34, `women`: 46), from 2019-11-24 to 2019-11-30. Each row is ONE impression: the item
shown at one of 3 positions, its click (0/1), the logging policy's probability of that item at that
position (`propensity_score`), 4 hashed user features and user-item affinities. Rows of one page
view are not kept together in the sample and no row carries a user id.

We read the CSVs with pandas (`obp` itself is never imported: its dependencies are not installed
and its loader breaks on pandas 3); `make bench-external` installs the package with `--no-deps`.

    from external_data import obd_available, read_obd, write_obd_project
    config_path = write_obd_project("/tmp/obd", "bts", "all")   # then offerflow validate/run/evaluate

How an OBD row becomes offerflow data (`write_obd_project`):
- one profile per ROW (`profile_id` `r00042` = CSV row 42): the log has no user id, and one
  profile per user-feature combination (205-253 per log) would give one "profile" hundreds of
  impressions that belong to different people. Attributes: `user_feature_0..3` (the hash's first
  8 hex digits, no collisions within a column), `position` (1-3) and `affinity_<item>` (the row's
  user-item affinity columns);
- one decision per row (`decision_id` `d00042`): a `display` event `d00042-<position>` carrying
  `propensity_score` as `propensity`, and a `click` event one second later when the row was clicked;
- placements (`layout`): `per_position` = `obd-pos1`, `obd-pos2`, `obd-pos3` (items 1 each, the row
  goes to the placement of its position) or `single` = `obd` (items 3, every row; the first-item
  off-policy estimates then pool the three positions, as the log's overall click rate does);
- offers: `item-<id>` for every item of `item_context.csv`, every item eligible in every placement,
  priority = rank of `item_feature_0` (an arbitrary but fixed order), `item_feature_1..3` as
  attributes (8 hex digits), plus the fallback offer `obd-fallback` that every placement needs
  (never eligible while an item is).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import yaml

BEHAVIORS = ("random", "bts")
CAMPAIGNS = ("all", "men", "women")
POSITIONS = (1, 2, 3)
MISSING_MESSAGE = ("the Open Bandit Dataset sample is not installed (package 'obp'): run `make bench-external`, "
                   "which installs it with `pip install --no-deps obp lifetimes`")
Layout = Literal["per_position", "single"]


def obd_root() -> Path | None:
    """`<site-packages>/obp/dataset/obd`, or None when the package or its data is absent."""
    spec = importlib.util.find_spec("obp")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0]) / "dataset" / "obd"
    return root if (root / "random" / "all" / "all.csv").exists() else None


def obd_available() -> bool:
    """True when the OBD samples can be read; otherwise print why and how to get them."""
    if obd_root() is None:
        print(MISSING_MESSAGE)
        return False
    return True


def _check(behavior: str, campaign: str) -> Path:
    if behavior not in BEHAVIORS:
        raise ValueError(f"unknown behaviour policy {behavior!r}: one of {', '.join(BEHAVIORS)}")
    if campaign not in CAMPAIGNS:
        raise ValueError(f"unknown campaign {campaign!r}: one of {', '.join(CAMPAIGNS)}")
    root = obd_root()
    if root is None:
        raise FileNotFoundError(MISSING_MESSAGE)
    return root / behavior / campaign


def _short_hash(values: pd.Series) -> pd.Series:
    return values.astype(str).str[:8]


def read_obd(behavior: str, campaign: str) -> pd.DataFrame:
    """One behaviour policy's log of one campaign, one row per impression.

    Columns: `row` (the CSV's row number), `timestamp` (tz-aware UTC), `item_id` (int),
    `position` (1-3), `click` (0/1 int), `propensity_score` (float in (0, 1]), `user_feature_0..3`
    (full hashes), `user-item_affinity_<k>` (float, one per item).
    """
    folder = _check(behavior, campaign)
    log = pd.read_csv(folder / f"{campaign}.csv", index_col=0)
    log.index.name = "row"
    log = log.reset_index()
    log["timestamp"] = pd.to_datetime(log["timestamp"], utc=True)
    log["click"] = log["click"].astype(int)
    return log


def read_obd_items(behavior: str, campaign: str) -> pd.DataFrame:
    """`item_context.csv`: `item_id` and `item_feature_0` (float), `item_feature_1..3` (hashes)."""
    folder = _check(behavior, campaign)
    return pd.read_csv(folder / "item_context.csv", index_col=0).reset_index(drop=True)


def placement_ids(layout: Layout) -> list[str]:
    return [f"obd-pos{k}" for k in POSITIONS] if layout == "per_position" else ["obd"]


def profile_id(rows: pd.Series) -> pd.Series:
    return "r" + rows.astype(int).astype(str).str.zfill(5)


def offer_id(items: pd.Series) -> pd.Series:
    return "item-" + items.astype(int).astype(str).str.zfill(2)


def obd_profiles(log: pd.DataFrame) -> pd.DataFrame:
    """One profile per row: `profile_id`, `user_feature_0..3`, `position`, `affinity_<item>`."""
    users = [c for c in log.columns if c.startswith("user_feature_")]
    affinity = [c for c in log.columns if c.startswith("user-item_affinity_")]
    out = pd.DataFrame({"profile_id": profile_id(log["row"])})
    for column in users:
        out[column] = _short_hash(log[column]).to_numpy()
        if out[column].nunique() != log[column].nunique():
            raise ValueError(f"{column}: 8-digit hash prefixes collide")
    out["position"] = log["position"].astype(int).to_numpy()
    for column in affinity:
        out[f"affinity_{column.rsplit('_', 1)[1]}"] = log[column].astype(float).to_numpy()
    return out


def obd_offers(items: pd.DataFrame, layout: Layout) -> pd.DataFrame:
    """Every item in every placement, priority = rank of item_feature_0, plus one fallback offer."""
    spots = placement_ids(layout)
    offers = pd.DataFrame({"offer_id": offer_id(items["item_id"]),
                           "name": "OBD item " + items["item_id"].astype(int).astype(str),
                           "priority": items["item_feature_0"].rank(method="first").astype(int),
                           "placements": [list(spots) for _ in range(len(items))],
                           "fallback": False})
    for k in (1, 2, 3):
        column = f"item_feature_{k}"
        if column in items:
            offers[column] = _short_hash(items[column]).to_numpy()
    fallback = {"offer_id": "obd-fallback", "name": "OBD fallback (never shown in the log)", "priority": 0,
                "placements": list(spots), "fallback": True}
    return pd.concat([offers, pd.DataFrame([fallback])], ignore_index=True)


def obd_events(log: pd.DataFrame, layout: Layout) -> pd.DataFrame:
    """Display events (with the logging propensity) and click events in the event contract."""
    decision = "d" + log["row"].astype(int).astype(str).str.zfill(5)
    placement = ("obd-pos" + log["position"].astype(int).astype(str)) if layout == "per_position" \
        else pd.Series("obd", index=log.index)
    displays = pd.DataFrame({
        "event_id": decision + "-" + log["position"].astype(int).astype(str),
        "timestamp": log["timestamp"], "profile_id": profile_id(log["row"]), "event_type": "display",
        "offer_id": offer_id(log["item_id"]), "placement_id": placement, "channel": "web",
        "value": np.nan, "propensity": log["propensity_score"].astype(float), "decision_id": decision})
    clicked = log["click"].to_numpy() == 1
    clicks = displays[clicked].assign(event_id=lambda d: d["decision_id"] + "-click", event_type="click",
                                      timestamp=lambda d: d["timestamp"] + pd.Timedelta(seconds=1),
                                      propensity=np.nan)
    events = pd.concat([displays, clicks], ignore_index=True).sort_values(["timestamp", "event_id"])
    events["timestamp"] = events["timestamp"].astype("datetime64[us, UTC]")
    return events.reset_index(drop=True)


def project_yaml(behavior: str, campaign: str, layout: Layout) -> str:
    """The offerflow.yaml of an OBD project: placements served by auto-optimization, a personalized
    model listed as a candidate, evaluation on the last 2 days (the log holds 7)."""
    spots = placement_ids(layout)
    placements = "\n".join(f"  - id: {p}\n    channel: web\n    items: {1 if layout == 'per_position' else 3}\n"
                           f"    ranking: {{method: ai_model, ai_model: obd-auto}}" for p in spots)
    listed = ", ".join(spots)
    return f"""\
# Open Bandit Dataset sample ({behavior} log, campaign {campaign}), written by bench/external_data.py
project: obd-{behavior}-{campaign}
seed: 7
data:
  events: data/events.parquet
  profiles: data/profiles.parquet
  offers: data/offers.yaml
placements:
{placements}
ai_models:
  - name: obd-auto
    type: auto_optimization
    placements: [{listed}]
    training_window_days: 7
  - name: obd-personalized
    type: personalized
    placements: [{listed}]
    training_window_days: 7
evaluation:
  window_days: 2
  reward_model_days: 5
tracking:
  uri: sqlite:///mlflow.db
  artifact_root: mlruns
store:
  path: data/rankings
"""


def write_obd_project(out_dir: str | Path, behavior: str, campaign: str, layout: Layout = "per_position") -> Path:
    """Write `offerflow.yaml` and `data/{events.parquet, profiles.parquet, offers.yaml}` under
    `out_dir` for one OBD log; returns the path of `offerflow.yaml`."""
    if layout not in ("per_position", "single"):
        raise ValueError(f"unknown layout {layout!r}: per_position or single")
    log = read_obd(behavior, campaign)
    items = read_obd_items(behavior, campaign)
    out = Path(out_dir)
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    obd_events(log, layout).to_parquet(data / "events.parquet", index=False)
    obd_profiles(log).to_parquet(data / "profiles.parquet", index=False)
    offers = obd_offers(items, layout)
    records = [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
               for row in offers.to_dict(orient="records")]
    (data / "offers.yaml").write_text(yaml.safe_dump({"offers": records}, sort_keys=False), encoding="utf-8")
    config_path = out / "offerflow.yaml"
    config_path.write_text(project_yaml(behavior, campaign, layout), encoding="utf-8")
    return config_path


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Write an OBD sample as an offerflow project.")
    parser.add_argument("out_dir")
    parser.add_argument("--behavior", choices=BEHAVIORS, default="bts")
    parser.add_argument("--campaign", choices=CAMPAIGNS, default="all")
    parser.add_argument("--layout", choices=("per_position", "single"), default="per_position")
    args = parser.parse_args()
    if not obd_available():
        raise SystemExit(1)
    print(write_obd_project(args.out_dir, args.behavior, args.campaign, args.layout))

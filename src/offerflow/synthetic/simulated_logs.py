"""Decision logs served on a seeded world with known truth, and the true values of strategies on them.

For tests and benchmarks: a served log with a random holdout (`simulate_decision_log`), logged
slates (`simulate_slate_log`), and the TRUE click rates the off-policy estimates are judged against.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from offerflow.core.config import ProjectConfig
from offerflow.core.schema import DECISION_META_SCHEMA, EVENT_SCHEMA
from offerflow.evaluation.logged_displays import load_logged_displays
from offerflow.evaluation.slates import LoggedSlates, SlateEvaluation
from offerflow.evaluation.strategies import evaluation_window, placement_offer_set


def simulate_decision_log(data_dir: Path, out_dir: Path, placements: dict[str, tuple[str, str]], days: int,
                          holdout_share: float, seed: int, model_noise: float = 0.7,
                          end_date: date | None = None) -> dict[str, float]:
    """Write a decision log of `days` days served by an imperfect model with a random holdout, on a
    world from `world.generate_world`, following the decision-metadata contract.

    `placements` maps placement id -> (channel, ai_model name). The "model" ranks by the true click
    logit plus fixed Gaussian noise per (profile, offer) with sd `model_noise`; holdout decisions
    get a uniformly random eligible offer. Clicks are drawn from the truth and written as
    `<out_dir>/clicks-*.parquet`; returns the true lift per placement for the served contexts.
    """
    from offerflow.ingest.catalog import offers_for_placement
    from offerflow.ranking.tables import eligibility_matrix
    from offerflow.synthetic.world import load_truth, true_click_logit

    rng = np.random.default_rng(seed)
    profiles, offers = load_truth(data_dir)
    attributes = profiles.drop(columns=["activity", "daily_purchase_rate"])
    end = end_date or datetime.now(timezone.utc).date()
    (out_dir / "meta").mkdir(parents=True, exist_ok=True)
    truth: dict[str, float] = {}
    metas, displays, clicks = [], [], []
    for placement, (channel, model_name) in placements.items():
        regular = offers_for_placement(offers, placement)
        eligible = eligibility_matrix(attributes, regular.drop(columns=["quality"]))
        logit = true_click_logit(profiles, regular, channel)
        noisy = np.where(eligible, logit + rng.normal(0, model_noise, logit.shape), -np.inf)
        model_pick = noisy.argmax(axis=1)
        p_true = 1.0 / (1.0 + np.exp(-logit))
        model_rate, holdout_rate, served = 0.0, 0.0, 0
        for d in range(days):
            day = pd.Timestamp(end - timedelta(days=days - d), tz="UTC")
            active = profiles["activity"].to_numpy() if channel == "web" else np.full(len(profiles), 0.15)
            who = np.flatnonzero((rng.random(len(profiles)) < active) & eligible.any(axis=1))
            k = len(who)
            holdout = rng.random(k) < holdout_share
            counts = eligible[who].sum(axis=1)
            cdf = np.cumsum(eligible[who], axis=1)
            random_pick = (cdf < (rng.random(k) * counts)[:, None] + 1e-12).sum(axis=1).clip(max=eligible.shape[1] - 1)
            pick = np.where(holdout, random_pick, model_pick[who])
            propensity = np.where(pick == model_pick[who], 1 - holdout_share, 0.0) + holdout_share / counts
            p = p_true[who, pick]
            clicked = rng.random(k) < p
            model_rate += p_true[who, model_pick[who]].sum()
            holdout_rate += (np.where(eligible[who], p_true[who], 0).sum(axis=1) / counts).sum()
            served += k
            ts = (day + pd.to_timedelta((rng.random(k) * 86_000e6).astype(np.int64), unit="us")).as_unit("us")
            ids = np.char.add(f"sim-{placement}-{d}-", np.arange(k).astype(str))
            meta, display, click = _decision_frames(
                ids, ts, profiles["profile_id"].to_numpy(object)[who], regular["offer_id"].to_numpy(object)[pick],
                placement, channel, model_name, holdout, propensity, clicked)
            metas.append(meta)
            displays.append(display)
            clicks.append(click)
        truth[placement] = float(model_rate / holdout_rate - 1)
    tag = f"sim{seed}"
    _write(pd.concat(metas), DECISION_META_SCHEMA, out_dir / "meta" / f"decisions-{tag}.parquet")
    _write(pd.concat(displays), EVENT_SCHEMA, out_dir / f"decisions-{tag}.parquet")
    _write(pd.concat(clicks), EVENT_SCHEMA, out_dir / f"clicks-{tag}.parquet")
    return truth


def _decision_frames(ids: np.ndarray, ts: pd.DatetimeIndex, pid: np.ndarray, oid: np.ndarray, placement: str,
                     channel: str, model_name: str, holdout: np.ndarray, propensity: np.ndarray,
                     clicked: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """One day's simulated first-item decisions as decision metadata, display events and the
    click events of the `clicked` ones (30 s after the display)."""
    meta = pd.DataFrame({"decision_id": ids, "decided_at": ts, "profile_id": pid,
                         "placement_id": placement, "ai_model": model_name, "model_version": "1",
                         "table_version": 1, "ranking_method": "ai_model",
                         "arm": np.where(holdout, "holdout", "model")})
    base = {"profile_id": pid, "offer_id": oid, "placement_id": placement, "channel": channel,
            "value": np.nan, "decision_id": ids}
    displays = pd.DataFrame({"event_id": np.char.add(ids, "-1"), "timestamp": ts, **base,
                             "event_type": "display", "propensity": propensity})
    clicks = pd.DataFrame({"event_id": np.char.add(ids, "-c"), "timestamp": ts + pd.Timedelta(seconds=30),
                           **base, "event_type": "click", "propensity": np.nan}).loc[clicked]
    return meta, displays, clicks


def _write(frame: pd.DataFrame, schema: pa.Schema, path: Path) -> None:
    table = pa.Table.from_pandas(frame[schema.names].reset_index(drop=True), schema=schema, preserve_index=False)
    pq.write_table(table, path)


def true_slate_values(evaluation: SlateEvaluation, logged: LoggedSlates, click_probability: np.ndarray,
                      examination: Sequence[float]) -> dict[str, float]:
    """For a seeded world only: each strategy's TRUE expected clicks per decision on the logged
    contexts, sum_k examination_k sum_a pi_k(a|x) c(x, a), with `click_probability` (n_profiles,
    n_offers) aligned with `logged.profiles`/`logged.offers` (0 for the fallback)."""
    theta = np.asarray(examination, dtype=float)[:logged.items]
    out = {}
    for name, policy in evaluation.policies.items():
        per_profile = (policy * click_probability[:, :, None]).sum(axis=1) @ theta
        out[name] = float(per_profile[logged.profile_row].mean())
    return out


def simulate_slate_log(data_dir, out_dir, placement_id: str, channel: str, items: int, days: int,
                       random_share: float, seed: int, model_noise: float = 0.7, end_date=None) -> None:
    """Write `days` days of logged slates for one placement on a world from `world.generate_world`,
    as events of the data contract in `out_dir` (displays with per-slot propensities, clicks).

    The logger is the decision engine's shape: an imperfect model's top-`items` list (true click
    logit + fixed Gaussian noise per profile and offer, sd `model_noise`) or, for `random_share`
    of decisions, a uniformly random order of the eligible offers; so offer a is in slot k with
    probability random_share / m + (1 - random_share) [a is the model's k-th]. A shown offer is
    clicked with probability `world.true_slot_examination(items)[k]` x its true click probability.
    """
    from offerflow.ingest.catalog import offers_for_placement
    from offerflow.ranking.tables import eligibility_matrix
    from offerflow.synthetic.world import load_truth, true_click_logit, true_slot_examination

    rng = np.random.default_rng(seed)
    profiles, offers = load_truth(Path(data_dir))
    regular = offers_for_placement(offers, placement_id)
    eligible = eligibility_matrix(profiles.drop(columns=["activity", "daily_purchase_rate"]),
                                  regular.drop(columns=["quality"]))
    logit = true_click_logit(profiles, regular, channel)
    model_order = np.argsort(-np.where(eligible, logit + rng.normal(0, model_noise, logit.shape), -np.inf), axis=1,
                             kind="stable")[:, :items]
    p_click = 1.0 / (1.0 + np.exp(-logit))
    examined = true_slot_examination(items)
    end = pd.Timestamp(end_date or datetime.now(timezone.utc).date(), tz="UTC")
    frames = []
    for d in range(days):
        day = end - timedelta(days=days - d)
        active = profiles["activity"].to_numpy() if channel == "web" else np.full(len(profiles), 0.15)
        who = np.flatnonzero((rng.random(len(profiles)) < active) & eligible.any(axis=1))
        elig, m = eligible[who], eligible[who].sum(axis=1)
        explore = rng.random(len(who)) < random_share
        random_order = np.argsort(np.where(elig, -rng.random(elig.shape), np.inf), axis=1)[:, :items]
        slate = np.where(explore[:, None], random_order, model_order[who])
        filled = np.arange(items)[None, :] < np.minimum(m, items)[:, None]
        propensity = random_share / m[:, None] + (1 - random_share) * (slate == model_order[who])
        clicked = rng.random(slate.shape) < examined[None, :] * p_click[who[:, None], slate]
        ids = np.char.add(f"slate-{placement_id}-{d}-", np.arange(len(who)).astype(str))
        ts = day + pd.to_timedelta((rng.random(len(who)) * 86_000e6).astype(np.int64), unit="us")
        row, slot = np.nonzero(filled)
        base = {"profile_id": profiles["profile_id"].to_numpy(object)[who][row],
                "offer_id": regular["offer_id"].to_numpy(object)[slate[row, slot]],
                "placement_id": placement_id, "channel": channel, "value": np.nan, "decision_id": ids[row],
                "timestamp": ts[row].as_unit("us")}
        event_ids = np.char.add(np.char.add(ids[row], f"-{placement_id}-"), (slot + 1).astype(str))
        frames.append(pd.DataFrame({**base, "event_id": event_ids, "event_type": "display",
                                    "propensity": propensity[row, slot]}))
        hit = clicked[row, slot]
        frames.append(pd.DataFrame({**base, "event_id": np.char.add(event_ids, "-click"), "event_type": "click",
                                    "propensity": np.nan}).loc[hit])
    events = pd.concat(frames, ignore_index=True)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(events[EVENT_SCHEMA.names], schema=EVENT_SCHEMA, preserve_index=False),
                   out_dir / f"slates-{placement_id}-{seed}.parquet")


def true_first_item_rates(con: duckdb.DuckDBPyConnection, config: ProjectConfig, world_dir, evaluations,
                          profiles: pd.DataFrame, offers: pd.DataFrame) -> dict[tuple[str, str], float]:
    """For a seeded world only (tests, benchmarks): per (placement, strategy), the TRUE first-item
    click rate on the evaluated displays, from `world.true_click_probability`."""
    from offerflow.synthetic.world import load_truth, true_click_probability

    truth_profiles, truth_offers = load_truth(world_dir)
    out = {}
    for placement_id, evaluation in evaluations.items():
        start, end = evaluation_window(con, [placement_id], config.evaluation.window_days)
        logged = load_logged_displays(con, placement_id, start, end, profiles, placement_offer_set(offers, placement_id))
        p = logged.profiles[["profile_id"]].merge(truth_profiles, on="profile_id")
        o = logged.offers[["offer_id"]].merge(truth_offers, on="offer_id", how="left").fillna({"quality": 0.0})
        q = true_click_probability(p, o, config.placement(placement_id).channel)
        for name, policy in evaluation.policies.items():
            out[(placement_id, name)] = float((policy * q).sum(axis=1)[logged.profile_row].mean())
    return out

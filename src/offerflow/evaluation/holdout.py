"""Online lift: model-driven versus holdout traffic, from the decision metadata.

Each AI model serves a random holdout share of its decisions a uniformly random order of the
eligible offers (arm `holdout` in `<outputs>/decision_log/meta/decisions-*.parquet`, see
`schema.DECISION_META_SCHEMA`). Comparing the click rate of `model` decisions with `holdout`
decisions, per placement and model, per day and overall, measures what the model adds.

The unit is a decision on a placement: it converts when any offer shown in it was clicked (a
click event with the same decision_id, and the same placement or an offer shown there). The lift
interval is the log relative-risk (Katz) interval; the test is the pooled two-proportion z-test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from offerflow.core.features import _sql_str, query_frame
from offerflow.core.schema import DECISION_META_SCHEMA, EVENT_SCHEMA

META_GLOB = "meta/decisions-*.parquet"
DISPLAY_GLOB = "decisions-*.parquet"


class DecisionLogError(ValueError):
    """A decision-metadata dataset that cannot be read as the contract describes."""


def _parquet_sources(paths: Sequence[Path]) -> list[str]:
    out = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            out.extend(str(p) for p in sorted(path.glob("*.parquet")))
        elif path.exists():
            out.append(str(path))
    return out


def check_meta_schema(path: Path) -> None:
    """Every contract column present with a compatible type, else a one-line `DecisionLogError`."""
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise DecisionLogError(f"{path}: not a readable Parquet file ({exc})") from None
    missing = [f.name for f in DECISION_META_SCHEMA if f.name not in schema.names]
    if missing:
        raise DecisionLogError(f"{path}: decision metadata lacks column(s): {', '.join(missing)}")


def decision_outcomes(decision_log_dir: Path, click_sources: Sequence[Path], success_event: str = "click") -> pd.DataFrame:
    """One row per (decision, placement) of the metadata with `items` shown and `converted` 0/1.

    Columns: decision_id, day, profile_id, placement_id, ai_model, model_version, arm, items, converted.
    Clicks are looked up in `click_sources` (event Parquet files or directories) and in the
    Parquet files directly inside the decision log directory.
    """
    meta_files = sorted(Path(decision_log_dir).glob(META_GLOB))
    if not meta_files:
        raise DecisionLogError(f"{decision_log_dir}: no decision metadata ({META_GLOB}); the decision engine "
                               "writes it next to its display log")
    for path in meta_files:
        check_meta_schema(path)
    displays = _parquet_sources([p for p in sorted(Path(decision_log_dir).glob(DISPLAY_GLOB))])
    events = _parquet_sources(click_sources) + _parquet_sources([Path(decision_log_dir)])
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    meta_list = "[" + ", ".join(_sql_str(str(p)) for p in meta_files) + "]"
    shown_sql = (f"SELECT decision_id, placement_id, offer_id FROM read_parquet([{', '.join(map(_sql_str, displays))}],"
                 " union_by_name = true) WHERE event_type = 'display'") if displays else \
        "SELECT NULL::VARCHAR AS decision_id, NULL::VARCHAR AS placement_id, NULL::VARCHAR AS offer_id WHERE false"
    clicks_sql = (f"SELECT DISTINCT decision_id, placement_id, offer_id FROM read_parquet([{', '.join(map(_sql_str, events))}],"
                  f" union_by_name = true) WHERE event_type = {_sql_str(success_event)} AND decision_id IS NOT NULL") \
        if events else shown_sql + " AND false"
    sql = f"""
        WITH m AS (SELECT DISTINCT decision_id, decided_at, profile_id, placement_id, ai_model, model_version, arm
                   FROM read_parquet({meta_list}, union_by_name = true)),
             shown AS ({shown_sql}),
             clicks AS ({clicks_sql}),
             items AS (SELECT decision_id, placement_id, COUNT(*) AS items FROM shown GROUP BY ALL),
             hit AS (SELECT DISTINCT c.decision_id, COALESCE(c.placement_id, s.placement_id) AS placement_id
                     FROM clicks c LEFT JOIN shown s ON c.placement_id IS NULL AND c.decision_id = s.decision_id
                                                    AND c.offer_id = s.offer_id)
        SELECT m.decision_id, CAST(m.decided_at AS DATE) AS day, m.profile_id, m.placement_id, m.ai_model,
               m.model_version, m.arm, COALESCE(items.items, 0) AS items,
               (hit.decision_id IS NOT NULL)::TINYINT AS converted
        FROM m LEFT JOIN items USING (decision_id, placement_id)
               LEFT JOIN hit USING (decision_id, placement_id)
        ORDER BY m.decided_at, m.decision_id"""
    try:
        return query_frame(con, sql)
    except duckdb.Error as exc:
        raise DecisionLogError(f"{decision_log_dir}: cannot read the decision log: {str(exc).splitlines()[0]}") from None


def two_proportion(x1: int, n1: int, x0: int, n0: int, confidence: float = 0.95) -> dict[str, float]:
    """Rates, lift (p1 - p0) / p0 with a log relative-risk interval, and the pooled z-test."""
    z_crit = _normal_quantile(0.5 + confidence / 2)
    p1 = x1 / n1 if n1 else math.nan
    p0 = x0 / n0 if n0 else math.nan
    out = {"rate_model": p1, "rate_holdout": p0, "lift": math.nan, "lift_low": math.nan, "lift_high": math.nan,
           "z": math.nan, "p_value": math.nan}
    if n1 == 0 or n0 == 0:
        return out
    if x0 > 0:
        out["lift"] = p1 / p0 - 1
    if x0 > 0 and x1 > 0:
        se = math.sqrt(1 / x1 - 1 / n1 + 1 / x0 - 1 / n0)
        center = math.log(p1 / p0)
        out["lift_low"], out["lift_high"] = math.exp(center - z_crit * se) - 1, math.exp(center + z_crit * se) - 1
    pooled = (x1 + x0) / (n1 + n0)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n0))
    if se0 > 0:
        out["z"] = (p1 - p0) / se0
        out["p_value"] = math.erfc(abs(out["z"]) / math.sqrt(2))
    return out


def _normal_quantile(q: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(q)


def lift_table(outcomes: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per placement, AI model and day (and `day` = None for overall): displays, clicks and rate of
    model and holdout traffic, the lift with its interval, z and p-value."""
    served = outcomes[outcomes["ai_model"].notna() & outcomes["arm"].isin(["model", "holdout"])]
    if served.empty:
        return pd.DataFrame(columns=["placement_id", "ai_model", "day", "displays_model", "clicks_model",
                                     "displays_holdout", "clicks_holdout", "rate_model", "rate_holdout",
                                     "lift", "lift_low", "lift_high", "z", "p_value"])
    keys = ["placement_id", "ai_model", "day"]
    grouped = served.assign(model=served["arm"] == "model").groupby(keys + ["model"])["converted"].agg(["size", "sum"])
    counts = grouped.unstack("model", fill_value=0)
    counts.columns = [f"{stat}_{'model' if is_model else 'holdout'}" for stat, is_model in counts.columns]
    counts = counts.reindex(columns=["size_model", "sum_model", "size_holdout", "sum_holdout"], fill_value=0)
    overall = counts.groupby(level=["placement_id", "ai_model"]).sum().reset_index().assign(day=None)
    both = pd.concat([counts.reset_index(), overall[counts.reset_index().columns]], ignore_index=True)
    rows = []
    for c in both.itertuples(index=False):
        n1, x1, n0, x0 = int(c.size_model), int(c.sum_model), int(c.size_holdout), int(c.sum_holdout)
        rows.append({"placement_id": c.placement_id, "ai_model": c.ai_model, "day": c.day, "displays_model": n1,
                     "clicks_model": x1, "displays_holdout": n0, "clicks_holdout": x0,
                     **two_proportion(x1, n1, x0, n0, confidence)})
    return pd.DataFrame(rows)


def traffic_allocation(outcomes: pd.DataFrame) -> pd.DataFrame:
    """Decisions per placement, day and arm (model, holdout, non_personalized, fallback)."""
    return (outcomes.groupby(["placement_id", "day", "arm"]).size().rename("decisions").reset_index())


# --- a served world with known truth (tests, benchmarks, the demo until real logs exist) -------

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
    from offerflow.ranking.click_model import eligibility_matrix
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
            pid = profiles["profile_id"].to_numpy(object)[who]
            oid = regular["offer_id"].to_numpy(object)[pick]
            metas.append(pd.DataFrame({"decision_id": ids, "decided_at": ts, "profile_id": pid,
                                       "placement_id": placement, "ai_model": model_name, "model_version": "1",
                                       "table_version": 1, "ranking_method": "ai_model",
                                       "arm": np.where(holdout, "holdout", "model")}))
            base = {"profile_id": pid, "offer_id": oid, "placement_id": placement, "channel": channel,
                    "value": np.nan, "decision_id": ids}
            displays.append(pd.DataFrame({"event_id": np.char.add(ids, "-1"), "timestamp": ts, **base,
                                          "event_type": "display", "propensity": propensity}))
            clicks.append(pd.DataFrame({"event_id": np.char.add(ids, "-c"), "timestamp": ts + pd.Timedelta(seconds=30),
                                        **base, "event_type": "click", "propensity": np.nan}).loc[clicked])
        truth[placement] = float(model_rate / holdout_rate - 1)
    tag = f"sim{seed}"
    _write(pd.concat(metas), DECISION_META_SCHEMA, out_dir / "meta" / f"decisions-{tag}.parquet")
    _write(pd.concat(displays), EVENT_SCHEMA, out_dir / f"decisions-{tag}.parquet")
    _write(pd.concat(clicks), EVENT_SCHEMA, out_dir / f"clicks-{tag}.parquet")
    return truth


def _write(frame: pd.DataFrame, schema: pa.Schema, path: Path) -> None:
    table = pa.Table.from_pandas(frame[schema.names].reset_index(drop=True), schema=schema, preserve_index=False)
    pq.write_table(table, path)

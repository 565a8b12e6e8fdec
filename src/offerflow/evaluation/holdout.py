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
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from offerflow.core.features import _sql_str, query_frame
from offerflow.core.paths import LOGGED_DISPLAYS_GLOB
from offerflow.core.schema import DECISION_META_SCHEMA

META_GLOB = "meta/decisions-*.parquet"
DISPLAY_GLOB = LOGGED_DISPLAYS_GLOB


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

    Columns: decision_id, decided_at, day, profile_id, placement_id, ai_model, model_version, arm,
    items, converted. Clicks are looked up in `click_sources` (event Parquet files or directories)
    and in the Parquet files directly inside the decision log directory.
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
        SELECT m.decision_id, m.decided_at, CAST(m.decided_at AS DATE) AS day, m.profile_id, m.placement_id, m.ai_model,
               m.model_version, m.arm, COALESCE(items.items, 0) AS items,
               (hit.decision_id IS NOT NULL)::TINYINT AS converted
        FROM m LEFT JOIN items USING (decision_id, placement_id)
               LEFT JOIN hit USING (decision_id, placement_id)
        ORDER BY m.decided_at, m.decision_id"""
    try:
        return query_frame(con, sql)
    except duckdb.Error as exc:
        raise DecisionLogError(f"{decision_log_dir}: cannot read the decision log: {str(exc).splitlines()[0]}") from None


def events_end(sources: Sequence[Path], decision_log_dir: Path | None = None) -> pd.Timestamp | None:
    """The time of the last event in `sources` (event Parquet files or directories) and of the last
    outcome event (not a display) filed in the decision-log directory; None when there is none: a
    decision made after it cannot have its outcome in these events yet. The logged displays that
    validation copied into `sources` (`data.decision_log_displays`) are not events of the export:
    they do not count."""
    parts = []
    logged = _parquet_sources([decision_log_dir] if decision_log_dir is not None else [])
    logged_sql = f"read_parquet([{', '.join(map(_sql_str, logged))}], union_by_name = true)"
    if files := _parquet_sources(sources):
        not_logged = (f" WHERE event_type <> 'display' OR event_id NOT IN (SELECT event_id FROM {logged_sql}"
                      " WHERE event_id IS NOT NULL)") if logged else ""
        parts.append(f"SELECT max(timestamp) AS t FROM read_parquet([{', '.join(map(_sql_str, files))}],"
                     f" union_by_name = true){not_logged}")
    if logged:
        parts.append(f"SELECT max(timestamp) AS t FROM {logged_sql} WHERE event_type <> 'display'")
    if not parts:
        return None
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    try:
        last = con.sql(f"SELECT max(t) FROM ({' UNION ALL '.join(parts)})").fetchall()[0][0]
    except duckdb.Error as exc:
        raise DecisionLogError(f"cannot read the events' times: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()
    return None if last is None else pd.Timestamp(last).tz_convert("UTC")


def observed_only(outcomes: pd.DataFrame, end: pd.Timestamp | None) -> tuple[pd.DataFrame, str | None]:
    """The decisions made up to `end` (the events' last time; None: all), and a note on the others:
    counted, they would read as decisions nobody clicked."""
    if end is None or outcomes.empty:
        return outcomes, None
    decided = pd.to_datetime(outcomes["decided_at"], utc=True)
    late = decided > end
    if not late.any():
        return outcomes, None
    return outcomes[~late], (f"holdout report: {int(late.sum()):,} of {len(outcomes):,} decisions were made after the"
                             f" events end ({end:%Y-%m-%d %H:%M} UTC) and are left out: their clicks are not in"
                             " the events yet")


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



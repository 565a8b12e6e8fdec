"""The logged data of off-policy evaluation: one placement's first-item displays in the evaluation
window, with their logging propensity and reward (a click on that offer in the same decision),
read from the events view, and the placement's eligibility as the decision engine applies it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import duckdb
import numpy as np
import pandas as pd

from offerflow.core.features import EVENTS_VIEW, query_frame
from offerflow.core.schema import PROFILE_ID
from offerflow.ranking.tables import eligibility_matrix


@dataclass
class LoggedDisplays:
    """The first-item displays of one placement in the evaluation window, as columns.

    `profiles` holds each profile once; `profile_row[i]` points display i at its profile and
    `action[i]` at its offer in `offers` (-1 if the offer is not in the placement's catalog).
    """

    placement_id: str
    start: datetime
    end: datetime
    profiles: pd.DataFrame
    offers: pd.DataFrame
    eligible: np.ndarray        # (n_profiles, n_offers) bool, current attributes
    profile_row: np.ndarray     # (n,) int
    action: np.ndarray          # (n,) int
    propensity: np.ndarray      # (n,) float, NaN if missing
    reward: np.ndarray          # (n,) float 0/1
    day: np.ndarray             # (n,) datetime64[D]
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> displays not usable

    @property
    def n(self) -> int:
        return len(self.reward)


def load_logged_displays(con: duckdb.DuckDBPyConnection, placement_id: str, start: datetime, end: datetime,
                         profiles: pd.DataFrame, offers: pd.DataFrame,
                         success_event: str = "click") -> LoggedDisplays:
    """First-item displays of `placement_id` in [start, end) with their reward, from the events view.

    `offers` are the placement's offers (fallback included). Displays without a usable propensity,
    of unknown profiles or of offers outside the catalog are dropped and counted in `dropped`.
    """
    sql = f"""
        WITH d AS (
            SELECT profile_id, offer_id, propensity, timestamp, COALESCE(decision_id, event_id) AS decision_key,
                   decision_id,
                   row_number() OVER (PARTITION BY COALESCE(decision_id, event_id)
                                      ORDER BY (propensity IS NULL),
                                               TRY_CAST(regexp_extract(event_id, '-([0-9]+)$', 1) AS INTEGER)
                                               NULLS LAST, event_id) AS slot
            FROM {EVENTS_VIEW}
            WHERE event_type = 'display' AND placement_id = ? AND timestamp >= ? AND timestamp < ?),
        s AS (SELECT DISTINCT decision_id, offer_id FROM {EVENTS_VIEW}
              WHERE event_type = ? AND decision_id IS NOT NULL)
        SELECT d.profile_id, d.offer_id, d.propensity, CAST(d.timestamp AS DATE) AS day,
               (s.decision_id IS NOT NULL)::DOUBLE AS reward
        FROM d LEFT JOIN s ON d.decision_id = s.decision_id AND d.offer_id = s.offer_id
        WHERE d.slot = 1
        ORDER BY d.timestamp, d.profile_id"""
    log = query_frame(con, sql, [placement_id, start, end, success_event])
    dropped: dict[str, int] = {}
    p = log["propensity"].to_numpy(float)
    bad_p = ~np.isfinite(p) | (p <= 0) | (p > 1)
    if bad_p.any():
        dropped["propensity missing or outside (0, 1]"] = int(bad_p.sum())
    known_offer = log["offer_id"].isin(offers["offer_id"]).to_numpy()
    if (~known_offer & ~bad_p).any():
        dropped["offer not in the placement's catalog"] = int((~known_offer & ~bad_p).sum())
    known_profile = log[PROFILE_ID].isin(profiles[PROFILE_ID]).to_numpy()
    if (~known_profile & known_offer & ~bad_p).any():
        dropped["unknown profile"] = int((~known_profile & known_offer & ~bad_p).sum())
    log = log[~bad_p & known_offer & known_profile].reset_index(drop=True)
    ids = pd.Index(log[PROFILE_ID].unique())
    window_profiles = profiles.set_index(PROFILE_ID).loc[ids].reset_index()
    offers = offers.reset_index(drop=True)
    return LoggedDisplays(
        placement_id=placement_id, start=start, end=end, profiles=window_profiles, offers=offers,
        eligible=placement_eligibility(window_profiles, offers),
        profile_row=ids.get_indexer(log[PROFILE_ID]).astype(np.int64),
        action=pd.Index(offers["offer_id"]).get_indexer(log["offer_id"]).astype(np.int64),
        propensity=log["propensity"].to_numpy(float), reward=log["reward"].to_numpy(float),
        day=pd.to_datetime(log["day"]).to_numpy().astype("datetime64[D]"), dropped=dropped)


def placement_eligibility(profiles: pd.DataFrame, offers: pd.DataFrame) -> np.ndarray:
    """Eligibility as the decision engine applies it: a fallback offer only when no regular one is."""
    if len(profiles) == 0:
        return np.zeros((0, len(offers)), dtype=bool)
    eligible = eligibility_matrix(profiles, offers)
    if "fallback" in offers:
        fallback = offers["fallback"].fillna(False).to_numpy(bool)
        if fallback.any():
            none_regular = ~eligible[:, ~fallback].any(axis=1)
            eligible[:, fallback] = eligible[:, fallback] & none_regular[:, None]
    return eligible

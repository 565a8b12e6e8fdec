"""Cap windows and what the cap stores report: when a rule's counting window starts and ends
(00:00 UTC; weeks start on Monday), and the rows of `caps show` / `GET /admin/caps`, the same for the
embedded counters (`capping.CapCounters`) and the Redis store (`cap_store.RedisCapStore`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from offerflow.rules.capping import CapRule, Family

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def window_start(reset: str, now: datetime) -> datetime:
    """Start (UTC) of the counting window that contains `now`."""
    now = now.astimezone(timezone.utc)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if reset == "daily":
        return day
    if reset == "weekly":
        return day - timedelta(days=day.weekday())
    if reset == "monthly":
        return day.replace(day=1)
    return EPOCH


def next_window_start(reset: str, now: datetime) -> datetime:
    """When the window containing `now` ends (far future for `never`)."""
    start = window_start(reset, now)
    if reset == "daily":
        return start + timedelta(days=1)
    if reset == "weekly":
        return start + timedelta(days=7)
    if reset == "monthly":
        return (start + timedelta(days=32)).replace(day=1)
    return datetime.max.replace(tzinfo=timezone.utc)



def cap_state_rows(caps: Mapping[str, Sequence[CapRule]],
                   counts_of: Callable[[Family, str], Mapping[tuple[str, str, str], int]],
                   now: datetime, profile_id: str | None = None) -> list[dict[str, Any]]:
    """What `caps show` and `GET /admin/caps` print: one row per offer and rule, and for a rule
    counted per placement one per placement with counts (`placement_id`; null: every placement, or
    none counted yet). `count` is the largest counter of the row (the busiest profile's for a
    per-profile rule, this profile's with `profile_id`), `at_limit` how many counters reached the
    limit (profiles, for a per-profile rule), `capped` whether `count` did. `counts_of(family,
    offer_id)` gives the family's counters ((offer, placement, profile) -> n), the offer's at least."""
    rows = []
    for offer_id, rules in sorted(caps.items()):
        for i, rule in enumerate(rules):
            groups: dict[str | None, list[int]] = {}
            for (offer, placement, profile), n in counts_of(rule.family, offer_id).items():
                if offer == offer_id and (profile_id is None or rule.scope == "total" or profile == profile_id):
                    groups.setdefault(placement if rule.per_placement else None, []).append(n)
            for placement, counts in sorted(groups.items()) or [(None, [])]:
                top = max(counts, default=0)
                rows.append({"offer_id": offer_id, "rule": i, "placement_id": placement, "cap": rule.describe(),
                             "event": rule.event, "scope": rule.scope, "reset": rule.reset,
                             "per_placement": rule.per_placement, "window_start": window_start(rule.reset, now).isoformat(),
                             "resets_at": (None if rule.reset == "never"
                                           else next_window_start(rule.reset, now).isoformat()),
                             "limit": rule.limit, "count": top, "at_limit": sum(n >= rule.limit for n in counts),
                             "capped": top >= rule.limit})
    return rows

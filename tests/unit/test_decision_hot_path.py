"""What the decision path does per request in a cheaper way than the obvious one gives the obvious
one's result: the decision time's text, formatted once a second, still ticks with the clock."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from offerflow.decisioning import decision_types
from offerflow.decisioning.decision_types import iso_text


def test_the_decision_time_text_is_isoformat_and_ticks_with_every_second():
    base = datetime(2026, 12, 31, 23, 59, 59, 999_998, tzinfo=timezone.utc)
    times = [base + timedelta(microseconds=k) for k in range(5)]  # across a second
    times += [base + timedelta(seconds=1, microseconds=2), base + timedelta(seconds=2, microseconds=2),  # a new year
              base.replace(microsecond=0), base,  # back in time, no microseconds
              datetime(2028, 2, 29, 12, 0, 0, 1, tzinfo=timezone.utc), datetime(2028, 2, 29, 12, 0, 0, tzinfo=timezone.utc),
              datetime(2026, 6, 1, 12, 0, 0, 5, tzinfo=ZoneInfo("Europe/Paris")),  # another zone: isoformat itself
              datetime(2026, 6, 1, 12, 0, 0, 5, tzinfo=timezone(timedelta(hours=-5))),
              datetime(2026, 6, 1, 12, 0, 0, 5)]  # naive
    texts = [iso_text(t) for t in times]
    assert texts == [t.isoformat() for t in times]
    assert texts[1] == "2026-12-31T23:59:59.999999+00:00" and texts[2] == "2027-01-01T00:00:00+00:00"
    assert texts[3] == "2027-01-01T00:00:00.000001+00:00" and texts[7] == "2026-12-31T23:59:59+00:00"
    # the clock's own times, one per call, across at least one second boundary
    decision_types._second = None
    now = datetime.now(timezone.utc)
    later = [now + timedelta(milliseconds=250 * k, microseconds=k) for k in range(12)]
    assert [iso_text(t) for t in later] == [t.isoformat() for t in later]

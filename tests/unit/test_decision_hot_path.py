"""What the decision path does per request in a cheaper way than the obvious one gives the obvious
one's result: the decision time's text, formatted once a second, still ticks with the clock."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from offerflow.decisioning import decision_types
from offerflow.decisioning.decision_types import iso_text
from tests.unit.test_explanations import project  # noqa: F401 (a fixture: a small published project)


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


def test_the_result_types_init_as_their_dataclass_fields_say_and_stay_frozen():
    """`DecisionItem`, `PlacementDecision` and `Decision` have an `__init__` of their own: its
    parameters are the fields, in order, with the fields' defaults; instances compare, replace and
    refuse assignment as frozen dataclasses do."""
    import dataclasses
    import inspect

    import pytest

    from offerflow.decisioning.decision_types import Decision, DecisionItem, PlacementDecision

    for cls in (DecisionItem, PlacementDecision, Decision):
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
        fields = dataclasses.fields(cls)
        assert [p.name for p in params] == [f.name for f in fields], cls
        for p, f in zip(params, fields):
            default = f.default if f.default is not dataclasses.MISSING else (
                None if f.default_factory is not dataclasses.MISSING else inspect.Parameter.empty)
            assert p.default == default, (cls, f.name)
    item = DecisionItem("web", "o-1", 1, 0.5)
    assert (item.fallback, item.propensity) == (False, None) and item == DecisionItem("web", "o-1", 1, 0.5, False)
    placement = PlacementDecision("web", "web", [item], "ai_model", "m", "2", 3, "ranking_table")
    assert placement.arm == "non_personalized" and placement.explanation is None
    decision = Decision("d-1", "p1", "2026-12-07T00:00:00+00:00")
    assert decision.placements == [] and Decision("d-2", "p1", "t").placements is not decision.placements
    assert dataclasses.replace(placement, explanation={"x": 1}).explanation == {"x": 1}
    assert dataclasses.replace(item, rank=2) == DecisionItem("web", "o-1", 2, 0.5)
    for obj, name in ((item, "rank"), (placement, "source"), (decision, "placements")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, name, None)
    assert hash(item) == hash(DecisionItem("web", "o-1", 1, 0.5))
    assert dataclasses.asdict(decision) == {"decision_id": "d-1", "profile_id": "p1",
                                            "decided_at": "2026-12-07T00:00:00+00:00", "placements": []}


def test_a_profile_s_ranked_offers_are_its_table_rows_before_and_after_a_new_version(project):  # noqa: F811
    """The engine reads a known profile's rows at its index into the table (`table_rows`), made
    again for a new version; unknown profiles are looked up: always what `lookup` gives."""
    import pyarrow as pa

    from offerflow.core.store import RankingStore
    from tests.unit.test_explanations import engine_of

    engine = engine_of(project)
    profiles = ["p1", "p2", "p3", "p4", "p5", "nobody", ""]
    snap = engine.snapshot("web-banner")
    rows = engine.table_rows(snap)
    assert rows is not None and len(rows) == engine.n_profiles and engine.table_rows(snap) is rows
    for pid in profiles:
        assert [a.tolist() for a in engine.ranked_offers(snap, pid)] == [a.tolist() for a in snap.lookup(pid)]
    store = RankingStore(project / "rankings")
    table = store.read_table("web-banner")
    keep = pa.array([pid != "p2" for pid in table.column("profile_id").to_pylist()])
    store.publish("web-banner", table.filter(keep), {**store.read_metadata("web-banner"), "kind": "ranking"})
    try:
        new = engine.snapshot("web-banner")
        assert new is not snap and engine.table_rows(new) is not rows
        assert engine.ranked_offers(new, "p2")[0].tolist() == [] and len(engine.ranked_offers(snap, "p2")[0])
        for pid in profiles:
            assert [a.tolist() for a in engine.ranked_offers(new, pid)] == [a.tolist() for a in new.lookup(pid)]
    finally:
        store.rollback("web-banner")


def test_a_plain_request_is_read_without_pydantic_as_the_model_reads_it():
    """`plain_request` passes only bodies `DecisionRequest` accepts unchanged, with the same values;
    anything else (wrong JSON types, bounds, unknown fields, non-ASCII or long ids) goes to the model."""
    import itertools

    import pytest
    from pydantic import ValidationError

    from offerflow.decisioning.http_models import DecisionRequest, plain_request

    ids = ["p1", "", "x" * 256, "x" * 257, "é", "\ud800", 7, None, "a b"]
    placements = [["web"], [], ["web", "email"], ["w"] * 10, ["w"] * 11, "web", [3], ["", "web"], None]
    extras = [{}, {"items": 2}, {"items": 0}, {"items": 30}, {"items": 31}, {"items": True}, {"items": 2.0},
              {"items": "2"}, {"items": None}, {"allow_duplicates": True}, {"allow_duplicates": 1},
              {"allow_duplicates": None}, {"explain": False}, {"explain": "yes"}, {"other": 1},
              {"items": 1, "allow_duplicates": False, "explain": True}]
    plain = 0
    for profile_id, chosen, extra in itertools.product(ids, placements, extras):
        data = {**({"profile_id": profile_id} if profile_id is not None else {}),
                **({"placements": chosen} if chosen is not None else {}), **extra}
        fields = plain_request(data)
        if fields is None:
            continue
        plain += 1
        request = DecisionRequest.model_validate(data)  # never raises for a plain body
        assert fields == (request.profile_id, request.placements, request.items, request.allow_duplicates,
                          request.explain), data
    assert plain >= 30  # the common bodies do take the plain path
    assert plain_request({"profile_id": "p1", "placements": ["web"]}) == ("p1", ["web"], None, False, False)
    for data in ([], "x", {"profile_id": "p1", "placements": ["web"], "items": True}):
        assert plain_request(data) is None
    with pytest.raises(ValidationError):
        DecisionRequest.model_validate({"profile_id": "p1", "placements": ["web"], "items": True})


def test_the_answer_s_json_is_to_dict_s_with_and_without_explanations(project):  # noqa: F811
    """The service writes `orjson.dumps(decision)`: the same bytes as its `to_dict()`."""
    import orjson

    from tests.unit.test_explanations import NOW, engine_of

    engine = engine_of(project)
    for profile in ("p1", "p2", "p3", "p4", "unknown"):
        for explain in (False, True):
            decision = engine.decide(profile, ["web-banner", "web-sidebar", "email-hero"], now=NOW, explain=explain)
            assert orjson.dumps(decision) == orjson.dumps(decision.to_dict())
            assert (b'"explanation"' in orjson.dumps(decision)) == explain

"""The decision service's Prometheus metrics on hand-made decisions (decisioning/metrics.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from prometheus_client.parser import text_string_to_metric_families

from offerflow.decisioning.decision_types import Decision, DecisionItem, PlacementDecision
from offerflow.decisioning.metrics import ServiceMetrics


def _decision(placement: str, source: str, version: int | None, fallback: bool = False) -> Decision:
    item = DecisionItem(placement, "offer-1", 1, 0.5, fallback=fallback)
    arm = "fallback" if fallback else "model"
    return Decision("d", "p", "2026-12-06T00:00:00+00:00",
                    [PlacementDecision(placement, "web", [item], "ai", None, None, version, source, arm)])


def _values(metrics: ServiceMetrics) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(metrics.render().decode()) for s in family.samples}


def test_counts_by_placement_and_source_fallbacks_caps_and_the_version_served():
    metrics, caps = ServiceMetrics(), SimpleNamespace(hits=0)
    metrics.observe(_decision("web", "ranking_table", 3), 0.0002, caps)
    caps.hits = 2
    metrics.observe(_decision("web", "ranking_table", 4), 0.0003, caps)
    metrics.observe(_decision("email", "fallback", None, fallback=True), 0.02, caps)
    values = _values(metrics)
    assert values[("offerflow_decisions_total", (("placement", "web"), ("source", "ranking_table")))] == 2
    assert values[("offerflow_decisions_total", (("placement", "email"), ("source", "fallback")))] == 1
    assert values[("offerflow_fallbacks_total", (("placement", "email"),))] == 1
    assert ("offerflow_fallbacks_total", (("placement", "web"),)) not in values
    assert values[("offerflow_cap_hits_total", ())] == 2
    assert values[("offerflow_table_version", (("placement", "web"),))] == 4
    assert values[("offerflow_decision_latency_seconds_bucket", (("le", "0.00025"),))] == 1
    assert values[("offerflow_decision_latency_seconds_count", ())] == 3
    # a reload brings new cap counters starting from zero: their hits add on
    metrics.observe(_decision("web", "ranking_table", 4), 0.0001, SimpleNamespace(hits=1))
    assert _values(metrics)[("offerflow_cap_hits_total", ())] == 3


def test_two_services_do_not_share_counters():
    first, second = ServiceMetrics(), ServiceMetrics()
    first.observe(_decision("web", "ranking_table", 1), 0.001)
    assert ("offerflow_decisions_total", (("placement", "web"), ("source", "ranking_table"))) not in _values(second)


def test_counts_added_in_bulk_equal_one_update_per_decision_and_reach_the_metrics_by_flush(monkeypatch):
    """`observe` counts in plain Python; `flush` (every render, every FLUSH_S while decisions come
    in, every 2 s from the service's writer thread) gives the metrics exactly what one
    prometheus-client update per decision gave, latency buckets' edges included."""
    import random

    from prometheus_client import CollectorRegistry, Counter, Histogram

    from offerflow.decisioning.metrics import LATENCY_BUCKETS

    reference = CollectorRegistry()
    latency = Histogram("offerflow_decision_latency_seconds", "x", buckets=LATENCY_BUCKETS, registry=reference)
    decisions = Counter("offerflow_decisions", "x", ["placement", "source"], registry=reference)
    fallbacks = Counter("offerflow_fallbacks", "x", ["placement"], registry=reference)
    metrics, caps, rng = ServiceMetrics(), SimpleNamespace(hits=0), random.Random(3)
    seconds = [*LATENCY_BUCKETS, 0.0, 2.0, *(rng.uniform(0, 0.3) for _ in range(500))]
    for k, s in enumerate(seconds):
        source = ("ranking_table", "fallback", "thompson_sampling")[k % 3]
        placement = ("web", "email")[k % 2]
        metrics.observe(_decision(placement, source, 1, fallback=source == "fallback"), s, caps)
        latency.observe(s)
        decisions.labels(placement, source).inc()
        if source == "fallback":
            fallbacks.labels(placement).inc()
    assert metrics.latency._sum.get() == 0 and metrics.decisions.labels("web", "ranking_table")._value.get() == 0
    got = _values(metrics)  # render flushes
    want = {(s.name, tuple(sorted(s.labels.items()))): s.value for family in reference.collect()
            for s in family.samples if not s.name.endswith("_created")}
    assert {k: v for k, v in got.items() if k in want} == pytest.approx(want)
    assert len(want) == 3 * 2 + len(LATENCY_BUCKETS) + 1 + 2 + 2  # decisions, buckets and +Inf, sum and count, fallbacks
    # without a render: at most FLUSH_S after the first counted decision
    clock = [1000.0]
    monkeypatch.setattr("offerflow.decisioning.metrics.time.monotonic", lambda: clock[0])
    metrics.flush()
    metrics.observe(_decision("web", "ranking_table", 1), 0.001, caps)
    assert metrics.decisions.labels("web", "ranking_table")._value.get() == want[
        ("offerflow_decisions_total", (("placement", "web"), ("source", "ranking_table")))]
    clock[0] += ServiceMetrics.FLUSH_S
    metrics.observe(_decision("web", "ranking_table", 1), 0.001, caps)
    assert metrics.decisions.labels("web", "ranking_table")._value.get() == want[
        ("offerflow_decisions_total", (("placement", "web"), ("source", "ranking_table")))] + 2

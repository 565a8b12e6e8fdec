"""The decision service's Prometheus metrics on hand-made decisions (decisioning/metrics.py)."""

from __future__ import annotations

from types import SimpleNamespace

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

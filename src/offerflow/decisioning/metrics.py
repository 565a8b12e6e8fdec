"""Prometheus metrics of the decision service, served at ``GET /metrics`` (prometheus-client).

- `offerflow_decisions_total{placement, source}`: placement decisions, by how they were made
  (`ranking_table`, `thompson_sampling`, `exploration`, `random_holdout`, `fallback`, ...);
- `offerflow_fallbacks_total{placement}`: placement decisions answered with the fallback offer;
- `offerflow_cap_hits_total`: offers skipped because one of their caps was reached;
- `offerflow_decision_latency_seconds`: time to decide a request (histogram);
- `offerflow_table_version{placement}`: the ranking table version last served.

The hot path pays a few dictionary look-ups and lock-protected increments per decision (labelled
children are resolved once and kept). With several worker processes, set
`PROMETHEUS_MULTIPROC_DIR` to an empty directory before they start: every process then writes its
values there and `/metrics` adds them up (prometheus-client's multiprocess mode,
docs/operations.md).
"""

from __future__ import annotations

import os
from typing import Any

from offerflow.decisioning.decision_types import Decision

#: Latency buckets in seconds: a decision takes ~0.1 ms; the tail is what an operator watches.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServiceMetrics:
    """The metrics of one decision service, in a registry of its own (so that apps built in one
    process, e.g. by tests, do not share counters)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.decisions = Counter("offerflow_decisions", "Placement decisions served, by placement and source",
                                 ["placement", "source"], registry=self.registry)
        self.fallbacks = Counter("offerflow_fallbacks", "Placement decisions answered with the fallback offer",
                                 ["placement"], registry=self.registry)
        self.cap_hits = Counter("offerflow_cap_hits", "Offers skipped because one of their caps was reached",
                                registry=self.registry)
        self.latency = Histogram("offerflow_decision_latency_seconds", "Time to decide one request",
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.table_version = Gauge("offerflow_table_version", "Ranking table version last served",
                                   ["placement"], registry=self.registry, multiprocess_mode="max")
        self._children: dict[tuple[str, str], Any] = {}
        self._versions: dict[str, int | None] = {}
        self._cap_hits_seen: dict[int, int] = {}

    def observe(self, decision: Decision, seconds: float, caps: Any = None) -> None:
        """Count one answered request: its placements, its latency, and the cap hits of `caps`
        (the engine's `CapCounters`) since the last call."""
        self.latency.observe(seconds)
        for placement in decision.placements:
            key = (placement.placement_id, placement.source)
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self.decisions.labels(*key)
            child.inc()
            if placement.arm == "fallback" or placement.source == "fallback":
                self.fallbacks.labels(placement.placement_id).inc()
            if self._versions.get(placement.placement_id, -1) != placement.table_version:
                self._versions[placement.placement_id] = placement.table_version
                self.table_version.labels(placement.placement_id).set(placement.table_version or 0)
        if caps is not None:
            hits, seen = caps.hits, self._cap_hits_seen.get(id(caps), 0)
            if hits > seen:  # a reload brings new counters, starting again from 0
                self.cap_hits.inc(hits - seen)
                self._cap_hits_seen = {id(caps): hits}

    def render(self) -> bytes:
        """The text exposition format: this process's registry, or every process's values in
        multiprocess mode (`PROMETHEUS_MULTIPROC_DIR` set)."""
        from prometheus_client import CollectorRegistry, generate_latest

        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


def add_metrics_route(app: Any, metrics: ServiceMetrics) -> None:
    """``GET /metrics`` on the FastAPI `app`."""
    from fastapi import Response

    # No return annotation: FastAPI would resolve it as a response model (and `Response` is local here).
    @app.get("/metrics", summary="Prometheus metrics of this service", response_class=Response, response_model=None)
    def prometheus_metrics():  # noqa: ANN202
        return Response(metrics.render(), media_type=CONTENT_TYPE)

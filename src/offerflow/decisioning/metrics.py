"""Prometheus metrics of the decision service, served at ``GET /metrics`` (prometheus-client).

- `offerflow_decisions_total{placement, source}`: placement decisions, by how they were made
  (`ranking_table`, `thompson_sampling`, `exploration`, `random_holdout`, `fallback`, ...);
- `offerflow_fallbacks_total{placement}`: placement decisions answered with the fallback offer;
- `offerflow_cap_hits_total`: offers skipped because one of their caps was reached;
- `offerflow_decision_latency_seconds`: time to decide a request (histogram);
- `offerflow_table_version{placement}`: the ranking table version last served.

The hot path counts in plain Python under one lock (a latency bucket found by bisection, a dict
increment per placement); `flush` adds the counts to the prometheus-client metrics, O(labels), at
every `render`, at most every `FLUSH_S` from `observe`, and every 2 s from the service's writer
thread: a metric update per decision cost ~3 us, ~6% of a decision. With several worker processes, set
`PROMETHEUS_MULTIPROC_DIR` to an empty directory before they start: every process then writes its
values there and `/metrics` adds them up (prometheus-client's multiprocess mode,
docs/operations.md).
"""

from __future__ import annotations

import os
import threading
import time
from bisect import bisect_left
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
        self._versions: dict[str, int | None] = {}
        self._cap_hits_seen: dict[int, int] = {}
        # counted since the last `flush`: latency observations per bucket (the last: +Inf) and
        # their sum, decisions per (placement, source), fallbacks per placement, cap hits
        self._lock = threading.Lock()
        self._bounds = LATENCY_BUCKETS
        self._latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self._latency_sum = 0.0
        self._counts: dict[tuple[str, str], int] = {}
        self._fallback_counts: dict[str, int] = {}
        self._hits = 0
        self._next_flush = time.monotonic() + self.FLUSH_S
        if not (hasattr(self.latency, "_buckets") and hasattr(self.latency, "_sum")):  # what `flush` adds to
            raise RuntimeError("prometheus-client's Histogram has no _buckets/_sum: update ServiceMetrics.flush")

    #: Longest that counts wait in this process for `flush` while decisions come in.
    FLUSH_S = 1.0

    def observe(self, decision: Decision, seconds: float, caps: Any = None) -> None:
        """Count one answered request: its placements, its latency, and the cap hits of `caps`
        (the engine's `CapCounters`) since the last call."""
        with self._lock:
            self._latency_counts[bisect_left(self._bounds, seconds)] += 1  # the first bucket with seconds <= le
            self._latency_sum += seconds
            counts = self._counts
            for placement in decision.placements:
                key = (placement.placement_id, placement.source)
                counts[key] = counts.get(key, 0) + 1
                if placement.arm == "fallback" or placement.source == "fallback":
                    self._fallback_counts[placement.placement_id] = self._fallback_counts.get(placement.placement_id,
                                                                                              0) + 1
                if self._versions.get(placement.placement_id, -1) != placement.table_version:
                    self._versions[placement.placement_id] = placement.table_version
                    self.table_version.labels(placement.placement_id).set(placement.table_version or 0)
            if caps is not None:
                hits, seen = caps.hits, self._cap_hits_seen.get(id(caps), 0)
                if hits > seen:  # a reload brings new counters, starting again from 0
                    self._hits += hits - seen
                    self._cap_hits_seen = {id(caps): hits}
        if time.monotonic() >= self._next_flush:
            self.flush()

    def flush(self) -> None:
        """Add what `observe` counted since the last call to the prometheus-client metrics (in
        multiprocess mode, to this process's files). Thread-safe; O(labels), not O(decisions)."""
        with self._lock:
            latency, total, counts, fallbacks, hits = (self._latency_counts, self._latency_sum, self._counts,
                                                      self._fallback_counts, self._hits)
            self._latency_counts, self._latency_sum = [0] * len(latency), 0.0
            self._counts, self._fallback_counts, self._hits = {}, {}, 0
            self._next_flush = time.monotonic() + self.FLUSH_S
        if any(latency):
            self.latency._sum.inc(total)  # what Histogram.observe does per observation, once per bucket
            for bucket, n in zip(self.latency._buckets, latency):
                if n:
                    bucket.inc(n)
        for key, n in counts.items():
            self.decisions.labels(*key).inc(n)
        for placement_id, n in fallbacks.items():
            self.fallbacks.labels(placement_id).inc(n)
        if hits:
            self.cap_hits.inc(hits)

    def render(self) -> bytes:
        """The text exposition format: this process's registry, or every process's values in
        multiprocess mode (`PROMETHEUS_MULTIPROC_DIR` set)."""
        from prometheus_client import CollectorRegistry, generate_latest

        self.flush()
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

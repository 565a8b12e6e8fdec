"""`GET /metrics` of the decision service (Prometheus text format), in process (TestClient), on the
project the session pipeline built."""

from __future__ import annotations

import warnings

import pytest

with warnings.catch_warnings():
    # Starlette wants `httpx2` for its TestClient and warns when it falls back to `httpx` (see test_service.py).
    warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette.testclient` is deprecated")
    from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from offerflow.core.config import load_config
from offerflow.core.store import RankingStore
from offerflow.decisioning.engine import build_engine
from offerflow.decisioning.http_service import create_app

pytestmark = pytest.mark.flow


def _samples(client: TestClient) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def test_metrics_count_decisions_fallbacks_latency_and_versions(pipeline_run, tmp_path):
    project_dir, _ = pipeline_run
    config = load_config(project_dir / "offerflow.yaml")
    store = RankingStore(config.path(config.store.path))
    known = str(store.read_table("web-banner").column("profile_id")[0])
    app = create_app(config, engine=build_engine(config), log_dir=tmp_path)
    with TestClient(app) as client:
        before = _samples(client)
        assert not any(name == "offerflow_decisions_total" for name, _ in before)
        sources: dict[str, int] = {}
        for _ in range(3):
            resp = client.post("/decisions", json={"profile_id": known, "placements": ["web-banner"]})
            assert resp.status_code == 200
            source = resp.json()["placements"][0]["source"]  # ranking_table, or random_holdout in the holdout arm
            sources[source] = sources.get(source, 0) + 1
        # no Content-Type: the FastAPI route answers, and counts too
        body = b'{"profile_id": "nobody-at-all", "placements": ["email-hero"]}'
        assert client.post("/decisions", content=body).status_code == 200
        after = _samples(client)

    web = [(labels, v) for (name, labels), v in after.items()
           if name == "offerflow_decisions_total" and ("placement", "web-banner") in labels]
    assert {dict(lab)["source"]: v for lab, v in web} == sources  # counted by the source each decision had
    assert after[("offerflow_decision_latency_seconds_count", ())] == 4
    assert 0 < after[("offerflow_decision_latency_seconds_sum", ())] < 4
    assert after[("offerflow_table_version", (("placement", "web-banner"),))] == store.current_version("web-banner")
    email = sum(v for (name, labels), v in after.items()
                if name == "offerflow_decisions_total" and ("placement", "email-hero") in labels)
    assert email == 1
    assert ("offerflow_cap_hits_total", ()) in after

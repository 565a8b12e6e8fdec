"""GET /rankings/{placement_id}: the published table through the service, equal to what the store holds."""

from __future__ import annotations

import warnings

import pytest

with warnings.catch_warnings():
    # Starlette wants `httpx2` for its TestClient and warns when it falls back to `httpx` (see test_service.py).
    warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette.testclient` is deprecated")
    from fastapi.testclient import TestClient

from offerflow.core.config import load_config
from offerflow.core.store import RankingStore

pytestmark = pytest.mark.flow


@pytest.fixture(scope="module")
def served(pipeline_run, service_app):
    config = load_config(pipeline_run[0] / "offerflow.yaml")
    with TestClient(service_app) as client:
        yield client, RankingStore(config.path(config.store.path))


def test_a_profiles_ranking_is_the_published_rows_in_rank_order(served):
    client, store = served
    table = store.read_table("web-banner").to_pandas()
    counts = table["profile_id"].value_counts()
    profile_id, n = str(counts.index[0]), int(counts.iloc[0])  # the profile with the most ranked offers
    assert n >= 2
    rows = table[table["profile_id"] == profile_id]
    answer = client.get("/rankings/web-banner", params={"profile_id": profile_id, "limit": n - 1})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["version"] == store.current_version("web-banner") and body["kind"] == "ranking"
    assert body["known_profile"] is True and body["ai_model"] == "web-personalized"
    assert [o["offer_id"] for o in body["offers"]] == list(rows["offer_id"].iloc[:n - 1])
    assert [o["score"] for o in body["offers"]] == pytest.approx(list(rows["score"].iloc[:n - 1]))
    scores = [o["score"] for o in body["offers"]]
    assert scores == sorted(scores, reverse=True) and [o["rank"] for o in body["offers"]] == list(range(1, n))
    assert len(client.get("/rankings/web-banner", params={"profile_id": profile_id}).json()["offers"]) == len(rows)


def test_an_auto_optimized_placement_gives_every_offers_posterior(served):
    client, store = served
    posteriors = store.read_table("email-hero").to_pandas()
    body = client.get("/rankings/email-hero").json()
    assert body["kind"] == "posterior" and len(body["offers"]) == len(posteriors)
    best = posteriors.assign(mean=posteriors["alpha"] / (posteriors["alpha"] + posteriors["beta"])).sort_values(
        "mean", ascending=False).iloc[0]
    assert body["offers"][0]["offer_id"] == best["offer_id"]
    assert body["offers"][0]["score"] == pytest.approx(best["mean"])
    assert body["offers"][0]["displays"] == best["displays"]


def test_unknown_profile_placement_and_a_missing_profile_id_are_clear(served):
    client, _ = served
    unknown = client.get("/rankings/web-banner", params={"profile_id": "nobody"}).json()
    assert unknown["known_profile"] is False and unknown["offers"] == []
    missing = client.get("/rankings/nowhere", params={"profile_id": "p1"})
    assert missing.status_code == 404 and "unknown placement 'nowhere'" in missing.json()["detail"]
    no_profile = client.get("/rankings/web-banner")
    assert no_profile.status_code == 422 and "profile_id" in no_profile.json()["detail"]
    assert client.get("/rankings/web-banner", params={"profile_id": "p1", "limit": 0}).status_code == 422

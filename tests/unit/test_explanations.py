"""Why this offer? One test per reason a decision explains (rule failed, cap reached, duplicate,
lower rank, fallback, holdout arm, cold-start model), on a small hand-built project with real
published tables (a personalized table, a formula table, Thompson-sampling posteriors)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml

from offerflow.core.config import load_config
from offerflow.core.schema import POSTERIOR_SCHEMA
from offerflow.core.store import RankingStore
from offerflow.decisioning.engine import DecisionEngine
from offerflow.decisioning.http_models import DecisionOut
from offerflow.ingest.catalog import load_offers
from offerflow.ranking.publishing import build_ranking_table, publish_placement
from offerflow.rules.capping import CapCounters, CapRule, caps_of

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
FORMULA = "if(offer.category == profile.favorite_category, offer.priority * 2, offer.priority)"
PROJECT = {
    "project": "explain", "data": {"profiles": "profiles.parquet", "offers": "offers.yaml"},
    "placements": [
        {"id": "web-banner", "channel": "web", "items": 2,
         "ranking": {"method": "ai_model", "ai_model": "web-personalized"}},
        {"id": "web-sidebar", "channel": "web", "items": 2, "ranking": {"method": "formula", "formula": FORMULA}},
        {"id": "email-hero", "channel": "email", "items": 1, "ranking": {"method": "ai_model", "ai_model": "email-auto"}},
    ],
    "ai_models": [
        {"name": "web-personalized", "type": "personalized", "placements": ["web-banner"], "holdout_share": 0.3,
         "exploration_share": 0.0},
        {"name": "email-auto", "type": "auto_optimization", "placements": ["email-hero"], "holdout_share": 0.2,
         "exploration_share": 0.1, "min_displays": 100, "min_successes": 5,
         "new_offers": "exploration_share"},
    ],
    "store": {"path": "rankings"},
}
OFFERS = [  # id, priority, category, placements, eligibility
    ("o-1", 9, "shoes", ["web-banner", "web-sidebar", "email-hero"], "profile.age >= 25"),
    ("o-2", 7, "books", ["web-banner", "web-sidebar", "email-hero"], None),
    ("o-3", 5, "shoes", ["web-banner", "web-sidebar", "email-hero"], 'profile.loyalty_tier in ["gold", "platinum"]'),
    ("o-4", 3, "books", ["web-banner", "web-sidebar"], None),
    ("o-5", 2, "games", ["email-hero"], "profile.email_opt_in"),
]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("explain")
    profiles = pd.DataFrame({"profile_id": ["p1", "p2", "p3", "p4"], "age": [19.0, 40.0, 33.0, 50.0],
                             "loyalty_tier": ["gold", "silver", "platinum", "bronze"],
                             "favorite_category": ["books", "shoes", "games", "books"],
                             "email_opt_in": [True, True, True, False]})
    profiles.to_parquet(root / "profiles.parquet", index=False)
    offers = [{"offer_id": o, "name": o, "priority": p, "category": c, "placements": pl, "fallback": False,
               **({"eligibility": e} if e else {})} for o, p, c, pl, e in OFFERS]
    offers.append({"offer_id": "o-fallback", "name": "fallback", "priority": 0, "category": "none",
                   "placements": ["web-banner", "web-sidebar", "email-hero"], "fallback": True})
    (root / "offers.yaml").write_text(yaml.safe_dump({"offers": offers}))
    (root / "offerflow.yaml").write_text(yaml.safe_dump(PROJECT))
    config = load_config(root / "offerflow.yaml")
    catalog = load_offers(root / "offers.yaml", [p.id for p in config.placements])
    store = RankingStore(root / "rankings")
    # the personalized table ranks by the formula too (known scores), tagged as the AI model
    banner = config.placement("web-sidebar").model_copy(update={"id": "web-banner"})
    store.publish("web-banner", build_ranking_table(banner, profiles, catalog, None),
                  {"kind": "ranking", "ranking_method": "ai_model", "ai_model": "web-personalized", "model_version": "3"})
    publish_placement(store, config.placement("web-sidebar"), profiles, catalog, None)
    publish_posteriors(store, qualified=[True, True, True, False])
    return root


def publish_posteriors(store: RankingStore, qualified: list[bool]) -> None:
    """email-hero posteriors: o-1, o-2, o-3, o-5 with these qualified flags."""
    displays, clicks = np.array([400, 300, 500, 20]), np.array([40, 9, 25, 1])
    table = pd.DataFrame({"offer_id": ["o-1", "o-2", "o-3", "o-5"], "alpha": 1.0 + clicks,
                          "beta": 1.0 + displays - clicks, "displays": displays, "successes": clicks.astype(float),
                          "qualified": qualified, "value_weight": 1.0})
    store.publish("email-hero", pa.Table.from_pandas(table, schema=POSTERIOR_SCHEMA, preserve_index=False),
                  {"kind": "posterior", "ranking_method": "ai_model", "ai_model": "email-auto", "model_version": "5"})


def engine_of(root: Path, caps: CapCounters | None = None, seed: int = 3) -> DecisionEngine:
    config = load_config(root / "offerflow.yaml")
    offers = load_offers(root / "offers.yaml", [p.id for p in config.placements])
    return DecisionEngine(config, RankingStore(root / "rankings"), offers, pd.read_parquet(root / "profiles.parquet"),
                          seed=seed, caps=caps)


def explained(engine: DecisionEngine, profile: str, placements: list[str], **kw):
    decision = engine.decide(profile, placements, now=NOW, explain=True, **kw)
    DecisionOut.model_validate(decision.to_dict())  # the documented schema is the shape returned
    return decision


def reasons(explanation: dict) -> dict[str, dict]:
    return {c["offer_id"]: c for c in explanation["not_shown"]}


def test_rule_failed_names_the_comparison_and_the_profile_value(project):
    p = explained(engine_of(project), "p1", ["web-sidebar"]).placements[0].explanation
    why = reasons(p)["o-1"]
    assert why["reason"] == "rule_failed" and why["rule"] == "profile.age >= 25"
    assert why["failed_terms"] == [{"term": "profile.age >= 25", "value": False, "values": {"profile.age": 19.0}}]
    assert why["text"] == "o-1: rule `profile.age >= 25` is false (profile.age = 19)"
    # o-3's rule holds for p1 (gold): it is not a rule failure
    assert reasons(p).get("o-3", {}).get("reason") != "rule_failed"
    silver = reasons(explained(engine_of(project), "p2", ["web-sidebar"]).placements[0].explanation)["o-3"]
    assert silver["failed_terms"][0]["values"] == {"profile.loyalty_tier": "silver"}
    assert silver["text"].endswith('["gold", "platinum"]` is false (profile.loyalty_tier = "silver")')


def test_cap_reached_gives_rule_count_and_limit_and_shown_offers_their_cap_state(project):
    engine = engine_of(project)
    rule = CapRule(event="display", scope="per_profile", limit=2, reset="daily")
    caps = CapCounters({**caps_of(engine.offers), "o-2": (rule,), "o-4": (rule,)}, now=NOW)
    caps.record(["o-2", "o-2"], "web-banner", "p1", NOW)
    caps.record(["o-4"], "web-banner", "p1", NOW)
    p = explained(engine_of(project, caps), "p1", ["web-sidebar"]).placements[0]
    why = reasons(p.explanation)["o-2"]
    assert why["reason"] == "cap_reached"
    assert why["cap"] | {} == {"cap": "2 displays per profile, daily, all placements", "event": "display",
                               "scope": "per_profile", "count": 2, "limit": 2, "reset": "daily",
                               "resets_at": "2026-11-24T00:00:00+00:00", "reached": True}
    assert "cap reached: 2/2" in why["text"]
    shown = {s["offer_id"]: s for s in p.explanation["shown"]}
    assert [i.offer_id for i in p.items] == ["o-4", "o-3"]  # p1 likes books: o-4 scores 3 * 2
    assert shown["o-4"]["caps"][0]["count"] == 1 and not shown["o-4"]["caps"][0]["reached"]
    assert "cap 1/2 displays per profile before this decision" in shown["o-4"]["text"]


def test_duplicate_names_the_earlier_placement(project):
    d = explained(engine_of(project), "p2", ["web-banner", "web-sidebar"])
    first = [i.offer_id for i in d.placements[0].items]
    why = reasons(d.placements[1].explanation)
    for offer_id in first:
        assert why[offer_id]["reason"] == "already_shown" and why[offer_id]["shown_in"] == "web-banner"
    allowed = explained(engine_of(project), "p2", ["web-banner", "web-sidebar"], allow_duplicates=True)
    assert all(c["reason"] != "already_shown" for c in allowed.placements[1].explanation["not_shown"])


def test_lower_rank_and_formula_terms(project):
    p = explained(engine_of(project), "p2", ["web-sidebar"]).placements[0]
    # p2 (age 40, silver, likes shoes): o-1 shoes 9*2=18, o-2 books 7, o-4 books 3; o-3 fails its rule
    assert [i.offer_id for i in p.items] == ["o-1", "o-2"]
    top = p.explanation["shown"][0]["ranking"]
    assert top["kind"] == "ranking_table" and top["table_rank"] == 1 and top["score"] == 18.0
    assert top["formula"]["terms"][0] == {"term": FORMULA, "value": 18.0}
    assert {"term": "offer.category == profile.favorite_category", "value": True} in top["formula"]["terms"]
    why = reasons(p.explanation)["o-4"]
    assert why["reason"] == "lower_rank" and why["priority"] == 3.0
    assert "not in the profile's top 2 of table v1" in why["text"]
    assert p.explanation["arm"] == "non_personalized" and not p.explanation["cold_start"]
    assert p.explanation["text"] == f"ranked by the formula `{FORMULA}` (table v1)"


def test_thompson_sampling_explains_samples_posteriors_and_lower_samples(project):
    engine = engine_of(project, seed=11)
    seen = 0
    for _ in range(40):
        p = explained(engine, "p2", ["email-hero"]).placements[0]
        if p.source != "thompson_sampling":
            continue
        seen += 1
        shown = p.explanation["shown"][0]["ranking"]
        assert shown["kind"] == "thompson_sampling" and shown["posterior_mean"] == pytest.approx(
            (1 + shown["clicks"]) / (2 + shown["displays"]))
        lower = [c for c in p.explanation["not_shown"] if c["reason"] == "lower_rank" and c.get("sample") is not None]
        assert lower and all(c["sample"] < shown["sample"] for c in lower)
        assert p.explanation["arm"] == "model" and p.explanation["arm_share"] == pytest.approx(0.8 * 0.9)
    assert seen > 10


def test_top_two_sampling_explains_the_draw_it_served(project, tmp_path):
    """With `sampling.rule: top_two`, a decision served from a re-draw says so and names the first
    draw's leader; the samples it shows are the served draw's, so every offer ranked lower has a
    lower sample than the one shown."""
    import re
    import shutil

    copy = shutil.copytree(project, tmp_path / "top-two")
    settings = yaml.safe_load((copy / "offerflow.yaml").read_text())
    settings["ai_models"][1]["sampling"] = {"rule": "top_two"}
    (copy / "offerflow.yaml").write_text(yaml.safe_dump(settings))
    displays, clicks = np.full(4, 600), np.array([30.0, 28.0, 25.0, 20.0])  # o-1 and o-2 close
    table = pd.DataFrame({"offer_id": ["o-1", "o-2", "o-3", "o-5"], "alpha": 1.0 + clicks,
                          "beta": 1.0 + displays - clicks, "displays": displays, "successes": clicks,
                          "qualified": True, "value_weight": 1.0})
    RankingStore(copy / "rankings").publish(
        "email-hero", pa.Table.from_pandas(table, schema=POSTERIOR_SCHEMA, preserve_index=False),
        {"kind": "posterior", "ranking_method": "ai_model", "ai_model": "email-auto", "model_version": "7"})
    engine, redraws = engine_of(copy, seed=11), 0
    for _ in range(60):
        p = explained(engine, "p2", ["email-hero"]).placements[0]
        if p.source != "thompson_sampling":
            continue
        shown = p.explanation["shown"][0]["ranking"]
        lower = [c for c in p.explanation["not_shown"] if c["reason"] == "lower_rank" and c.get("sample") is not None]
        assert lower and all(c["sample"] < shown["sample"] for c in lower)
        led = re.search(r"in a top-two re-draw \((o-\d) led the first draw\)", shown["text"])
        if led is not None:
            redraws += 1
            assert led.group(1) != p.items[0].offer_id and led.group(1) in {c["offer_id"] for c in lower}
    assert redraws >= 5


def test_thompson_counts_are_the_tables_not_the_prior_and_sharpening(project, tmp_path):
    """Auto-optimization's defaults (a fitted Beta prior, posteriors sharpened 2x) make alpha and beta
    differ from 1 + clicks and 1 + misses: the explanation reports the table's displays and successes."""
    import shutil

    copy = shutil.copytree(project, tmp_path / "sharpened")
    displays, clicks = np.array([400, 300, 500, 20]), np.array([40.0, 9.0, 25.0, 1.0])
    table = pd.DataFrame({"offer_id": ["o-1", "o-2", "o-3", "o-5"], "alpha": 3.0 + 2 * clicks,
                          "beta": 60.0 + 2 * (displays - clicks), "displays": displays, "successes": clicks,
                          "qualified": True, "value_weight": 1.0})
    RankingStore(copy / "rankings").publish(
        "email-hero", pa.Table.from_pandas(table, schema=POSTERIOR_SCHEMA, preserve_index=False),
        {"kind": "posterior", "ranking_method": "ai_model", "ai_model": "email-auto", "model_version": "6"})
    engine, truth = engine_of(copy, seed=11), dict(zip(table["offer_id"], zip(displays, clicks)))
    shown = [p.explanation["shown"][0] for p in (explained(engine, "p2", ["email-hero"]).placements[0]
                                                 for _ in range(20)) if p.source == "thompson_sampling"]
    assert shown
    for item in shown:
        n, k = truth[item["offer_id"]]
        assert (item["ranking"]["displays"], item["ranking"]["clicks"]) == (n, k)
        assert f"from {n:,} displays and {int(k):,} clicks" in item["ranking"]["text"]


def test_fallback_says_why_nothing_was_left(project):
    # p4: age 50, bronze, no email opt-in; email-hero offers: o-1 (age ok), o-2, o-3 (tier), o-5 (opt-in)
    rule = CapRule(event="display", scope="per_profile", limit=1)
    engine = engine_of(project)
    caps = CapCounters({**caps_of(engine.offers), "o-1": (rule,), "o-2": (rule,)}, now=NOW)
    caps.record(["o-1", "o-2"], "email-hero", "p4", NOW)
    p = explained(engine_of(project, caps), "p4", ["email-hero"]).placements[0]
    assert p.arm == "fallback" and p.explanation["arm"] == "fallback"
    assert p.explanation["fallback_reason"] == ("no offer was left for this profile (4 candidates: "
                                                "2 failed their eligibility rule, 2 reached a frequency cap)")
    assert reasons(p.explanation)["o-5"]["failed_terms"][0]["values"] == {"profile.email_opt_in": False}


def test_holdout_arm_and_its_share(project):
    engine = engine_of(project, seed=5)
    arms = [explained(engine, "p2", ["web-banner"]).placements[0] for _ in range(30)]
    holdout = [p for p in arms if p.arm == "holdout"]
    assert holdout and len(holdout) < len(arms)
    e = holdout[0].explanation
    assert e["arm"] == "holdout" and e["arm_share"] == 0.3 and "holdout: 30% of web-personalized v3" in e["text"]
    assert all(s["ranking"]["kind"] == "random" for s in e["shown"])
    model = next(p for p in arms if p.arm == "model").explanation
    assert model["arm_share"] == pytest.approx(0.7) and model["shown"][0]["ranking"]["ai_model"] == "web-personalized"


def test_cold_start_models(project, tmp_path):
    import shutil

    # a profile the personalized model never scored: priority order, said so
    p = explained(engine_of(project), "p-new", ["web-banner"]).placements[0].explanation
    assert p["arm"] == "non_personalized" and p["cold_start"]
    assert "profile p-new is not in web-personalized's table v1" in p["text"]
    assert reasons(p)["o-1"]["text"].endswith("(unknown profile: every profile value is null)")
    # an auto-optimization model with one qualified offer cannot rank: random serving
    copy = shutil.copytree(project, tmp_path / "copy")
    publish_posteriors(RankingStore(copy / "rankings"), qualified=[False, False, True, False])
    e = explained(engine_of(copy), "p3", ["email-hero"]).placements[0]  # platinum: o-3 (qualified) is eligible
    assert e.source == "random_too_few_qualified" and e.explanation["cold_start"]
    assert e.explanation["text"].startswith("cold start: email-auto has 1 qualified among the eligible offers")
    assert e.explanation["shown"][0]["ranking"]["kind"] == "random"


def test_a_table_decisions_do_not_read_says_so_when_read_directly(project, tmp_path):
    """GET /rankings of a personalized table whose model qualified fewer than two offers: its rows,
    and a note that decisions serve the placement at random instead (as `rankings show` prints)."""
    import shutil

    from offerflow.decisioning.http_models import PublishedRankingOut
    from offerflow.decisioning.rankings_view import published_ranking

    copy = shutil.copytree(project, tmp_path / "unread")
    store = RankingStore(copy / "rankings")
    table, meta = store.read_table("web-banner"), store.read_metadata("web-banner")
    keep = {k: v for k, v in meta.items() if k not in ("version", "placement_id", "published_at", "sha256",
                                                          "row_count", "staged_by")}
    store.publish("web-banner", table, {**keep, "ai_model_type": "personalized", "offers_qualified": 1})
    engine = engine_of(copy)
    placements = [p.id for p in engine.config.placements]
    body = PublishedRankingOut.model_validate(published_ranking(engine, placements, "web-banner", "p1", 10))
    assert body.offers and body.note == ("web-personalized qualified 1 offers (fewer than 2), so decisions do not read"
                                         " this table: they serve the placement in a random order"
                                         " (source random_too_few_qualified)")
    assert explained(engine, "p1", ["web-banner"]).placements[0].source == "random_too_few_qualified"
    read = published_ranking(engine_of(project), placements, "web-banner", "p1", 10)
    assert read["offers"] and read["note"] is None  # a table decisions read: no note


def test_explaining_changes_nothing_and_is_off_by_default(project):
    plain, explaining = engine_of(project, seed=9), engine_of(project, seed=9)
    for profile in ["p1", "p2", "p3", "p4", "p-new"] * 4:
        a = plain.decide(profile, ["web-banner", "email-hero", "web-sidebar"], now=NOW)
        b = explaining.decide(profile, ["web-banner", "email-hero", "web-sidebar"], now=NOW, explain=True)
        assert all(p.explanation is None for p in a.placements) and "explanation" not in str(a.to_dict())
        strip = [{k: v for k, v in p.items() if k != "explanation"} for p in b.to_dict()["placements"]]
        assert a.to_dict()["placements"] == strip


def test_http_explains_on_request_and_documents_every_field(project, tmp_path):
    import warnings

    with warnings.catch_warnings():  # as in tests/flows/test_service.py: httpx is what is installed
        warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette.testclient` is deprecated")
        from fastapi.testclient import TestClient
    from offerflow.decisioning.http_service import create_app

    engine = engine_of(project)
    with TestClient(create_app(engine.config, engine=engine, log_dir=tmp_path)) as client:
        plain = client.post("/decisions", json={"profile_id": "p1", "placements": ["web-sidebar"]}).json()
        asked = client.post("/decisions", json={"profile_id": "p1", "placements": ["web-sidebar"], "explain": True})
        bad = client.post("/decisions", json={"profile_id": "p1", "placements": ["web-sidebar"], "explain": "maybe"})
        schema = client.get("/openapi.json").json()["components"]["schemas"]
    assert "explanation" not in plain["placements"][0]
    assert asked.status_code == 200
    why = reasons(asked.json()["placements"][0]["explanation"])
    assert why["o-1"]["reason"] == "rule_failed" and "profile.age = 19" in why["o-1"]["text"]
    assert bad.status_code == 422
    models = ["PlacementExplanationOut", "ShownOut", "NotShownOut", "RankingOut", "CapStateOut", "FailedTermOut",
              "FormulaOut", "TermOut"]
    undocumented = [f"{m}.{f}" for m in models for f, spec in schema[m]["properties"].items()
                    if not spec.get("description")]
    assert not undocumented


def test_offerflow_decide_from_python_explains_when_asked(project):
    import offerflow

    config = project / "offerflow.yaml"
    asked = offerflow.decide("p1", ["web-sidebar"], config=config, log=False, explain=True)
    assert reasons(asked.placements[0].explanation)["o-1"]["reason"] == "rule_failed"
    assert offerflow.decide("p1", "web-sidebar", config=config, log=False).placements[0].explanation is None


def test_cli_decide_explain_prints_a_table_and_json(project):
    import json

    from typer.testing import CliRunner

    from offerflow.cli import app

    args = ["decide", "-p", "p1", "-x", "web-sidebar", "--config", str(project / "offerflow.yaml"), "--no-log"]
    table = CliRunner().invoke(app, [*args, "--explain"], catch_exceptions=False, env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "why, in web-sidebar: ranked by the formula" in table.output
    assert "rule failed" in table.output and "(profile.age = 19)" in table.output
    out = json.loads(CliRunner().invoke(app, [*args, "--explain", "--json"], catch_exceptions=False).output)
    assert reasons(out["placements"][0]["explanation"])["o-1"]["reason"] == "rule_failed"
    plain = json.loads(CliRunner().invoke(app, [*args, "--json"], catch_exceptions=False).output)
    assert "explanation" not in plain["placements"][0]


def test_batch_explanations_say_why_for_every_decided_item(project):
    import json

    from offerflow.decisioning.batch import decide_batch
    from offerflow.decisioning.batch_explain import explain_batch
    from offerflow.decisioning.http_models import PlacementExplanationOut

    engine = engine_of(project)
    placements = ["email-hero", "web-banner", "web-sidebar"]  # email first: two qualified offers left to rank
    result = explain_batch(engine, decide_batch(engine, ["p1", "p2", "p3", "p4", "p-new"], placements, now=NOW, seed=2))
    rows = result.decisions.to_pandas()
    assert len(rows) == result.decisions.num_rows > 0 and rows["why"].str.len().gt(0).all()
    parsed = rows["explanation"].map(json.loads)
    for explanation in parsed:
        PlacementExplanationOut.model_validate(explanation)
    # each item's line is its own, and each placement's explanation lists its items in rank order
    for row, explanation in zip(rows.itertuples(), parsed):
        assert row.why == explanation["shown"][row.rank - 1]["text"] and row.why.startswith(f"rank {row.rank}: ")
    p1 = {r.placement_id: e for r, e in zip(rows.itertuples(), parsed) if r.profile_id == "p1"}
    assert reasons(p1["web-sidebar"])["o-1"]["text"] == "o-1: rule `profile.age >= 25` is false (profile.age = 19)"
    for offer_id in rows.loc[(rows.profile_id == "p1") & (rows.placement_id == "web-banner"), "offer_id"]:
        assert reasons(p1["web-sidebar"])[offer_id]["shown_in"] == "web-banner"
    thompson = [e for r, e in zip(rows.itertuples(), parsed) if r.placement_id == "email-hero" and r.arm == "model"]
    assert thompson and all(e["shown"][0]["ranking"]["kind"] == "thompson_sampling" for e in thompson)
    new = [e for r, e in zip(rows.itertuples(), parsed) if r.profile_id == "p-new" and r.placement_id == "web-banner"]
    assert new[0]["cold_start"] and "is not in web-personalized's table" in new[0]["text"]


def test_batch_explanations_read_the_versions_the_batch_decided_with(project, tmp_path):
    """A run publishes web-sidebar again (every score x 10) between a batch and its explanations:
    they still name the version the batch decided with and read its scores, not the new table's."""
    import json
    import shutil

    import pyarrow.compute as pc

    from offerflow.decisioning.batch import decide_batch
    from offerflow.decisioning.batch_explain import explain_batch

    root = tmp_path / "copy"
    shutil.copytree(project, root)
    engine = engine_of(root)
    result = decide_batch(engine, ["p1", "p2", "p3", "p4"], ["web-sidebar"], now=NOW, seed=2)
    store = RankingStore(root / "rankings")
    pinned = result.versions["web-sidebar"]
    table = store.read_table("web-sidebar")
    newer = store.publish("web-sidebar", table.set_column(table.schema.get_field_index("score"), "score",
                                                          pc.multiply(table["score"], 10.0)),
                          {"kind": "ranking", "ranking_method": "formula"})
    assert newer > pinned and store.current_version("web-sidebar") == newer
    rows = explain_batch(engine, result).decisions.to_pandas()
    sidebar = rows[rows.placement_id == "web-sidebar"]
    ranked = [(row, json.loads(row.explanation)["shown"][row.rank - 1]["ranking"]) for row in sidebar.itertuples()]
    ranked = [(row, ranking) for row, ranking in ranked if ranking["kind"] == "ranking_table"]
    assert len(ranked) >= 4
    for row, ranking in ranked:
        assert ranking["table_version"] == pinned and ranking["score"] == pytest.approx(row.score)
        assert f"in table v{pinned} " in row.why


def test_an_engine_for_one_profile_decides_and_explains_as_the_full_engine(project):
    """`offerflow decide` builds the engine for its profile only (profiles, tables and per-profile
    caps read with a filter): the same decisions and explanations as the engine of every profile."""
    from offerflow.decisioning.engine import build_engine

    config = load_config(project / "offerflow.yaml")
    placements = ["email-hero", "web-banner", "web-sidebar"]
    for profile in ("p1", "p3", "p4", "p-new"):
        full = build_engine(config, seed=5, now=NOW).decide(profile, placements, now=NOW, explain=True)
        one = build_engine(config, seed=5, now=NOW, profile_ids=[profile]).decide(profile, placements, now=NOW,
                                                                                  explain=True)
        assert {**one.to_dict(), "decision_id": ""} == {**full.to_dict(), "decision_id": ""}

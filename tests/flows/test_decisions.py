"""Batch decisioning against the per-request engine, caps in batch, and the batch-decisions flow."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from offerflow.decisioning.batch import SegmentError, decide_batch, segment_profile_ids
from offerflow.rules.capping import CapCounters, CapRule, caps_of
from offerflow.core.config import load_config
from offerflow.decisioning.engine import DecisionEngine, build_engine
from offerflow.core.schema import DECISION_META_SCHEMA

pytestmark = pytest.mark.flow
PLACEMENTS = ["web-banner", "email-hero", "web-sidebar"]
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def config(pipeline_run):
    project_dir, _ = pipeline_run
    return load_config(project_dir / "offerflow.yaml")


def _engine(config, caps=None, seed=5) -> DecisionEngine:
    base = build_engine(config, now=NOW)
    return DecisionEngine(config, base.store, base.offers.reset_index(drop=True), base.profiles, seed=seed,
                          caps=caps if caps is not None else CapCounters(caps_of(base.offers), now=NOW))


def test_batch_agrees_with_the_engine(config):
    batch_engine, engine = _engine(config), _engine(config)
    ids = list(engine.profiles["profile_id"]) + ["unknown-1", "unknown-2"]
    result = decide_batch(batch_engine, ids, PLACEMENTS, now=NOW, seed=3)
    items = result.decisions.to_pandas()
    meta = result.meta.to_pandas()
    assert result.meta.schema == DECISION_META_SCHEMA and len(meta) == len(ids) * len(PLACEMENTS)
    assert set(meta["arm"]) <= {"model", "holdout", "non_personalized", "fallback"}
    # invariants per decision: ranks 1..k, at most `items`, no offer twice across placements
    per = items.groupby(["decision_id", "placement_id"])["rank"]
    assert (per.max() == per.size()).all() and (per.min() == 1).all()
    assert (per.size() <= items.groupby(["decision_id", "placement_id"]).size().index.get_level_values(1)
            .map(lambda p: config.placement(p).items)).all()
    assert not items.duplicated(["decision_id", "offer_id"]).any()
    # every offer shown is eligible now and allowed in its placement; the fallback only when nothing is
    offers = engine.offers
    for row in items.sample(2000, random_state=0).itertuples():
        values = engine.profile_values(row.profile_id)
        if row.fallback:
            assert row.offer_id == "o-fallback" and row.arm == "fallback"
        else:
            assert engine._eligible(row.offer_id, values) and row.placement_id in offers.loc[row.offer_id, "placements"]
    # deterministic answers are the engine's answers: same offers in the same order, request by request
    pair = ["web-banner", "web-sidebar"]
    both = decide_batch(_engine(config), ids, pair, now=NOW, seed=4).decisions.to_pandas()
    compared = 0
    for profile_id, group in list(both.groupby("profile_id"))[:500]:
        expected = engine.decide(profile_id, pair, now=NOW)
        # random traffic (holdout, a personalized model's exploration) shows no score: not comparable
        randomized = group["score"].isna() & ~group["fallback"]
        if randomized.any() or any(p.source in ("random_holdout", "exploration") for p in expected.placements):
            continue
        compared += 1
        for placement in expected.placements:
            mine = group[group.placement_id == placement.placement_id].sort_values("rank")
            assert mine["offer_id"].tolist() == [i.offer_id for i in placement.items], profile_id
            assert set(mine["arm"]) == {placement.arm}
    assert compared > 300
    # unknown profiles: non-personalized or fallback, never the model
    assert set(meta.loc[meta.profile_id.str.startswith("unknown"), "arm"]) <= {"non_personalized", "fallback", "model"}
    assert set(meta.loc[meta.profile_id.str.startswith("unknown") & (meta.placement_id == "web-banner"), "arm"]) \
        <= {"non_personalized", "fallback"}
    # the holdout share is the configured 10% of the model's decisions
    model = meta[meta["arm"].isin(["model", "holdout"])]
    share = (model["arm"] == "holdout").mean()
    assert abs(share - 0.10) < 4 * np.sqrt(0.1 * 0.9 / len(model))
    first = items[items["rank"] == 1]
    assert first["propensity"].between(0, 1, inclusive="right").all()


def test_precomputed_eligibility_is_each_rule_evaluated_row_at_a_time(config):
    """Requests read eligibility from a matrix built column-wise at engine build; it must be what
    evaluating every rule on one profile's attributes says, for every profile and offer."""
    engine = _engine(config)
    ruled = [oid for oid in engine.offers["offer_id"] if isinstance(engine.offers.loc[oid, "eligibility"], str)]
    assert ruled
    seen = set()
    for pid in list(engine.profiles["profile_id"]) + ["never-seen"]:
        values = engine.profile_values(pid)
        assert (values is None) == (pid == "never-seen")
        for oid in engine.offers["offer_id"]:
            expected = engine._eligible(oid, values)
            assert engine.eligible(pid, oid) == expected, (pid, oid)
            seen.add((oid in ruled, expected))
    assert {(True, True), (True, False), (False, True)} <= seen  # rules that pass, rules that fail


def test_caps_in_batch_hold_and_total_caps_go_in_profile_order(config):
    base = _engine(config)
    caps = caps_of(base.offers)
    caps["o-003"] = (CapRule(event="display", scope="total", limit=100, reset="never", per_placement=True),)
    caps["o-006"] = (CapRule(event="decision", scope="per_profile", limit=1, reset="daily"),)
    ids = list(base.profiles["profile_id"])
    uncapped = decide_batch(_engine(config), ids, ["web-banner"], now=NOW, seed=9).decisions.to_pandas()
    counters = CapCounters(caps, now=NOW)
    already = ids[:50]
    for profile_id in already:  # these profiles already got o-006 today
        counters.record(["o-006"], "email-hero", profile_id, NOW)
    capped = decide_batch(_engine(config, counters), ids, ["web-banner"], now=NOW, seed=9).decisions.to_pandas()
    wanted = uncapped.loc[uncapped.offer_id == "o-003", "profile_id"].sort_values().tolist()
    got = capped.loc[capped.offer_id == "o-003", "profile_id"].sort_values().tolist()
    assert len(wanted) > 100 and got == wanted[:100]
    assert not capped[capped.profile_id.isin(already) & (capped.offer_id == "o-006")].shape[0]
    assert capped[~capped.profile_id.isin(already) & (capped.offer_id == "o-006")].shape[0] > 0
    # the per-request engine holds the same total cap
    engine = _engine(config, CapCounters(caps, now=NOW))
    served = sum(i.offer_id == "o-003" for p in ids[:1500] for i in engine.decide(p, ["web-banner"], now=NOW).placements[0].items)
    assert served == 100


def test_segments(config, tmp_path):
    profiles = _engine(config).profiles
    (tmp_path / "ids.txt").write_text("p0000001\n\np0000002\n")
    assert segment_profile_ids(profiles, tmp_path / "ids.txt").tolist() == ["p0000001", "p0000002"]
    medium = segment_profile_ids(profiles, goal="purchase_14d", bucket="medium")
    assert 0 < len(medium) < len(profiles)
    with pytest.raises(SegmentError, match="no Customer AI scores for goal 'nope'"):
        segment_profile_ids(profiles, goal="nope", bucket="high")
    with pytest.raises(SegmentError, match="unknown bucket 'top'"):
        segment_profile_ids(profiles, goal="purchase_14d", bucket="top")
    with pytest.raises(SegmentError, match="profiles file not found"):
        segment_profile_ids(profiles, tmp_path / "missing.csv")
    (tmp_path / "empty.txt").write_text("\n")  # an export that came out empty is a mistake, not "decided 0"
    pd.DataFrame({"profile_id": pd.Series([], dtype=str)}).to_csv(tmp_path / "empty.csv", index=False)
    for empty in ("empty.txt", "empty.csv"):
        with pytest.raises(SegmentError, match=f"{empty}: no profile ids in the file"):
            segment_profile_ids(profiles, tmp_path / empty)


def test_batch_flow_writes_decisions_and_the_log_counts_for_caps(pipeline_run, tmp_path, prefect_harness):
    import shutil

    from offerflow.flows.decisions import batch_decisions

    project_dir, _ = pipeline_run
    copy = shutil.copytree(project_dir, tmp_path / "project")
    shutil.rmtree(copy / "data/outputs/decision_log", ignore_errors=True)
    ids = pd.DataFrame({"profile_id": [f"p{i:07d}" for i in range(1, 401)]})
    ids.to_csv(tmp_path / "segment.csv", index=False)
    summary = batch_decisions(config_path=str(copy / "offerflow.yaml"), profiles_file=str(tmp_path / "segment.csv"))
    assert summary["profiles"] == 400 and sum(summary["arms"].values()) == 400 * 3
    decisions = pq.read_table(summary["decisions_path"]).to_pandas()
    log = copy / "data/outputs/decision_log"
    events = pd.concat(pd.read_parquet(p) for p in log.glob("decisions-*.parquet"))
    meta = pd.concat(pd.read_parquet(p) for p in (log / "meta").glob("decisions-*.parquet"))
    assert len(events) == len(decisions) and set(events["decision_id"]) == set(meta["decision_id"])
    assert events.loc[events.event_id.str.endswith("-1"), "propensity"].notna().all()
    # the batch's decisions now count for caps: o-002's per-placement daily decision cap
    engine = build_engine(load_config(copy / "offerflow.yaml"))
    rule = engine.caps.caps["o-002"][1]
    for placement in PLACEMENTS:
        expected = int(((decisions.offer_id == "o-002") & (decisions.placement_id == placement)).sum())
        assert engine.caps.count(rule, "o-002", placement, "") == expected


def test_personalized_exploration_share_and_logged_propensity(config):
    """A personalized placement explores 10% of its model traffic (random order of the eligible
    offers); the logged propensity of the first item is its true probability, in the engine and in
    batch."""
    engine = _engine(config, caps=CapCounters({}, now=NOW))
    profile = engine.profiles["profile_id"].iat[0]
    firsts, propensity, sources = [], {}, []
    for _ in range(3000):
        placement = engine.decide(profile, ["web-banner"], now=NOW).placements[0]
        first = placement.items[0]
        firsts.append(first.offer_id)
        sources.append(placement.source)
        propensity.setdefault(first.offer_id, set()).add(round(first.propensity, 12))
    model = [s for s in sources if s in ("ranking_table", "exploration")]
    assert abs(sources.count("exploration") / len(model) - 0.10) < 0.03
    observed = pd.Series(firsts).value_counts(normalize=True)
    for offer_id, values in propensity.items():
        assert len(values) == 1  # one probability per offer: it does not depend on the draw
        assert abs(observed[offer_id] - values.pop()) < 0.02, offer_id

    batch = decide_batch(_engine(config), list(engine.profiles["profile_id"]), ["web-banner"], now=NOW,
                         seed=8).decisions.to_pandas()
    model_rows = batch[(batch["arm"] == "model") & (batch["rank"] == 1)]
    explored = model_rows["score"].isna().mean()
    assert abs(explored - 0.10) < 0.02
    # explored first items that are not the model's choice carry share / |eligible offers|
    assert (model_rows.loc[model_rows["score"].isna(), "propensity"] < 0.1).mean() > 0.5


def _one_qualified_offer(config, tmp_path, new_offers: str):
    """A copy of the project whose auto-optimization models serve new offers as `new_offers` says,
    with an email-hero table where only one offer is qualified."""
    import shutil

    from offerflow.core.store import RankingStore

    store_dir = tmp_path / "rankings"
    shutil.copytree(config.path(config.store.path), store_dir)
    models = [m.model_copy(update={"new_offers": new_offers}) if m.type == "auto_optimization" else m
              for m in config.ai_models]
    local = config.model_copy(update={"store": config.store.model_copy(update={"path": store_dir}),
                                      "ai_models": models})
    store = RankingStore(store_dir, local.store.keep_versions)
    posteriors = store.snapshot("email-hero").posteriors.copy()
    posteriors["qualified"] = np.arange(len(posteriors)) == 0
    store.publish("email-hero", posteriors, {**store.read_metadata("email-hero")})
    return local


def test_too_few_qualified_offers_are_served_at_random_and_say_so(config, tmp_path):
    """With the hosted systems' rule (`new_offers: exploration_share`), an auto-optimized placement
    with one qualified offer is not ranked by the model: every decision (engine and batch) says so,
    with uniform first-slot propensities, and no holdout."""
    local = _one_qualified_offer(config, tmp_path, "exploration_share")
    engine = _engine(local)
    decisions = [engine.decide(pid, ["email-hero"], now=NOW).placements[0]
                 for pid in engine.profiles["profile_id"][:300]]
    served = [d for d in decisions if d.arm != "fallback"]
    assert served and {d.source for d in served} == {"random_too_few_qualified"}
    assert {d.arm for d in served} == {"non_personalized"}
    firsts = pd.Series([d.items[0].offer_id for d in served])
    assert firsts.nunique() > 1  # random, not the one qualified offer every time
    result = decide_batch(_engine(local), list(engine.profiles["profile_id"][:300]), ["email-hero"], now=NOW, seed=1)
    assert set(result.meta.to_pandas()["arm"]) <= {"non_personalized", "fallback"}


def test_sampling_every_offer_ranks_without_qualified_offers(config, tmp_path):
    """By default (`new_offers: empirical_bayes`) Thompson sampling ranks every offer, qualified or
    not, and the decisions say so: no random serving and no exploration share."""
    local = _one_qualified_offer(config, tmp_path, "empirical_bayes")
    engine = _engine(local)
    decisions = [engine.decide(pid, ["email-hero"], now=NOW).placements[0]
                 for pid in engine.profiles["profile_id"][:300]]
    served = [d for d in decisions if d.arm != "fallback"]
    assert served and {d.source for d in served} <= {"thompson_sampling", "random_holdout"}
    assert {d.source for d in served if d.arm == "model"} == {"thompson_sampling"}
    result = decide_batch(_engine(local), list(engine.profiles["profile_id"][:300]), ["email-hero"], now=NOW, seed=1)
    assert "model" in set(result.meta.to_pandas()["arm"])


def test_a_personalized_model_with_too_few_qualified_offers_serves_at_random_and_says_so(config, tmp_path):
    """A click model that qualified fewer than two offers scores every offer as the worst qualified
    one: it ranks nothing. Its placement is served in a uniformly random order (engine and batch
    alike), every decision says so, each slot's propensity is 1 / |eligible offers|, and there is
    no holdout or exploration (those are a model's traffic)."""
    import shutil

    from offerflow.core.store import RankingStore
    from offerflow.decisioning.batch_explain import explain_batch

    store_dir = tmp_path / "rankings"
    shutil.copytree(config.path(config.store.path), store_dir)
    local = config.model_copy(update={"store": config.store.model_copy(update={"path": store_dir})})
    store = RankingStore(store_dir, local.store.keep_versions)
    metadata = store.read_metadata("web-banner")
    assert metadata["ai_model_type"] == "personalized" and metadata["offers_qualified"] >= 2  # the world's model ranks
    store.publish("web-banner", store.read_table("web-banner"), {**metadata, "offers_qualified": 1})

    engine = _engine(local)
    ids = list(engine.profiles["profile_id"][:400])
    decisions = [engine.decide(pid, ["web-banner"], now=NOW, explain=pid in ids[:5]).placements[0] for pid in ids]
    served = [d for d in decisions if d.arm != "fallback"]
    assert served and {d.source for d in served} == {"random_too_few_qualified"}
    assert {d.arm for d in served} == {"non_personalized"}
    for pid, d in zip(ids, decisions):
        if d.arm == "fallback":
            continue
        pool = [oid for oid in engine._by_priority["web-banner"] if engine.eligible(pid, oid)]
        assert [i.propensity for i in d.items] == [1 / len(pool)] * len(d.items) and all(i.score is None for i in d.items)
    firsts = pd.Series([d.items[0].offer_id for d in served])
    assert firsts.nunique() >= 4  # not the table's or the priority's first offer every time
    why = json.dumps(next(d.explanation for d in decisions if d.arm != "fallback"))
    assert "has 1 qualified offer (" in why and "served in a random order" in why, why

    result = decide_batch(_engine(local), ids, ["web-banner"], now=NOW, seed=2)
    meta, items = result.meta.to_pandas(), result.decisions.to_pandas()
    assert set(meta["arm"]) <= {"non_personalized", "fallback"}
    shown = items[~items["fallback"]]
    assert shown["score"].isna().all() and shown.groupby("decision_id")["offer_id"].first().nunique() >= 4
    sizes = {pid: sum(engine.eligible(pid, oid) for oid in engine._by_priority["web-banner"]) for pid in ids}
    assert np.allclose(shown["propensity"], 1 / shown["profile_id"].map(sizes))
    from typer.testing import CliRunner

    from offerflow.cli import app

    config_file = tmp_path / "offerflow.yaml"
    project_file = (config.root / "offerflow.yaml").read_text()
    config_file.write_text(project_file.replace("path: data/rankings", f"path: {store_dir}"))
    shown = CliRunner().invoke(app, ["rankings", "show", "web-banner", "--rows", "1", "--config", str(config_file)])
    assert "qualified 1 offers (fewer than 2), so decisions do not read this table" in " ".join(shown.output.split())
    explained = explain_batch(_engine(local), result).decisions.to_pandas()
    assert "drawn by a uniformly random order" in explained.loc[~explained["fallback"], "why"].iat[0]
    assert "fewer than 2" in explained.loc[~explained["fallback"], "explanation"].iat[0]

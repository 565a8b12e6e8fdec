"""Commands that read answer without Prefect: `decide`, `decide-batch` on published tables,
`rankings`, `caps`, `serving`, `check` (and `models`, which reads MLflow but starts no Prefect
server); every one of them prints its result as JSON with `--json`."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.cli_probe import errors, heavy, offerflow


def publish_formula_tables(project: Path) -> None:
    """web-banner and web-sidebar get a published table (web-sidebar's formula), as a run would."""
    from offerflow.core.config import load_config
    from offerflow.core.paths import ranking_store
    from offerflow.ingest.catalog import load_offers, load_profiles
    from offerflow.ranking.publishing import build_ranking_table

    config = load_config(project / "offerflow.yaml")
    profiles = load_profiles(config.path(config.data.profiles))
    offers = load_offers(config.path(config.data.offers), [p.id for p in config.placements])
    ranking = config.placement("web-sidebar").ranking
    store = ranking_store(config)
    for placement_id in ("web-banner", "web-sidebar"):
        placement = config.placement(placement_id).model_copy(update={"ranking": ranking})
        store.publish(placement_id, build_ranking_table(placement, profiles, offers, None),
                      {"kind": "ranking", "ranking_method": "formula"})


@pytest.fixture()
def published(project_dir: Path) -> Path:
    publish_formula_tables(project_dir)
    return project_dir / "offerflow.yaml"


def test_decide_batch_runs_without_prefect(published):
    done, wall, _ = offerflow("decide-batch", "-x", "web-banner", "-x", "web-sidebar", "--json",
                              "--config", str(published))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    profiles = pd.read_parquet(published.parent / "data/profiles.parquet", columns=["profile_id"])
    assert summary["profiles"] == len(profiles) and summary["placements"] == ["web-banner", "web-sidebar"]
    decisions = pd.read_parquet(summary["decisions_path"])
    assert len(decisions) == summary["items"] and set(decisions["placement_id"]) == {"web-banner", "web-sidebar"}
    assert heavy(done) == [], "decide-batch imported Prefect (or another heavy package)"
    assert errors(done) == [] and wall < 60


@pytest.mark.parametrize("command", [
    ["decide", "-p", "{profile}", "-x", "web-banner", "--json"],
    ["rankings", "list", "--json"],
    ["rankings", "show", "web-banner", "--rows", "2", "--json"],
    ["caps", "show", "--json"],
    ["serving", "list", "--json"],
    ["serving", "history", "--json"],
    ["check", "--json"],
])
def test_read_commands_print_json_without_prefect(published, command):
    profile = pd.read_parquet(published.parent / "data/profiles.parquet", columns=["profile_id"])["profile_id"].iat[0]
    done, _, _ = offerflow(*[c.format(profile=profile) for c in command], "--config", str(published))
    assert done.returncode == 0, done.stderr
    json.loads(done.stdout)  # the whole of stdout is one JSON document
    assert heavy(done) == [], f"{' '.join(command)} imported {heavy(done)}"


def test_caps_reset_json_has_the_fields_of_the_http_reset(published):
    from offerflow.decisioning.http_models import CapResetOut

    done, _, _ = offerflow("caps", "reset", "--offer", "o-001", "--json", "--config", str(published))
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    # the same answer as POST /admin/caps/reset, but for the live counters of a service (none here)
    assert set(answer) == set(CapResetOut.model_fields) - {"counters_cleared"}
    assert answer["status"] == "reset" and answer["offer_id"] == "o-001" and answer["reset_at"].endswith("+00:00")


def test_rankings_list_json_names_every_published_placement(published):
    done, _, _ = offerflow("rankings", "list", "--json", "--config", str(published))
    rows = {r["placement_id"]: r for r in json.loads(done.stdout)}
    assert set(rows) == {"web-banner", "web-sidebar"}
    assert rows["web-banner"]["current"] == 1 and rows["web-banner"]["versions"] == [1] and rows["web-banner"]["rows"] > 0

    rolled, _, _ = offerflow("rankings", "rollback", "web-banner", "--json", "--config", str(published))
    assert rolled.returncode == 1 and "web-banner" in errors(rolled)[0] and len(errors(rolled)) == 1

"""Loading a project's catalog checks eligibility rules before any training starts."""

import pytest
import yaml

from offerflow.catalog import CatalogError
from offerflow.config import load_config
from offerflow.ingestion import load_catalog


def set_rule(project, offer_id, rule):
    path = project / "data" / "offers.yaml"
    raw = yaml.safe_load(path.read_text())
    for offer in raw["offers"]:
        if offer["offer_id"] == offer_id:
            offer["eligibility"] = rule
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def test_rules_may_use_customer_ai_scores(project_dir):
    set_rule(project_dir, "o-001", "profile.propensity.purchase_14d.score > 50 and profile.age >= 18")
    profiles, offers = load_catalog(load_config(project_dir / "offerflow.yaml"))
    assert "propensity.purchase_14d.score" not in profiles.columns  # placeholders only for checking
    assert offers.set_index("offer_id").at["o-001", "eligibility"].startswith("profile.propensity")


def test_bad_rule_stops_before_training_with_its_location(project_dir):
    set_rule(project_dir, "o-002", "profile.agee >= 18")
    with pytest.raises(CatalogError, match=r"offer 'o-002' eligibility: column 1: unknown name 'profile.agee'"):
        load_catalog(load_config(project_dir / "offerflow.yaml"))

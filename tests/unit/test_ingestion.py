"""The catalog step: eligibility rules, profile ids and fallbacks checked (and the catalog
expectation suites run) before any training starts."""

import pandas as pd
import pytest
import yaml

from offerflow.catalog import CatalogError, read_offers
from offerflow.config import load_config
from offerflow.ingestion import load_catalog
from offerflow.validation import validate_catalog


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


# -- the catalog suites (profiles, offers, placements) run by the pipeline's catalog step --------


def test_catalog_suites_pass_on_the_seeded_world(project_dir):
    config = load_config(project_dir / "offerflow.yaml")
    profiles, offers = load_catalog(config, build_docs=False)
    outcomes = validate_catalog(profiles, offers, [p.id for p in config.placements],
                                context_dir=project_dir / "great_expectations", run_id="t", build_docs=False)
    assert {o.name.split(":")[0] for o in outcomes} == {"profiles", "offers", "placements"}
    assert all(o.success and o.why.endswith(".") for o in outcomes), [o for o in outcomes if not o.success]


def test_duplicate_profile_ids_fail_the_profiles_suite_and_the_catalog_step(project_dir):
    path = project_dir / "data" / "profiles.parquet"
    profiles = pd.read_parquet(path)
    doubled = pd.concat([profiles, profiles.iloc[[5, 9]]], ignore_index=True)
    doubled.to_parquet(path, index=False)
    config = load_config(project_dir / "offerflow.yaml")
    with pytest.raises(CatalogError) as error:
        load_catalog(config, build_docs=False)
    assert str(error.value) == f"{path}: 2 duplicate profile_id(s), e.g. {profiles.at[5, 'profile_id']!r}"
    offers = read_offers(project_dir / "data" / "offers.yaml")
    outcomes = {o.name: o for o in validate_catalog(doubled, offers, [p.id for p in config.placements],
                                                    context_dir=project_dir / "great_expectations",
                                                    run_id="t", build_docs=False)}
    unique = outcomes["profiles: expect_column_values_to_be_unique(profile_id)"]
    assert not unique.success and unique.severity == "critical"
    assert unique.observed.startswith(f"4 of {len(doubled)} values unexpected")


def test_missing_profile_id_is_one_message(project_dir):
    path = project_dir / "data" / "profiles.parquet"
    profiles = pd.read_parquet(path)
    profiles.loc[3, "profile_id"] = None
    profiles.to_parquet(path, index=False)
    with pytest.raises(CatalogError) as error:
        load_catalog(load_config(project_dir / "offerflow.yaml"), build_docs=False)
    assert str(error.value) == f"{path}: 1 profile(s) without a profile_id (first: row 4)"


def test_placement_without_fallback_fails_the_placements_suite_and_the_catalog_step(project_dir):
    path = project_dir / "data" / "offers.yaml"
    raw = yaml.safe_load(path.read_text())
    for offer in raw["offers"]:
        if offer.get("fallback"):
            offer["placements"] = [p for p in offer["placements"] if p != "email-hero"]
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    config = load_config(project_dir / "offerflow.yaml")
    with pytest.raises(CatalogError) as error:
        load_catalog(config, build_docs=False)
    assert str(error.value) == f"{path}: placement 'email-hero' has no fallback offer"
    outcomes = {o.name: o for o in validate_catalog(
        pd.read_parquet(project_dir / "data" / "profiles.parquet"), read_offers(path),
        [p.id for p in config.placements], context_dir=project_dir / "great_expectations", run_id="t",
        build_docs=False)}
    fallback = outcomes["placements: expect_column_values_to_be_between(fallback_offers)"]
    assert not fallback.success and fallback.observed.startswith("1 of 3 values unexpected")

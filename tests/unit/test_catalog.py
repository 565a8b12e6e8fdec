"""The offer catalog and the profiles table: formats, checks, and the exact error messages."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from offerflow.ingest.catalog import (CatalogError, check_offers, fallback_offer, load_offers, load_profiles,
                               normalize_offers, offers_for_placement)

PLACEMENTS = ["web-banner", "email-hero"]
OFFERS = [
    {"offer_id": "o-1", "name": "One", "priority": 3, "placements": ["web-banner", "email-hero"],
     "eligibility": "profile.age >= 18", "fallback": False, "category": "home"},
    {"offer_id": "o-2", "name": "Two", "priority": 5, "placements": ["web-banner"],
     "eligibility": None, "fallback": False, "category": "sports"},
    {"offer_id": "o-fb", "name": "Fallback", "priority": 0, "placements": ["web-banner", "email-hero"],
     "eligibility": None, "fallback": True, "category": "none"},
]
PROFILES = pd.DataFrame({"profile_id": ["p1", "p2"], "age": [30, 17], "country": ["DE", "FR"]})


def offers_frame(rows: list[dict] | None = None) -> pd.DataFrame:
    return normalize_offers(pd.DataFrame.from_records(rows if rows is not None else OFFERS))


def write_yaml(path: Path, rows: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({"offers": rows}, sort_keys=False))
    return path


def raises(match: str):
    return pytest.raises(CatalogError, match=f"^{re.escape(match)}$")


# -- formats -------------------------------------------------------------------------------------


def test_yaml_round_trip(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "offers.yaml", OFFERS)
    offers = load_offers(path, PLACEMENTS, profiles=PROFILES)
    assert offers["offer_id"].tolist() == ["o-1", "o-2", "o-fb"]
    assert offers["priority"].dtype == "int64" and offers["priority"].tolist() == [3, 5, 0]
    assert offers["placements"].tolist() == [("web-banner", "email-hero"), ("web-banner",),
                                             ("web-banner", "email-hero")]
    assert offers["eligibility"].tolist() == ["profile.age >= 18", None, None]
    assert offers["fallback"].tolist() == [False, False, True]
    assert offers["category"].tolist() == ["home", "sports", "none"]


def test_yaml_top_level_list_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "offers.yml"
    path.write_text(yaml.safe_dump(OFFERS))
    assert load_offers(path, PLACEMENTS)["offer_id"].tolist() == ["o-1", "o-2", "o-fb"]


def test_csv_round_trip_with_pipe_separated_placements(tmp_path: Path) -> None:
    path = tmp_path / "offers.csv"
    frame = pd.DataFrame.from_records(OFFERS).assign(
        placements=lambda f: f["placements"].map("|".join))
    frame.to_csv(path, index=False)
    assert "web-banner|email-hero" in path.read_text()
    offers = load_offers(path, PLACEMENTS, profiles=PROFILES)
    pd.testing.assert_frame_equal(offers, load_offers(write_yaml(tmp_path / "o.yaml", OFFERS), PLACEMENTS))


def test_csv_ids_that_look_like_numbers_stay_as_written(tmp_path: Path) -> None:
    """SKU-like ids ('007', '1e3', '12.50') must match the events' ids, which are read as text."""
    offers = tmp_path / "offers.csv"
    offers.write_text("offer_id,name,priority,placements,fallback\n007,a,2,web-banner|email-hero,false\n"
                      "12.50,b,1,web-banner|email-hero,false\n0099,fb,0,web-banner|email-hero,true\n")
    assert load_offers(offers, PLACEMENTS)["offer_id"].tolist() == ["007", "12.50", "0099"]
    profiles = tmp_path / "profiles.csv"
    profiles.write_text("profile_id,age\n007,30\n1e3,17\n")
    assert load_profiles(profiles)["profile_id"].tolist() == ["007", "1e3"]
    assert load_profiles(profiles, ["1e3"])["profile_id"].tolist() == ["1e3"]


def test_yaml_ids_stay_as_written(tmp_path: Path) -> None:
    """YAML 1.1 reads `0012` as octal 10 and `1.50` as 1.5; ids are kept as the user wrote them."""
    offers = tmp_path / "offers.yaml"
    offers.write_text("offers:\n- {offer_id: 0012, name: a, priority: 2, placements: [web-banner, email-hero]}\n"
                      "- offer_id: 1.50\n  name: b\n  priority: 1\n  placements: [web-banner, email-hero]\n"
                      "- {offer_id: 7, name: fb, priority: 0, placements: [web-banner, email-hero], fallback: true,"
                      " discount: 0012}\n")
    loaded = load_offers(offers, PLACEMENTS)
    assert loaded["offer_id"].tolist() == ["0012", "1.50", "7"]
    assert loaded["discount"].iloc[2] == 10 and loaded["priority"].tolist() == [2, 1, 0]  # other columns: YAML
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text("profiles:\n- {profile_id: 007, age: 30}\n- {profile_id: '1e3', age: 17}\n")
    assert load_profiles(profiles)["profile_id"].tolist() == ["007", "1e3"]


@pytest.mark.parametrize("what", ["offers", "profiles"])
def test_a_catalog_csv_split_by_semicolons_says_so(tmp_path: Path, what) -> None:
    path = tmp_path / f"{what}.csv"
    path.write_text("offer_id;name;priority;placements\no-1;a;1;web-banner\n" if what == "offers"
                    else "profile_id;age;tier\np1;30;gold\n")
    with raises(f"{path}: the header is one column split by semicolons, not commas: {what} CSV files must be"
                " comma-separated"):
        load_offers(path, PLACEMENTS) if what == "offers" else load_profiles(path)


def test_parquet_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "offers.parquet"
    pd.DataFrame.from_records(OFFERS).to_parquet(path, index=False)
    offers = load_offers(path, PLACEMENTS, profiles=PROFILES)
    assert offers["placements"].tolist() == [("web-banner", "email-hero"), ("web-banner",),
                                             ("web-banner", "email-hero")]
    assert offers["priority"].tolist() == [3, 5, 0]
    assert offers["eligibility"].tolist() == ["profile.age >= 18", None, None]
    assert offers["fallback"].tolist() == [False, False, True]


def test_defaults_for_optional_columns() -> None:
    offers = offers_frame([{"offer_id": 7, "name": "x", "priority": 2.0, "placements": "a | b|"}])
    assert offers["offer_id"].tolist() == ["7"]
    assert offers["placements"].tolist() == [("a", "b")]
    assert offers["eligibility"].tolist() == [None]
    assert offers["fallback"].tolist() == [False]


def test_file_not_found(tmp_path: Path) -> None:
    with raises(f"{tmp_path / 'nope.yaml'}: offers file not found"):
        load_offers(tmp_path / "nope.yaml")
    with raises(f"{tmp_path / 'nope.csv'}: profiles file not found"):
        load_profiles(tmp_path / "nope.csv")


def test_unknown_format(tmp_path: Path) -> None:
    path = tmp_path / "offers.json"
    path.write_text("[]")
    with raises(f"{path}: unknown format '.json' (expected .yaml, .csv or .parquet)"):
        load_offers(path)


def test_yaml_without_a_list(tmp_path: Path) -> None:
    path = tmp_path / "offers.yaml"
    path.write_text("offer: 1\n")
    with raises(f"{path}: expected a list of offers (under the key 'offers:')"):
        load_offers(path)


def test_missing_required_column(tmp_path: Path) -> None:
    rows = [{k: v for k, v in o.items() if k not in ("priority", "name")} for o in OFFERS]
    path = write_yaml(tmp_path / "offers.yaml", rows)
    with raises(f"{path}: missing required column(s): name, priority"):
        load_offers(path, PLACEMENTS)


@pytest.mark.parametrize("bad", ["high", 2.5, None])
def test_non_integer_priority(tmp_path: Path, bad) -> None:
    rows = [dict(OFFERS[0], priority=bad), *OFFERS[1:]]
    path = write_yaml(tmp_path / "offers.yaml", rows)
    with raises(f"{path}: priority must be an integer (offers: o-1)"):
        load_offers(path)


# -- catalog checks -------------------------------------------------------------------------------


def test_duplicate_offer_ids(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "offers.yaml", [*OFFERS, dict(OFFERS[1], name="again")])
    with raises(f"{path}: duplicate offer_id: o-2"):
        load_offers(path, PLACEMENTS)
    load_offers(path)  # without placements nothing is checked


def test_unknown_placement() -> None:
    offers = offers_frame([*OFFERS, dict(OFFERS[1], offer_id="o-3", placements=["web-banner", "push", "sms"])])
    with raises("offers: offer 'o-3': unknown placement(s) push, sms"):
        check_offers(offers, PLACEMENTS)


def test_no_placements() -> None:
    offers = offers_frame([*OFFERS, dict(OFFERS[1], offer_id="o-3", placements=[])])
    with raises("offers: offer 'o-3': no placements"):
        check_offers(offers, PLACEMENTS)


def test_no_fallback_for_a_placement(tmp_path: Path) -> None:
    rows = [*OFFERS[:2], dict(OFFERS[2], placements=["web-banner"])]
    path = write_yaml(tmp_path / "offers.yaml", rows)
    with raises(f"{path}: placement 'email-hero' has no fallback offer"):
        load_offers(path, PLACEMENTS)


def test_unknown_name_in_a_rule(tmp_path: Path) -> None:
    rows = [dict(OFFERS[0], eligibility="profile.agee >= 18"), *OFFERS[1:]]
    path = write_yaml(tmp_path / "offers.yaml", rows)
    with raises(f"{path}: offer 'o-1' eligibility: column 1: unknown name 'profile.agee'"
                " (did you mean 'profile.age'?)"):
        load_offers(path, PLACEMENTS, profiles=PROFILES)
    load_offers(path, PLACEMENTS)  # without profiles the rules are not checked


def test_rule_type_and_syntax_errors_without_placements() -> None:
    offers = offers_frame([dict(OFFERS[0], eligibility="profile.age + 1"),
                           dict(OFFERS[1], eligibility="profile.country == 'DE' and"), OFFERS[2]])
    with pytest.raises(CatalogError) as info:
        check_offers(offers, PLACEMENTS, profiles=PROFILES)
    message = str(info.value)
    assert message.startswith("offers: offer 'o-1' eligibility: column 1: a rule must be bool, got number; "
                              "offer 'o-2' eligibility: ")
    assert message.count("eligibility") == 2


def test_rules_may_use_offer_columns() -> None:
    offers = offers_frame([dict(OFFERS[0], eligibility="offer.category == 'home' and profile.country in ['DE']"),
                           *OFFERS[1:]])
    check_offers(offers, PLACEMENTS, profiles=PROFILES)


def test_load_offers_checks_rules_without_placements(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "offers.yaml", [dict(OFFERS[0], eligibility="profile.agee > 1")])
    with pytest.raises(CatalogError, match=re.escape(f"{path}: offer 'o-1' eligibility: column 1: "
                                                     "unknown name 'profile.agee'")):
        load_offers(path, profiles=PROFILES)


def test_every_problem_in_one_message() -> None:
    rows = [dict(OFFERS[0], eligibility="profile.agee > 1", placements=["web-banner", "push"]),
            dict(OFFERS[1], placements=[]), dict(OFFERS[1]),
            dict(OFFERS[2], placements=["web-banner"])]
    with raises("cat.yaml: duplicate offer_id: o-2; offer 'o-1': unknown placement(s) push; "
                "offer 'o-2': no placements; placement 'email-hero' has no fallback offer; "
                "offer 'o-1' eligibility: column 1: unknown name 'profile.agee' (did you mean 'profile.age'?)"):
        check_offers(offers_frame(rows), PLACEMENTS, source="cat.yaml", profiles=PROFILES)


# -- profiles -------------------------------------------------------------------------------------


def test_profiles_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "profiles.parquet"
    PROFILES.assign(profile_id=[1, 2]).to_parquet(path, index=False)
    profiles = load_profiles(path)
    assert profiles["profile_id"].tolist() == ["1", "2"]
    assert profiles["age"].tolist() == [30, 17]


def test_profiles_of_some_ids_only(tmp_path: Path) -> None:
    """A Parquet file with text ids is read with a filter; other files (or numeric ids) whole, then
    filtered; the rows and dtypes are those of a full read."""
    frame = pd.DataFrame({"profile_id": ["p1", "p2", "p3"], "age": [30, 17, 52], "tier": ["gold", None, "silver"]})
    for name, write in (("text.parquet", lambda f, p: f.to_parquet(p, index=False)),
                        ("text.csv", lambda f, p: f.to_csv(p, index=False))):
        path = tmp_path / name
        write(frame, path)
        full, some = load_profiles(path), load_profiles(path, ["p3", "p1", "nobody"])
        assert some["profile_id"].tolist() == ["p1", "p3"] and some.dtypes.equals(full.dtypes)
        assert some.equals(full[full["profile_id"].isin(["p1", "p3"])].reset_index(drop=True))
        assert load_profiles(path, ["nobody"]).empty and list(load_profiles(path, []).columns) == list(full.columns)
    numeric = tmp_path / "numeric.parquet"
    PROFILES.assign(profile_id=[1, 2]).to_parquet(numeric, index=False)
    assert load_profiles(numeric, ["2"])["profile_id"].tolist() == ["2"]


def test_enriched_profiles_are_written_by_id_so_one_profile_decodes_one_row_group(tmp_path: Path) -> None:
    """A run writes the profiles the decision step reads sorted by id, in the ranking store's row
    groups: `offerflow decide` decodes the one group holding its profile, not the whole file (a
    user's profiles come in any order; written as given, every group spans every id)."""
    from offerflow.core.parquet_rows import _groups_that_may_hold
    from offerflow.core.store_tables import ROW_GROUP_ROWS
    from offerflow.models.customer_ai_training import enrich_profiles

    n = 2 * ROW_GROUP_ROWS + 5
    ids = [f"u{i:06d}" for i in np.random.default_rng(3).permutation(n)]
    profiles = pd.DataFrame({"profile_id": ids, "age": np.arange(n)})
    path = tmp_path / "profiles_enriched.parquet"
    assert enrich_profiles(profiles, {}, path)["profile_id"].tolist() == ids  # the run's frame keeps its order
    file = pq.ParquetFile(path)
    assert file.metadata.num_row_groups == 3
    assert file.read(columns=["profile_id"]).column(0).to_pylist() == sorted(ids)
    assert _groups_that_may_hold(file, file.schema_arrow.get_field_index("profile_id"), "u040000", "u040000") == [1]
    assert load_profiles(path, ["u040000"]).to_dict("records") == [{"profile_id": "u040000",
                                                                    "age": ids.index("u040000")}]


def test_profiles_with_duplicate_ids(tmp_path: Path) -> None:
    path = tmp_path / "profiles.csv"
    pd.DataFrame({"profile_id": ["p1", "p2", "p2", "p3", "p3", "p3"]}).to_csv(path, index=False)
    with raises(f"{path}: 3 duplicate profile_id(s), e.g. 'p2'"):
        load_profiles(path)


def test_profiles_without_profile_id(tmp_path: Path) -> None:
    path = tmp_path / "profiles.csv"
    pd.DataFrame({"id": ["p1"], "age": [3]}).to_csv(path, index=False)
    with raises(f"{path}: missing required column: profile_id"):
        load_profiles(path)


# -- lookups --------------------------------------------------------------------------------------


def test_offers_for_placement_excludes_fallbacks() -> None:
    offers = offers_frame()
    assert offers_for_placement(offers, "web-banner")["offer_id"].tolist() == ["o-1", "o-2"]
    assert offers_for_placement(offers, "email-hero")["offer_id"].tolist() == ["o-1"]
    assert offers_for_placement(offers, "push").empty


def test_fallback_offer_is_the_highest_priority_one() -> None:
    offers = offers_frame([*OFFERS, dict(OFFERS[2], offer_id="o-fb2", priority=9, placements=["email-hero"])])
    assert fallback_offer(offers, "web-banner") == "o-fb"
    assert fallback_offer(offers, "email-hero") == "o-fb2"
    with raises("placement 'push' has no fallback offer"):
        fallback_offer(offers, "push")

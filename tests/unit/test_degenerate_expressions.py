"""Formulas and rules that rank nothing (issue 19): a warning at check time and at publish, an
error with strict (`--strict`, or `strict: true` in the project file)."""

from __future__ import annotations

import numpy as np
import pytest

from offerflow.core.config import load_config
from offerflow.core.paths import ranking_store
from offerflow.ingest.catalog import load_profiles, read_offers
from offerflow.models.project_check import check_project
from offerflow.ranking.degenerate import DegenerateExpression, formula_warning, rule_warning
from offerflow.ranking.publishing import build_ranking_table, publish_placement

from tests.unit.test_project_check import edit_config, edit_offers, set_formula

NO_VALUE = ("offerflow.yaml: placements[2].ranking.formula: formula gives no value for any offer"
            " (first 1,000 profiles): placement {} would fall back to priority")


def checked(project, strict: bool = False):
    return check_project(load_config(project / "offerflow.yaml"), strict=strict)


def test_the_demo_project_has_no_warnings(project_dir):
    result = checked(project_dir)
    assert result.ok and result.warnings == []


def test_a_formula_without_value_warns_and_is_an_error_when_strict(project_dir):
    edit_config(project_dir, set_formula("offer.priority / 0"))
    placement = load_config(project_dir / "offerflow.yaml").placements[2].id
    result = checked(project_dir)
    assert result.ok and result.warnings == [NO_VALUE.format(placement)]
    assert result.summary().endswith(", 1 warning")
    strict = checked(project_dir, strict=True)
    assert not strict.ok and strict.problems == [NO_VALUE.format(placement)] and strict.warnings == []
    edit_config(project_dir, lambda raw: raw.update(strict=True))  # the project file's setting
    assert checked(project_dir).problems == [NO_VALUE.format(placement)]


def test_commands_that_read_published_tables_check_mistakes_only(project_dir, monkeypatch):
    """`decide` and `decide-batch` (`warnings=False`): no data sampled, no warning, strict or not;
    a mistake is still one located problem."""
    import offerflow.models.project_check as project_check

    edit_config(project_dir, set_formula("offer.priority / 0"))
    edit_config(project_dir, lambda raw: raw.update(strict=True))
    monkeypatch.setattr(project_check, "profile_sample", lambda *a: pytest.fail("sampled the profiles"))
    quick = check_project(load_config(project_dir / "offerflow.yaml"), warnings=False)
    assert quick.ok and quick.warnings == [] and quick.problems == []
    edit_config(project_dir, set_formula("offer.priority * "))
    (line,) = check_project(load_config(project_dir / "offerflow.yaml"), warnings=False).problems
    assert line.startswith("offerflow.yaml: placements[2].ranking.formula: column ")


def test_a_constant_formula_warns(project_dir):
    edit_config(project_dir, set_formula("if(profile.age > -1, 3, 3)"))
    (line,) = checked(project_dir).warnings
    assert "formula gives the same value (3) for every profile and offer (first 1,000 profiles):" in line
    assert line.endswith("'s offers") and "it does not rank placement" in line


def test_formulas_naming_scores_known_only_in_a_run_are_not_judged(project_dir):
    edit_config(project_dir, set_formula("offer.priority * profile.propensity.purchase_14d.probability / 0"))
    result = checked(project_dir)
    assert result.ok and result.warnings == []  # a run judges it when it publishes


def test_a_rule_no_profile_meets_warns(project_dir):
    def impossible(offers):
        offers[3]["eligibility"] = "profile.age > 1000"
        offers[4]["eligibility"] = "1 < 2"
    edit_offers(project_dir, impossible)
    offers = read_offers(project_dir / "data/offers.yaml")
    ids = offers["offer_id"].tolist()
    assert checked(project_dir).warnings == [
        f"offers.yaml: offers[3].eligibility (offer {ids[3]!r}): rule is true for no profile: offer {ids[3]} is never eligible",
        f"offers.yaml: offers[4].eligibility (offer {ids[4]!r}): rule names no profile or offer field:"
        " it is true for every profile"]
    assert len(checked(project_dir, strict=True).problems) == 2


def test_publishing_warns_records_and_refuses_when_strict(project_dir):
    edit_config(project_dir, set_formula("offer.priority / 0"))
    config = load_config(project_dir / "offerflow.yaml")
    placement = config.placements[2]
    profiles, offers = load_profiles(config.path(config.data.profiles)), read_offers(config.path(config.data.offers))
    warned: list[str] = []
    table = build_ranking_table(placement, profiles, offers, None, warn=warned.append)
    assert table.num_rows == 0
    assert warned == [f"formula gives no value for any offer (first 1,000 profiles): placement {placement.id}"
                      " would fall back to priority"]
    store = ranking_store(config)
    with pytest.raises(DegenerateExpression, match="formula gives no value for any offer"):
        publish_placement(store, placement, profiles, offers, None, strict=True)
    assert store.current_version(placement.id) is None
    version = publish_placement(store, placement, profiles, offers, None)
    assert store.read_metadata(placement.id, version)["warnings"] == warned


def test_warning_rules_on_small_arrays():
    assert formula_warning(np.array([1.0, np.nan, 2.0]), "p", 2) is None
    assert formula_warning(np.array([2.0, 2.0]), "p", 1) is None  # one offer: nothing to rank
    assert formula_warning(np.array([]), "p", 0) is None
    assert rule_warning(np.array([False, True]), "o", frozenset({"profile.age"})) is None
    assert rule_warning(np.array([False, False]), "o", frozenset({"profile.age"}), " (x)") == \
        "rule is true for no profile (x): offer o is never eligible"


def test_cli_check_warns_and_check_or_run_with_strict_exit_2_in_one_line(project_dir):
    from typer.testing import CliRunner

    from offerflow.cli import app

    edit_config(project_dir, set_formula("offer.priority / 0"))
    config = str(project_dir / "offerflow.yaml")
    placement = load_config(project_dir / "offerflow.yaml").placements[2].id
    runner = CliRunner()
    checked = runner.invoke(app, ["check", "-c", config])
    assert checked.exit_code == 0, checked.output
    assert checked.output.splitlines() == [f"warning: {NO_VALUE.format(placement)}",
                                           f"ok: 1 formula, {checked.output.split(' rules')[0].split(', ')[-1]} rules,"
                                           " 1 goal condition, 1 warning"]
    for command in (["check", "--strict"], ["run", "--strict"]):
        strict = runner.invoke(app, [*command, "-c", config])
        assert strict.exit_code == 2, strict.output
        assert strict.output.splitlines() == [f"error: {NO_VALUE.format(placement)}"]

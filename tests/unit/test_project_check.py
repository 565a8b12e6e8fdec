"""The project check: every formula, eligibility rule and goal condition, located, before any work,
with the names and types a run gives them (and the same error a run would raise)."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from offerflow.core.config import load_config
from offerflow.models.project_check import CheckResult, ProjectCheckFailed, check_project, require_valid_project

DEMO_FORMULA = "if(offer.category == profile.favorite_category, offer.priority * 2, offer.priority)"
TYPO_FORMULA = "if(offer.category == profile.favorite_category, offer.priority * , offer.priority)"


def edit_config(project, change) -> None:
    path = project / "offerflow.yaml"
    raw = yaml.safe_load(path.read_text())
    change(raw)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def edit_offers(project, change) -> None:
    path = project / "data/offers.yaml"
    raw = yaml.safe_load(path.read_text())
    change(raw["offers"])
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def set_formula(formula: str, ai_model: str | None = None):
    def change(raw):
        raw["placements"][2]["ranking"] = {"method": "formula", "formula": formula,
                                           **({"ai_model": ai_model} if ai_model else {})}
        if ai_model:
            next(m for m in raw["ai_models"] if m["name"] == ai_model)["placements"].append(raw["placements"][2]["id"])
    return change


def problems(project) -> list[str]:
    return check_project(load_config(project / "offerflow.yaml")).problems


def test_the_demo_project_passes_and_is_counted(project_dir):
    result = check_project(load_config(project_dir / "offerflow.yaml"))
    offers = yaml.safe_load((project_dir / "data/offers.yaml").read_text())["offers"]
    assert result.ok and result.problems == []
    assert (result.formulas, result.goal_conditions) == (1, 1)
    assert result.rules == sum(1 for o in offers if o.get("eligibility"))
    assert result.summary() == f"ok: 1 formula, {result.rules} rules, 1 goal condition"


@pytest.mark.parametrize(("counts", "warnings", "summary"), [
    ((1, 1, 1), ["w"], "ok: 1 formula, 1 rule, 1 goal condition, 1 warning"),
    ((0, 2, 3), ["w", "v"], "ok: 0 formulas, 2 rules, 3 goal conditions, 2 warnings"),
    ((2, 0, 0), [], "ok: 2 formulas, 0 rules, 0 goal conditions"),
])
def test_the_summary_counts_in_the_singular_and_plural(counts, warnings, summary):
    formulas, rules, goal_conditions = counts
    assert CheckResult(formulas, rules, goal_conditions, warnings=warnings).summary() == summary


def test_a_missing_events_file_is_a_warning_and_an_error_when_strict(project_dir):
    """`run` would stop on it; `decide` and `decide-batch` (no warnings) do not read it."""
    edit_config(project_dir, lambda raw: raw["data"].__setitem__("events", "data/evnts.parquet"))
    config = load_config(project_dir / "offerflow.yaml")
    line = "offerflow.yaml: data.events: data/evnts.parquet: events file not found"
    assert check_project(config).warnings == [line] and check_project(config).ok
    assert check_project(config, strict=True).problems == [line]
    assert check_project(config, warnings=False).warnings == []


def test_a_formula_typo_is_one_located_line(project_dir):
    edit_config(project_dir, set_formula(TYPO_FORMULA))
    assert problems(project_dir) == ["offerflow.yaml: placements[2].ranking.formula: column 66: unexpected ','"]


def test_a_rule_typo_names_the_file_the_offer_and_the_column(project_dir):
    def typo(offers):
        offers[3]["eligibility"] = "profile.agee >= 18"
    edit_offers(project_dir, typo)
    offer_id = yaml.safe_load((project_dir / "data/offers.yaml").read_text())["offers"][3]["offer_id"]
    assert problems(project_dir) == [f"offers.yaml: offers[3].eligibility (offer {offer_id!r}): column 1:"
                                     " unknown name 'profile.agee' (did you mean 'profile.age'?)"]


def test_goal_conditions_need_a_known_field_and_a_value_of_its_type(project_dir):
    def goal(raw):
        raw["propensity_goals"][0]["goal"] = {"all_of": [{"field": "evnt_type", "value": "purchase"},
                                                         {"field": "value", "operator": ">", "value": "abc"},
                                                         {"field": "event_type", "operator": "in", "value": ["a", 5]},
                                                         {"field": "value", "operator": ">", "value": 20}]}
    edit_config(project_dir, goal)
    found = problems(project_dir)
    assert len(found) == 3, found
    assert found[0].startswith("offerflow.yaml: propensity_goals[0].goal.all_of[0].field: unknown event field"
                               " 'evnt_type' (fields: ")
    assert found[1] == ("offerflow.yaml: propensity_goals[0].goal.all_of[1].value: 'abc' cannot be compared with"
                        " event field 'value' (double)")
    assert found[2] == ("offerflow.yaml: propensity_goals[0].goal.all_of[2].value: 5 cannot be compared with"
                        " event field 'event_type' (string)")


def test_every_mistake_is_reported_once(project_dir):
    edit_config(project_dir, set_formula(TYPO_FORMULA))

    def typo(offers):
        offers[0]["eligibility"] = "profile.age >= '18'"
    edit_offers(project_dir, typo)
    with pytest.raises(ProjectCheckFailed) as failed:
        require_valid_project(load_config(project_dir / "offerflow.yaml"))
    lines = str(failed.value).splitlines()
    assert len(lines) == 2 and len(set(lines)) == 2, lines
    assert lines[1].startswith("offers.yaml: offers[0].eligibility")


def test_ai_score_is_known_only_where_the_formula_names_a_model(project_dir):
    edit_config(project_dir, set_formula("ai_score * 2"))
    assert problems(project_dir) == ["offerflow.yaml: placements[2].ranking.formula: column 1: unknown name"
                                     " 'ai_score'"]
    edit_config(project_dir, set_formula("ai_score * (1 + profile.propensity.purchase_14d.probability)",
                                         ai_model="web-personalized"))
    assert problems(project_dir) == []


def test_customer_ai_fields_are_known_per_goal_with_their_types(project_dir):
    edit_config(project_dir, set_formula("offer.priority * profile.propensity.purchase_14d.score"))
    assert problems(project_dir) == []
    edit_config(project_dir, set_formula("offer.priority * profile.propensity.purchase_30d.score"))
    assert "unknown name 'profile.propensity.purchase_30d.score'" in problems(project_dir)[0]

    def bucket_rule(offers):
        offers[0]["eligibility"] = "profile.propensity.purchase_14d.bucket == 'high'"
    edit_offers(project_dir, bucket_rule)
    edit_config(project_dir, set_formula(DEMO_FORMULA))
    assert problems(project_dir) == []


def test_reads_the_profiles_schema_and_first_rows_never_the_whole_table(project_dir, monkeypatch):
    def no_rows(*args, **kwargs):
        raise AssertionError("the check read the whole profiles table")
    monkeypatch.setattr(pd, "read_parquet", no_rows)
    monkeypatch.setattr("pyarrow.parquet.read_table", no_rows)
    assert check_project(load_config(project_dir / "offerflow.yaml")).ok


def test_fails_with_the_error_a_run_would_raise(project_dir):
    """The same message (after the location) as the scoring step compiling the formula on the real data."""
    from offerflow.ingest.catalog import load_profiles, read_offers
    from offerflow.ranking.publishing import plan_scoring
    from offerflow.rules.expressions import ExpressionError

    formula = "offer.priority * profile.age + profile.country"
    edit_config(project_dir, set_formula(formula))
    config = load_config(project_dir / "offerflow.yaml")
    (line,) = check_project(config).problems
    profiles, offers = load_profiles(config.path(config.data.profiles)), read_offers(config.path(config.data.offers))
    with pytest.raises(ExpressionError) as run:
        plan_scoring(config.placements[2], profiles, offers, None).score_fn()
    assert line.endswith(f": column {run.value.column}: {run.value.message}"), (line, str(run.value))

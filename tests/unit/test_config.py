from pathlib import Path

import pytest
import yaml

from offerflow.core.config import ConfigError, load_config, parse_config
from offerflow.synthetic.world import demo_config_yaml


def demo_raw() -> dict:
    return yaml.safe_load(demo_config_yaml())


def test_demo_config_is_valid(tmp_path: Path):
    path = tmp_path / "offerflow.yaml"
    path.write_text(demo_config_yaml())
    config = load_config(path)
    assert config.root == tmp_path.resolve()
    assert config.placement("web-banner").items == 3
    assert config.path(config.data.events) == tmp_path.resolve() / "data" / "events.parquet"


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r["ai_models"][1]["placements"].__setitem__(0, "push-hero"),
     "offerflow.yaml: ai_models[1].placements[0]: unknown placement 'push-hero'"),
    (lambda r: r["placements"][0].__setitem__("items", 31),
     "offerflow.yaml: placements[0].items: Input should be less than or equal to 30"),
    (lambda r: r["placements"][0].__setitem__("colour", "red"),
     "offerflow.yaml: placements[0].colour: Extra inputs are not permitted"),
    (lambda r: r["placements"][0]["ranking"].__setitem__("ai_model", "nope"),
     "offerflow.yaml: placements[0].ranking.ai_model: unknown AI model 'nope'"),
    (lambda r: r["placements"].append(dict(r["placements"][0])),
     "offerflow.yaml: placements: duplicate placement id 'web-banner'"),
    (lambda r: r["propensity_goals"][0]["goal"].__setitem__("all_of", []),
     "offerflow.yaml: propensity_goals[0].goal: a goal needs at least one condition"),
    (lambda r: r["placements"][1].__setitem__("channel", "fax"),
     "offerflow.yaml: placements[1].channel: Input should be"),
    # a formula reads `ai_score` from a personalized model that serves the placement
    (lambda r: r["placements"][2]["ranking"].__setitem__("ai_model", "email-auto"),
     "offerflow.yaml: placements[2].ranking.ai_model: a formula reads `ai_score` from a personalized model;"
     " 'email-auto' is auto_optimization"),
    (lambda r: r["placements"][2]["ranking"].__setitem__("ai_model", "web-personalized"),
     "offerflow.yaml: placements[2].ranking.ai_model: AI model 'web-personalized' does not list placement"
     " 'web-sidebar' in its placements"),
    (lambda r: r.__setitem__("caps", {"store": "memcached://x"}),
     "offerflow.yaml: caps.store: must be 'embedded', 'lmdb' (or lmdb:///absolute/dir) or a Redis URL "
     "(redis://host:6379/0), got 'memcached://x'"),
    (lambda r: r.__setitem__("caps", {"store": "lmdb://caps"}),
     "offerflow.yaml: caps.store: an lmdb:// store needs an absolute directory (lmdb:///var/lib/offerflow/caps), "
     "got 'lmdb://caps'; 'lmdb' alone puts it under the outputs"),
    (lambda r: r.__setitem__("caps", {"store": "lmdb", "lmdb_map_mib": 1}),
     "offerflow.yaml: caps.lmdb_map_mib: Input should be greater than or equal to 16"),
])
def test_bad_config_gives_located_message(mutate, message):
    raw = demo_raw()
    mutate(raw)
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert message in str(info.value)


@pytest.mark.parametrize("section, key, typo", [
    (("placements", 0), "channel", "chanel"),
    (("ai_models", 1), "type", "typ"),
    (("propensity_goals", 0), "goal", "gaol"),
    (("propensity_goals", 0, "goal", "all_of", 0), "field", "feild"),
])
def test_a_misspelled_required_key_is_one_line(section, key, typo):
    raw = demo_raw()
    where = raw
    for part in section:
        where = where[part]
    where[typo] = where.pop(key)
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    location = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(section))
    assert str(info.value) == f"offerflow.yaml: {location}.{typo}: unknown setting {typo!r} (did you mean {key!r}?)"


def test_invalid_yaml_names_line(tmp_path: Path):
    path = tmp_path / "offerflow.yaml"
    path.write_text("placements:\n  - id: [unclosed\n")
    with pytest.raises(ConfigError, match=r"offerflow.yaml: line \d+, column \d+: invalid YAML"):
        load_config(path)


def test_missing_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="project file not found"):
        load_config(tmp_path / "nope.yaml")


def test_committed_project_file_is_the_demo_config():
    repo = Path(__file__).resolve().parents[2]
    assert (repo / "offerflow.yaml").read_text() == demo_config_yaml("data")
    load_config(repo / "offerflow.yaml")


def test_formula_placement_may_name_its_personalized_model():
    raw = demo_raw()
    raw["placements"][2]["ranking"] = {"method": "formula", "ai_model": "web-personalized",
                                       "formula": "ai_score * (1 + profile.propensity.purchase_14d.probability)"}
    raw["ai_models"][0]["placements"].append("web-sidebar")
    config = parse_config(raw)
    assert config.placement("web-sidebar").ranking.ai_model == "web-personalized"

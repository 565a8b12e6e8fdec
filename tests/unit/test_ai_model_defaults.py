"""The AI model defaults documented in docs/ranking-models.md are the ones the code applies."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from offerflow.core.config import AI_MODEL_TYPE_DEFAULTS, AIModelConfig

DOC = Path(__file__).resolve().parents[2] / "docs" / "ranking-models.md"


def documented_defaults() -> dict[str, dict[str, str]]:
    """The defaults table of the doc: {setting: {type: value as written}}."""
    rows = re.findall(r"^\| `([\w.]+)` \| ([^|]+) \| ([^|]+) \|$", DOC.read_text(encoding="utf-8"), re.MULTILINE)
    assert rows, "docs/ranking-models.md lost its defaults table"
    return {name: {"auto_optimization": a.strip(), "personalized": p.strip()} for name, a, p in rows}


def _as_doc(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else f"{value:g}" if isinstance(value, float) else str(value)


@pytest.mark.parametrize("model_type", ["auto_optimization", "personalized"])
def test_documented_defaults_are_the_code_defaults(model_type: str) -> None:
    model = AIModelConfig(name="m", type=model_type, placements=["p"])
    documented = documented_defaults()
    for setting, values in documented.items():
        value = model
        for part in setting.split("."):
            value = getattr(value, part)
        assert _as_doc(value) == values[model_type], (setting, model_type)
    defaults = AI_MODEL_TYPE_DEFAULTS[model_type]
    flat: set[str] = set()
    for key, value in defaults.items():  # nested settings as the doc writes them: lightgbm.num_leaves
        flat |= {f"{key}.{sub}" for sub in value} if isinstance(value, dict) else {key}
    assert flat <= set(documented)


def test_the_file_overrides_the_type_defaults() -> None:
    model = AIModelConfig(name="m", type="personalized", placements=["p"], min_displays=10)
    assert (model.min_displays, model.min_successes, model.training_window_days) == (10, 25, 30)


def test_models_list_says_when_an_auto_optimization_model_serves_at_random() -> None:
    from offerflow.ranking.ai_models import serving_state, traffic_split

    sampled = AIModelConfig(name="m", type="auto_optimization", placements=["p"])  # new_offers: empirical_bayes
    assert serving_state(sampled, {"offers_qualified": 0.0, "offers_total": 12.0}) == \
        ("model", {"model": 0.9, "exploration": 0.0, "holdout": 0.1})  # every offer sampled, no exploration share
    model = sampled.model_copy(update={"new_offers": "exploration_share"})  # the hosted systems' rule
    serving, traffic = serving_state(model, {"offers_qualified": 1.0, "offers_total": 12.0})
    assert serving.startswith("random: 1 of 12 offers qualified") and traffic["random"] == 1.0
    assert traffic["model"] == 0.0
    assert serving_state(model, {"offers_qualified": 2.0, "offers_total": 12.0}) == ("model", traffic_split(model))
    assert serving_state(model, {}) == ("model", traffic_split(model))  # never trained: the configuration
    # every offer qualified: auto-optimization explores only while an offer is new
    _, traffic = serving_state(model, {"offers_qualified": 12.0, "offers_total": 12.0})
    assert traffic == {"model": 0.9, "exploration": 0.0, "holdout": 0.1}


def test_models_list_says_when_a_personalized_model_serves_at_random() -> None:
    """Fewer than two qualified offers: the click model ranks nothing (each offer scores as the
    worst qualified one), so its placement is served at random, as the decisions say."""
    from offerflow.ranking.ai_models import serving_state, traffic_split

    model = AIModelConfig(name="m", type="personalized", placements=["p"])
    serving, traffic = serving_state(model, {"offers_qualified": 0.0, "offers_total": 33.0})
    assert serving.startswith("random: 0 of 33 offers qualified (needs 2 with at least 250 displays and 25 successes)")
    assert traffic["random"] == 1.0 and traffic["model"] == 0.0
    assert serving_state(model, {"offers_qualified": 2.0, "offers_total": 33.0}) == ("model", traffic_split(model))


def test_lightgbm_settings_merge_with_the_type_defaults() -> None:
    model = AIModelConfig(name="m", type="personalized", placements=["p"], lightgbm={"learning_rate": 0.1})
    assert (model.lightgbm.num_leaves, model.lightgbm.min_child_samples, model.lightgbm.learning_rate) == (7, 200, 0.1)
    model = AIModelConfig(name="m", type="personalized", placements=["p"], lightgbm={"num_leaves": 63})
    assert (model.lightgbm.num_leaves, model.lightgbm.min_child_samples) == (63, 200)
    assert AIModelConfig(name="m", type="auto_optimization", placements=["p"]).lightgbm.num_leaves == 31

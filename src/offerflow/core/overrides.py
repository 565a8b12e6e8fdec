"""Variants of a typed config section from `--set key.path=value` assignments.

A data scientist trains a variant with other hyperparameters without editing `offerflow.yaml`:
`offerflow train --goal purchase_14d --set lightgbm.num_leaves=63`. The assignments are applied to
the goal's (or AI model's) pydantic section and validated by the same model, so a typo or an
out-of-range value is the same located one-line error a bad project file gives.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, Field, ValidationError

from offerflow.core.config import ConfigError, ProjectConfig

_M = TypeVar("_M", bound=BaseModel)


def parse_assignments(items: Iterable[str]) -> dict[str, Any]:
    """`["lightgbm.num_leaves=63", "top_factors=5"]` -> `{"lightgbm.num_leaves": 63, "top_factors": 5}`;
    values are read as YAML scalars (63 is an int, 0.1 a float, true a bool, [7, 30] a list)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. lightgbm.num_leaves=63")
        try:
            out[key] = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: cannot read value {text!r}") from None
    return out


def apply_overrides(section: _M, overrides: Mapping[str, Any], source: str = "--set") -> _M:
    """A validated copy of `section` with each dotted key set to its value."""
    data = section.model_dump(mode="python")
    for key, value in overrides.items():
        node, parts = data, key.split(".")
        for depth, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                where = ".".join(parts[:depth]) or "the section"
                known = ", ".join(sorted(node)) if isinstance(node, dict) else "none (not a mapping)"
                raise ConfigError(f"{source} {key}: unknown setting {part!r} in {where} (known: {known})")
            if depth == len(parts) - 1:
                node[part] = value
            else:
                node = node[part]
    try:
        return type(section).model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{source} {where}: {err['msg'].removeprefix('Value error, ')}") from None


_SECTIONS = {"propensity_goals": "propensity goal", "ai_models": "AI model"}


def variant(config: ProjectConfig, section: Literal["propensity_goals", "ai_models"], names: list[str],
            overrides: Mapping[str, Any]) -> ProjectConfig:
    """The project config with `overrides` applied to the named goals (or AI models), validated;
    an unknown name is a ConfigError (a ValueError) listing the defined ones."""
    what = _SECTIONS[section]
    items = getattr(config, section)
    known = [item.name for item in items]
    for name in names:
        if name not in known:
            raise ConfigError(f"unknown {what} {name!r} (defined: {', '.join(known) or 'none'})")
    if not overrides:
        return config
    label = "goal" if section == "propensity_goals" else "model"
    updated = [apply_overrides(item, overrides, source=f"--set ({label} {item.name})") if item.name in names else item
               for item in items]
    return config.model_copy(update={section: updated})


def describe_overrides(overrides: Mapping[str, Any]) -> str:
    """A short tag value naming the variant, e.g. `lightgbm.num_leaves=63`."""
    return ", ".join(f"{k}={v}" for k, v in sorted(overrides.items()))


class VariantOptions(BaseModel):
    """Settings to change for one training run (a variant); rendered as a form in the Prefect UI."""

    overrides: dict[str, Any] = Field(default_factory=dict, description=(
        "Settings to change for this run, e.g. {'lightgbm.num_leaves': 63}."))

    def variant_tags(self) -> dict[str, str]:
        """The MLflow tag that marks a variant's runs (none for the configured settings)."""
        return {"variant": describe_overrides(self.overrides)} if self.overrides else {}

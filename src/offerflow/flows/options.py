"""What the training flows take besides the project file: rendered as forms in the Prefect UI."""

from __future__ import annotations

from pydantic import Field

from offerflow.core.overrides import VariantOptions


class CustomerAIOptions(VariantOptions):
    """What to train (rendered as a form in the Prefect UI)."""

    goals: list[str] = Field(default_factory=list, description="Goal names; empty trains every goal.")


class RankingModelOptions(VariantOptions):
    """What to train (rendered as a form in the Prefect UI)."""

    models: list[str] = Field(default_factory=list, description="AI model names; empty trains every active model.")

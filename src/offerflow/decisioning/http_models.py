"""The request and response models of the HTTP decision service (validation and the /docs schema)."""

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from offerflow.decisioning.decision_types import MAX_ITEMS
from offerflow.decisioning.http_guards import MAX_ID_BYTES, check_id

MAX_PLACEMENTS = 10
#: A profile, placement or offer id: 1 to MAX_ID_BYTES bytes of valid UTF-8.
Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_BYTES), AfterValidator(check_id)]


class DecisionRequest(BaseModel):
    """Which offers to show one profile in one or more placements (filled in request order)."""

    model_config = ConfigDict(extra="forbid")
    profile_id: Id = Field(description=f"Profile id (at most {MAX_ID_BYTES} bytes of UTF-8).")
    placements: list[Id] = Field(
        min_length=1, max_length=MAX_PLACEMENTS, description="Placement ids, in the order to fill them.")
    items: int | None = Field(default=None, ge=1, le=MAX_ITEMS,
                              description="Items per placement (default: the placement's own count).")
    allow_duplicates: bool = Field(default=False, description="Allow an offer in several placements.")


class DecisionItemOut(BaseModel):
    placement_id: str
    offer_id: str
    rank: int
    score: float | None
    fallback: bool
    propensity: float | None


class PlacementDecisionOut(BaseModel):
    placement_id: str
    channel: str
    items: list[DecisionItemOut]
    ranking_method: str
    ai_model: str | None
    model_version: str | None
    table_version: int | None
    source: str = Field(description="ranking_table | thompson_sampling | exploration | random_too_few_qualified"
                        " | non_personalized | random_holdout | fallback")
    arm: str = Field(description="model | holdout | non_personalized | fallback")


class DecisionOut(BaseModel):
    decision_id: str
    profile_id: str
    decided_at: str
    placements: list[PlacementDecisionOut]


class HealthOut(BaseModel):
    status: str
    placements: dict[str, int | None] = Field(description="Current published version per placement.")


class ErrorOut(BaseModel):
    detail: str


class CapResetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    offer_id: Id | None = Field(default=None, description="Only this offer (default: every offer).")


class CapResetOut(BaseModel):
    status: str
    offer_id: str | None
    counters_cleared: int

"""The request and response models of the HTTP decision service (validation and the /docs schema)."""

from typing import Annotated, Any

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
    # strict: a JSON integer or boolean, as documented; "3", 3.0 or "yes" is a 422 naming the field
    items: int | None = Field(default=None, ge=1, le=MAX_ITEMS, strict=True,
                              description="Items per placement, a JSON integer (default: the placement's own count).")
    allow_duplicates: bool = Field(default=False, strict=True,
                                   description="Allow an offer in several placements (true or false).")
    explain: bool = Field(default=False, strict=True,
                          description="Also say why, per placement (`explanation`; true or false); off by default.")


class DecisionItemOut(BaseModel):
    placement_id: str
    offer_id: str
    rank: int
    score: float | None
    fallback: bool
    propensity: float | None


class CapStateOut(BaseModel):
    cap: str = Field(description="The cap rule, e.g. '3 displays per profile, daily, all placements'.")
    event: str = Field(description="What the rule counts: display | click | decision.")
    scope: str = Field(description="total | per_profile.")
    count: int = Field(description="The count for this request's offer/placement/profile before this decision.")
    limit: int = Field(description="The offer is capped once the count reaches this.")
    reset: str = Field(description="daily | weekly | monthly | never (00:00 UTC).")
    resets_at: str | None = Field(description="When the current window ends (ISO 8601; null: never).")
    reached: bool = Field(description="Whether count >= limit.")


class TermOut(BaseModel):
    term: str = Field(description="A ranking formula, one of its terms, or a name it reads.")
    value: Any = Field(description="Its value for this profile and offer now (null: null).")


class FormulaOut(BaseModel):
    text: str = Field(description="The placement's ranking formula.")
    terms: list[TermOut] = Field(description="The whole formula, then each top-level term, then each name.")


class _RankOut(BaseModel):
    """Where an offer stood, for an offer shown (its `ranking`) or one ranked lower (`not_shown`)."""

    table_rank: int | None = Field(None, description="Its rank in the profile's row of the published table.")
    score: float | None = Field(None, description="Its table score (model score or formula value at scoring).")
    sample: float | None = Field(None, description="Thompson sampling: this decision's sample of its rate "
                                                   "(null in batch: samples are not kept).")
    posterior_mean: float | None = Field(None, description="Thompson sampling: its posterior mean rate "
                                                           "(times the value per success for value-weighted models).")
    priority: float | None = Field(None, description="Ranked by priority: its catalog priority.")


class RankingOut(_RankOut):
    kind: str = Field(description="How the offer got its place: ranking_table | thompson_sampling | priority | "
                                  "random | fallback.")
    text: str = Field(description="The same, for people.")
    table_version: int | None = Field(None, description="Published table version (ranking_table, thompson_sampling).")
    ai_model: str | None = Field(None, description="The AI model that published the table.")
    model_version: str | None = Field(None, description="Its version.")
    formula: FormulaOut | None = Field(None, description="Formula placements: each term's value now.")
    displays: int | None = Field(None, description="Thompson sampling: displays in the model's window.")
    clicks: int | None = Field(None, description="Thompson sampling: successes (clicks) in the model's window.")
    qualified: bool | None = Field(None, description="Thompson sampling: enough data to be ranked by the model.")
    pool_size: int | None = Field(None, description="random: how many offers the random order drew from.")


class ShownOut(BaseModel):
    offer_id: str = Field(description="The offer shown.")
    rank: int = Field(description="Its slot, 1 first.")
    propensity: float | None = Field(description="Probability that the logging policy put this offer in this slot.")
    ranking: RankingOut = Field(description="How it got its place.")
    caps: list[CapStateOut] = Field(description="Each of the offer's cap rules, before this decision.")
    text: str = Field(description="One line for people.")


class FailedTermOut(BaseModel):
    term: str = Field(description="The failing comparison (or other leaf) of the eligibility rule.")
    value: bool | None = Field(description="Its value: false, or null (a null counts as false).")
    values: dict[str, Any] = Field(description="The profile and offer values it read.")


class NotShownOut(_RankOut):
    offer_id: str = Field(description="An offer of the placement that was not shown.")
    reason: str = Field(description="already_shown | rule_failed | cap_reached | not_in_model | lower_rank.")
    text: str = Field(description="One line for people.")
    shown_in: str | None = Field(None, description="already_shown: the earlier placement of the request.")
    rule: str | None = Field(None, description="rule_failed: the offer's eligibility rule.")
    failed_terms: list[FailedTermOut] | None = Field(None, description="rule_failed: why the rule is false.")
    cap: CapStateOut | None = Field(None, description="cap_reached: the first rule at its limit.")


class PlacementExplanationOut(BaseModel):
    arm: str = Field(description="model | exploration | holdout | non_personalized | fallback.")
    arm_share: float = Field(description="Share of the placement's decisions that go to this arm.")
    cold_start: bool = Field(description="The model could not rank: a profile it never scored, or fewer than "
                                         "two qualified offers.")
    text: str = Field(description="Why this arm, for people.")
    shown: list[ShownOut] = Field(description="Each offer shown, in rank order.")
    not_shown: list[NotShownOut] = Field(description="Each other offer of the placement and why it was not shown.")
    fallback_reason: str | None = Field(description="Why the fallback offer was used (null: it was not).")


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
    explanation: PlacementExplanationOut | None = Field(None, description="Only when the request asked to explain.")


class DecisionOut(BaseModel):
    decision_id: str
    profile_id: str
    decided_at: str
    placements: list[PlacementDecisionOut]


class HealthOut(BaseModel):
    status: str
    placements: dict[str, int | None] = Field(description="Current published version per placement.")


class PublishedOfferOut(BaseModel):
    offer_id: str
    rank: int = Field(description="1 = best, as published.")
    score: float = Field(description="The table's score (ranking), or the posterior mean alpha / (alpha + beta) "
                                 "times the value per success of value-weighted models (the score decisions use).")
    alpha: float | None = Field(default=None, description="Posterior tables only: Beta posterior alpha.")
    beta: float | None = Field(default=None, description="Posterior tables only: Beta posterior beta.")
    displays: int | None = Field(default=None, description="Posterior tables only: displays in the window.")
    successes: int | None = Field(default=None, description="Posterior tables only: clicks or conversions in the "
                                                            "window (a count; value-weighted models weight the "
                                                            "score, not this).")


class PublishedRankingOut(BaseModel):
    placement_id: str
    version: int = Field(description="The published version served now.")
    kind: str = Field(description="ranking (per profile) or posterior (auto-optimization, every offer).")
    ai_model: str | None = None
    model_version: str | None = None
    profile_id: str | None = None
    known_profile: bool | None = Field(default=None, description="False: the table has no row for this profile "
                                                                 "(decisions use the placement's priority order).")
    offers: list[PublishedOfferOut]
    note: str | None = Field(default=None, description="Set when decisions do not read this table (a personalized "
                                                       "model that qualified fewer than two offers), and why.")


class ErrorOut(BaseModel):
    detail: str


class CapResetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    offer_id: Id | None = Field(default=None, description="Only this offer (default: every offer).")


class CapResetOut(BaseModel):
    status: str
    offer_id: str | None
    counters_cleared: int

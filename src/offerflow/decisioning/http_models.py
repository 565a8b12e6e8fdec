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

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"profile_id": "p0000001", "placements": ["web-banner", "email-hero"]},
        {"profile_id": "p0000001", "placements": ["web-banner"], "items": 2, "allow_duplicates": False,
         "explain": True}]})
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


_REQUEST_FIELDS = frozenset(DecisionRequest.model_fields)


def _plain_id(value: Any) -> bool:
    """An id `DecisionRequest` takes as is: a str of 1 to MAX_ID_BYTES ASCII characters."""
    return type(value) is str and 0 < len(value) <= MAX_ID_BYTES and value.isascii()


def plain_request(data: Any) -> tuple[str, list[str], int | None, bool, bool] | None:
    """(profile_id, placements, items, allow_duplicates, explain) of a parsed JSON body that
    `DecisionRequest` would accept unchanged, checked without pydantic (its validation was ~4% of
    a decision's CPU); None for anything else, which the model validates (and may refuse). Only
    the plain case passes: ASCII ids, exact JSON types, no unknown field."""
    if type(data) is not dict or not _REQUEST_FIELDS.issuperset(data):
        return None
    profile_id, placements = data.get("profile_id"), data.get("placements")
    items, duplicates, explain = data.get("items"), data.get("allow_duplicates", False), data.get("explain", False)
    if (not _plain_id(profile_id) or type(placements) is not list or not 0 < len(placements) <= MAX_PLACEMENTS
            or not all(map(_plain_id, placements)) or type(duplicates) is not bool or type(explain) is not bool
            or (items is not None and (type(items) is not int or not 1 <= items <= MAX_ITEMS))):
        return None
    return profile_id, placements, items, duplicates, explain


class DecisionItemOut(BaseModel):
    placement_id: str = Field(description="The placement this item is shown in.")
    offer_id: str = Field(description="The offer to show.")
    rank: int = Field(description="Its slot in the placement, 1 first.")
    score: float | None = Field(description="The score it was ranked by: the table's score (model score or "
                                            "formula value), the Thompson posterior mean, or the priority when "
                                            "filled by priority; null for a random order (holdout, exploration) "
                                            "and the fallback.")
    fallback: bool = Field(description="True: the placement's fallback offer (nothing else was left).")
    propensity: float | None = Field(description="Probability that the logging policy put this offer in this slot "
                                                 "(1 for priority, formula and fallback; null where it is not "
                                                 "computed: Thompson sampling's slots after the first).")


class _CapRuleOut(BaseModel):
    """What a cap rule is and when its window ends (shared by the explanation and `GET /admin/caps`)."""

    cap: str = Field(description="The cap rule, e.g. '3 displays per profile, daily, all placements'.")
    limit: int = Field(description="The offer is capped once the count reaches this.")
    resets_at: str | None = Field(description="When the current window ends (ISO 8601; null: never).")


class CapStateOut(_CapRuleOut):
    event: str = Field(description="What the rule counts: display | click | decision.")
    scope: str = Field(description="total | per_profile.")
    count: int = Field(description="The count for this request's offer/placement/profile before this decision.")
    reset: str = Field(description="daily | weekly | monthly | never (00:00 UTC).")
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
    placement_id: str = Field(description="The placement, as requested.")
    channel: str = Field(description="Its channel (web, email, push, ...), from offerflow.yaml.")
    items: list[DecisionItemOut] = Field(description="The offers to show, in rank order.")
    ranking_method: str = Field(description="How the placement ranks: ai_model | formula | priority.")
    ai_model: str | None = Field(description="The AI model serving the placement (null: not an ai_model placement).")
    model_version: str | None = Field(description="The registered version of that model (null: none registered, "
                                                  "e.g. auto-optimization).")
    table_version: int | None = Field(description="The published ranking table version used (null: none).")
    source: str = Field(description="ranking_table | thompson_sampling | exploration | random_too_few_qualified"
                        " | non_personalized | random_holdout | fallback")
    arm: str = Field(description="model | holdout | non_personalized | fallback")
    explanation: PlacementExplanationOut | None = Field(None, description="Only when the request asked to explain.")


class DecisionOut(BaseModel):
    decision_id: str = Field(description="Id of this decision: the `decision_id` of its logged displays, for a "
                                         "click to name (docs/data-contract.md).")
    profile_id: str = Field(description="The profile, as requested (an unknown one gets the non-personalized order).")
    decided_at: str = Field(description="When it was decided (ISO 8601, UTC): the logged displays' timestamp.")
    placements: list[PlacementDecisionOut] = Field(description="One per requested placement, in request order.")


class HealthOut(BaseModel):
    status: str = Field(description="ok (reload: reloaded).")
    placements: dict[str, int | None] = Field(description="Current published version per placement.")


class PublishedOfferOut(BaseModel):
    offer_id: str = Field(description="The offer.")
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
    placement_id: str = Field(description="The placement, as requested.")
    version: int = Field(description="The published version served now.")
    kind: str = Field(description="ranking (per profile) or posterior (auto-optimization, every offer).")
    ai_model: str | None = Field(default=None, description="The AI model that published the table.")
    model_version: str | None = Field(default=None, description="Its registered version.")
    profile_id: str | None = Field(default=None, description="The profile asked about (ranking tables).")
    known_profile: bool | None = Field(default=None, description="False: the table has no row for this profile "
                                                                 "(decisions use the placement's priority order).")
    offers: list[PublishedOfferOut] = Field(description="At most `limit` offers, best first.")
    note: str | None = Field(default=None, description="Set when decisions do not read this table (a personalized "
                                                       "model that qualified fewer than two offers), and why.")


class ErrorOut(BaseModel):
    detail: str = Field(description="What was wrong, in one line.")


class CapResetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    offer_id: Id | None = Field(default=None, description="Only this offer (default: every offer).")


class CapResetOut(BaseModel):
    status: str = Field(description="reset.")
    offer_id: str | None = Field(description="The offer reset (null: every offer).")
    reset_at: str = Field(description="The reset's time (ISO 8601, UTC): events before it no longer count.")
    counters_cleared: int = Field(description="How many live counters (offer, placement, profile) were cleared.")


class CapRuleStateOut(_CapRuleOut):
    """One cap rule of one offer in `GET /admin/caps`."""

    offer_id: str = Field(description="The capped offer.")
    rule: int = Field(description="The rule's index in the offer's `caps` list.")
    placement_id: str | None = Field(description="For a rule counted per placement, the placement of this row (one "
                                                 "row per placement with counts); null: every placement.")
    event: str = Field(description="What the rule counts: display | click | decision.")
    scope: str = Field(description="total | per_profile.")
    reset: str = Field(description="daily | weekly | monthly | never (00:00 UTC).")
    per_placement: bool = Field(description="Whether each placement is counted separately.")
    window_start: str = Field(description="Start of the current counting window (ISO 8601, UTC).")
    count: int = Field(description="The count in the window: the largest of the row's counters (one per profile "
                                    "for a per-profile rule, else one), this profile's with `profile_id`.")
    at_limit: int = Field(description="How many of the row's counters (profiles, for a per-profile rule) are at the limit.")
    capped: bool = Field(description="Whether `count` reached the limit.")

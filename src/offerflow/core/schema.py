"""The data contract: column names and types of the datasets offerflow reads and writes.

Stable from version 0.1: see docs/data-contract.md for the meaning of every column.
"""

from __future__ import annotations

import pyarrow as pa

#: Events: offer interactions (`display`, `click`) and any other experience event (`purchase`, ...).
EVENT_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("profile_id", pa.string(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("offer_id", pa.string()),
        pa.field("placement_id", pa.string()),
        pa.field("channel", pa.string()),
        pa.field("value", pa.float64()),
        pa.field("propensity", pa.float64()),
        pa.field("decision_id", pa.string()),
    ]
)
EVENT_COLUMNS: tuple[str, ...] = tuple(EVENT_SCHEMA.names)
REQUIRED_EVENT_COLUMNS: tuple[str, ...] = ("event_id", "timestamp", "profile_id", "event_type")
DISPLAY = "display"
CLICK = "click"
INTERACTION_TYPES: tuple[str, ...] = (DISPLAY, CLICK)

#: Offers catalog: these columns plus any attribute columns (category, discount_pct, ...).
OFFER_REQUIRED_COLUMNS: tuple[str, ...] = ("offer_id", "name", "priority", "placements")
OFFER_OPTIONAL_COLUMNS: tuple[str, ...] = ("eligibility", "fallback", "caps")

#: Profiles: `profile_id` plus attribute columns (age, loyalty_tier, country, ...).
PROFILE_ID = "profile_id"
#: Customer AI fields added to each profile as `propensity.<goal>.<field>` (rules and formulas
#: read them as `profile.propensity.<goal>.<field>`), with their rule-language types.
PROPENSITY_FIELDS = {"probability": "number", "score": "number", "percentile": "number", "bucket": "string"}

#: Published ranking tables (personalized, priority and formula rankings).
RANKING_SCHEMA = pa.schema(
    [
        pa.field("profile_id", pa.string(), nullable=False),
        pa.field("rank", pa.int16(), nullable=False),
        pa.field("offer_id", pa.string(), nullable=False),
        pa.field("score", pa.float64(), nullable=False),
    ]
)
#: Published auto-optimization tables: one row per offer with its Beta posterior.
POSTERIOR_SCHEMA = pa.schema(
    [
        pa.field("offer_id", pa.string(), nullable=False),
        pa.field("alpha", pa.float64(), nullable=False),
        pa.field("beta", pa.float64(), nullable=False),
        pa.field("displays", pa.int64(), nullable=False),
        pa.field("successes", pa.float64(), nullable=False),
        pa.field("qualified", pa.bool_(), nullable=False),
        # Mean value of a success (1.0 unless the model is value-weighted): Thompson samples of the
        # success rate are multiplied by it, so offers rank by expected value per display.
        pa.field("value_weight", pa.float64(), nullable=False),
    ]
)
#: Decision metadata: one row per (decision, placement), next to the decision log's display events
#: (`<outputs>/decision_log/meta/decisions-*.parquet`); displays and clicks join on decision_id.
#: `arm`: model | holdout (the model's random holdout share) | non_personalized | fallback.
DECISION_META_SCHEMA = pa.schema(
    [
        pa.field("decision_id", pa.string(), nullable=False),
        pa.field("decided_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("profile_id", pa.string(), nullable=False),
        pa.field("placement_id", pa.string(), nullable=False),
        pa.field("ai_model", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("table_version", pa.int64()),
        pa.field("ranking_method", pa.string(), nullable=False),
        pa.field("arm", pa.string(), nullable=False),
    ]
)
DECISION_ARMS: tuple[str, ...] = ("model", "holdout", "non_personalized", "fallback")

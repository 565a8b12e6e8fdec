"""The data contract: column names and types of the datasets offerflow reads and writes.

Stable from version 0.1: see docs/data-contract.md for the meaning of every column.
"""

from __future__ import annotations

import pyarrow as pa

_TYPES = {"string": pa.string(), "timestamp": pa.timestamp("us", tz="UTC"), "float64": pa.float64(),
          "int16": pa.int16(), "int64": pa.int64(), "bool": pa.bool_(), "date32": pa.date32()}


def table_schema(spec: str) -> pa.Schema:
    """An Arrow schema from `name type` pairs in order, separated by commas; a `?` after the type
    makes the column nullable (timestamps are microseconds in UTC)."""
    fields = []
    for item in spec.split(","):
        name, type_ = item.split()
        fields.append(pa.field(name, _TYPES[type_.rstrip("?")], nullable=type_.endswith("?")))
    return pa.schema(fields)


#: Events: offer interactions (`display`, `click`) and any other experience event (`purchase`, ...).
EVENT_SCHEMA = table_schema("event_id string, timestamp timestamp, profile_id string, event_type string, "
                       "offer_id string?, placement_id string?, channel string?, value float64?, "
                       "propensity float64?, decision_id string?")
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
RANKING_SCHEMA = table_schema("profile_id string, rank int16, offer_id string, score float64")
#: Published auto-optimization tables: one row per offer with its Beta posterior. `value_weight` is the
#: mean value of a success (1.0 unless the model is value-weighted): Thompson samples of the success
#: rate are multiplied by it, so offers rank by expected value per display.
POSTERIOR_SCHEMA = table_schema("offer_id string, alpha float64, beta float64, displays int64, successes float64, "
                           "qualified bool, value_weight float64")
#: Decision metadata: one row per (decision, placement), next to the decision log's display events
#: (`<outputs>/decision_log/meta/decisions-*.parquet`); displays and clicks join on decision_id.
#: `arm`: model | holdout (the model's random holdout share) | non_personalized | fallback.
DECISION_META_SCHEMA = table_schema("decision_id string, decided_at timestamp, profile_id string, placement_id string, "
                               "ai_model string?, model_version string?, table_version int64?, ranking_method string, "
                               "arm string")
DECISION_ARMS: tuple[str, ...] = ("model", "holdout", "non_personalized", "fallback")

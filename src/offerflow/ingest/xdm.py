"""Map one XDM Experience Event (an Adobe-style "Proposition Interactions" export line) to event rows.

Used by `offerflow.ingest.ndjson_events` for NDJSON lines that have an ``eventType`` or ``_experience`` key.
See the `offerflow.ingest.ndjson_events` module docstring for the full mapping table. In short:

* ``decisioning.propositionDisplay`` (or ``propositionEventType.display == 1``) -> ``display``,
  ``decisioning.propositionInteract`` (or ``propositionEventType.interact == 1``) -> ``click``;
  one output row per ``propositions[].items[]`` entry.
* Any other ``eventType`` (``commerce.purchases``, ...) -> one row, ``event_type`` = the
  eventType string, offer/placement/decision null.

Nothing is dropped: an interaction without propositions or a proposition without items still
gives one row (offer_id null) whose ``_parse_error`` says why, so the validator quarantines it.
"""

from __future__ import annotations

from typing import Any

import orjson

from offerflow.core.schema import CLICK, DISPLAY

DISPLAY_EVENT_TYPE = "decisioning.propositionDisplay"
INTERACT_EVENT_TYPE = "decisioning.propositionInteract"
#: Where the event value comes from when no ``value_field`` is given (first one present wins).
DEFAULT_VALUE_PATHS: tuple[tuple[str, ...], ...] = (
    ("commerce", "order", "priceTotal"),
    ("commerce", "purchases", "value"),
)
_CHANNEL_ALIASES = {"inapp": "in_app", "in-app": "in_app", "in_app": "in_app"}

#: One mapped row: the contract columns in `EVENT_COLUMNS` order, then the `_parse_error` text.
Row = tuple[Any, ...]


def is_xdm(obj: dict[str, Any]) -> bool:
    """An NDJSON object is read as XDM when it has an ``eventType`` or ``_experience`` key."""
    return "eventType" in obj or "_experience" in obj


def split_path(dotted: str | None) -> tuple[str, ...] | None:
    """``"_tenant.crm.id"`` -> ``("_tenant", "crm", "id")``; a list index is a number: ``"a.0.id"``."""
    return tuple(dotted.split(".")) if dotted else None


def get_path(obj: Any, path: tuple[str, ...]) -> Any:
    """The value at a key path (dict keys; digits index lists), or None when any step is missing."""
    for key in path:
        if isinstance(obj, dict):
            obj = obj.get(key)
        elif isinstance(obj, list) and key.isdigit() and int(key) < len(obj):
            obj = obj[int(key)]
        else:
            return None
        if obj is None:
            return None
    return obj


def as_text(value: Any) -> Any:
    """A JSON scalar as the string the contract expects (None stays None); objects as JSON text."""
    kind = type(value)
    if value is None or kind is str:
        return value
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float:
        return repr(value)
    return orjson.dumps(value).decode()


def as_number(value: Any) -> Any:
    """A JSON number as float; strings stay raw (the validator parses them); others as text."""
    kind = type(value)
    if value is None or kind is str or kind is float:
        return value
    if kind is int:
        return float(value)
    return as_text(value)  # true/false/objects: kept as text so they fail the number check


def nested_problem(name: str, value: Any) -> str:
    """The `_parse_error` part for a contract field that holds a JSON object or array."""
    kind = "object" if isinstance(value, dict) else "array"
    return f"{name}: expected a scalar, got a JSON {kind}"


def channel_name(value: Any) -> str | None:
    """``"web"``, an XDM channel-type URI or a ``{"_type": uri}`` object -> ``web``/``email``/``in_app``."""
    if isinstance(value, dict):
        value = value.get("_type")
    if not isinstance(value, str) or not value:
        return None
    name = value.rstrip("/").rsplit("/", 1)[-1]
    return _CHANNEL_ALIASES.get(name.lower(), name.lower())


def map_event(
    obj: dict[str, Any],
    *,
    identity_namespace: str = "ECID",
    profile_path: tuple[str, ...] | None = None,
    value_path: tuple[str, ...] | None = None,
) -> list[Row]:
    """The rows for one XDM Experience Event (at least one row, never zero)."""
    problems: list[str] = []
    event_id = _text(obj.get("_id"), "_id", problems)
    timestamp = _text(obj.get("timestamp"), "timestamp", problems)
    if profile_path is not None:
        profile = get_path(obj, profile_path)
    else:
        identities = obj.get("identityMap")
        identities = identities.get(identity_namespace) if type(identities) is dict else None
        first = identities[0] if type(identities) is list and identities else None
        profile = first.get("id") if type(first) is dict else None
    profile_id = _text(profile, "profile_id", problems)
    value = _value(obj, value_path, problems)
    channel = obj.get("channel")
    channel = channel_name(channel) if channel is not None else None
    if channel is None:
        web = obj.get("web")
        if type(web) is dict and web.get("webPageDetails") is not None:
            channel = "web"

    xdm_type = obj.get("eventType")
    experience = obj.get("_experience")
    decisioning = experience.get("decisioning") if type(experience) is dict else None
    if type(decisioning) is not dict:
        decisioning = {}
    event_type = _interaction_type(xdm_type, decisioning.get("propositionEventType"))
    if event_type is None:  # any other experience event passes through as one row
        text = _text(xdm_type, "event_type", problems)
        problem = "; ".join(problems)
        return [(event_id, timestamp, profile_id, text, None, None, channel, value, None, None, problem)]

    propositions = decisioning.get("propositions")
    parts: list[tuple[Any, ...]] = []
    if type(propositions) is not list or not propositions:
        problem = f"XDM: {event_type} event has no propositions"
        parts.append((None, None, None, None, channel, [*problems, problem]))
    else:
        for p_index, proposition in enumerate(propositions):
            parts.extend(_proposition_rows(proposition, p_index, channel, problems))
    if len(parts) == 1:
        offer, placement, decision, propensity, row_channel, row_problems = parts[0]
        return [(event_id, timestamp, profile_id, event_type, offer, placement, row_channel, value,
                 propensity, decision, "; ".join(row_problems))]
    return [
        (f"{event_id}#{k}" if event_id is not None else None, timestamp, profile_id, event_type, offer,
         placement, row_channel, value, propensity, decision, "; ".join(row_problems))
        for k, (offer, placement, decision, propensity, row_channel, row_problems) in enumerate(parts)
    ]


def _interaction_type(xdm_type: Any, proposition_event_type: Any) -> str | None:
    if xdm_type == DISPLAY_EVENT_TYPE:
        return DISPLAY
    if xdm_type == INTERACT_EVENT_TYPE:
        return CLICK
    if isinstance(proposition_event_type, dict):
        if proposition_event_type.get("interact") == 1:
            return CLICK
        if proposition_event_type.get("display") == 1:
            return DISPLAY
    return None


def _proposition_rows(
    proposition: Any, p_index: int, event_channel: str | None, problems: list[str]
) -> list[tuple[Any, ...]]:
    """(offer, placement, decision, propensity, channel, problems) per item of one proposition."""
    if type(proposition) is not dict:
        problem = f"XDM: proposition {p_index} is not an object"
        return [(None, None, None, None, event_channel, [*problems, problem])]
    own = list(problems)
    decision = _text(proposition.get("id"), "decision_id", own)
    details = proposition.get("scopeDetails")
    if type(details) is not dict:
        details = {}
    placement = details.get("placement")
    placement = placement.get("id") if type(placement) is dict else None
    if placement is None:
        placement = proposition.get("scope")
    placement = _text(placement, "placement_id", own)
    channel = details.get("channel")
    channel = (channel_name(channel) if channel is not None else None) or event_channel
    scope_propensity = details.get("propensity")
    items = proposition.get("items")
    if type(items) is not list or not items:
        label = repr(decision) if decision is not None else str(p_index)
        return [(None, placement, decision, as_number(scope_propensity), channel,
                 [*own, f"XDM: proposition {label} has no items"])]
    rows = []
    for i_index, item in enumerate(items):
        if type(item) is not dict:
            item = {}
        offer = item.get("id")
        item_problems = own
        if offer is None or type(offer) is not str:
            item_problems = list(own)
            offer = _text(offer, "offer_id", item_problems)
            if offer is None:
                label = repr(decision) if decision is not None else str(p_index)
                item_problems.append(f"XDM: proposition {label} item {i_index} has no id")
        propensity = item.get("propensity", scope_propensity)
        rows.append((offer, placement, decision, propensity if propensity is None else as_number(propensity),
                     channel, item_problems))
    return rows


def _value(obj: dict[str, Any], value_path: tuple[str, ...] | None, problems: list[str]) -> Any:
    if value_path is not None:
        paths: tuple[tuple[str, ...], ...] = (value_path,)
    elif type(obj.get("commerce")) is dict:
        paths = DEFAULT_VALUE_PATHS
    else:
        return None
    for path in paths:
        value = get_path(obj, path)
        if value is not None:
            if isinstance(value, (dict, list)):
                problems.append(nested_problem("value", value))
            return as_number(value)
    return None


def _text(value: Any, name: str, problems: list[str]) -> Any:
    """`as_text`, noting in `problems` a JSON object/array where a scalar belongs."""
    if value is None or type(value) is str:
        return value
    if isinstance(value, (dict, list)):
        problems.append(nested_problem(name, value))
    return as_text(value)

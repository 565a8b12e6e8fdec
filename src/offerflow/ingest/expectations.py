"""The Great Expectations side of event validation: the suites, the file context, and one run.

The suites live in the project's file data context (``great_expectations/``):

* ``events`` runs on the events (every row, or a deterministic sample of a large delivery):
  contract columns, null shares, known offers and placements, value ranges.
* ``event_totals`` runs on a one-row table of exact counts over every row: the row count
  against the previous run, rows sharing an event id.
* ``profiles``, ``offers`` and ``placements`` run in the catalog step, before the events: the
  profiles table as stored, the offers catalog (one row per offer) and a table with one row per
  configured placement (how many regular and fallback offers it has).
* ``offer_conversion`` runs on a small derived table (one row per offer: displays, clicks,
  conversion rate) because "clicks per offer <= displays per offer" is not a column property.

The suites are defined here in code (their rationales, ``meta.why``, in
``expectation_rationales.yaml`` beside this module) and written to
``great_expectations/expectations/*.json``, which is committed. Every expectation carries ``meta.severity`` (``critical`` or ``warning``)
and ``meta.why``. Values that change from run to run (the offer catalog, the placements, the
minimum row count) are suite parameters (``$PARAMETER``), so the committed JSON only changes
when the definitions here change. Every ``ensure_*`` function is a get-or-create: running
twice, or in a fresh clone with or without the committed files, works and rewrites nothing
that is already up to date.

Great Expectations is imported lazily (it takes seconds), through `import_gx`.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import yaml

from offerflow.core.schema import EVENT_COLUMNS, REQUIRED_EVENT_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

EVENTS_SUITE = "events"
CONVERSION_SUITE = "offer_conversion"
TOTALS_SUITE = "event_totals"
PROFILES_SUITE = "profiles"
OFFERS_SUITE = "offers"
PLACEMENTS_SUITE = "placements"
DATASOURCE = "offerflow_pandas"
BATCH_DEFINITION = "whole_frame"
DOCS_SITE = "local_site"
#: Share of rows that may fail a "mostly" expectation before the run fails: the row-level
#: quarantine removes the bad rows, but more than this means the export itself is broken.
EVENT_TYPE_PATTERN = r"^[A-Za-z][A-Za-z0-9_.:-]*$"


def import_gx() -> Any:
    """Import great_expectations quietly: no analytics, no import-time deprecation noise."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    with warnings.catch_warnings():
        # GX 1.x imports the stdlib modules `sre_constants` and `sre_parse`, deprecated since 3.11.
        warnings.filterwarnings(
            "ignore", message=r"module 'sre_(constants|parse)' is deprecated", category=DeprecationWarning
        )
        import great_expectations as gx
    return gx


@lru_cache(maxsize=1)
def rationales() -> dict[str, str]:
    """Why each check exists (`expectation_rationales.yaml` beside this module), by key."""
    return yaml.safe_load(Path(__file__).with_name("expectation_rationales.yaml").read_text(encoding="utf-8"))


def _spec(expectation_cls: Any, severity: str, why: str, setting: str | None = None, what: str | None = None,
          **kwargs: Any) -> Any:
    """One expectation with its severity and its rationale (`why`: a key of `rationales()`); the
    `validation.<setting>` that sets its threshold (`mostly` = 1 - the setting, a suite parameter)
    and `what` a failing row is, for the one-line error (`ValidationReport.failure_lines`)."""
    meta = {"severity": severity, "why": rationales()[why].replace("{column}", str(kwargs.get("column")))}
    if setting is not None:
        kwargs["mostly"] = {"$PARAMETER": MOSTLY_PARAMETERS[setting]}
        meta.update(setting=f"validation.{setting}", what=what or "unexpected", threshold=(
            f"mostly=1 - validation.{setting} (0.99 by default): up to validation.{setting} of the rows may fail;"
            " the row-level quarantine removes them, more fails the run"))
    return expectation_cls(severity=severity, meta=meta, **kwargs)


#: The `events` suite's `mostly` parameters, by the validation setting each is 1 minus.
MOSTLY_PARAMETERS = {"max_null_share": "not_null_share", "max_unknown_share": "known_share"}


def mostly_parameters(settings: Any) -> dict[str, float]:
    """The `mostly` suite parameters of the `events` suite, from the `validation` settings."""
    return {parameter: 1 - getattr(settings, name) for name, parameter in MOSTLY_PARAMETERS.items()}


def events_expectations() -> list[Any]:
    """The `events` suite, on every row or a sample (see module doc): required columns exist and
    are (mostly) non-null, the contract's column set, event type format, known offers and
    placements, propensity and value ranges."""
    gxe = import_gx().expectations
    return [
        *[_spec(gxe.ExpectColumnToExist, "critical", "events.exists", column=c) for c in REQUIRED_EVENT_COLUMNS],
        _spec(gxe.ExpectTableColumnsToMatchSet, "warning", "events.columns", column_set=list(EVENT_COLUMNS),
              exact_match=True),
        *[_spec(gxe.ExpectColumnValuesToNotBeNull, "critical", "events.not_null", "max_null_share", "null", column=c)
          for c in REQUIRED_EVENT_COLUMNS],
        _spec(gxe.ExpectColumnValuesToMatchRegex, "warning", "events.event_type.format", column="event_type",
              regex=EVENT_TYPE_PATTERN),
        _spec(gxe.ExpectColumnValuesToBeInSet, "critical", "events.offer_id.known", "max_unknown_share",
              "unknown offer ids", column="offer_id", value_set={"$PARAMETER": "offer_ids"}),
        _spec(gxe.ExpectColumnValuesToBeInSet, "critical", "events.placement_id.known", "max_unknown_share",
              "unknown placement ids", column="placement_id", value_set={"$PARAMETER": "placement_ids"}),
        _spec(gxe.ExpectColumnValuesToBeBetween, "warning", "events.propensity.range", column="propensity",
              min_value=0, max_value=1, strict_min=True),
        _spec(gxe.ExpectColumnValuesToBeBetween, "warning", "events.value.range", column="value", min_value=0),
    ]


def totals_expectations() -> list[Any]:
    """The `event_totals` suite, on the one-row table of exact counts over every input row."""
    gxe = import_gx().expectations
    return [
        _spec(gxe.ExpectColumnValuesToBeBetween, "critical", "totals.rows.range", column="rows",
              min_value={"$PARAMETER": "min_row_count"}),
        _spec(gxe.ExpectColumnValuesToBeBetween, "warning", "totals.duplicate_event_id_rows.range",
              column="duplicate_event_id_rows", min_value=0, max_value=0),
    ]


def conversion_expectations() -> list[Any]:
    """The `offer_conversion` suite, on the per-offer table of `EventStage.conversion_table`."""
    gxe = import_gx().expectations
    return [_spec(gxe.ExpectColumnValuesToBeBetween, "critical", "conversion.conversion_rate.range",
                  column="conversion_rate", min_value=0, max_value=1)]


def profiles_expectations() -> list[Any]:
    """The `profiles` suite, on the profiles table as stored."""
    gxe = import_gx().expectations
    return [_spec(gxe.ExpectColumnToExist, "critical", "profiles.profile_id.exists", column="profile_id"),
            _spec(gxe.ExpectColumnValuesToNotBeNull, "critical", "profiles.profile_id.not_null", column="profile_id"),
            _spec(gxe.ExpectColumnValuesToBeUnique, "critical", "profiles.profile_id.unique", column="profile_id")]


def offers_expectations() -> list[Any]:
    """The `offers` suite, on the normalized catalog (one row per offer)."""
    gxe = import_gx().expectations
    return [_spec(gxe.ExpectColumnValuesToNotBeNull, "critical", "offers.offer_id.not_null", column="offer_id"),
            _spec(gxe.ExpectColumnValuesToBeUnique, "critical", "offers.offer_id.unique", column="offer_id"),
            _spec(gxe.ExpectColumnValuesToBeOfType, "critical", "offers.priority.type", column="priority",
                  type_="int64"),
            _spec(gxe.ExpectColumnValuesToBeBetween, "critical", "offers.placement_count.range",
                  column="placement_count", min_value=1)]


def placements_expectations() -> list[Any]:
    """The `placements` suite, on one row per configured placement."""
    gxe = import_gx().expectations
    return [_spec(gxe.ExpectColumnValuesToBeBetween, "critical", "placements.fallback_offers.range",
                  column="fallback_offers", min_value=1),
            _spec(gxe.ExpectColumnValuesToBeBetween, "warning", "placements.regular_offers.range",
                  column="regular_offers", min_value=1)]


def open_context(context_dir: Path) -> Any:
    """The file data context rooted at `context_dir` (created if missing), analytics and
    progress bars off (both persisted in great_expectations.yml)."""
    gx = import_gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    context_dir.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="file", context_root_dir=str(context_dir))
    bars = context.variables.progress_bars  # a ProgressBarsConfig, or a dict once reloaded
    bars = bars.to_json_dict() if hasattr(bars, "to_json_dict") else dict(bars or {})
    if bars.get("globally") is not False or bars.get("metric_calculations") is not False:
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        context.variables.save()
    if context.variables.analytics_enabled is not False:
        context.enable_analytics(False)
    return context


def _definition(expectation: Any) -> dict[str, Any]:
    config = expectation.configuration.to_json_dict()
    return {key: config.get(key) for key in ("type", "kwargs", "meta", "severity")}


def ensure_suite(context: Any, name: str, expectations: list[Any]) -> Any:
    """Get the suite `name`, rewriting it only when its definitions differ from `expectations`."""
    gx = import_gx()
    try:
        existing = context.suites.get(name)
    except Exception:  # DataContextError: not in the store yet (fresh clone, first run)
        existing = None
    wanted = [_definition(e) for e in expectations]
    if existing is not None and [_definition(e) for e in existing.expectations] == wanted:
        return existing
    suite = gx.ExpectationSuite(
        name=name,
        expectations=expectations,
        meta={"generated_by": "offerflow.ingest.expectations: edit the code, not this file"},
    )
    return context.suites.add_or_update(suite)


@dataclass(frozen=True)
class Target:
    """What one validation needs: the definition, and the checkpoint that also builds docs."""

    validation_definition: Any
    checkpoint: Any


def ensure_target(context: Any, name: str, expectations: list[Any]) -> Target:
    """Data source, dataframe asset `name`, batch definition, suite, validation definition and
    checkpoint `name` (with an UpdateDataDocsAction): fetched if present, created if not."""
    gx = import_gx()
    suite = ensure_suite(context, name, expectations)
    try:
        source = context.data_sources.get(DATASOURCE)
    except KeyError:
        source = context.data_sources.add_pandas(DATASOURCE)
    try:
        asset = source.get_asset(name)
    except LookupError:
        asset = source.add_dataframe_asset(name)
    try:
        batch = asset.get_batch_definition(BATCH_DEFINITION)
    except KeyError:
        batch = asset.add_batch_definition_whole_dataframe(BATCH_DEFINITION)
    try:
        definition = context.validation_definitions.get(name)
        if definition.suite.name != name or definition.batch_definition.id != batch.id:
            raise LookupError(name)
    except Exception:  # missing, or pointing at an asset/suite that no longer exists
        definition = context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=name, data=batch, suite=suite)
        )
    try:
        checkpoint = context.checkpoints.get(name)
        if [vd.id for vd in checkpoint.validation_definitions] != [definition.id]:
            raise LookupError(name)
    except Exception:
        checkpoint = context.checkpoints.add_or_update(
            gx.Checkpoint(
                name=name,
                validation_definitions=[definition],
                actions=[gx.checkpoint.UpdateDataDocsAction(name="update_data_docs")],
                result_format={"result_format": "SUMMARY"},
            )
        )
    return Target(definition, checkpoint)


def run(
    target: Target,
    frame: pd.DataFrame,
    *,
    parameters: dict[str, Any],
    run_id: str,
    build_docs: bool,
) -> Any:
    """Validate `frame`; return the ExpectationSuiteValidationResult."""
    gx = import_gx()
    run_identifier = gx.RunIdentifier(run_name=run_id)
    batch = {"dataframe": frame}
    if not build_docs:
        return target.validation_definition.run(
            batch_parameters=batch,
            expectation_parameters=parameters,
            result_format={"result_format": "SUMMARY"},
            run_id=run_identifier,
        )
    result = target.checkpoint.run(
        batch_parameters=batch, expectation_parameters=parameters, run_id=run_identifier
    )
    return next(iter(result.run_results.values()))


def docs_index(context: Any) -> Path | None:
    """The local path of the Data Docs site's index.html, if it was built."""
    for site in context.get_docs_sites_urls(site_name=DOCS_SITE):
        url = site.get("site_url")
        if url and url.startswith("file://"):
            path = Path(unquote(urlparse(url).path))
            return path if path.exists() else None
    return None


def exception_message(result: Any) -> str | None:
    """The first error GX caught while evaluating one expectation, or None."""
    info = result.exception_info or {}
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return str(value.get("exception_message"))
    return None

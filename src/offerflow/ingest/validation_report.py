"""The result of event/catalog validation: `ExpectationOutcome` per Great Expectations
expectation, `ValidationReport` for a whole run, and `expectation_outcomes`, which turns a
GX validation result into outcomes with a readable "observed" text."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

@dataclass(frozen=True)
class ExpectationOutcome:
    name: str
    severity: Literal["critical", "warning"]
    success: bool
    why: str
    observed: str
    #: For a share threshold: the setting (`validation.max_unknown_share`), its value, what a failing
    #: row is ("unknown offer ids"), the column and (failing rows, rows checked).
    setting: str = ""
    limit: float | None = None
    what: str = ""
    column: str = ""
    counts: tuple[int, int] | None = None

    def failure_line(self, label: str, causes: str = "") -> str:
        """One line: the file, the column, the count and share (with `causes`, the rows' quarantine
        reasons for the column, e.g. "10046 timestamp: no timezone"), the threshold and its setting."""
        if self.counts is None or self.limit is None or not self.counts[1]:
            return f"{label}: {self.name}: {self.observed}"
        bad, checked = self.counts
        sample = " in a sample" if "in a sample" in self.observed else ""
        why = f" ({causes})" if causes else ""
        share = f"{bad} of {checked} rows{sample} ({bad / checked:.1%})"
        return (f"{label}: column {self.column}: {share} {self.what}{why},"
                f" above {self.setting} {self.limit * 100:g}%: fix the rows or raise the setting ({self.name})")


@dataclass(frozen=True, eq=False)
class ValidationReport:
    """What validation found. `accepted`/`quarantined` are frames only for `validate_events`
    (in memory); the streaming path writes them to files and keeps the counts."""

    outcomes: list[ExpectationOutcome]
    data_docs_path: Path | None
    row_count: int
    accepted_count: int
    quarantined_count: int
    quarantine_reasons: pd.Series
    run_id: str = ""
    sample_rows: int | None = None
    accepted: pd.DataFrame | None = None
    quarantined: pd.DataFrame | None = None

    @property
    def critical_failures(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success and o.severity == "critical"]

    @property
    def warnings(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success and o.severity == "warning"]

    @property
    def success(self) -> bool:
        return not self.critical_failures

    def failure_lines(self, label: str) -> list[str]:
        """Each failed critical expectation as one line (`ExpectationOutcome.failure_line`)."""
        return [o.failure_line(label, self._causes(o.column) if o.what == "null" else "")
                for o in self.critical_failures]

    def _causes(self, column: str, most: int = 2) -> str:
        """The commonest specific quarantine reasons of `column` ("10046 timestamp: no timezone"):
        a value that did not parse counts as null, and the line should say which it was."""
        if not column:
            return ""
        specific = [(kind, int(n)) for kind, n in self.quarantine_reasons.items()
                    if str(kind).startswith(f"{column}: ") and "missing" not in str(kind)]
        return ", ".join(f"{n} {kind}" for kind, n in sorted(specific, key=lambda kn: -kn[1])[:most])

    def reason_counts(self) -> pd.Series:
        """Quarantined rows per reason kind (quoted values and "(profile ...)" stripped)."""
        return self.quarantine_reasons

    def summary(self) -> str:
        status = "PASSED" if self.success else "FAILED"
        run = f" {self.run_id}" if self.run_id else ""
        lines = [
            f"Event validation{run}: {status} ({len(self.critical_failures)} critical,"
            f" {len(self.warnings)} warning expectations failed)",
            f"  {self.row_count} rows: {self.accepted_count} accepted,"
            f" {self.quarantined_count} quarantined",
        ]
        if self.sample_rows is not None and self.sample_rows < self.row_count:
            lines.append(f"  column expectations evaluated on a sample of {self.sample_rows} rows")
        counts = self.reason_counts()
        if len(counts):
            lines.append("Quarantined rows by reason:")
            lines += [f"  {count:>9}  {kind}" for kind, count in counts.items()]
        for title, failed in (("Critical failures:", self.critical_failures),
                              ("Warnings:", self.warnings)):
            if failed:
                lines.append(title)
                lines += [f"  - {o.name}: {o.observed}\n      why: {o.why}" for o in failed]
        if self.data_docs_path is not None:
            lines.append(f"Data Docs: {self.data_docs_path}")
        return "\n".join(lines)


# -- outcomes --------------------------------------------------------------------------------


def expectation_outcomes(target: Any, result: Any, observed_notes: dict[str, str],
                         settings: Any = None) -> list[ExpectationOutcome]:
    """Outcomes in suite order; `settings` (the `validation` config) gives the value of each
    share threshold's setting."""
    from offerflow.ingest.expectations import exception_message

    order = {e.id: i for i, e in enumerate(target.validation_definition.suite.expectations)}
    outcomes = []
    for item in sorted(result.results, key=lambda r: order.get(r.expectation_config.id, len(order))):
        config = item.expectation_config
        meta = config.meta or {}
        severity = str(meta.get("severity") or getattr(config.severity, "value", "critical"))
        column = config.kwargs.get("column")
        name = f"{config.type}({column})" if column else config.type
        observed = _observed(item, exception_message(item))
        if name in observed_notes and exception_message(item) is None:
            observed = observed_notes[name]
        outcomes.append(ExpectationOutcome(
            name, "warning" if severity == "warning" else "critical", bool(item.success),
            str(meta.get("why", "")), observed, **_threshold(meta, item.result or {}, settings, column),
        ))
    return outcomes


def _threshold(meta: dict, result: dict, settings: Any, column: Any) -> dict[str, Any]:
    setting = str(meta.get("setting") or "")
    if not setting or "unexpected_count" not in result:
        return {}
    limit = getattr(settings, setting.removeprefix("validation."), None) if settings is not None else None
    return {"setting": setting, "limit": limit, "what": str(meta.get("what", "")), "column": str(column),
            "counts": (int(result["unexpected_count"]), int(result.get("element_count") or 0))}


def _observed(item: Any, error: str | None) -> str:
    if error:
        return f"could not be evaluated: {error}"
    result = item.result or {}
    if item.expectation_config.type == "expect_column_to_exist":
        return "column present" if item.success else "column missing"
    if "unexpected_count" in result:
        percent = result.get("unexpected_percent") or 0.0
        text = (f"{result['unexpected_count']} of {result.get('element_count')} values"
                f" unexpected ({percent:.2f}%)")
        sample = [c["value"] for c in result.get("partial_unexpected_counts") or []][:5]
        return text + (f", e.g. {sample}" if sample else "")
    mismatched = (result.get("details") or {}).get("mismatched") or {}
    problems = []
    if mismatched.get("missing"):
        problems.append(f"missing columns: {', '.join(map(str, mismatched['missing']))}")
    if mismatched.get("unexpected"):
        problems.append(f"extra columns (kept): {', '.join(map(str, mismatched['unexpected']))}")
    if problems:
        return "; ".join(problems)
    if "observed_value" in result:
        return f"observed {result['observed_value']}"
    return "ok" if item.success else "failed"

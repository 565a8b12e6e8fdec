"""Formulas and rules that cannot rank anything (issue 19).

A ranking formula with no value for any profile x offer pair (``offer.priority / 0``) publishes an
empty table, so every profile falls back to the placement's priority ranking; one with the same
value for every pair ranks nothing; an eligibility rule no profile meets hides its offer for good.
None of these is a syntax or type mistake, so the project check cannot refuse them: it warns on a
sample of the profiles (`models.project_check`), and publishing warns on the table it is about to
publish (`ranking.publishing`). With `strict` (`offerflow check/run --strict`, or `strict: true` in
the project file) both are errors (`DegenerateExpression`, one line each).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from offerflow.core.config import ConfigError

__all__ = ["DegenerateExpression", "FORMULA_PROFILES", "formula_warning", "rule_warning", "raise_or_warn"]

#: Formulas are tried on this many profiles x the placement's offers.
FORMULA_PROFILES = 1_000


class DegenerateExpression(ConfigError):
    """A formula or rule that gives no value, or one value, for every pair, under `strict`."""


def formula_warning(values: np.ndarray, placement_id: str, n_offers: int, scope: str = "") -> str | None:
    """The warning for a placement's formula values over profile x offer pairs (NaN = no value), or
    None when they rank something. `scope` qualifies the pairs, e.g. " (first 1,000 profiles)"."""
    finite = values[np.isfinite(values)]
    if values.size and finite.size == 0:
        return f"formula gives no value for any offer{scope}: placement {placement_id} would fall back to priority"
    if n_offers > 1 and finite.size and finite.min() == finite.max():
        return (f"formula gives the same value ({finite[0]:g}) for every profile and offer{scope}:"
                f" it does not rank placement {placement_id}'s offers")
    return None


def rule_warning(eligible: np.ndarray, offer_id: str, names: frozenset[str], scope: str = "") -> str | None:
    """The warning for an offer's eligibility over profiles (bool array), or None when some but not
    necessarily all profiles are eligible. A rule that names no field at all is a constant."""
    if eligible.size and not eligible.any():
        return f"rule is true for no profile{scope}: offer {offer_id} is never eligible"
    if not names:
        return f"rule names no profile or offer field: it is {'true' if eligible.all() else 'false'} for every profile"
    return None


def raise_or_warn(warnings: list[str], strict: bool, warn: Callable[[str], object] | None = None) -> None:
    """Under `strict`, raise every warning as one `DegenerateExpression` (one line each); else pass
    each to `warn` (a callable taking one line), when given."""
    if warnings and strict:
        raise DegenerateExpression("\n".join(warnings))
    if warn is not None:
        for line in warnings:
            warn(line)

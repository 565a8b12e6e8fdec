"""What a decision engine knows of the offers and profiles: their attributes as rule inputs, and
which offer each profile may see (every eligibility rule evaluated once, column-wise).

The catalog comes as normalized row dicts (`ingest.catalog.load_offer_rows`) or their DataFrame,
the profiles as a pyarrow Table (`ingest.catalog.load_profile_table`) or a DataFrame; both are
read through `core.columns`, so deciding never imports pandas. `offers` and `profiles` give them
as DataFrames to the callers that work on frames (batch decisions, tests), importing pandas then.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from offerflow.core.columns import Table, column_names, column_values, row_count, slice_rows
from offerflow.core.schema import PROFILE_ID
from offerflow.core.store_snapshot import profile_keys
from offerflow.ingest.catalog import as_frame, offers_frame
from offerflow.ranking.tables import eligibility_matrix
from offerflow.rules.expressions import Expression, parse_expression, schema_from_frames
from offerflow.rules.values import missing

if TYPE_CHECKING:
    import pandas as pd


class OfferEligibility:
    """The offers and profiles of an engine, and who may see which offer (`eligible`)."""

    def __init__(self, offers: Table, profiles: Table) -> None:
        self.offer_rows: list[dict[str, Any]] = offers if isinstance(offers, list) else offers.to_dict("records")
        self.profile_table = profiles.reset_index(drop=True) if hasattr(profiles, "reset_index") else profiles
        self._profile_arrays: dict[str, np.ndarray] = {}  # profile columns as arrays, made on first use
        # Per-request lookup: profile id -> row position (a list: Arrow-backed iteration is slow).
        ids = [str(pid) for pid in self.profile_column(PROFILE_ID).tolist()]
        self._profile_pos = {pid: i for i, pid in enumerate(ids)}
        self._profile_keys: tuple[np.ndarray, np.ndarray] | None = None  # `table_rows`: the ids as bytes
        self._table_rows: dict[str, tuple[Any, np.ndarray | None]] = {}  # placement -> (its table, `table_rows`)
        schema = self.rule_schema = schema_from_frames(profiles=self.profile_table, offers=offers)
        self._rules: dict[str, Expression] = {
            row["offer_id"]: parse_expression(row["eligibility"], schema, kind="rule",
                                              source=f"offer {row['offer_id']!r} eligibility")
            for row in self.offer_rows if isinstance(row["eligibility"], str)}
        self._offer_values = {row["offer_id"]: {f"offer.{c}": v for c, v in row.items()
                                                if c not in ("placements", "caps")} for row in self.offer_rows}
        # Eligibility of every (profile, offer with a rule), evaluated once, column-wise: a request
        # reads one row instead of evaluating each rule. Rules read only profile and offer
        # attributes, both fixed for the engine's lifetime (a reload builds a new engine).
        self._rule_column = {oid: j for j, oid in enumerate(self._rules)}
        self._eligibility = self._eligibility_rows()
        self._unknown_eligibility = np.array([self._eligible(oid, None) for oid in self._rules], dtype=bool)

    @cached_property
    def offers(self) -> pd.DataFrame:
        """The catalog as a DataFrame indexed by offer_id (imports pandas: not for the decision path)."""
        return offers_frame(self.offer_rows).set_index("offer_id", drop=False)

    @cached_property
    def profiles(self) -> pd.DataFrame:
        """The profiles as a DataFrame (imports pandas: not for the decision path)."""
        return as_frame(self.profile_table)

    @property
    def n_profiles(self) -> int:
        return row_count(self.profile_table)

    def profile_column(self, column: str) -> np.ndarray:
        """One profile column as an array of shape (n_profiles,) (made once; all null when the
        profiles have no such column)."""
        values = self._profile_arrays.get(column)
        if values is None:
            values = self._profile_arrays[column] = (
                column_values(self.profile_table, column) if column in column_names(self.profile_table)
                else np.full(self.n_profiles, None))
        return values

    def _eligibility_rows(self, chunk_rows: int = 250_000) -> np.ndarray:
        """Bool matrix (n_profiles, n_offers with a rule) in `_rule_column` order, built in chunks."""
        out = np.ones((self.n_profiles, len(self._rules)), dtype=bool)
        if not self._rules:
            return out
        offers = [row for row in self.offer_rows if row["offer_id"] in self._rules]
        rules = [self._rules[row["offer_id"]] for row in offers]
        for lo in range(0, self.n_profiles, chunk_rows):
            out[lo:lo + chunk_rows] = eligibility_matrix(slice_rows(self.profile_table, lo, lo + chunk_rows),
                                                         offers, rules)
        return out

    def profile_values(self, profile_id: str) -> dict[str, Any] | None:
        """One profile's attributes as rule inputs (`profile.<column>`, missing as None); None for a
        profile the engine does not know. Row at a time: decisions read `_eligibility` instead."""
        pos = self._profile_pos.get(profile_id)
        if pos is None:
            return None
        return {f"profile.{c}": (None if missing(v) else v)
                for c, v in ((c, self.profile_column(c)[pos]) for c in column_names(self.profile_table))}

    def table_rows(self, snap: Any) -> np.ndarray | None:
        """Per profile position, the index of the profile's rows in the ranking table `snap`
        (`RankingSnapshot.rows_of`, -1: none), made once per table (~0.1 s and 4 bytes a profile
        for 1M sorted profile ids); None when the table keeps str ids."""
        cached = self._table_rows.get(snap.placement_id)
        if cached is None or cached[0] is not snap:
            if self._profile_keys is None:
                self._profile_keys = profile_keys([str(p) for p in self.profile_column(PROFILE_ID).tolist()])
            cached = self._table_rows[snap.placement_id] = (snap, snap.rows_of(*self._profile_keys))
        return cached[1]

    def ranked_offers(self, snap: Any, profile_id: str) -> tuple[np.ndarray, np.ndarray]:
        """`snap.lookup(profile_id)` (a ranking table's offers and scores for the profile); for a
        profile of this engine, read at its `table_rows` index, without a binary search per request."""
        pos = self._profile_pos.get(profile_id)
        rows = None if pos is None else self.table_rows(snap)
        return snap.lookup(profile_id) if rows is None else snap.rows_at(int(rows[pos]))

    def profile_position(self, profile_id: str) -> int | None:
        """The profile's row in `profiles` (None: a profile the engine does not know)."""
        return self._profile_pos.get(profile_id)

    def offer_values(self, offer_id: str) -> dict[str, Any]:
        """One catalog offer's attributes as rule inputs (`offer.<column>`)."""
        return self._offer_values[offer_id]

    def eligible(self, profile_id: str, offer_id: str) -> bool:
        """Whether the offer's eligibility rule holds for the profile (precomputed; see `_eligible`)."""
        j = self._rule_column.get(offer_id)
        if j is None:
            return True
        pos = self._profile_pos.get(profile_id)
        return bool((self._unknown_eligibility if pos is None else self._eligibility[pos])[j])

    def _eligible(self, offer_id: str, profile_values: dict[str, Any] | None) -> bool:
        rule = self._rules.get(offer_id)
        return rule is None or bool(rule.evaluate_one({**(profile_values or {}), **self._offer_values[offer_id]}))

    def eligibility_rule(self, offer_id: str) -> Expression | None:
        """The offer's parsed eligibility rule (None: every profile is eligible)."""
        return self._rules.get(offer_id)

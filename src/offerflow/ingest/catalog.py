"""The offer catalog and the profiles table: loading and checking.

An offer has an id, a name, an integer priority (higher wins), the placements it may appear in,
an optional eligibility rule (see `offerflow.rules.expressions`), optional frequency caps (see
`offerflow.rules.capping`), a fallback flag and any attribute columns
(category, discount_pct, ...). The catalog is a YAML file (`offers: [...]`), CSV or Parquet; in CSV
the placements are written `web-banner|email-hero`.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from offerflow.rules.capping import CapError, parse_caps
from offerflow.rules.expressions import ExpressionError, parse_expression, schema_from_frames
from offerflow.core.config import YAML_LOADER
from offerflow.core.parquet_rows import read_rows_of
from offerflow.core.schema import OFFER_REQUIRED_COLUMNS, PROFILE_ID
from offerflow.ingest.file_readers import wrong_separator


class CatalogError(ValueError):
    """An offers catalog or profiles table that cannot be used; the message says why."""


_STR_TAG = "tag:yaml.org,2002:str"


class _IdsAsWritten(YAML_LOADER):  # type: ignore[misc,valid-type]
    """YAML that keeps `offer_id`/`profile_id` values as written: `offer_id: 0012` is '0012', not
    YAML 1.1's octal 10, and `offer_id: 1.50` is '1.50', not 1.5."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        for key, value in node.value:
            if isinstance(value, yaml.ScalarNode) and key.value in ("offer_id", PROFILE_ID) \
                    and value.tag != _STR_TAG and not value.style and value.value not in ("", "~", "null"):
                value.tag = _STR_TAG
        return super().construct_mapping(node, deep=deep)


def _read_table(path: Path, what: str) -> pd.DataFrame:
    if not path.exists():
        raise CatalogError(f"{path}: {what} file not found")
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_IdsAsWritten)
            records = raw.get(what) if isinstance(raw, dict) else raw
            if not isinstance(records, list):
                raise CatalogError(f"{path}: expected a list of {what} (under the key '{what}:')")
            return pd.DataFrame.from_records(records)
        if suffix == ".csv":  # ids stay text: '007' and '1e3' are ids, not the numbers 7 and 1000.0
            table = pd.read_csv(path, dtype={"offer_id": str, PROFILE_ID: str})
            wrong = wrong_separator(list(table.columns))
            if wrong:
                raise CatalogError(f"{path}: {wrong}: {what} CSV files must be comma-separated")
            return table
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
    except CatalogError:
        raise
    except UnicodeDecodeError:
        raise CatalogError(f"{path}: not UTF-8 text") from None
    except (yaml.YAMLError, ValueError, OSError) as exc:
        raise CatalogError(f"{path}: cannot read {what}: {str(exc).splitlines()[0]}") from None
    raise CatalogError(f"{path}: unknown format {suffix!r} (expected .yaml, .csv or .parquet)")


def _as_placement_list(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(p.strip() for p in value.split("|") if p.strip())
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ()
    return tuple(str(p) for p in value)


def normalize_offers(raw: pd.DataFrame, source: str = "offers") -> pd.DataFrame:
    """Offers with typed core columns: priority int64, placements tuple, eligibility str|None."""
    missing = [c for c in OFFER_REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        raise CatalogError(f"{source}: missing required column(s): {', '.join(missing)}")
    offers = raw.copy()
    offers["offer_id"] = offers["offer_id"].astype(str)
    priority = pd.to_numeric(offers["priority"], errors="coerce")
    bad = priority.isna() | (priority != priority.round())
    if bad.any():
        ids = ", ".join(offers.loc[bad, "offer_id"].head(5))
        raise CatalogError(f"{source}: priority must be an integer (offers: {ids})")
    offers["priority"] = priority.astype("int64")
    offers["placements"] = offers["placements"].map(_as_placement_list)
    if "eligibility" not in offers.columns:
        offers["eligibility"] = None
    # Built as an object Series: `.map` would infer a string dtype and turn the Nones into NaN.
    offers["eligibility"] = pd.Series(
        [r.strip() if isinstance(r, str) and r.strip() else None for r in offers["eligibility"]],
        index=offers.index, dtype=object)
    if "fallback" not in offers.columns:
        offers["fallback"] = False
    offers["fallback"] = offers["fallback"].fillna(False).astype(bool)
    offers["caps"] = _parse_offer_caps(offers, source)
    return offers.reset_index(drop=True)


def _parse_offer_caps(offers: pd.DataFrame, source: str) -> pd.Series:
    """Each offer's cap rules as a tuple of `CapRule` (empty: uncapped); all problems in one error."""
    if "caps" not in offers.columns:
        return pd.Series([()] * len(offers), index=offers.index, dtype=object)
    parsed, problems = [], []
    for offer_id, value in zip(offers["offer_id"], offers["caps"]):
        try:
            parsed.append(parse_caps(value, f"offer {offer_id!r}"))
        except CapError as exc:
            parsed.append(())
            problems.append(str(exc))
    if problems:
        raise CatalogError(f"{source}: " + "; ".join(problems))
    return pd.Series(parsed, index=offers.index, dtype=object)


def check_offers(offers: pd.DataFrame, placement_ids: Collection[str], source: str = "offers", *,
                 profiles: pd.DataFrame | None = None) -> None:
    """Unique ids, known placements, a fallback offer for every placement and, when `profiles` is
    given, eligibility rules that parse and type-check against the profile and offer columns.

    Every problem found is listed in one `CatalogError`.
    """
    problems = []
    dupes = offers["offer_id"][offers["offer_id"].duplicated()].unique()
    if len(dupes):
        problems.append(f"duplicate offer_id: {', '.join(map(str, dupes[:5]))}")
    known = set(placement_ids)
    for offer_id, spots in zip(offers["offer_id"], offers["placements"]):
        unknown = [p for p in spots if p not in known]
        if unknown:
            problems.append(f"offer {offer_id!r}: unknown placement(s) {', '.join(unknown)}")
        if not spots:
            problems.append(f"offer {offer_id!r}: no placements")
    fallback_spots = {p for spots in offers.loc[offers["fallback"], "placements"] for p in spots}
    for placement in placement_ids:
        if placement not in fallback_spots:
            problems.append(f"placement {placement!r} has no fallback offer")
    if profiles is not None:
        problems += _rule_problems(offers, profiles)
    if problems:
        raise CatalogError(f"{source}: " + "; ".join(problems))


def _rule_problems(offers: pd.DataFrame, profiles: pd.DataFrame) -> list[str]:
    """The ExpressionError message of every eligibility rule that does not parse or type-check."""
    if "eligibility" not in offers.columns:
        return []
    schema = schema_from_frames(profiles=profiles, offers=offers)
    problems = []
    for offer_id, rule in zip(offers["offer_id"], offers["eligibility"]):
        if isinstance(rule, str) and rule.strip():
            try:
                parse_expression(rule, schema, kind="rule", source=f"offer {offer_id!r} eligibility")
            except ExpressionError as exc:
                problems.append(str(exc))
    return problems


def read_offers(path: Path) -> pd.DataFrame:
    """The offers catalog read and normalized (see `normalize_offers`), not checked yet."""
    return normalize_offers(_read_table(path, "offers"), source=str(path))


def load_offers(path: Path, placement_ids: Collection[str] | None = None, *,
                profiles: pd.DataFrame | None = None) -> pd.DataFrame:
    """Read and check the offers catalog. Placements are checked only when `placement_ids` is
    given, eligibility rules only when `profiles` is given (their columns are the rules' names)."""
    offers = normalize_offers(_read_table(path, "offers"), source=str(path))
    if placement_ids is not None:
        check_offers(offers, placement_ids, source=str(path), profiles=profiles)
    elif profiles is not None:
        problems = _rule_problems(offers, profiles)
        if problems:
            raise CatalogError(f"{path}: " + "; ".join(problems))
    return offers


def read_profiles(path: Path) -> pd.DataFrame:
    """The profiles table as stored, not checked yet (see `check_profiles`)."""
    return _read_table(path, "profiles")


def check_profiles(profiles: pd.DataFrame, source: str = "profiles") -> pd.DataFrame:
    """Profiles with `profile_id` as text; every id present and unique, else a `CatalogError`."""
    if PROFILE_ID not in profiles.columns:
        raise CatalogError(f"{source}: missing required column: {PROFILE_ID}")
    raw = profiles[PROFILE_ID]
    missing = raw.isna().to_numpy() | (raw.astype("str").str.strip() == "").to_numpy()
    if missing.any():
        first = int(np.flatnonzero(missing)[0]) + 1
        raise CatalogError(f"{source}: {int(missing.sum())} profile(s) without a profile_id (first: row {first})")
    ids = raw.astype(str)
    dupes = ids[ids.duplicated()]
    if len(dupes):
        raise CatalogError(f"{source}: {len(dupes)} duplicate profile_id(s), e.g. {dupes.iat[0]!r}")
    return profiles.assign(**{PROFILE_ID: ids})


def load_profiles(path: Path, profile_ids: Collection[str] | None = None) -> pd.DataFrame:
    """Read the profiles table; profile ids must be present and unique. `profile_ids`: only these
    profiles' rows (a Parquet file with text ids is read with a filter, so only their rows are
    decoded; the ids are then checked among those rows only)."""
    if profile_ids is None:
        return check_profiles(read_profiles(path), str(path))
    wanted = sorted({str(p) for p in profile_ids})
    if path.suffix.lower() in (".parquet", ".pq") and path.exists():
        try:
            id_type = pq.read_schema(path).field(PROFILE_ID).type
        except (KeyError, OSError, pa.ArrowException):
            id_type = None  # no profile_id column, an unreadable file: the full read says which
        if id_type is not None and (pa.types.is_string(id_type) or pa.types.is_large_string(id_type)):
            return check_profiles(_filtered_parquet(path, pa.array(wanted, type=id_type)), str(path))
    profiles = check_profiles(read_profiles(path), str(path))
    return profiles[profiles[PROFILE_ID].isin(wanted)].reset_index(drop=True)


def _filtered_parquet(path: Path, profile_ids: pa.Array) -> pd.DataFrame:
    try:
        return read_rows_of(path, PROFILE_ID, profile_ids)[0].to_pandas()
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise CatalogError(f"{path}: cannot read profiles: {str(exc).splitlines()[0]}") from None


def offers_for_placement(offers: pd.DataFrame, placement_id: str) -> pd.DataFrame:
    """The regular (non-fallback) offers that may appear in a placement."""
    mask = offers["placements"].map(lambda spots: placement_id in spots) & ~offers["fallback"]
    return offers[mask].reset_index(drop=True)


def fallback_offer(offers: pd.DataFrame, placement_id: str) -> str:
    """The id of the placement's fallback offer (the highest-priority one if several)."""
    mask = offers["placements"].map(lambda spots: placement_id in spots) & offers["fallback"]
    candidates = offers[mask].sort_values("priority", ascending=False, kind="stable")
    if candidates.empty:
        raise CatalogError(f"placement {placement_id!r} has no fallback offer")
    return str(candidates["offer_id"].iat[0])

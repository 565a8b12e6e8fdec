"""The offer catalog and the profiles table: loading and checking.

An offer has an id, a name, an integer priority (higher wins), the placements it may appear in,
an optional eligibility rule (see `offerflow.rules.expressions`), optional frequency caps (see
`offerflow.rules.capping`), a fallback flag and any attribute columns
(category, discount_pct, ...). The catalog is a YAML file (`offers: [...]`), CSV or Parquet; in CSV
the placements are written `web-banner|email-hero`.

The decision engine reads the catalog as row dicts (`load_offer_rows`) and Parquet profiles as a
pyarrow Table (`load_profile_table`), so `offerflow decide` never imports pandas; `load_offers` and
`load_profiles` give the same data as DataFrames to the steps that work on frames (CSV files are
read with pandas either way, for its type inference).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from offerflow.rules.capping import CapError, parse_caps
from offerflow.rules.expressions import ExpressionError, parse_expression, schema_from_frames
from offerflow.core.config import YAML_LOADER
from offerflow.core.columns import Table, bool_array, column_names, column_values, string_array
from offerflow.core.parquet_rows import read_rows_of
from offerflow.core.schema import OFFER_REQUIRED_COLUMNS, PROFILE_ID
from offerflow.ingest.file_readers import wrong_separator
from offerflow.rules.values import missing

if TYPE_CHECKING:
    import pandas as pd


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


def _read_table(path: Path, what: str, rows: bool) -> Table:
    """The file's table: row dicts with `rows`, else a pyarrow Table (Parquet) or a DataFrame (CSV, YAML)."""
    if not path.exists():
        raise CatalogError(f"{path}: {what} file not found")
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_IdsAsWritten)
            records = raw.get(what) if isinstance(raw, dict) else raw
            if not isinstance(records, list):
                raise CatalogError(f"{path}: expected a list of {what} (under the key '{what}:')")
            return records if rows else _frame(records)
        if suffix == ".csv":  # ids stay text: '007' and '1e3' are ids, not the numbers 7 and 1000.0
            import pandas as pd

            table = pd.read_csv(path, dtype={"offer_id": str, PROFILE_ID: str})
            wrong = wrong_separator(list(table.columns))
            if wrong:
                raise CatalogError(f"{path}: {wrong}: {what} CSV files must be comma-separated")
            return table.to_dict("records") if rows else table
        if suffix in (".parquet", ".pq"):
            table = pq.ParquetFile(path).read() if path.is_file() else pq.read_table(path)  # read_table imports pandas
            return table.to_pylist() if rows else table
    except CatalogError:
        raise
    except UnicodeDecodeError:
        raise CatalogError(f"{path}: not UTF-8 text") from None
    except (yaml.YAMLError, ValueError, OSError, pa.ArrowException) as exc:
        raise CatalogError(f"{path}: cannot read {what}: {str(exc).splitlines()[0]}") from None
    raise CatalogError(f"{path}: unknown format {suffix!r} (expected .yaml, .csv or .parquet)")


def _frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame.from_records(records)


def _as_placement_list(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(p.strip() for p in value.split("|") if p.strip())
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ()
    return tuple(str(p) for p in value)


def _as_priority(value: object) -> float | None:
    """A priority as a number (None: not one), as `pd.to_numeric(errors="coerce")` reads it."""
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, (int, float, np.integer, np.floating)) and not missing(value):
        return float(value)
    return None


def normalize_offer_rows(raw: list[dict[str, Any]], source: str = "offers",
                         columns: list[str] | None = None) -> list[dict[str, Any]]:
    """Offers (row dicts, every row with every column) with typed core columns: offer_id str,
    priority int, placements tuple, eligibility str|None, fallback bool, caps a tuple of `CapRule`.
    `columns`: the table's columns (default: the rows' keys)."""
    columns = column_names(raw) if columns is None else list(columns)
    missing_columns = [c for c in OFFER_REQUIRED_COLUMNS if c not in columns]
    if missing_columns:
        raise CatalogError(f"{source}: missing required column(s): {', '.join(missing_columns)}")
    columns += [c for c in ("eligibility", "fallback") if c not in columns]
    offers = [{c: row.get(c) for c in columns} for row in raw]
    priorities = [_as_priority(row["priority"]) for row in offers]
    bad = [str(row["offer_id"]) for row, p in zip(offers, priorities) if p is None or p != round(p)]
    if bad:
        raise CatalogError(f"{source}: priority must be an integer (offers: {', '.join(bad[:5])})")
    caps = _parse_offer_caps(offers, source)
    for row, priority, rules in zip(offers, priorities, caps):
        rule = row["eligibility"]
        row.update(offer_id=str(row["offer_id"]), priority=int(priority),  # type: ignore[arg-type]
                   placements=_as_placement_list(row["placements"]),
                   eligibility=rule.strip() if isinstance(rule, str) and rule.strip() else None,
                   fallback=False if missing(row["fallback"]) else bool(row["fallback"]), caps=rules)
    return offers


def offers_frame(rows: list[dict[str, Any]], columns: list[str] | None = None) -> pd.DataFrame:
    """Normalized offer rows as a DataFrame (placements, eligibility and caps as object columns:
    inferring a string dtype would turn eligibility's Nones into NaN)."""
    import pandas as pd

    frame = pd.DataFrame.from_records(rows, columns=column_names(rows) if rows or columns is None else
                                      [*columns, *(c for c in ("eligibility", "fallback", "caps") if c not in columns)])
    for column in ("placements", "eligibility", "caps"):
        if column in frame.columns:
            frame[column] = pd.Series([row[column] for row in rows], index=frame.index, dtype=object)
    frame["priority"] = frame["priority"].astype("int64")
    frame["fallback"] = frame["fallback"].astype(bool)
    return frame


def normalize_offers(raw: pd.DataFrame, source: str = "offers") -> pd.DataFrame:
    """`normalize_offer_rows` of a DataFrame, as a DataFrame."""
    columns = [str(c) for c in raw.columns]
    return offers_frame(normalize_offer_rows(raw.to_dict("records"), source, columns), columns)


def _parse_offer_caps(offers: list[dict[str, Any]], source: str) -> list[tuple[Any, ...]]:
    """Each offer's cap rules as a tuple of `CapRule` (empty: uncapped); all problems in one error."""
    parsed, problems = [], []
    for row in offers:
        if "caps" not in row:
            parsed.append(())
            continue
        try:
            parsed.append(parse_caps(row["caps"], f"offer {str(row['offer_id'])!r}"))
        except CapError as exc:
            parsed.append(())
            problems.append(str(exc))
    if problems:
        raise CatalogError(f"{source}: " + "; ".join(problems))
    return parsed


def check_offers(offers: Table, placement_ids: Collection[str], source: str = "offers", *,
                 profiles: Table | None = None) -> None:
    """Unique ids, known placements, a fallback offer for every placement and, when `profiles` is
    given, eligibility rules that parse and type-check against the profile and offer columns.
    `offers`: normalized rows or their DataFrame; `profiles`: any table (`offerflow.core.columns`).

    Every problem found is listed in one `CatalogError`.
    """
    problems = []
    ids = [str(oid) for oid in column_values(offers, "offer_id")]
    seen: set[str] = set()
    dupes = list(dict.fromkeys(oid for oid in ids if oid in seen or seen.add(oid)))  # type: ignore[func-returns-value]
    if len(dupes):
        problems.append(f"duplicate offer_id: {', '.join(dupes[:5])}")
    known = set(placement_ids)
    spots_of = column_values(offers, "placements")
    for offer_id, spots in zip(ids, spots_of):
        unknown = [p for p in spots if p not in known]
        if unknown:
            problems.append(f"offer {offer_id!r}: unknown placement(s) {', '.join(unknown)}")
        if not spots:
            problems.append(f"offer {offer_id!r}: no placements")
    fallback_spots = {p for spots, fallback in zip(spots_of, column_values(offers, "fallback")) if fallback
                      for p in spots}
    for placement in placement_ids:
        if placement not in fallback_spots:
            problems.append(f"placement {placement!r} has no fallback offer")
    if profiles is not None:
        problems += _rule_problems(offers, profiles)
    if problems:
        raise CatalogError(f"{source}: " + "; ".join(problems))


def _rule_problems(offers: Table, profiles: Table) -> list[str]:
    """The ExpressionError message of every eligibility rule that does not parse or type-check."""
    if "eligibility" not in column_names(offers):
        return []
    schema = schema_from_frames(profiles=profiles, offers=offers)
    problems = []
    for offer_id, rule in zip(column_values(offers, "offer_id"), column_values(offers, "eligibility")):
        if isinstance(rule, str) and rule.strip():
            try:
                parse_expression(rule, schema, kind="rule", source=f"offer {offer_id!r} eligibility")
            except ExpressionError as exc:
                problems.append(str(exc))
    return problems


def read_offer_rows(path: Path) -> list[dict[str, Any]]:
    """The offers catalog read and normalized (see `normalize_offer_rows`), not checked yet."""
    return normalize_offer_rows(_read_table(path, "offers", rows=True), source=str(path))


def read_offers(path: Path) -> pd.DataFrame:
    """`read_offer_rows` as a DataFrame."""
    return offers_frame(read_offer_rows(path))


def load_offer_rows(path: Path, placement_ids: Collection[str] | None = None, *,
                    profiles: Table | None = None) -> list[dict[str, Any]]:
    """Read and check the offers catalog, as normalized row dicts. Placements are checked only when
    `placement_ids` is given, eligibility rules only when `profiles` is given (their columns are
    the rules' names)."""
    offers = read_offer_rows(path)
    if placement_ids is not None:
        check_offers(offers, placement_ids, source=str(path), profiles=profiles)
    elif profiles is not None:
        problems = _rule_problems(offers, profiles)
        if problems:
            raise CatalogError(f"{path}: " + "; ".join(problems))
    return offers


def load_offers(path: Path, placement_ids: Collection[str] | None = None, *,
                profiles: Table | None = None) -> pd.DataFrame:
    """`load_offer_rows` as a DataFrame."""
    return offers_frame(load_offer_rows(path, placement_ids, profiles=profiles))


def read_profiles(path: Path) -> pd.DataFrame:
    """The profiles table as stored, not checked yet (see `check_profiles`)."""
    return as_frame(_read_table(path, "profiles", rows=False))


def as_frame(table: Table) -> pd.DataFrame:
    """A table (pyarrow Table or DataFrame) as a DataFrame."""
    return table.to_pandas() if isinstance(table, pa.Table) else table


def check_profiles(profiles: Table, source: str = "profiles") -> Table:
    """Profiles with `profile_id` as text; every id present and unique, else a `CatalogError`.
    A pyarrow Table or a DataFrame, returned in the same form."""
    if PROFILE_ID not in column_names(profiles):
        raise CatalogError(f"{source}: missing required column: {PROFILE_ID}")
    raw = column_values(profiles, PROFILE_ID).tolist()
    listed = [str(v) for v in raw]
    absent = np.fromiter((missing(v) or not s.strip() for v, s in zip(raw, listed)), dtype=bool, count=len(raw))
    if absent.any():
        first = int(np.flatnonzero(absent)[0]) + 1
        raise CatalogError(f"{source}: {int(absent.sum())} profile(s) without a profile_id (first: row {first})")
    if len(set(listed)) != len(listed):
        seen: set[str] = set()
        dupes = [pid for pid in listed if pid in seen or seen.add(pid)]  # type: ignore[func-returns-value]
        raise CatalogError(f"{source}: {len(dupes)} duplicate profile_id(s), e.g. {dupes[0]!r}")
    if isinstance(profiles, pa.Table):
        type_ = profiles.schema.field(PROFILE_ID).type
        if pa.types.is_string(type_) or pa.types.is_large_string(type_):
            return profiles
        return profiles.set_column(profiles.schema.get_field_index(PROFILE_ID), PROFILE_ID, string_array(listed))
    return profiles.assign(**{PROFILE_ID: profiles[PROFILE_ID].astype(str)})


def load_profile_table(path: Path, profile_ids: Collection[str] | None = None) -> Table:
    """Read the profiles table, as a pyarrow Table (Parquet) or a DataFrame (CSV, YAML); profile
    ids must be present and unique. `profile_ids`: only these profiles' rows (a Parquet file with
    text ids is read with a filter, so only their rows are decoded; the ids are then checked
    among those rows only)."""
    if profile_ids is None:
        return check_profiles(_read_table(path, "profiles", rows=False), str(path))
    wanted = sorted({str(p) for p in profile_ids})
    if path.suffix.lower() in (".parquet", ".pq") and path.exists():
        try:
            id_type = pq.read_schema(path).field(PROFILE_ID).type
        except (KeyError, OSError, pa.ArrowException):
            id_type = None  # no profile_id column, an unreadable file: the full read says which
        if id_type is not None and (pa.types.is_string(id_type) or pa.types.is_large_string(id_type)):
            return check_profiles(_filtered_parquet(path, string_array(wanted, id_type)), str(path))
    profiles = check_profiles(_read_table(path, "profiles", rows=False), str(path))
    keep = np.isin(column_values(profiles, PROFILE_ID).astype(object), np.array(wanted, dtype=object))
    if isinstance(profiles, pa.Table):
        return profiles.filter(bool_array(keep))
    return profiles[keep].reset_index(drop=True)


def load_profiles(path: Path, profile_ids: Collection[str] | None = None) -> pd.DataFrame:
    """`load_profile_table` as a DataFrame."""
    return as_frame(load_profile_table(path, profile_ids))


def _filtered_parquet(path: Path, profile_ids: pa.Array) -> pa.Table:
    try:
        return read_rows_of(path, PROFILE_ID, profile_ids)[0]
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise CatalogError(f"{path}: cannot read profiles: {str(exc).splitlines()[0]}") from None


def _in_placement(offers: Table, placement_id: str, fallback: bool) -> list[bool]:
    return [placement_id in spots and bool(f) == fallback
            for spots, f in zip(column_values(offers, "placements"), column_values(offers, "fallback"))]


def offers_for_placement(offers: Table, placement_id: str) -> Table:
    """The regular (non-fallback) offers that may appear in a placement (rows or a DataFrame, as given)."""
    mask = _in_placement(offers, placement_id, fallback=False)
    if isinstance(offers, list):
        return [row for row, keep in zip(offers, mask) if keep]
    return offers[np.array(mask, dtype=bool)].reset_index(drop=True)


def fallback_offer(offers: Table, placement_id: str) -> str:
    """The id of the placement's fallback offer (the highest-priority one if several; the first listed on a tie)."""
    candidates = [(-int(priority), i, str(oid)) for i, (oid, priority, keep) in enumerate(
        zip(column_values(offers, "offer_id"), column_values(offers, "priority"),
            _in_placement(offers, placement_id, fallback=True))) if keep]
    if not candidates:
        raise CatalogError(f"placement {placement_id!r} has no fallback offer")
    return min(candidates)[2]

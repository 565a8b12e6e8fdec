"""Customer AI score batches on disk, and segments of them exported for other tools.

Each scoring run writes `scores-<as-of date>-b<batch>.parquet` under
`<outputs>/propensity/<goal>/`; a segment is the profiles of one batch in a bucket and/or above a
score, written as CSV or Parquet (`profile_id, probability, score, percentile, bucket`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import pandas as pd

SEGMENT_COLUMNS = ("profile_id", "probability", "score", "percentile", "bucket")
_BATCH = re.compile(r"^scores-(\d{4}-\d{2}-\d{2})(?:-b(\d+))?\.parquet$")


class SegmentError(ValueError):
    """No scores to export, an unknown batch, or an unsupported output format."""


def score_batches(scores_dir: Path) -> pd.DataFrame:
    """The goal's score batches by as-of date, then batch number: columns `batch`, `as_of`, `path`."""
    rows = []
    for path in Path(scores_dir).glob("scores-*.parquet"):
        match = _BATCH.match(path.name)
        if match:
            rows.append({"batch": int(match.group(2) or 0), "as_of": match.group(1), "path": path})
    return pd.DataFrame(rows, columns=["batch", "as_of", "path"]).sort_values(["as_of", "batch"], ignore_index=True)


def read_batch(scores_dir: Path, batch: int | None = None) -> tuple[pd.DataFrame, int]:
    """One batch of scores and its number; default: the newest batch of the latest as-of date (what
    the enriched profiles use), so a backtest as of an old date never becomes the default."""
    batches = score_batches(scores_dir)
    if batches.empty:
        raise SegmentError(f"{scores_dir}: no score batches yet (run `offerflow run` or `offerflow score`)")
    if batch is None:
        row = batches.iloc[-1]
    else:
        chosen = batches[batches["batch"] == batch]
        if chosen.empty:
            raise SegmentError(f"{scores_dir}: no batch {batch} (batches: {', '.join(map(str, sorted(batches['batch'])))})")
        row = chosen.iloc[-1]
    return pd.read_parquet(row["path"]), int(row["batch"])


def select_segment(scores: pd.DataFrame, bucket: str | None = None, min_score: float | None = None) -> pd.DataFrame:
    """Profiles in `bucket` (low / medium / high) and/or with score >= `min_score`, best first."""
    if bucket is None and min_score is None:
        raise SegmentError("a segment needs --bucket and/or --min-score")
    keep = pd.Series(True, index=scores.index)
    if bucket is not None:
        keep &= scores["bucket"] == bucket
    if min_score is not None:
        keep &= scores["score"] >= min_score
    # by the probability, not the score rounded to one decimal (ties by profile id, as the percentiles)
    return scores.loc[keep, list(SEGMENT_COLUMNS)].sort_values(["probability", "profile_id"],
                                                                ascending=[False, True], ignore_index=True)


def write_segment(segment: pd.DataFrame, out: Path) -> Path:
    """Write as CSV or Parquet by the file's extension (atomically)."""
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise SegmentError(f"{out}: unsupported segment format {suffix or '(none)'!r}; use .csv or .parquet")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    if suffix == ".csv":
        segment.to_csv(tmp, index=False)
    else:
        segment.to_parquet(tmp, index=False)
    tmp.replace(out)
    return out


def latest_goal_scores(scores_dir: Path) -> pd.DataFrame | None:
    """The newest `scores-<date>.parquet` batch of a goal (None if it was never scored)."""
    files = sorted(Path(scores_dir).glob("scores-*.parquet"))
    return pd.read_parquet(files[-1]) if files else None


def with_latest_scores(goals: Iterable[str], scores_dir: Callable[[str], Path],
                       scores: Mapping[str, pd.DataFrame | None]) -> dict[str, pd.DataFrame]:
    """Every goal's scores for the enriched profiles: this run's where it has them, else the goal's
    latest batch on disk (`scores_dir(goal)`); goals never scored are left out."""
    out: dict[str, pd.DataFrame] = {}
    for goal in goals:
        latest = scores.get(goal)
        if latest is None:
            latest = latest_goal_scores(scores_dir(goal))
        if latest is not None:
            out[goal] = latest
    return out

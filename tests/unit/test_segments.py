"""Segments of a Customer AI score batch: which profiles, in which order."""

from __future__ import annotations

import pandas as pd
import pytest

from offerflow.customer_ai.segments import SegmentError, read_batch, select_segment


def _scores(rows):
    return pd.DataFrame(rows, columns=["profile_id", "probability", "score", "percentile", "bucket"])


def test_a_segment_is_best_first_by_probability_even_within_one_rounded_score():
    """Scores are rounded to one decimal: two profiles at 89.3 can differ in probability, and the
    likelier one comes first (ties of the probability itself by profile id, as the percentiles)."""
    scores = _scores([("p1", 0.892552, 89.3, 100, "high"), ("p2", 0.892620, 89.3, 100, "high"),
                      ("p3", 0.892552, 89.3, 100, "high"), ("p4", 0.5, 50.0, 60, "medium")])
    chosen = select_segment(scores, bucket="high")
    assert chosen["profile_id"].tolist() == ["p2", "p1", "p3"]


def test_an_unknown_batch_lists_the_batches_in_order(tmp_path):
    row = _scores([("p1", 0.5, 50.0, 1, "medium")]).assign(score_date="2026-01-01", batch=1)
    for name in ("scores-2026-01-02-b00003.parquet", "scores-2026-01-01-b00002.parquet",
                 "scores-2026-01-02-b00001.parquet"):
        row.to_parquet(tmp_path / name)
    with pytest.raises(SegmentError, match=r"no batch 9 \(batches: 1, 2, 3\)"):
        read_batch(tmp_path, 9)

"""`core.columns`: tables read column by column without pandas give what pandas and pyarrow's own
conversions give (values, dtypes, nulls), and the rules type a column alike in every form."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from offerflow.core.columns import (arrow_array, arrow_to_numpy, bool_array, column_names, column_values,
                                    int64_array, row_values, slice_rows, string_array)
from offerflow.rules.expressions import schema_from_frames
from offerflow.rules.values import missing

ARRAYS = [
    pa.array([1, None, 3, 4, None], pa.int32()),
    pa.array([1, 2, 3], pa.uint64()),
    pa.array([1.5, None, 2.0], pa.float32()),
    pa.array([True, None, False, True]),
    pa.array([True, False] * 9),
    pa.chunked_array([[1, 2], [None, 4]]),
    pa.chunked_array([[True], [False, True]]),
    pa.array([None, None], pa.int64()),
    pa.array([], pa.int64()),
    pa.array(["x", None, "é"]),
    pa.array(["a", "b"], pa.large_string()),
    pa.array(["a", "b", "a", None]).dictionary_encode(),
    pa.array([1, None, 3, 4, None, 6, 7, 8, 9, 10, None], pa.uint8()).slice(3, 7),
    pa.array([True, None, False, True, False, None, True, True, False, True]).slice(1, 8),
    pa.array([1, 2, 3], pa.timestamp("us")),
]


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: str(a.type))
def test_arrow_to_numpy_without_pandas_matches_pyarrow(array, monkeypatch):
    expected = (array.cast(array.type.value_type) if pa.types.is_dictionary(array.type) else array).to_numpy(
        zero_copy_only=False)
    monkeypatch.delitem(sys.modules, "pandas")  # the decision path: read from buffers and lists
    got = arrow_to_numpy(array)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert [str(v) for v in got] == [str(v) for v in expected]


def test_arrays_built_from_buffers():
    assert string_array(["p1", "", "é"]).to_pylist() == ["p1", "", "é"]
    assert string_array(["a"], pa.large_string()).type == pa.large_string()
    assert int64_array(np.array([3, 0, 2])).to_pylist() == [3, 0, 2]
    assert bool_array(np.array([True, False] * 5 + [True])).to_pylist() == [True, False] * 5 + [True]


@pytest.mark.parametrize("values, type_", [
    (["p1", None, "é", ""], pa.string()), ([None, None], pa.string()), ([], pa.string()), (["a"], pa.large_string()),
    ([3, None, -2, 2**40], pa.int64()), ([0.5, None, float("nan")], pa.float64()), ([1.0, 2.0], pa.float64()),
    # all-ASCII values take a joined path; one non-ASCII value, a NUL or a str subclass must not change the result
    ([f"dec-{i:032x}" for i in range(3000)], pa.string()), (["a", "bc", "", "d\0e"], pa.large_string()),
    (["ab", None, "", "cd"], pa.large_string()), ([*(["x"] * 50), "é", "yz"], pa.string()),
    (["日本", "a"], pa.string()), ([np.str_("np"), "a", None], pa.string()), ([3, 0, 7], pa.int64()),
])
def test_arrow_array_without_pandas_matches_pyarrow(values, type_, monkeypatch):
    expected = pa.array(values, type_)
    monkeypatch.delitem(sys.modules, "pandas")  # the decision log of `offerflow decide`: built from buffers
    got = arrow_array(values, type_)
    assert got.type == expected.type and got.null_count == expected.null_count
    assert [str(v) for v in got.to_pylist()] == [str(v) for v in expected.to_pylist()]
    got.validate(full=True)
    assert got.equals(expected) or type_ == pa.float64()  # NaN != NaN


ROWS = [{"offer_id": "a", "priority": 3, "discount": 10.0, "vip": True, "tags": ("x",)},
        {"offer_id": "b", "priority": 1, "vip": None, "label": "new"},
        {"offer_id": "c", "priority": 2, "discount": None, "vip": False, "label": None}]


def test_rows_arrow_and_frame_read_and_type_alike():
    frame = pd.DataFrame.from_records(ROWS)
    arrow = pa.Table.from_pandas(frame.drop(columns=["tags"]), preserve_index=False)
    assert column_names(ROWS) == list(frame.columns)
    for table in (ROWS, frame, arrow):  # nulls where a key is absent or None, whatever the form
        assert [None if missing(v) else float(v) for v in column_values(table, "discount")] == [10.0, None, None]
    schemas = [schema_from_frames(offers=table) for table in (ROWS, frame)]
    assert schemas[0] == schemas[1] == {"offer.offer_id": "string", "offer.priority": "number",
                                        "offer.discount": "number", "offer.vip": "bool", "offer.tags": "string",
                                        "offer.label": "string"}
    by_arrow = schema_from_frames(offers=arrow)
    assert by_arrow == {k: v for k, v in schemas[0].items() if k != "offer.tags"}
    assert row_values(slice_rows(arrow, 1, 3), 0)["offer_id"] == "b" and row_values(ROWS, 2)["priority"] == 2

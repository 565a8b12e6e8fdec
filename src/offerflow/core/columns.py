"""Tables read column by column, whatever holds them: a pyarrow Table (profiles read from Parquet), a
list of row dicts (the offers catalog) or a pandas DataFrame, without importing pandas.

Rules, formulas and the decision engine read tables only through these functions, so
`offerflow decide` works on Arrow and row dicts and never imports pandas, while the steps that
work on DataFrames (training, scoring, batch decisions) pass their frames to the same code.
A column comes out as a NumPy array of shape (n_rows,), nulls as None or NaN (an Arrow integer
column with nulls: float64 with NaN, as pandas reads it).

pyarrow imports pandas, when it is installed (~0.2 s), the first time it converts an array to
NumPy (`to_numpy`) or builds one from Python or NumPy values (`pa.array`). So columns convert
here from their buffers or through Python lists (`arrow_to_numpy`), and arrays are built from
buffers (`string_array`, `int64_array`, `bool_array`, and `arrow_array` until pandas is loaded); an
empty table is `empty_table`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from itertools import repeat
from operator import is_, is_not
from typing import Any

import numpy as np
import pyarrow as pa

#: A table in any of the forms above.
Table = Any
_FLOATS = {"halffloat": np.float16, "float": np.float32, "double": np.float64}


def arrow_to_numpy(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """An Arrow array as `to_numpy(zero_copy_only=False)` gives it (integers with nulls as float64
    with NaN, bools with nulls and strings as objects with None). Until something imports pandas,
    numbers and bools are read from their buffers and strings through `to_pylist`; other types,
    and every type once pandas is loaded, convert through pyarrow's `to_numpy`."""
    if pa.types.is_dictionary(array.type):
        array = array.cast(array.type.value_type)
    type_ = array.type
    fixed = pa.types.is_integer(type_) or pa.types.is_floating(type_) or pa.types.is_boolean(type_)
    text = pa.types.is_string(type_) or pa.types.is_large_string(type_)
    if "pandas" in sys.modules or not (fixed or text):
        return array.to_numpy(zero_copy_only=False)
    if text:
        return object_array(array.to_pylist())
    chunk = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
    validity, data = chunk.buffers()[:2]
    start, n = chunk.offset, len(chunk)
    if pa.types.is_boolean(type_):
        values = _bits(data, start, n)
    else:
        dtype = np.dtype(_FLOATS.get(str(type_), str(type_)))
        values = np.frombuffer(data, dtype=dtype, count=n, offset=start * dtype.itemsize) if n else np.empty(0, dtype)
    if not chunk.null_count:
        return values
    valid = _bits(validity, start, n)
    if pa.types.is_boolean(type_):
        out = values.astype(object)
        out[~valid] = None
        return out
    out = values.astype(np.float64 if pa.types.is_integer(type_) else values.dtype)  # a copy: buffers are read-only
    out[~valid] = np.nan
    return out


def _bits(buffer: pa.Buffer, start: int, n: int) -> np.ndarray:
    """Bits start:start + n of an Arrow bitmap (validity or bool data) as a bool array."""
    if not n:
        return np.empty(0, dtype=bool)
    bits = np.unpackbits(np.frombuffer(buffer, dtype=np.uint8), bitorder="little", count=start + n)
    return bits[start:].astype(bool)


def string_array(values: Sequence[str | None], type_: pa.DataType | None = None) -> pa.Array:
    """An Arrow string (or large_string) array of `values` (None: null), built from its buffers.
    Values that are all str and ASCII (a service's decision-log columns) are joined and measured
    in C (`str.join`, `map(len)`); others are encoded one by one."""
    type_ = type_ or pa.string()
    n, validity = len(values), _validity(values)
    offsets = np.zeros(n + 1, dtype=np.int64 if pa.types.is_large_string(type_) else np.int32)
    texts = values if validity is None else [("" if v is None else v) for v in values]
    try:
        joined = "".join(texts)  # TypeError: a value is not a str
        data = joined.encode("utf-8")
        ascii_only = len(data) == len(joined)  # then each value's length in characters is its length in bytes
    except TypeError:
        ascii_only = False
    if ascii_only:
        np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=n), out=offsets[1:])
    else:
        encoded = [b"" if v is None else str(v).encode("utf-8") for v in values]
        np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=n), out=offsets[1:])
        data = b"".join(encoded)
    return pa.Array.from_buffers(type_, n, [validity, pa.py_buffer(offsets), pa.py_buffer(data)])


def arrow_array(values: Sequence[Any], type_: pa.DataType) -> pa.Array:
    """`pa.array(values, type_)` for strings, int64 and float64 values, None as null: pyarrow's own
    (faster) once something has imported pandas, else built from buffers, so that writing a
    decision's few rows does not load pandas."""
    if "pandas" in sys.modules:
        return pa.array(values, type_)
    if pa.types.is_string(type_) or pa.types.is_large_string(type_):
        return string_array(values, type_)
    if type_ not in (pa.int64(), pa.float64()):
        raise TypeError(f"arrow_array: {type_} is not string, int64 or float64")
    validity = _validity(values)
    data = np.array(values if validity is None else [0 if v is None else v for v in values],
                    dtype=np.int64 if type_ == pa.int64() else np.float64)
    return pa.Array.from_buffers(type_, len(data), [validity, pa.py_buffer(data)])


def _validity(values: Sequence[Any]) -> pa.Buffer | None:
    """The validity bitmap of `values` (None where no value is None)."""
    if not any(map(is_, values, repeat(None))):  # identity tests in C
        return None
    valid = np.fromiter(map(is_not, values, repeat(None)), dtype=bool, count=len(values))
    return pa.py_buffer(np.packbits(valid, bitorder="little"))


def empty_table(schema: pa.Schema) -> pa.Table:
    """A table of `schema` with no rows (`Schema.empty_table` imports pandas: for a file pandas
    wrote, it reads the schema's pandas metadata)."""
    return pa.Table.from_batches([], schema=schema)


def int64_array(values: np.ndarray) -> pa.Array:
    """An Arrow int64 array of a NumPy array's values, built from its buffer."""
    data = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(data), [None, pa.py_buffer(data)])


def bool_array(mask: np.ndarray) -> pa.Array:
    """An Arrow bool array of a NumPy bool mask (bit-packed into its buffer)."""
    mask = np.asarray(mask, dtype=bool)
    return pa.Array.from_buffers(pa.bool_(), len(mask), [None, pa.py_buffer(np.packbits(mask, bitorder="little"))])


def column_names(table: Table) -> list[str]:
    """The table's column names, in order (row dicts: every key, in order of first appearance)."""
    if isinstance(table, pa.Table):
        return list(table.column_names)
    if isinstance(table, list):
        return list(dict.fromkeys(key for row in table for key in row))
    return list(table.columns)


def row_count(table: Table) -> int:
    return table.num_rows if isinstance(table, pa.Table) else len(table)


def has_column(table: Table, name: str) -> bool:
    return name in column_names(table)


def object_array(values: Sequence[Any]) -> np.ndarray:
    """A 1-d object array of `values` (tuples and lists stay elements, not a second dimension)."""
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = value
    return out


def column_values(table: Table, name: str) -> np.ndarray:
    """One column as a NumPy array, shape (n_rows,); a dictionary-encoded Arrow column decoded."""
    if isinstance(table, pa.Table):
        return arrow_to_numpy(table.column(name))
    if isinstance(table, list):
        return object_array([row.get(name) for row in table])
    return table[name].to_numpy()


def arrow_type(table: Table, name: str) -> pa.DataType | None:
    """The Arrow type of a pyarrow Table's column (None: not an Arrow table)."""
    return table.schema.field(name).type if isinstance(table, pa.Table) else None


def slice_rows(table: Table, start: int, stop: int) -> Table:
    """Rows start:stop, in the table's own form."""
    if isinstance(table, pa.Table):
        return table.slice(start, max(0, stop - start))
    if isinstance(table, list):
        return table[start:stop]
    return table.iloc[start:stop]


def row_values(table: Table, position: int) -> dict[str, Any]:
    """One row as {column: value}."""
    if isinstance(table, list):
        return dict(table[position])
    return {name: column_values(slice_rows(table, position, position + 1), name)[0] for name in column_names(table)}

"""The value model of rule and formula expressions: types, nulls and the batch representation.

`offerflow.rules.expressions` compiles an expression into two evaluators, one for a single row (`one_*`
converters, Python scalars with None for null) and one over columns (NumPy batch values, below).
Both must give identical answers, so the conversions they share live here.
"""

from __future__ import annotations

import operator
import sys
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

NUMBER, STRING, BOOL, NULL = "number", "string", "bool", "null"
TYPES = (NUMBER, STRING, BOOL)
CMP = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
STRING_DTYPE = np.dtypes.StringDType()

# Batch values: a number is a float64 array with NaN for null; a bool or a string is a pair
# (data, null) where `null` is a bool mask or None when nothing is null, and `data` holds False or ""
# at null positions (so `data` alone already gives the "null counts as false" answer). Any array may
# be a 0-d constant that NumPy broadcasts.
Batch = Any
OneFn = Callable[[Mapping[str, Any]], Any]
BatchFn = Callable[[dict[str, Any]], Batch]


# ---------------------------------------------------------------- scalar value helpers


_NEVER_NULL = (str, int, bool)


def _pandas() -> Any:
    """pandas if something already imported it, else None: a value can be pandas' NA or a Series only
    then, and the decision path never imports it (`offerflow decide` answers without pandas)."""
    return sys.modules.get("pandas")


def missing(x: Any) -> bool:
    if x is None:
        return True
    if type(x) in _NEVER_NULL:
        return False
    if isinstance(x, (float, np.floating)):
        return x != x
    pd = _pandas()
    return pd is not None and (x is pd.NA or x is pd.NaT)


def object_nulls(arr: np.ndarray) -> np.ndarray:
    """Bool mask of the null values (`missing`) of an object array."""
    pd = _pandas()
    if pd is not None:  # the same answer as `missing`, in C: ranking tables scan millions of values
        return pd.isna(arr)
    return np.fromiter(map(missing, arr.ravel().tolist()), dtype=bool, count=arr.size).reshape(arr.shape)


def all_strings(arr: np.ndarray) -> bool:
    """Whether every value of an object array is a str (no nulls)."""
    pd = _pandas()
    if pd is not None:
        return pd.api.types.infer_dtype(arr, skipna=False) == "string"
    return all(isinstance(v, str) for v in arr.ravel().tolist())


def one_number(x: Any) -> float | None:
    if type(x) is float:
        return x if x == x else None
    if missing(x):
        return None
    x = float(x)
    return x if x == x else None


def one_string(x: Any) -> str | None:
    if type(x) is str:
        return x
    return None if missing(x) else str(x)


def one_bool(x: Any) -> bool | None:
    if x is True or x is False:
        return x
    return None if missing(x) else bool(x)


ONE_CONVERT = {NUMBER: one_number, STRING: one_string, BOOL: one_bool}


def nan_to_null(x: float) -> float | None:
    return x if x == x else None


def one_exp(x: float) -> float:
    # NumPy's exp, not math.exp: they differ in the last bit for some inputs and both evaluators must agree.
    if x > 700.0:
        with np.errstate(over="ignore"):
            return float(np.exp(x))
    return float(np.exp(x))


# ---------------------------------------------------------------- batch value helpers


def mask_or(a: Any, b: Any) -> Any:
    if a is None:
        return b
    return a if b is None else a | b


def nulls(value: Batch, type_: str) -> Any:
    """The null mask of a batch value (None when nothing is null)."""
    return np.isnan(value) if type_ == NUMBER else value[1]


def batch_null(type_: str) -> Batch:
    if type_ == NUMBER:
        return np.float64(np.nan)
    return (np.array("" if type_ == STRING else False, dtype=object if type_ == STRING else bool), np.True_)


def batch_constant(value: Any, type_: str) -> Batch:
    if type_ == NUMBER:
        return np.float64(value)
    return (np.array(value, dtype=object if type_ == STRING else bool), None)


def select(cond: Any, a: Batch, b: Batch, type_: str) -> Batch:
    """Row-wise `a if cond else b`."""
    if type_ == NUMBER:
        return np.where(cond, a, b)
    na, nb = a[1], b[1]
    null = None if na is None and nb is None else np.where(cond, False if na is None else na, False if nb is None else nb)
    return np.where(cond, a[0], b[0]), null


def batch_compare(op: str, a: Batch, b: Batch, type_: str) -> Batch:
    if type_ == NUMBER:
        result = CMP[op](a, b)
        # NaN already compares false, except with '!='.
        return (result & ~np.isnan(a) & ~np.isnan(b) if op == "!=" else result), None
    result = CMP[op](a[0], b[0])
    null = mask_or(a[1], b[1])
    return (result if null is None else result & ~null), None


def strings(value: Batch) -> np.ndarray:
    return np.asarray(value[0]).astype(STRING_DTYPE)


def numpy_strings_safe(*values: Batch) -> bool:
    """Whether NumPy's string functions give Python's answer on these string batch values. They do
    not on NUL characters (NumPy 2.x's StringDType find/startswith/lower treat a trailing NUL as
    the end of the text: 'a' contains '\\0' there) and cannot hold lone surrogates (UTF-8 inside):
    data may have both (literals may not), and then the caller takes `python_strings`."""
    for value in values:
        text = "".join(np.asarray(value[0], dtype=object).ravel().tolist())
        if "\0" in text:
            return False
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                return False
    return True


def python_strings(fn: Callable[..., Any], *values: Batch) -> np.ndarray:
    """`fn` over the (broadcast) data of string batch values, row by row, as an object array."""
    return np.asarray(np.frompyfunc(fn, len(values), 1)(*(np.asarray(v[0], dtype=object) for v in values)), dtype=object)


def substring_data(test: Callable[[str, str], bool], how: str, s: Batch, sub: Batch) -> np.ndarray:
    """`test(s, sub)` per row ("find": `sub in s`, else `s.startswith(sub)`), nulls not applied."""
    if not numpy_strings_safe(s, sub):
        return python_strings(test, s, sub).astype(bool)
    if how == "find":
        return np.strings.find(strings(s), strings(sub)) >= 0
    return np.strings.startswith(strings(s), strings(sub))


def batch_column(col: Any, type_: str, n: int, name: str) -> Batch:
    """Convert one input column (array, Series or sequence) into the batch representation of `type_`."""
    pd = _pandas()
    if pd is not None and isinstance(col, pd.Series):
        null = col.isna().to_numpy()
        if type_ == NUMBER:
            data = col.to_numpy(dtype=np.float64, na_value=np.nan)
        elif type_ == BOOL:
            data = col.to_numpy(dtype=bool, na_value=False)
        else:
            data = string_data(col.to_numpy(dtype=object, na_value=""), null)
    else:
        arr = np.asarray(col)
        kind = arr.dtype.kind
        if type_ == STRING and kind == "O" and all_strings(arr):
            null, data = None, arr  # the common case: all str, so no null scan and no copy
        else:
            null = np.isnan(arr) if kind == "f" else object_nulls(arr) if kind == "O" else np.zeros(arr.shape, dtype=bool)
            if type_ == NUMBER and kind in "biuf":
                data = arr.astype(np.float64, copy=False)
            elif type_ == NUMBER:
                data = np.full(arr.shape, np.nan)
                data[~null] = arr[~null].astype(np.float64)
            elif type_ == BOOL:
                data = np.zeros(arr.shape, dtype=bool)
                data[~null] = arr[~null].astype(bool)
            else:
                data = arr.astype(object)  # a copy, so filling nulls below leaves the caller's array alone
                data[null] = ""
                data = string_data(data, null)
    if data.shape != (n,):
        raise ValueError(f"column {name!r} has shape {data.shape}, expected ({n},)")
    if type_ == NUMBER:
        return data
    return data, (null if null is not None and null.any() else None)


def string_data(data: np.ndarray, null: np.ndarray) -> np.ndarray:
    # Non-str values (numbers in a string column) become `str(x)`, as in evaluate_one.
    if len(data) and not all_strings(data):
        data = data.astype(str).astype(object)
        data[null] = ""
    return data

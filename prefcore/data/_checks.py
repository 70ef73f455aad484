"""Value checks shared by the record types.

Each check returns the value in its normal form (lists become tuples, ints become floats
where a number is meant) or raises ``DataError`` naming the field and what is accepted.
Records call them from ``__post_init__``, so a record built in Python and a record read
from a file pass through the same gate.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from prefcore.errors import DataError


def describe(value: Any) -> str:
    """A short rendering of a bad value for an error message: its repr and its type."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def nested_error(error: DataError, prefix: str) -> DataError:
    """The same error with its field placed under ``prefix`` (``content`` → ``chosen[1].content``)."""
    if error.field is None:
        field = prefix
    elif error.field.startswith("["):
        field = f"{prefix}{error.field}"
    else:
        field = f"{prefix}.{error.field}"
    return DataError(error.reason, source=error.source, line=error.line, field=field)


def check_string(value: Any, field: str) -> str:
    """A string with at least one non-space character."""
    if not isinstance(value, str):
        raise DataError(f"must be a non-empty string, got {describe(value)}.", field=field)
    if not value.strip():
        raise DataError("must be a non-empty string, got an empty or blank one.", field=field)
    return value


def check_optional_string(value: Any, field: str) -> str | None:
    """``None`` or a non-empty string."""
    return None if value is None else check_string(value, field)


def check_bool(value: Any, field: str) -> bool:
    """``True`` or ``False``; 0/1 and "yes" are refused so that a wrong column never passes as a label."""
    if not isinstance(value, bool):
        raise DataError(f"must be true or false, got {describe(value)}.", field=field)
    return value


def check_number(value: Any, field: str) -> float:
    """A finite real number (bools are refused: ``True`` is not a score)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise DataError(f"must be a number, got {describe(value)}.", field=field)
    number = float(value)
    if not math.isfinite(number):
        raise DataError(f"must be a finite number, got {number}.", field=field)
    return number


def check_optional_number(value: Any, field: str, *, low: float, high: float) -> float | None:
    """``None`` or a finite number in ``[low, high]``."""
    if value is None:
        return None
    number = check_number(value, field)
    if not low <= number <= high:
        raise DataError(f"must lie in [{low:g}, {high:g}], got {number:g}.", field=field)
    return number


def check_integer(value: Any, field: str) -> int:
    """A whole number; an integral float such as ``2.0`` (pandas writes those) becomes ``2``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise DataError(f"must be a whole number, got {describe(value)}.", field=field)
    if isinstance(value, numbers.Integral):
        return int(value)
    if not math.isfinite(value) or not float(value).is_integer():
        raise DataError(f"must be a whole number, got {value!r}.", field=field)
    return int(value)


def check_sequence(value: Any, field: str, what: str) -> tuple[Any, ...]:
    """A list or tuple (a string is not a sequence of items here)."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise DataError(f"must be a list of {what}, got {describe(value)}.", field=field)
    return tuple(value)


def check_json_value(value: Any, field: str) -> Any:
    """A deep copy of ``value`` made of JSON types only (tuples become lists).

    Metadata must survive ``to_dict`` → JSON → ``record_from_dict`` unchanged, so values
    that JSON cannot hold (NaN, sets, dates, non-string keys) are refused here rather than
    failing later in ``write_jsonl``.
    """
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        if not math.isfinite(number):
            raise DataError(f"must be JSON-compatible, got the non-finite number {number}.", field=field)
        return number
    if isinstance(value, Mapping):
        copy = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise DataError(f"keys must be strings, got {describe(key)}.", field=field)
            copy[key] = check_json_value(item, f"{field}.{key}")
        return copy
    if isinstance(value, (list, tuple)):
        return [check_json_value(item, f"{field}[{index}]") for index, item in enumerate(value)]
    raise DataError(
        f"must be JSON-compatible (string, number, bool, null, list or object), got {describe(value)}.",
        field=field,
    )

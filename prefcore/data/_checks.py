"""Value checks shared by the record types.

Each check returns the value in its normal form (lists become tuples, ints become floats
where a number is meant) or raises ``DataError`` naming the field and what is accepted.
Records call them from ``__post_init__``, so a record built in Python and a record read
from a file pass through the same gate.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from prefcore.errors import DataError

MAX_DEPTH = 100
"""How deeply lists and objects may nest in a record. Real records nest a few levels (a
message list in a field); the limit keeps every recursive walk far from Python's stack limit."""

MAX_WHOLE_NUMBER = 2**53
"""The largest whole number (rank, offset) accepted: every int up to it is exact as a float."""

_SURROGATE = re.compile(r"[\ud800-\udfff]")

_INT_TEXT_BITS = 14_280
"""Ints longer than this many bits (about 4300 decimal digits) cannot be written as JSON text:
Python refuses to convert them to a string (``sys.set_int_max_str_digits``)."""


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


def check_unicode(value: str, field: str) -> str:
    """``value`` if it holds no lone surrogate, which no UTF-8 writer or tokenizer can encode.

    Python strings may hold them (from an unpaired ``\\ud800`` JSON escape, or from bytes
    that were not UTF-8 decoded with ``surrogateescape``); refused here, at reading, they
    cannot crash a tokenizer or a writer later.
    """
    found = _SURROGATE.search(value)
    if found is not None:
        code = ord(found.group())
        if 0xDC80 <= code <= 0xDCFF:
            origin = f"the byte 0x{code - 0xDC00:02x}, which is not UTF-8, or an unpaired escape \\u{code:04x}"
        else:
            origin = f"an unpaired escape \\u{code:04x}"
        raise DataError(
            f"is not valid Unicode text: at character {found.start()} it holds a lone surrogate "
            f"(U+{code:04X}, from {origin}). Save the data as UTF-8 and write whole surrogate pairs.",
            field=field,
        )
    return value


def check_string(value: Any, field: str) -> str:
    """A string with at least one non-space character, and valid Unicode."""
    if not isinstance(value, str):
        raise DataError(f"must be a non-empty string, got {describe(value)}.", field=field)
    if not value.strip():
        raise DataError("must be a non-empty string, got an empty or blank one.", field=field)
    if _SURROGATE.search(value) is not None:  # inline: this runs for every string of every record
        check_unicode(value, field)
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
    try:
        number = float(value)
    except OverflowError:  # an int beyond the float range (about 1.8e308)
        raise DataError(
            f"is a whole number of {_digits(value)} digits, too large for a number (at most about 1.8e308).",
            field=field,
        ) from None
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
        number = int(value)
    elif not math.isfinite(value) or not float(value).is_integer():
        raise DataError(f"must be a whole number, got {value!r}.", field=field)
    else:
        number = int(value)
    if abs(number) > MAX_WHOLE_NUMBER:
        size = f"{_digits(number)} digits" if isinstance(value, numbers.Integral) else f"{float(value):g}"
        raise DataError(f"must be a whole number of at most 2**53, got one of {size}.", field=field)
    return number


def _digits(value: Any) -> int:
    """How many decimal digits an int has (estimated past Python's 4300-digit limit on int-to-text)."""
    number = abs(int(value))
    if number.bit_length() <= _INT_TEXT_BITS:
        return len(str(number))
    return math.floor(number.bit_length() * math.log10(2)) + 1


def check_sequence(value: Any, field: str, what: str) -> tuple[Any, ...]:
    """A list or tuple (a string is not a sequence of items here)."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise DataError(f"must be a list of {what}, got {describe(value)}.", field=field)
    return tuple(value)


def check_json_value(value: Any, field: str, depth: int = 0) -> Any:
    """A deep copy of ``value`` made of JSON types only (tuples become lists).

    Metadata must survive ``to_dict`` → JSON → ``record_from_dict`` unchanged, so values
    that JSON cannot hold (NaN, sets, dates, non-string keys, lone surrogates, ints too long
    to write as text, nesting deeper than ``MAX_DEPTH``) are refused here rather than
    failing later in ``write_jsonl``.
    """
    if depth > MAX_DEPTH:
        raise DataError(f"nests lists and objects more than {MAX_DEPTH} levels deep.", field=field)
    if isinstance(value, str):
        return check_unicode(value, field)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):
        number = int(value)
        if number.bit_length() > _INT_TEXT_BITS:
            raise DataError(
                f"is a whole number of {_digits(number)} digits; JSON text holds at most 4300.", field=field
            )
        return number
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
            check_unicode(key, field)
            copy[key] = check_json_value(item, f"{field}.{key}", depth + 1)
        return copy
    if isinstance(value, (list, tuple)):
        return [check_json_value(item, f"{field}[{index}]", depth + 1) for index, item in enumerate(value)]
    raise DataError(
        f"must be JSON-compatible (string, number, bool, null, list or object), got {describe(value)}.",
        field=field,
    )

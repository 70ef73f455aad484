"""A small TOML writer for run files: what ``tomllib`` reads back as the same data.

The standard library reads TOML but does not write it, and a run folder's ``config.toml``
must be a file ``prefcore run`` accepts again. Supported values: str, int, float (with
``nan``/``inf``), bool, lists and tuples, and nested mappings; ``pathlib.Path`` is written
as its string. ``None`` means "the default" in a run file, and TOML has no null: keys whose
value is ``None`` are left out, which reads back as the default.

Layout: top-level scalars first, then one ``[table]`` per mapping and one ``[[table]]``
per entry of a list of mappings; mappings and lists of mappings inside a table are written
inline (``{ key = value }``), which keeps every section in one block.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

__all__ = ["TOMLWriteError", "dumps"]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


class TOMLWriteError(ValueError):
    """A value TOML cannot hold (a lone surrogate, None inside a list, an unknown type)."""


def dumps(data: Mapping[str, Any]) -> str:
    """``data`` as a TOML document that ``tomllib.loads`` turns back into ``data`` (minus ``None`` keys)."""
    lines: list[str] = []
    tables: list[tuple[str, Any]] = []
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, Mapping) or _is_table_array(value):
            tables.append((key, value))
        else:
            lines.append(f"{_key(key)} = {_value(value, key)}")
    for key, value in tables:
        if lines:
            lines.append("")
        bodies = [value] if isinstance(value, Mapping) else list(value)
        header = f"[{_key(key)}]" if isinstance(value, Mapping) else f"[[{_key(key)}]]"
        for index, body in enumerate(bodies):
            if index:
                lines.append("")
            lines.append(header)
            lines += [f"{_key(k)} = {_value(v, f'{key}.{k}')}" for k, v in body.items() if v is not None]
    return "\n".join(lines) + "\n"


def _is_table_array(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _key(key: Any) -> str:
    if not isinstance(key, str):
        raise TOMLWriteError(f"TOML keys are strings; got {key!r}.")
    return key if _BARE_KEY.fullmatch(key) else _string(key, key)


def _string(text: str, where: str) -> str:
    out = []
    for char in text:
        if char in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        elif 0xD800 <= ord(char) <= 0xDFFF:
            raise TOMLWriteError(f"{where}: a lone surrogate (U+{ord(char):04X}) cannot be written as TOML.")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value, where)
    if isinstance(value, PurePath):
        return _string(str(value), where)
    if isinstance(value, Mapping):
        items = [f"{_key(k)} = {_value(v, f'{where}.{k}')}" for k, v in value.items() if v is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    if isinstance(value, (list, tuple)):
        if any(v is None for v in value):
            raise TOMLWriteError(f"{where}: TOML arrays cannot hold None.")
        return "[" + ", ".join(_value(v, f"{where}[{i}]") for i, v in enumerate(value)) + "]"
    raise TOMLWriteError(f"{where}: cannot write a {type(value).__name__} as TOML ({value!r}).")

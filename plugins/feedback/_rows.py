"""Rows of the input files of feedback sources, with errors that name the file, line and field.

Not a feedback source (it registers nothing). A source states once what a row of its file
holds (``accepted``); every error about a row ends with that sentence, so the user reads
what was wrong and what would be right in one message.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prefcore.annotate import jsonl_rows
from prefcore.data.records import Text
from prefcore.data.records import check_text
from prefcore.errors import DataError


@dataclass(frozen=True)
class Row:
    """One JSON object of a JSONL file, read field by field."""

    data: Mapping[str, Any]
    source: str
    line: int
    accepted: str

    def error(self, message: str, field: str | None = None) -> DataError:
        return DataError(f"{message} {self.accepted}", source=self.source, line=self.line, field=field)

    def has(self, name: str) -> bool:
        return self.data.get(name) is not None

    def require(self, name: str) -> Any:
        if not self.has(name):
            raise self.error("is missing.", name)
        return self.data[name]

    def text(self, name: str, *, like: Text | None = None, value: Any = None) -> Text:
        """A non-empty string or message list (``value`` instead of the field's own, for list entries)."""
        raw = self.require(name) if value is None else value
        try:
            text = check_text(raw, name)
        except DataError as error:
            raise self.error(error.reason, name) from None
        if like is not None and isinstance(like, str) != isinstance(text, str):
            raise self.error("must be text like the prompt, or all message lists.", name)
        return text

    def texts(self, name: str, *, like: Text | None = None, minimum: int = 1) -> tuple[Text, ...]:
        """A list of distinct texts, at least ``minimum`` of them."""
        raw = self.require(name)
        if not isinstance(raw, list):
            raise self.error(f"must be a list, got {type(raw).__name__}.", name)
        if len(raw) < minimum:
            raise self.error(f"needs at least {minimum} entries, got {len(raw)}.", name)
        texts = tuple(self.text(f"{name}[{i}]", like=like, value=value) for i, value in enumerate(raw))
        first_index: dict[Text, int] = {}
        for index, text in enumerate(texts):
            if text in first_index:
                raise self.error(f"repeats entry {first_index[text]}; entries must be distinct.", f"{name}[{index}]")
            first_index[text] = index
        return texts

    def number(self, name: str, *, value: Any = None) -> float:
        raw = self.require(name) if value is None else value
        if isinstance(raw, bool) or not isinstance(raw, numbers.Real) or not math.isfinite(float(raw)):
            raise self.error(f"must be a finite number, got {raw!r}.", name)
        return float(raw)

    def string(self, name: str, *, value: Any = None) -> str:
        raw = self.require(name) if value is None else value
        if not isinstance(raw, str) or not raw.strip():
            raise self.error(f"must be a non-empty string, got {raw!r}.", name)
        return raw

    def group_id(self, key: str = "id") -> str:
        """The row's own id (``key``), else ``file:line``: the group its records share."""
        return str(self.data[key]) if self.has(key) else f"{os.path.basename(self.source)}:{self.line}"

    def at(self, name: str, index: int, value: Mapping[str, Any]) -> Row:
        """The object ``value`` found at ``name[index]``, read with the same file, line and message."""
        if not isinstance(value, Mapping):
            raise self.error(f"must be an object, got {type(value).__name__}.", f"{name}[{index}]")
        return _Nested(value, self.source, self.line, self.accepted, f"{name}[{index}]")


@dataclass(frozen=True)
class _Nested(Row):
    """A row inside a row: field names are reported under their parent (``replies[2].score``)."""

    prefix: str = ""

    def error(self, message: str, field: str | None = None) -> DataError:
        return super().error(message, self.prefix if field is None else f"{self.prefix}.{field}")


def read_rows(path: str | os.PathLike[str], accepted: str) -> Iterator[Row]:
    """Each JSON object of a JSONL file as a ``Row``; ``accepted`` ends every error about it."""
    source = os.fspath(path)
    for line, data in jsonl_rows(source):
        yield Row(data, source, line, accepted)

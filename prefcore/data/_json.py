"""JSON decoding that turns every way a document can be hostile into a located problem.

``json.loads`` alone lets bad input escape as the wrong exception or pass silently: deep
nesting raises ``RecursionError``, an int of more than 4300 digits ``ValueError``, and a
repeated key keeps its last value without a word. Here the decoder marks what it cannot
take (``_HugeInt``, ``_DuplicateKeys``) instead of failing, and ``check_tree`` walks the
result without recursion and raises ``TreeError`` with the path of the first problem, so a
reader can name the record and field. Lone surrogates (from ``\\ud800`` escapes, or from
bytes that were not UTF-8, decoded with ``surrogateescape``) are found by the same walk.
The walk costs as much as the decoding, so ``decode`` says when it is needed: only when
the decoder marked something or a scan of the text at C speed finds a surrogate escape or
enough brackets to nest too deep.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Sequence
from typing import Any

from prefcore.data._checks import MAX_DEPTH
from prefcore.data._checks import check_unicode
from prefcore.errors import DataError

Path = tuple[str | int, ...]
"""Keys and list indices from the decoded value down to one part of it."""


class TreeError(Exception):
    """A problem in a decoded JSON value at ``path``; ``reason`` says what and what to do."""

    def __init__(self, path: Path, reason: str, *, surrogate: bool = False) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason
        self.surrogate = surrogate
        """Whether the problem is a lone surrogate (what bytes that are not UTF-8 decode to)."""


class _HugeInt:
    """Stands in for an int too long for ``int()`` (Python's 4300-digit limit), until it is reported."""

    def __init__(self, digits: int) -> None:
        self.digits = digits


class _DuplicateKeys(dict):  # type: ignore[type-arg]
    """An object that named ``duplicate`` more than once; reported, never used."""

    duplicate: str


class _Decoder:
    """One decoding: marks what it cannot take, and remembers whether it marked anything."""

    def __init__(self) -> None:
        self.marked = False
        self._json = json.JSONDecoder(object_pairs_hook=self._object, parse_int=self._int)

    def decode(self, text: str) -> Any:
        return self._json.decode(text)

    def _object(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        value = dict(pairs)
        if len(value) == len(pairs):
            return value
        self.marked = True
        seen: set[str] = set()
        marked = _DuplicateKeys(value)
        marked.duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        return marked

    def _int(self, text: str) -> int | _HugeInt:
        try:
            return int(text)
        except ValueError:
            self.marked = True
            return _HugeInt(len(text.lstrip("-")))


# A lone surrogate comes from a \uD800-\uDFFF escape or is in the text itself (bytes
# decoded with surrogateescape); text without either cannot hold one.
_SURROGATE_SOURCE = re.compile(r"\\u[dD][89a-fA-F]|[\ud800-\udfff]")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_NESTING = {"[": 1, "{": 1, "]": -1, "}": -1}


def decode(text: str) -> tuple[Any, bool]:
    """The JSON value of ``text``, and whether it may hold a problem for ``check_tree`` to find.

    Raises ``json.JSONDecodeError`` for bad syntax and ``TreeError`` when the decoder runs
    out of stack. The flag is False only when the text cannot hold a lone surrogate, an int
    too long to read, a repeated key or nesting past ``MAX_DEPTH``; those checks run at C
    speed, so the Python walk of ``check_tree`` is left for the rare record that needs it.
    """
    decoder = _Decoder()
    try:
        value = decoder.decode(text)
    except RecursionError:
        raise TreeError(_deep_path(text), _too_deep()) from None
    suspect = decoder.marked or _SURROGATE_SOURCE.search(text) is not None or _nesting(text) >= MAX_DEPTH
    return value, suspect


def _nesting(text: str) -> int:
    """How deeply lists and objects nest in JSON ``text`` (brackets inside strings do not count)."""
    opened = text.count("[") + text.count("{")
    if opened < MAX_DEPTH:  # most records: too few brackets to nest that deep
        return opened
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(itertools.accumulate(map(_NESTING.__getitem__, brackets)), default=0)


def check_tree(value: Any) -> None:
    """Raise ``TreeError`` at the first (in document order) marked problem, lone surrogate or over-deep container."""
    stack: list[tuple[Any, Path]] = [(value, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            _check_text(node, path)
        elif isinstance(node, _HugeInt):
            raise TreeError(path, f"is a whole number of {node.digits} digits; numbers of more than 4300 are not read.")
        elif isinstance(node, dict):
            if len(path) >= MAX_DEPTH:
                raise TreeError(path, _too_deep())
            if isinstance(node, _DuplicateKeys):
                raise TreeError(
                    (*path, node.duplicate),
                    "appears twice in one object. JSON readers keep only the last value, so the first "
                    "would be lost without a word; keep one of them.",
                )
            for key in node:
                _check_text(key, (*path, key))
            stack.extend((item, (*path, key)) for key, item in reversed(node.items()))
        elif isinstance(node, list):
            if len(path) >= MAX_DEPTH:
                raise TreeError(path, _too_deep())
            stack.extend((item, (*path, index)) for index, item in reversed(list(enumerate(node))))


def field_name(path: Sequence[str | int]) -> str | None:
    """``("chosen", 1, "content")`` → ``"chosen[1].content"``; long paths end in ``...``."""
    if not path:
        return None
    shown = list(path[:_SHOWN_PARTS])
    name = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in shown).lstrip(".")
    return name + "..." if len(path) > _SHOWN_PARTS else name


def tree_error(error: TreeError, source: str, line: int | None, path: Path | None = None) -> DataError:
    """The ``DataError`` for ``error`` in the record at ``source`` ``line`` (``path`` relative to that record)."""
    return DataError(error.reason, source=source, line=line, field=field_name(error.path if path is None else path))


_SHOWN_PARTS = 6


def _check_text(text: str, path: Path) -> None:
    try:
        check_unicode(text, "")
    except DataError as error:
        raise TreeError(path, error.reason, surrogate=True) from None


def _too_deep() -> str:
    return f"nests lists and objects more than {MAX_DEPTH} levels deep; records nest a few levels."


_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{},:]', re.DOTALL)


def _deep_path(text: str) -> Path:
    """Where ``text`` first nests deeper than ``MAX_DEPTH``, found by a flat scan of its brackets.

    Used only when the decoder itself ran out of stack, to name the record and field anyway.
    """
    # Each open container: [kind, the key or index of the child being read].
    stack: list[list[Any]] = []
    last_string = ""
    for token in _TOKEN.finditer(text):
        mark = token.group()
        if mark[0] == '"':
            last_string = mark
        elif mark in "[{":
            if len(stack) >= MAX_DEPTH:
                break
            stack.append(["[", 0] if mark == "[" else ["{", None])
        elif mark in "]}":
            if stack:
                stack.pop()
        elif mark == "," and stack and stack[-1][0] == "[":
            stack[-1][1] += 1
        elif mark == ":" and stack and stack[-1][0] == "{":
            try:
                stack[-1][1] = json.loads(last_string)
            except ValueError:
                stack[-1][1] = last_string.strip('"')
    return tuple(part for _, part in stack if part is not None)

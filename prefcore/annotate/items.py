"""The items to annotate or label: a prompt and the completions to judge, read from JSONL.

Annotation sessions, LLM judges and reward-model labelling all start from the same file
shape (``{"prompt", "completions"}`` rows or any prefcore record), so reading and
checking it lives here once, apart from the terminal session.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefcore.data.parse import record_from_dict
from prefcore.data.readers import decode_jsonl_line
from prefcore.data.records import BinaryLabel
from prefcore.data.records import Critique
from prefcore.data.records import FeedbackRecord
from prefcore.data.records import PairwiseComparison
from prefcore.data.records import PreferenceRecord
from prefcore.data.records import Provenance
from prefcore.data.records import Ranking
from prefcore.data.records import Scores
from prefcore.data.records import Text
from prefcore.data.records import check_completion
from prefcore.data.records import check_prompt
from prefcore.data.records import text_to_json
from prefcore.errors import DataError

__all__ = ["ITEM_FORMAT", "Item", "item_id", "jsonl_rows", "read_items", "record_completions"]

ITEM_FORMAT = (
    "An item is a JSON object with 'prompt' and 'completions' (a list of distinct strings or "
    "message lists; 'completion' for a single one) and an optional 'id', or any prefcore record."
)

_RECORD_MARKERS = frozenset({"type", "chosen", "rejected", "ranks", "scores", "scale", "label", "critique", "items"})


@dataclass(frozen=True)
class Item:
    """A prompt and the completions to judge: one unit of an annotation or labelling file.

    ``id`` is the row's ``"id"`` or, without one, a hash of the prompt and completions, so
    the same item keeps its id when the file is reordered or extended.
    """

    id: str
    prompt: Text
    completions: tuple[Text, ...]
    source: str
    line: int

    @property
    def provenance(self) -> Provenance:
        """Where the item was read, for records made from it."""
        return Provenance(self.source, self.line)


def jsonl_rows(path: str | os.PathLike[str]) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """``(line, object)`` for each non-blank line of a JSONL file; ``DataError`` for anything else.

    Lines are decoded as the data readers decode them: deep nesting, huge numbers, repeated
    keys, bytes that are not UTF-8 and lone surrogates are named errors, not crashes.
    """
    source = os.fspath(path)
    if not Path(source).is_file():
        raise DataError("no such file.", source=source)
    with open(source, "rb") as file:
        for line, raw in enumerate(file, start=1):
            row = decode_jsonl_line(raw, source, line)
            if row is None:
                continue
            if isinstance(row, DataError):
                raise row
            if not isinstance(row, Mapping):
                raise DataError(f"must be a JSON object, got {type(row).__name__}.", source=source, line=line)
            yield line, row


def item_id(prompt: Text, completions: Sequence[Text]) -> str:
    """A stable id for an item without one: a hash of its prompt and completions."""
    content = json.dumps([text_to_json(prompt), [text_to_json(c) for c in completions]], ensure_ascii=False)
    return hashlib.sha256(content.encode("utf-8")).hexdigest()[:16]


def record_completions(record: PreferenceRecord) -> tuple[Text, ...]:
    """Every completion a record mentions, once each, in order."""
    if isinstance(record, PairwiseComparison):
        return (record.chosen, record.rejected)
    if isinstance(record, (Ranking, Scores)):
        return record.completions
    if isinstance(record, Critique) and record.revision is not None:
        return (record.completion, record.revision)
    if isinstance(record, (BinaryLabel, Critique)):
        return (record.completion,)
    if isinstance(record, FeedbackRecord):
        return record.completions
    raise TypeError(f"record_completions takes prefcore records, got {type(record).__name__}.")


def _plain_item(row: Mapping[str, Any], source: str, line: int) -> tuple[Text, tuple[Text, ...]]:
    def fail(message: str, field: str) -> DataError:
        return DataError(f"{message} {ITEM_FORMAT}", source=source, line=line, field=field)

    for name in ("prompt", "completions"):
        if name not in row and not (name == "completions" and "completion" in row):
            raise fail("is missing.", name)
    try:
        prompt = check_prompt(row["prompt"], "prompt")
        raw = row["completions"] if "completions" in row else [row["completion"]]
        if not isinstance(raw, list):
            raise fail(f"must be a list of completions, got {type(raw).__name__}.", "completions")
        completions = tuple(check_completion(value, f"completions[{index}]") for index, value in enumerate(raw))
    except DataError as error:
        if error.source is not None:
            raise
        raise fail(error.reason, error.field or "completions") from None
    seen: dict[Text, int] = {}
    for index, completion in enumerate(completions):
        if isinstance(completion, str) != isinstance(prompt, str):
            raise fail("must be text like the prompt, or all message lists.", f"completions[{index}]")
        if completion in seen:
            raise fail(f"repeats completion {seen[completion]}; completions must be distinct.", f"completions[{index}]")
        seen[completion] = index
    return prompt, completions


def read_items(path: str | os.PathLike[str], *, min_completions: int = 1, purpose: str = "") -> list[Item]:
    """The items of a JSONL file, in file order.

    Arguments:
        path: JSONL of ``{"prompt", "completions"}`` rows or prefcore records.
        min_completions: items with fewer completions raise ``DataError``.
        purpose: what needs that many completions, for the error (e.g. "the ranking mode").
    """
    source = os.fspath(path)
    items: list[Item] = []
    lines_of: dict[str, int] = {}
    for line, row in jsonl_rows(source):
        if _RECORD_MARKERS & set(row):
            record = record_from_dict(row, source=source, line=line)
            prompt, completions = record.prompt, record_completions(record)
        else:
            prompt, completions = _plain_item(row, source, line)
        if len(completions) < min_completions:
            raise DataError(
                f"has {len(completions)} completion(s); {purpose or 'this use'} needs at least {min_completions}.",
                source=source,
                line=line,
                field="completions",
            )
        given = row.get("id")
        if given is not None and (isinstance(given, bool) or not isinstance(given, (str, int))):
            raise DataError(f"must be a string or a whole number, got {given!r}.", source=source, line=line, field="id")
        identity = str(given) if given is not None else item_id(prompt, completions)
        if identity in lines_of:
            raise DataError(
                f"item {identity!r} repeats line {lines_of[identity]}; each item appears once "
                "(give distinct 'id's, or remove the duplicate).",
                source=source,
                line=line,
                field="id" if given is not None else "completions",
            )
        lines_of[identity] = line
        items.append(Item(identity, prompt, completions, source, line))
    return items

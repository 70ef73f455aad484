"""The feedback-source author's surface: reading the rows of a source's input file.

A feedback source that reads its own JSONL format states once what a row of its file
holds (``accepted``) and reads each row through ``read_rows``. Every error about a row
names the file, the line and the field, and ends with that sentence, so the user reads what
was wrong and what would be right in one message::

    ACCEPTED = "A my_source row is {'prompt': text, 'answers': [text, ...]}."

    def records(self):
        for row in read_rows(self.config.path, ACCEPTED):
            prompt = row.text("prompt")
            answers = row.texts("answers", like=prompt, minimum=2)
            ...

The base class of a source, ``FeedbackSource``, is in ``prefcore.methods``; the records it
yields are in ``prefcore.data``.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prefcore.annotate.items import jsonl_rows
from prefcore.data.records import Text
from prefcore.data.records import check_text
from prefcore.errors import DataError

__all__ = ["Row", "jsonl_rows", "model_samples", "read_rows"]


@dataclass(frozen=True)
class Row:
    """One JSON object of a JSONL file, read field by field.

    Attributes:
        data: the object as parsed.
        source: the file it came from.
        line: its 1-based line number.
        accepted: the sentence that says what a row holds; it ends every error.
    """

    data: Mapping[str, Any]
    source: str
    line: int
    accepted: str

    def error(self, message: str, field: str | None = None) -> DataError:
        """A ``DataError`` naming the file, line and ``field``; raise it."""
        return DataError(f"{message} {self.accepted}", source=self.source, line=self.line, field=field)

    def has(self, name: str) -> bool:
        """Whether the field is present and not null."""
        return self.data.get(name) is not None

    def require(self, name: str) -> Any:
        """The field's raw value; an error if it is missing or null."""
        if not self.has(name):
            raise self.error("is missing.", name)
        return self.data[name]

    def text(self, name: str, *, like: Text | None = None, value: Any = None) -> Text:
        """A non-empty string or message list (``value`` instead of the field's own, for list entries).

        ``like``: the text must be of the same form (string or message list), e.g. like the prompt.
        """
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
        """A finite real number (not a bool) as a float."""
        raw = self.require(name) if value is None else value
        if isinstance(raw, bool) or not isinstance(raw, numbers.Real) or not math.isfinite(float(raw)):
            raise self.error(f"must be a finite number, got {raw!r}.", name)
        return float(raw)

    def string(self, name: str, *, value: Any = None) -> str:
        """A non-blank string (an identifier, a model name), unlike ``text`` never a message list."""
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
        return _NestedRow(value, self.source, self.line, self.accepted, f"{name}[{index}]")


@dataclass(frozen=True)
class _NestedRow(Row):
    """A row inside a row: field names are reported under their parent (``replies[2].score``)."""

    prefix: str = ""

    def error(self, message: str, field: str | None = None) -> DataError:
        return super().error(message, self.prefix if field is None else f"{self.prefix}.{field}")


def read_rows(path: str | os.PathLike[str], accepted: str) -> Iterator[Row]:
    """Each JSON object of a JSONL file as a ``Row``; ``accepted`` ends every error about it.

    Arguments:
        path: the JSONL file (blank lines are skipped; a line that is not a JSON object is an error).
        accepted: one sentence saying what a row of this source holds.
    """
    source = os.fspath(path)
    for line, data in jsonl_rows(source):
        yield Row(data, source, line, accepted)


def model_samples(
    model_path: str | os.PathLike[str],
    prompts: list[Any],
    *,
    samples: int,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    batch_size: int,
    device: str,
) -> list[str]:
    """``samples`` sampled answers per prompt from the saved model in ``model_path``, prompt-major.

    For sources whose pairs set a model's own answers against something better (a human
    reference, a refusal): the model and its tokenizer are loaded from the folder, and torch
    only on this call, so listing the sources stays light.
    """
    import torch

    from prefcore.engine.generation import generate_completions
    from prefcore.engine.models import ModelConfig
    from prefcore.engine.models import load_pretrained
    from prefcore.engine.models import load_tokenizer
    from prefcore.evaluation import GenerationSettings

    tokenizer = load_tokenizer(ModelConfig(path=str(model_path)))
    model = load_pretrained(str(model_path), torch.device(device))
    settings = GenerationSettings(
        max_new_tokens=max_new_tokens, temperature=temperature, num_samples=samples, seed=seed
    )
    return generate_completions(model, tokenizer, prompts, settings, batch_size=batch_size, device=device)

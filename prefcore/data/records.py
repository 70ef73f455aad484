"""Typed feedback records: one frozen dataclass per feedback format of the RLHF survey.

Kaufmann et al. 2023, "A Survey of Reinforcement Learning from Human Feedback"
(https://arxiv.org/abs/2312.14925), section 3, sorts feedback by what the labeller gives:
a choice between two outputs (``PairwiseComparison``), an ordering of several
(``Ranking``), numeric ratings (``Scores``), a good/bad verdict on one output, possibly on
parts of it (``BinaryLabel``), and language feedback (``Critique``). ``FeedbackRecord``
bundles several of them about one prompt.

A prompt or completion is plain text (``str``) or a conversation (a tuple of
``Message``, TRL's "conversational" format); within one record they are all of the same
kind. Every record checks itself in ``__post_init__`` and raises ``DataError`` naming the
bad field, so a record that exists is a valid one. Lists are accepted wherever a tuple is
stored, and ``{"role": ..., "content": ...}`` mappings wherever a message is.
"""

from __future__ import annotations

import itertools
from abc import ABC
from abc import abstractmethod
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import MISSING
from dataclasses import dataclass
from dataclasses import field
from dataclasses import fields
from typing import Any
from typing import ClassVar
from typing import TypeAlias

from prefcore.data._checks import check_bool
from prefcore.data._checks import check_integer
from prefcore.data._checks import check_json_value
from prefcore.data._checks import check_number
from prefcore.data._checks import check_optional_number
from prefcore.data._checks import check_optional_string
from prefcore.data._checks import check_sequence
from prefcore.data._checks import check_string
from prefcore.data._checks import describe
from prefcore.data._checks import nested_error
from prefcore.errors import DataError


def _set(record: object, name: str, value: Any) -> None:
    """Store a normalised value on a frozen dataclass during ``__post_init__``."""
    object.__setattr__(record, name, value)


@dataclass(frozen=True)
class Message:
    """One turn of a chat; a conversation is a tuple of them, as in TRL's conversational format."""

    role: str
    content: str

    def __post_init__(self) -> None:
        check_string(self.role, "role")
        if self.role not in ROLES:
            raise DataError(
                f"must be one of {', '.join(ROLES)}, got {self.role!r}.{_role_hint(self.role)}", field="role"
            )
        check_string(self.content, "content")

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")
"""The roles of chat templates (OpenAI's and Hugging Face's): a tool message holds a tool's output."""

_ROLE_ALIASES = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant", "ai": "assistant"}
"""Roles of other conventions (ShareGPT's human/gpt, Gemini's model) and what they are here."""


def _role_hint(role: str) -> str:
    meant = role.strip().lower()
    meant = _ROLE_ALIASES.get(meant, meant)
    return f" Did you mean {meant!r}?" if meant in ROLES else ""


Conversation: TypeAlias = tuple[Message, ...]
Text: TypeAlias = str | Conversation
"""A prompt or a completion: plain text, or a conversation of messages."""


def _check_message(value: Any, field: str) -> Message:
    if isinstance(value, Message):
        return value
    if not isinstance(value, Mapping):
        raise DataError(f"must be a message, an object with 'role' and 'content', got {describe(value)}.", field=field)
    # Readers of columnar files fill absent struct keys with None; those are not extra keys.
    keys = {key for key, item in value.items() if item is not None}
    if keys != {"role", "content"}:
        raise DataError(f"a message has exactly the keys 'role' and 'content', got {sorted(keys)}.", field=field)
    try:
        return Message(value["role"], value["content"])
    except DataError as error:
        raise nested_error(error, field) from None


def check_text(value: Any, field: str) -> Text:
    """A non-empty string, or a non-empty list of messages (made a tuple of ``Message``)."""
    if isinstance(value, str):
        return check_string(value, field)
    if isinstance(value, Mapping) or not isinstance(value, Sequence):
        raise DataError(f"must be a non-empty string or a list of messages, got {describe(value)}.", field=field)
    if not value:
        raise DataError("must be a non-empty string or a list of messages, got an empty list.", field=field)
    return tuple(_check_message(item, f"{field}[{index}]") for index, item in enumerate(value))


def check_prompt(value: Any, field: str) -> Text:
    """A prompt: text, or a conversation the model answers next.

    System messages come first; the last message is the user's (or a tool's output): a
    prompt that ends with the assistant's own message would make the completion a second
    assistant turn in a row, which no chat template renders as one answer.
    """
    text = check_text(value, field)
    if isinstance(text, str):
        return text
    for index, message in enumerate(text):
        if message.role == "system" and index > 0 and text[index - 1].role != "system":
            raise DataError(
                "is a system message after other messages; system messages come first in a prompt.",
                field=f"{field}[{index}].role",
            )
    if text[-1].role not in ("user", "tool"):
        raise DataError(
            f"is the last message of a prompt, so it must be the user's (or a tool's output), got "
            f"{text[-1].role!r}: the completion answers it. Put the assistant's answer in the completion.",
            field=f"{field}[{len(text) - 1}].role",
        )
    return text


def check_completion(value: Any, field: str) -> Text:
    """A completion: text, or a conversation of the assistant's messages only (what the model is trained to say)."""
    text = check_text(value, field)
    if isinstance(text, str):
        return text
    for index, message in enumerate(text):
        if message.role != "assistant":
            raise DataError(
                f"must be 'assistant' in a completion, got {message.role!r}: a completion is what the model "
                "says; earlier turns belong in the prompt.",
                field=f"{field}[{index}].role",
            )
    return text


def _check_same_kind(prompt: Text, text: Text, field: str) -> None:
    if isinstance(prompt, str) != isinstance(text, str):
        kind = "text" if isinstance(prompt, str) else "a list of messages"
        raise DataError(f"must be {kind} like the prompt: a record is either all text or all messages.", field=field)


def _check_completions(prompt: Text, value: Any, field: str, *, minimum: int) -> tuple[Text, ...]:
    """Distinct completions of the prompt's kind; a repeated completion would be compared with itself."""
    items = check_sequence(value, field, "completions (strings or message lists)")
    if len(items) < minimum:
        raise DataError(f"needs at least {minimum} completions, got {len(items)}.", field=field)
    completions = tuple(check_completion(item, f"{field}[{index}]") for index, item in enumerate(items))
    seen: dict[Text, int] = {}
    for index, completion in enumerate(completions):
        _check_same_kind(prompt, completion, f"{field}[{index}]")
        if completion in seen:
            raise DataError(
                f"repeats completion {seen[completion]}; completions must be distinct.",
                field=f"{field}[{index}]",
            )
        seen[completion] = index
    return completions


@dataclass(frozen=True)
class Provenance:
    """Where a record was read from, so that any later error can point back to the file and line.

    ``line`` is the 1-based line of a JSONL file, or the 1-based record number of a JSON
    list or Parquet table. It is not part of a record's value: records compare equal
    whatever file they came from, and ``to_dict`` leaves it out.
    """

    source: str | None
    line: int | None

    def __str__(self) -> str:
        parts = [self.source or "<records>"]
        if self.line is not None:
            parts.append(f"line {self.line}")
        return " ".join(parts)


@dataclass(frozen=True, kw_only=True)
class _RecordBase(ABC):
    """What every feedback record carries besides the feedback itself.

    ``annotator_id`` lets a preference model handle disagreement between labellers;
    ``annotator_groups`` names the groups the annotator belongs to, one value per attribute
    (``{"community": "rural", "language": "fr"}``), so disagreement can be read per group;
    ``group_id`` keeps related records together (one conversation, one annotation batch)
    so splits do not leak; ``source`` says who gave the feedback ("human", "ai", "rule",
    ...); ``metadata`` keeps any other JSON-compatible fields.
    """

    format: ClassVar[str]

    annotator_id: str | None = None
    group_id: str | None = None
    source: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    provenance: Provenance | None = field(default=None, compare=False, repr=False)
    annotator_groups: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._check_feedback()
        check_optional_string(self.annotator_id, "annotator_id")
        check_optional_string(self.group_id, "group_id")
        check_optional_string(self.source, "source")
        _set(self, "annotator_groups", check_groups(self.annotator_groups, "annotator_groups"))
        if not isinstance(self.metadata, Mapping):
            raise DataError(f"must be an object, got {describe(self.metadata)}.", field="metadata")
        _set(self, "metadata", check_json_value(self.metadata, "metadata"))
        if self.provenance is not None and not isinstance(self.provenance, Provenance):
            raise DataError(f"must be a Provenance, got {describe(self.provenance)}.", field="provenance")

    def __repr__(self) -> str:
        """The feedback first, then only the annotations that are set: records are read in test failures."""
        own = [spec for spec in fields(self) if spec.name not in _RecordBase.__dataclass_fields__]
        shared = [spec for spec in fields(self) if spec.name in _RecordBase.__dataclass_fields__]
        parts = []
        for spec in own + shared:
            value = getattr(self, spec.name)
            required = spec.default is MISSING and spec.default_factory is MISSING
            default = spec.default_factory() if spec.default_factory is not MISSING else spec.default
            if spec.repr and (required or value != default):
                parts.append(f"{spec.name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    @abstractmethod
    def _check_feedback(self) -> None:
        """Check and normalise the fields of the feedback itself."""

    def _annotations_dict(self) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        for name in ("annotator_id", "group_id", "source"):
            if getattr(self, name) is not None:
                fields[name] = getattr(self, name)
        if self.annotator_groups:
            fields["annotator_groups"] = dict(self.annotator_groups)
        if self.metadata:
            fields["metadata"] = check_json_value(self.metadata, "metadata")
        return fields

    def annotations(self) -> dict[str, Any]:
        """The shared fields as constructor keywords, for records derived from this one."""
        return {
            "annotator_id": self.annotator_id,
            "annotator_groups": self.annotator_groups,
            "group_id": self.group_id,
            "source": self.source,
            "metadata": self.metadata,
            "provenance": self.provenance,
        }


def check_groups(value: Any, field: str) -> dict[str, str]:
    """Group attributes: an object of non-empty attribute names to non-empty group names.

    A null value (a columnar file's absent key) is no attribute; anything else that is not
    a string is refused, so a group is never a number that prints like a string.
    """
    if not isinstance(value, Mapping):
        raise DataError(f"must be an object of attribute: group strings, got {describe(value)}.", field=field)
    groups: dict[str, str] = {}
    for attribute, group in value.items():
        if group is None:
            continue
        if not isinstance(attribute, str) or not attribute.strip():
            raise DataError(f"attribute names must be non-empty strings, got {describe(attribute)}.", field=field)
        groups[attribute] = check_string(group, f"{field}.{attribute}")
    return groups


def text_to_json(text: Text) -> str | list[dict[str, str]]:
    """A prompt or completion in its JSON form: the string, or a list of message objects."""
    return text if isinstance(text, str) else [message.to_dict() for message in text]


def error_at(record: _RecordBase, message: str, *, field: str | None = None) -> DataError:
    """A ``DataError`` about ``record`` that points to the file and line it was read from."""
    where = record.provenance or Provenance(None, None)
    return DataError(message, source=where.source, line=where.line, field=field)


@dataclass(frozen=True, repr=False)
class PairwiseComparison(_RecordBase):
    """A choice between two completions, the most common feedback and DPO's input.

    ``tie`` records "equally good" explicitly rather than dropping the pair. ``margin`` is
    an optional non-negative strength of preference (Llama-2's "significantly better"
    levels, a score difference); ``probability`` an optional soft label, the chance that
    ``chosen`` is preferred (an annotator vote share, an AI judge's confidence).
    ``aspect`` names the criterion when the choice is about one (helpfulness, safety).
    """

    format: ClassVar[str] = "pairwise"

    prompt: Text
    chosen: Text
    rejected: Text
    tie: bool = False
    margin: float | None = None
    probability: float | None = None
    aspect: str | None = None

    def _check_feedback(self) -> None:
        _set(self, "prompt", check_prompt(self.prompt, "prompt"))
        for name in ("chosen", "rejected"):
            _set(self, name, check_completion(getattr(self, name), name))
            _check_same_kind(self.prompt, getattr(self, name), name)
        if self.chosen == self.rejected:
            raise DataError("is identical to 'chosen'; a comparison needs two different completions.", field="rejected")
        check_bool(self.tie, "tie")
        if self.margin is not None:
            _set(self, "margin", check_number(self.margin, "margin"))
            if self.margin < 0:
                raise DataError(
                    f"must be 0 or more (a strength of preference for 'chosen'), got {self.margin:g}.",
                    field="margin",
                )
        _set(self, "probability", check_optional_number(self.probability, "probability", low=0.0, high=1.0))
        check_optional_string(self.aspect, "aspect")
        if self.tie and self.margin not in (None, 0.0):
            raise DataError(f"must be 0 or absent for a tie, got {self.margin:g}.", field="margin")
        if self.tie and self.probability not in (None, 0.5):
            raise DataError(f"must be 0.5 or absent for a tie, got {self.probability:g}.", field="probability")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "type": self.format,
            "prompt": text_to_json(self.prompt),
            "chosen": text_to_json(self.chosen),
            "rejected": text_to_json(self.rejected),
        }
        if self.tie:
            data["tie"] = True
        for name in ("margin", "probability", "aspect"):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        return data | self._annotations_dict()


@dataclass(frozen=True, repr=False)
class Ranking(_RecordBase):
    """An ordering of two or more completions (listwise feedback, as for PRO, RRHF, LiPO).

    ``ranks[i]`` is the rank of ``completions[i]``: 1 is best, equal ranks are ties.
    Both dense (1, 1, 2) and competition (1, 1, 3) numbering are accepted; only the order
    matters, and rank gaps are used only when a conversion is asked to turn them into margins.
    """

    format: ClassVar[str] = "ranking"

    prompt: Text
    completions: tuple[Text, ...]
    ranks: tuple[int, ...]

    def _check_feedback(self) -> None:
        _set(self, "prompt", check_prompt(self.prompt, "prompt"))
        _set(self, "completions", _check_completions(self.prompt, self.completions, "completions", minimum=2))
        ranks = check_sequence(self.ranks, "ranks", "positive whole numbers")
        if len(ranks) != len(self.completions):
            raise DataError(
                f"has {len(ranks)} entries for {len(self.completions)} completions; give one rank per completion.",
                field="ranks",
            )
        ranks = tuple(check_integer(rank, f"ranks[{index}]") for index, rank in enumerate(ranks))
        for index, rank in enumerate(ranks):
            if rank < 1:
                raise DataError(f"must be 1 or more (1 = best), got {rank}.", field=f"ranks[{index}]")
        _set(self, "ranks", ranks)

    @property
    def has_ties(self) -> bool:
        return len(set(self.ranks)) < len(self.ranks)

    def to_dict(self) -> dict[str, Any]:
        data = {
            "type": self.format,
            "prompt": text_to_json(self.prompt),
            "completions": [text_to_json(completion) for completion in self.completions],
            "ranks": list(self.ranks),
        }
        return data | self._annotations_dict()


@dataclass(frozen=True, repr=False)
class Scores(_RecordBase):
    """Numeric ratings of one or more completions, per aspect (UltraFeedback, HelpSteer style).

    ``scores[i]`` maps each aspect to the score of ``completions[i]``; every completion is
    rated on the same aspects, so any two can be compared. ``scale`` is the rating scale
    ``(low, high)``; it is required because a margin of 2 means little without knowing
    whether the scale is 1-5 or 1-100, and it catches scores that fall outside it.
    """

    format: ClassVar[str] = "scores"

    prompt: Text
    completions: tuple[Text, ...]
    scores: tuple[Mapping[str, float], ...]
    scale: tuple[float, float]

    def _check_feedback(self) -> None:
        _set(self, "prompt", check_prompt(self.prompt, "prompt"))
        _set(self, "completions", _check_completions(self.prompt, self.completions, "completions", minimum=1))
        scale = check_sequence(self.scale, "scale", "two numbers [low, high]")
        if len(scale) != 2:
            raise DataError(f"must be [low, high], got {len(scale)} numbers.", field="scale")
        low, high = (check_number(bound, f"scale[{index}]") for index, bound in enumerate(scale))
        if not low < high:
            raise DataError(f"must be [low, high] with low < high, got [{low:g}, {high:g}].", field="scale")
        _set(self, "scale", (low, high))
        rows = check_sequence(self.scores, "scores", "{aspect: number} objects, one per completion")
        if len(rows) != len(self.completions):
            raise DataError(
                f"has {len(rows)} entries for {len(self.completions)} completions; give one per completion.",
                field="scores",
            )
        _set(self, "scores", tuple(self._check_row(row, f"scores[{index}]") for index, row in enumerate(rows)))
        aspects = set(self.scores[0])
        for index, row in enumerate(self.scores[1:], start=1):
            if set(row) != aspects:
                raise DataError(
                    f"rates aspects {sorted(row)} but completion 0 is rated on {sorted(aspects)}; "
                    f"every completion needs the same aspects.",
                    field=f"scores[{index}]",
                )

    def _check_row(self, row: Any, field: str) -> dict[str, float]:
        if not isinstance(row, Mapping) or not row:
            raise DataError(f"must be a non-empty {{aspect: number}} object, got {describe(row)}.", field=field)
        low, high = self.scale
        checked = {}
        for aspect, value in row.items():
            if not isinstance(aspect, str) or not aspect.strip():
                raise DataError(f"aspect names must be non-empty strings, got {describe(aspect)}.", field=field)
            score = check_number(value, f"{field}.{aspect}")
            if not low <= score <= high:
                raise DataError(f"is {score:g}, outside the scale [{low:g}, {high:g}].", field=f"{field}.{aspect}")
            checked[aspect] = score
        return checked

    @property
    def aspects(self) -> tuple[str, ...]:
        return tuple(self.scores[0])

    def to_dict(self) -> dict[str, Any]:
        data = {
            "type": self.format,
            "prompt": text_to_json(self.prompt),
            "completions": [text_to_json(completion) for completion in self.completions],
            "scores": [dict(row) for row in self.scores],
            "scale": list(self.scale),
        }
        return data | self._annotations_dict()


@dataclass(frozen=True)
class Span:
    """A labelled character range ``[start, end)`` of a completion, for fine-grained feedback.

    Wu et al. 2023, "Fine-Grained Human Feedback Gives Better Rewards for Language Model
    Training" (https://arxiv.org/abs/2306.01693), label spans rather than whole answers.
    """

    start: int
    end: int
    label: bool

    def __post_init__(self) -> None:
        _set(self, "start", check_integer(self.start, "start"))
        _set(self, "end", check_integer(self.end, "end"))
        check_bool(self.label, "label")
        if self.start < 0:
            raise DataError(f"must be 0 or more, got {self.start}.", field="start")
        if self.end <= self.start:
            raise DataError(f"must be greater than start ({self.start}), got {self.end}.", field="end")

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "label": self.label}


def _check_span(value: Any, field: str) -> Span:
    """A ``Span``, a ``{"start", "end", "label"}`` object or a ``[start, end, label]`` list."""
    if isinstance(value, Span):
        return value
    if isinstance(value, Mapping):
        keys = {key for key, item in value.items() if item is not None}
        if keys != {"start", "end", "label"}:
            raise DataError(f"a span has exactly the keys 'start', 'end' and 'label', got {sorted(keys)}.", field=field)
        parts = (value["start"], value["end"], value["label"])
    elif isinstance(value, (list, tuple)) and len(value) == 3:
        parts = tuple(value)
    else:
        raise DataError(
            f"must be a span {{start, end, label}} or [start, end, label], got {describe(value)}.",
            field=field,
        )
    try:
        return Span(*parts)
    except DataError as error:
        raise nested_error(error, field) from None


@dataclass(frozen=True, repr=False)
class BinaryLabel(_RecordBase):
    """A verdict on a single completion: desirable (``True``) or not, KTO's unpaired feedback.

    ``aspect`` names the criterion when there is one; ``spans`` label character ranges of
    the completion for fine-grained feedback. Spans index the completion text, so they need
    a text completion or a conversation of exactly one message (they index its content).
    """

    format: ClassVar[str] = "binary"

    prompt: Text
    completion: Text
    label: bool
    aspect: str | None = None
    spans: tuple[Span, ...] = ()

    def _check_feedback(self) -> None:
        _set(self, "prompt", check_prompt(self.prompt, "prompt"))
        _set(self, "completion", check_completion(self.completion, "completion"))
        _check_same_kind(self.prompt, self.completion, "completion")
        check_bool(self.label, "label")
        check_optional_string(self.aspect, "aspect")
        items = check_sequence(self.spans, "spans", "spans {start, end, label}")
        spans = tuple(_check_span(item, f"spans[{index}]") for index, item in enumerate(items))
        _set(self, "spans", spans)
        if not spans:
            return
        if isinstance(self.completion, str):
            text = self.completion
        elif len(self.completion) == 1:
            text = self.completion[0].content
        else:
            raise DataError(
                f"need a text completion or a single-message one; this completion has "
                f"{len(self.completion)} messages, so a character offset is ambiguous.",
                field="spans",
            )
        for index, span in enumerate(spans):
            if span.end > len(text):
                raise DataError(
                    f"ends at {span.end}, past the end of the completion ({len(text)} characters).",
                    field=f"spans[{index}].end",
                )
        ordered = sorted(range(len(spans)), key=lambda index: spans[index].start)
        for before, after in itertools.pairwise(ordered):
            if spans[after].start < spans[before].end:
                raise DataError(f"overlaps span {before}; spans must not overlap.", field=f"spans[{after}]")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "type": self.format,
            "prompt": text_to_json(self.prompt),
            "completion": text_to_json(self.completion),
            "label": self.label,
        }
        if self.aspect is not None:
            data["aspect"] = self.aspect
        if self.spans:
            data["spans"] = [span.to_dict() for span in self.spans]
        return data | self._annotations_dict()


@dataclass(frozen=True, repr=False)
class Critique(_RecordBase):
    """Language feedback on a completion, optionally with a revised completion.

    The critique text feeds critique-conditioned methods (Chain-of-Hindsight, self-refine);
    a ``revision`` also makes a comparison, the revision preferred over the original. A
    revision identical to the completion is refused: leave it out when nothing changed.
    """

    format: ClassVar[str] = "critique"

    prompt: Text
    completion: Text
    critique: str
    revision: Text | None = None

    def _check_feedback(self) -> None:
        _set(self, "prompt", check_prompt(self.prompt, "prompt"))
        _set(self, "completion", check_completion(self.completion, "completion"))
        _check_same_kind(self.prompt, self.completion, "completion")
        check_string(self.critique, "critique")
        if self.revision is not None:
            _set(self, "revision", check_completion(self.revision, "revision"))
            _check_same_kind(self.prompt, self.revision, "revision")
            if self.revision == self.completion:
                raise DataError(
                    "is identical to 'completion'; leave 'revision' out when nothing changed.",
                    field="revision",
                )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "type": self.format,
            "prompt": text_to_json(self.prompt),
            "completion": text_to_json(self.completion),
            "critique": self.critique,
        }
        if self.revision is not None:
            data["revision"] = text_to_json(self.revision)
        return data | self._annotations_dict()


FeedbackItem: TypeAlias = PairwiseComparison | Ranking | Scores | BinaryLabel | Critique
"""One piece of feedback about one prompt."""

FEEDBACK_ITEM_TYPES: tuple[type[FeedbackItem], ...] = (
    PairwiseComparison,
    Ranking,
    Scores,
    BinaryLabel,
    Critique,
)


@dataclass(frozen=True, repr=False)
class FeedbackRecord(_RecordBase):
    """Several pieces of feedback about one prompt, each kept as its own typed record.

    Real annotation rounds mix formats: a labeller picks the better of two answers, rates
    both on three aspects and explains the choice. Rather than one record with an optional
    slot per format, the bundle holds a tuple of ordinary records (``items``) that all
    share ``prompt``. Each item keeps its own annotator and source (the choice can be
    human, the critique an AI judge's), and every conversion written for a single record
    applies to the items unchanged. The bundle's own annotations describe the round as a
    whole. In JSON the items leave out the prompt, which is stated once on the bundle.
    """

    format: ClassVar[str] = "feedback"

    prompt: Text
    items: tuple[FeedbackItem, ...]

    def _check_feedback(self) -> None:
        _set(self, "prompt", check_prompt(self.prompt, "prompt"))
        items = check_sequence(self.items, "items", "feedback records")
        if not items:
            raise DataError("must hold at least one feedback record.", field="items")
        for index, item in enumerate(items):
            if not isinstance(item, FEEDBACK_ITEM_TYPES):
                names = ", ".join(kind.__name__ for kind in FEEDBACK_ITEM_TYPES)
                raise DataError(f"must be one of {names}, got {describe(item)}.", field=f"items[{index}]")
            if item.prompt != self.prompt:
                raise DataError(
                    "differs from the bundle's prompt; every item is about the same prompt.",
                    field=f"items[{index}].prompt",
                )
        _set(self, "items", items)

    @property
    def completions(self) -> tuple[Text, ...]:
        """Every completion the items mention, each once, in order of first mention."""
        seen: dict[Text, None] = {}
        for item in self.items:
            for completion in _completions_of(item):
                seen.setdefault(completion, None)
        return tuple(seen)

    def to_dict(self) -> dict[str, Any]:
        items = []
        for item in self.items:
            item_data = item.to_dict()
            del item_data["prompt"]
            items.append(item_data)
        data = {"type": self.format, "prompt": text_to_json(self.prompt), "items": items}
        return data | self._annotations_dict()


def _completions_of(item: FeedbackItem) -> Iterator[Text]:
    if isinstance(item, PairwiseComparison):
        yield from (item.chosen, item.rejected)
    elif isinstance(item, (Ranking, Scores)):
        yield from item.completions
    else:
        yield item.completion
        if isinstance(item, Critique) and item.revision is not None:
            yield item.revision


PreferenceRecord: TypeAlias = FeedbackItem | FeedbackRecord
"""Any record a reader yields."""

RECORD_TYPES: tuple[type[PreferenceRecord], ...] = (*FEEDBACK_ITEM_TYPES, FeedbackRecord)

FORMATS: tuple[str, ...] = tuple(record_type.format for record_type in RECORD_TYPES)
"""The format names: the ``"type"`` field of a record and the ``format=`` of a reader."""

"""From a JSON-like dict to a typed record: format detection and the accepted column layouts.

Layouts read (the ``"type"`` field, when present, names the format; otherwise the field
set decides, and ``format=`` overrides both):

- pairwise: ``prompt``/``chosen``/``rejected`` as strings or message lists (TRL's standard
  and conversational preference formats, OpenRLHF's optional ``margin``), or only
  ``chosen``/``rejected`` holding the prompt as a shared prefix (TRL's implicit prompt), or a
  text ``prompt`` beside whole conversations that restate it as their last shared user turn
  (``HuggingFaceH4/ultrafeedback_binarized``);
- binary: ``prompt``/``completion``/``label`` (TRL's unpaired preference format);
- ranking: ``completions`` + ``ranks``; scores: ``scores`` (+ ``completions`` or
  ``completion``); critique: ``critique``; feedback: ``items``;
- demonstration (SFT data, read as ``BinaryLabel(label=True)``, the engine's form of a
  completion to imitate): TRL's SFT layouts, ``messages`` (conversational: the trailing
  assistant turns are the completion, the turns before them the prompt) or
  ``prompt``/``completion`` without a label (standard or conversational).

Fields a format does not define are kept in the record's ``metadata``, never dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from prefcore.data._checks import check_sequence
from prefcore.data._checks import describe
from prefcore.data._checks import nested_error
from prefcore.data.records import FEEDBACK_ITEM_TYPES
from prefcore.data.records import FORMATS
from prefcore.data.records import BinaryLabel
from prefcore.data.records import Critique
from prefcore.data.records import FeedbackItem
from prefcore.data.records import FeedbackRecord
from prefcore.data.records import PairwiseComparison
from prefcore.data.records import PreferenceRecord
from prefcore.data.records import Provenance
from prefcore.data.records import Ranking
from prefcore.data.records import Scores
from prefcore.data.records import Text
from prefcore.data.records import check_prompt
from prefcore.data.records import check_text
from prefcore.errors import ConfigError
from prefcore.errors import DataError

NEEDS: Mapping[str, str] = MappingProxyType(
    {
        "pairwise": "A pairwise record needs 'prompt', 'chosen' and 'rejected' (strings or message lists).",
        "ranking": (
            "A ranking record needs 'prompt', 'completions' (two or more strings or message lists) and "
            "'ranks' (one positive whole number per completion, 1 = best)."
        ),
        "scores": (
            "A scores record needs 'prompt', 'completions' (or one 'completion'), 'scores' (one "
            "{aspect: number} object or number per completion) and 'scale' ([low, high])."
        ),
        "binary": ("A binary record needs 'prompt', 'completion' and 'label' (true = desirable, false = undesirable)."),
        "critique": ("A critique record needs 'prompt', 'completion' and 'critique' (text); 'revision' is optional."),
        "feedback": (
            "A feedback record needs 'prompt' and 'items' (a list of pairwise, ranking, scores, binary or "
            "critique records about that prompt)."
        ),
        "demonstration": (
            "A demonstration (SFT) record needs 'messages' (a conversation that ends with the assistant's "
            "answer) or 'prompt' and 'completion' (strings or message lists)."
        ),
    }
)
"""What each format accepts, appended to every 'missing field' error."""

_ANNOTATION_FIELDS = ("annotator_id", "annotator_groups", "group_id", "source")

DEMONSTRATION = "demonstration"
"""The format of SFT data: a prompt and a completion to imitate, read as ``BinaryLabel(label=True)``."""

READ_FORMATS: tuple[str, ...] = (*FORMATS, DEMONSTRATION)
"""What ``format=`` of a reader and a record's ``"type"`` may name."""

DEFAULT_ASPECT = "overall"
"""The aspect a bare number in ``scores`` is filed under (``"scores": [4, 2]``)."""


def check_format(format: str | None) -> str | None:
    """``format`` if it is ``None`` or a known format name; ``ConfigError`` otherwise."""
    if format is not None and format not in READ_FORMATS:
        raise ConfigError(
            f"Unknown record format {format!r}. Known formats: {', '.join(READ_FORMATS)}.", field="format"
        )
    return format


def record_from_dict(
    data: Mapping[str, Any],
    *,
    format: str | None = None,
    source: str | None = None,
    line: int | None = None,
) -> PreferenceRecord:
    """The typed record a JSON-like dict describes; the inverse of ``record.to_dict()``.

    ``format`` forces one format instead of reading ``"type"`` or detecting it from the
    field set. ``source`` (the file or dataset name, not the record's own ``source``
    field) and ``line`` are stored in the record's ``provenance`` and named in every
    ``DataError`` raised for it.
    """
    return read_record(data, format=format, source=source, line=line)[1]


def read_record(
    data: Mapping[str, Any],
    *,
    format: str | None = None,
    source: str | None = None,
    line: int | None = None,
) -> tuple[str, PreferenceRecord]:
    """``record_from_dict``, with the format the record was read as (``"demonstration"`` gives a ``BinaryLabel``)."""
    check_format(format)
    try:
        return _parse_record(data, format, Provenance(source, line))
    except DataError as error:
        raise DataError(error.reason, source=source, line=line, field=error.field) from None


def detect_format(data: Mapping[str, Any]) -> str:
    """The format a dict's ``"type"`` field names, or else the one its field set matches."""
    declared = data.get("type")
    if declared is not None:
        if declared not in READ_FORMATS:
            raise DataError(
                f"unknown record format {declared!r}. Known formats: {', '.join(READ_FORMATS)}.", field="type"
            )
        return declared
    present = {key for key, value in data.items() if value is not None}
    matches = [name for name, markers in _MARKERS if markers & present]
    if len(matches) == 1:
        return matches[0]
    if not matches and "completion" in present:
        return DEMONSTRATION  # TRL's prompt-completion layout: SFT data (a preference label would be 'label')
    if matches:
        raise DataError(
            f"the fields {sorted(present)} fit several formats ({', '.join(matches)}); "
            f"add a 'type' field naming one of them."
        )
    raise DataError(
        f"cannot tell the record format from the fields {sorted(present)}. Accepted: "
        "pairwise (prompt, chosen, rejected), binary (prompt, completion, label), "
        "ranking (prompt, completions, ranks), scores (prompt, completions, scores, scale), "
        "critique (prompt, completion, critique), feedback (prompt, items), "
        "demonstration (messages, or prompt and completion), "
        f"or a 'type' field naming one of {', '.join(READ_FORMATS)}."
    )


# A field that only one format has marks a record of that format, even when other fields
# are missing: {"prompt", "chosen"} is a pairwise record without 'rejected', and is
# reported as such rather than as an unknown format.
_MARKERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("pairwise", frozenset({"chosen", "rejected"})),
    ("ranking", frozenset({"ranks"})),
    ("scores", frozenset({"scores", "scale"})),
    ("binary", frozenset({"label", "spans"})),
    ("critique", frozenset({"critique", "revision"})),
    ("feedback", frozenset({"items"})),
    (DEMONSTRATION, frozenset({"messages"})),
)


def _parse_record(data: Any, format: str | None, provenance: Provenance) -> tuple[str, PreferenceRecord]:
    if not isinstance(data, Mapping):
        raise DataError(f"a record must be a JSON object, got {describe(data)}.")
    declared = data.get("type")
    if format is None:
        format = detect_format(data)
    elif declared not in (None, format) and not (format == DEMONSTRATION and declared == "binary"):
        # A demonstration written back by write_jsonl is a binary record labelled true.
        raise DataError(f"says {declared!r}, but the format {format!r} was requested.", field="type")
    # A null field is an absent one: columnar files hold every column in every row.
    fields = _Fields({key: value for key, value in data.items() if value is not None and key != "type"}, format)
    annotations = {name: fields.take(name) for name in _ANNOTATION_FIELDS}
    annotations["annotator_groups"] = annotations["annotator_groups"] or {}
    return format, _PARSERS[format](fields, annotations, provenance)


class _Fields:
    """The fields of one raw record, taken one by one; what is left over goes to metadata."""

    def __init__(self, data: dict[str, Any], format: str) -> None:
        self._data = data
        self._format = format

    def __contains__(self, name: str) -> bool:
        return name in self._data

    def take(self, name: str, default: Any = None) -> Any:
        return self._data.pop(name, default)

    def require(self, name: str) -> Any:
        if name not in self._data:
            raise DataError(f"is missing. {NEEDS[self._format]}", field=name)
        return self._data.pop(name)

    def metadata(self) -> dict[str, Any]:
        """The record's ``metadata`` plus every field the format does not define."""
        metadata = self._data.pop("metadata", {})
        if not isinstance(metadata, Mapping):
            raise DataError(f"must be an object, got {describe(metadata)}.", field="metadata")
        merged = dict(metadata)
        for name, value in self._data.items():
            if name in merged and merged[name] != value:
                raise DataError("is given both as a field and inside 'metadata', with different values.", field=name)
            merged[name] = value
        return merged


def _common(fields: _Fields, annotations: dict[str, Any], provenance: Provenance) -> dict[str, Any]:
    return {**annotations, "metadata": fields.metadata(), "provenance": provenance}


def _parse_pairwise(fields: _Fields, annotations: dict[str, Any], provenance: Provenance) -> PairwiseComparison:
    chosen = fields.require("chosen")
    rejected = fields.require("rejected")
    prompt = fields.take("prompt")
    if prompt is None:
        prompt, chosen, rejected = _split_implicit_prompt(
            check_text(chosen, "chosen"), check_text(rejected, "rejected")
        )
    elif isinstance(prompt, str) and _both_conversations(chosen, rejected):
        prompt, chosen, rejected = _split_prompt_restated_in_conversations(
            prompt, check_text(chosen, "chosen"), check_text(rejected, "rejected")
        )
    return PairwiseComparison(
        prompt,
        chosen,
        rejected,
        tie=fields.take("tie", False),
        margin=fields.take("margin"),
        probability=fields.take("probability"),
        aspect=fields.take("aspect"),
        **_common(fields, annotations, provenance),
    )


def _split_implicit_prompt(chosen: Text, rejected: Text) -> tuple[Text, Text, Text]:
    """TRL's implicit prompt: the prefix that ``chosen`` and ``rejected`` share.

    Conversations split at the first message that differs. Text splits like TRL's
    ``extract_prompt`` (a space before the split goes with the completions: "The sky is"
    / " blue."), except that it never cuts a word in two: "It is blue" / "It is black"
    give "It is" / " blue" / " black", not "It is bl".
    """
    if isinstance(chosen, str) != isinstance(rejected, str):
        raise DataError("must be text like 'chosen', or both message lists.", field="rejected")
    shared = 0
    for first, second in zip(chosen, rejected, strict=False):
        if first != second:
            break
        shared += 1
    if isinstance(chosen, str):
        prefix = chosen[:shared]
        mid_word = shared < min(len(chosen), len(rejected)) and not prefix[-1:].isspace()
        if mid_word:
            prefix = prefix[: max((i + 1 for i, char in enumerate(prefix) if char.isspace()), default=0)]
        if prefix.endswith(" "):
            prefix = prefix[:-1]
        shared = len(prefix) if prefix.strip() else 0
    if shared == 0 or shared == len(chosen) or shared == len(rejected):
        raise DataError(
            "is missing, and 'chosen' and 'rejected' do not share a prompt to extract: they need a common "
            "start (the implicit prompt) and a different remainder. Give 'prompt' explicitly. " + NEEDS["pairwise"],
            field="prompt",
        )
    return chosen[:shared], chosen[shared:], rejected[shared:]


def _both_conversations(chosen: Any, rejected: Any) -> bool:
    return not isinstance(chosen, str) and not isinstance(rejected, str)


def _split_prompt_restated_in_conversations(prompt: str, chosen: Text, rejected: Text) -> tuple[Text, Text, Text]:
    """A text prompt beside whole conversations (HuggingFaceH4/ultrafeedback_binarized).

    The conversations repeat the prompt as their last shared user turn, so the shared
    turns become the prompt and nothing is lost. If the text is not that turn, the record
    is contradictory and refused.
    """
    try:
        shared, chosen, rejected = _split_implicit_prompt(chosen, rejected)
    except DataError:
        shared = ()
    last_user = next((message.content for message in reversed(shared) if message.role == "user"), None)
    if last_user is None or last_user.strip() != prompt.strip():
        raise DataError(
            "is a list of messages but 'prompt' is text. A record is either all text or all messages; "
            "whole conversations are accepted beside a text prompt only when their shared turns end with "
            "that prompt as the user's message.",
            field="chosen",
        )
    return shared, chosen, rejected


def _parse_ranking(fields: _Fields, annotations: dict[str, Any], provenance: Provenance) -> Ranking:
    return Ranking(
        fields.require("prompt"),
        fields.require("completions"),
        fields.require("ranks"),
        **_common(fields, annotations, provenance),
    )


def _parse_scores(fields: _Fields, annotations: dict[str, Any], provenance: Provenance) -> Scores:
    prompt = fields.require("prompt")
    if "completion" in fields and "completions" not in fields:
        completions = [fields.take("completion")]
        scores = [fields.require("scores")]
    else:
        completions = fields.require("completions")
        scores = check_sequence(fields.require("scores"), "scores", "{aspect: number} objects or numbers")
    scores = [{DEFAULT_ASPECT: row} if _is_bare_number(row) else row for row in scores]
    return Scores(prompt, completions, scores, fields.require("scale"), **_common(fields, annotations, provenance))


def _is_bare_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _parse_binary(fields: _Fields, annotations: dict[str, Any], provenance: Provenance) -> BinaryLabel:
    return BinaryLabel(
        fields.require("prompt"),
        fields.require("completion"),
        fields.require("label"),
        aspect=fields.take("aspect"),
        spans=fields.take("spans", ()),
        **_common(fields, annotations, provenance),
    )


def _parse_critique(fields: _Fields, annotations: dict[str, Any], provenance: Provenance) -> Critique:
    return Critique(
        fields.require("prompt"),
        fields.require("completion"),
        fields.require("critique"),
        revision=fields.take("revision"),
        **_common(fields, annotations, provenance),
    )


def _parse_feedback(fields: _Fields, annotations: dict[str, Any], provenance: Provenance) -> FeedbackRecord:
    prompt = check_text(fields.require("prompt"), "prompt")
    raw_items = check_sequence(fields.require("items"), "items", "feedback records")
    items = [_parse_item(raw, prompt, provenance, f"items[{index}]") for index, raw in enumerate(raw_items)]
    return FeedbackRecord(prompt, items, **_common(fields, annotations, provenance))


def _parse_item(raw: Any, prompt: Text, provenance: Provenance, field: str) -> FeedbackItem:
    """One item of a bundle: a record without its own prompt, which the bundle states once."""
    try:
        if not isinstance(raw, Mapping):
            raise DataError(f"an item must be a JSON object, got {describe(raw)}.")
        if raw.get("prompt") is not None and check_text(raw["prompt"], "prompt") != prompt:
            raise DataError("differs from the bundle's prompt; leave it out of items.", field="prompt")
        kind, item = _parse_record({**raw, "prompt": prompt}, None, provenance)
    except DataError as error:
        raise nested_error(error, field) from None
    if kind == DEMONSTRATION:
        raise DataError(
            "is a demonstration (a completion without a label); an item of a feedback record is feedback: "
            "give 'label': true for a desirable completion.",
            field=field,
        )
    if not isinstance(item, FEEDBACK_ITEM_TYPES):
        raise DataError("a feedback record cannot hold another feedback record.", field=field)
    return item


def _parse_demonstration(fields: _Fields, annotations: dict[str, Any], provenance: Provenance) -> BinaryLabel:
    """TRL's SFT layouts as the engine's form of a demonstration: a completion labelled desirable."""
    for kind, markers in _MARKERS:
        found = sorted(name for name in markers if name in fields and kind not in ("binary", DEMONSTRATION))
        if found:
            raise DataError(
                f"belongs to a {kind} record, not to a demonstration. {NEEDS[DEMONSTRATION]}",
                field=found[0],
            )
    label = fields.take("label", True)
    if label is not True:
        raise DataError(
            f"must be true or absent in a demonstration (a completion to imitate), got {describe(label)}. "
            "For unpaired preference labels read the file with format 'binary'.",
            field="label",
        )
    if "messages" in fields:
        for name in ("prompt", "completion"):
            if name in fields:
                raise DataError(
                    "is given beside 'messages'. A demonstration is either 'messages' (its last assistant "
                    "turns the completion) or 'prompt' and 'completion'.",
                    field=name,
                )
        prompt, completion = split_messages(fields.take("messages"), "messages")
    else:
        prompt, completion = fields.require("prompt"), fields.require("completion")
    return BinaryLabel(
        prompt,
        completion,
        True,
        aspect=fields.take("aspect"),
        spans=fields.take("spans", ()),
        **_common(fields, annotations, provenance),
    )


def split_messages(value: Any, field: str = "messages") -> tuple[Text, Text]:
    """A conversation as prompt and completion: the trailing assistant turns answer the turns before them.

    This is TRL's conversational SFT layout: ``[system?, user, assistant, ..., user, assistant]``
    trains on the last assistant turn(s), given everything before as the prompt.
    """
    messages = check_text(value, field)
    if isinstance(messages, str):
        raise DataError(f"must be a list of messages, got {describe(value)}.", field=field)
    start = len(messages)
    while start > 0 and messages[start - 1].role == "assistant":
        start -= 1
    if start == len(messages):
        raise DataError(
            f"must end with the assistant's answer, the completion to learn; the last message is "
            f"{messages[-1].role!r}.",
            field=f"{field}[{len(messages) - 1}].role",
        )
    if start == 0:
        raise DataError(
            "holds only assistant messages; the completion needs a prompt before it (a user message).",
            field=f"{field}[0].role",
        )
    return check_prompt(messages[:start], field), messages[start:]


_PARSERS: Mapping[str, Callable[[_Fields, dict[str, Any], Provenance], PreferenceRecord]] = MappingProxyType(
    {
        "pairwise": _parse_pairwise,
        "ranking": _parse_ranking,
        "scores": _parse_scores,
        "binary": _parse_binary,
        "critique": _parse_critique,
        "feedback": _parse_feedback,
        DEMONSTRATION: _parse_demonstration,
    }
)

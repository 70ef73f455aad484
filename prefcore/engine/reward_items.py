"""Feedback records → ``RewardItem``s, one per unit of a preference-model loss.

A unit is a pair (with its tie flag, margin, soft label, aspect and the binary labels of its
completions), a ranked list, a labelled completion, or a completion whose reasoning steps
carry labels. Items are tokenised by the engine's own functions (``build_items``,
``tokenize_sequence``), so a reward model trains on exactly the tokens a policy would.

Which items an objective gets follows its ``data_formats``: ``pairwise``, ``listwise``,
``unpaired`` or ``stepwise``, the first one listed. An objective that lists both
``pairwise`` and ``unpaired`` (``safety_binary``) trains on both at once: binary labels of
the completions of a pair travel with the pair, and labelled completions that belong to no
pair are items of their own.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace
from typing import Any
from typing import Literal

from prefcore.data import BinaryLabel
from prefcore.data import FeedbackRecord
from prefcore.data import to_pairs
from prefcore.data.records import Text
from prefcore.data.records import error_at
from prefcore.engine.batching import build_items
from prefcore.engine.reward_model import step_end_positions
from prefcore.engine.sequences import TokenizedSequence
from prefcore.engine.sequences import Truncation
from prefcore.engine.sequences import completion_text
from prefcore.engine.sequences import tokenize_sequence
from prefcore.errors import ConfigError
from prefcore.errors import DataError
from prefcore.methods import PreferenceModel

__all__ = ["REWARD_DATA_FORMATS", "RewardItem", "build_reward_items"]

REWARD_DATA_FORMATS: tuple[str, ...] = ("pairwise", "listwise", "unpaired", "stepwise")


@dataclass(frozen=True)
class RewardItem:
    """One unit of a preference-model loss and the feedback attached to it.

    ``labels`` holds a binary verdict (or None) per sequence; ``step_ends`` are indices into
    the completion's tokens of the tokens that end each labelled step (``step_labels``).
    """

    sequences: tuple[TokenizedSequence, ...]
    data_format: str
    tie: bool = False
    margin: float | None = None
    probability: float | None = None
    aspect: str | None = None
    labels: tuple[bool | None, ...] | None = None
    ranks: tuple[float, ...] | None = None
    step_ends: tuple[int, ...] = ()
    step_labels: tuple[bool, ...] = ()

    @property
    def length(self) -> int:
        return max(sequence.length for sequence in self.sequences)

    @property
    def count(self) -> int:
        """Units this item adds to the loss's denominator: its labelled steps, or 1."""
        return len(self.step_ends) if self.data_format == "stepwise" else 1


def _flatten(records: Iterable[Any]) -> list[Any]:
    flat: list[Any] = []
    for record in records:
        flat += list(record.items) if isinstance(record, FeedbackRecord) else [record]
    return flat


def _stepwise_item(label: Any, tokenizer: Any, *, max_length: int, truncation: Truncation, prefix: str) -> RewardItem:
    """A completion with labelled steps: each span of a ``BinaryLabel`` is one step.

    A step's label is read at the token holding its span's last character. A record
    without spans is one step, the whole completion, labelled at its EOS token (outcome
    supervision). Steps cut off by ``max_length`` are left out.
    """
    if not isinstance(label, BinaryLabel):
        raise error_at(
            label,
            f"a process reward model trains on completions with labelled steps (BinaryLabel with spans); "
            f"got a {type(label).__name__}.",
        )
    sequence = tokenize_sequence(
        tokenizer, label.prompt, label.completion, max_length=max_length, prefix=prefix, truncation=truncation
    )
    if not label.spans:
        return RewardItem(
            (sequence,), "stepwise", step_ends=(len(sequence.completion_ids) - 1,), step_labels=(label.label,)
        )
    spans = sorted(label.spans, key=lambda span: span.start)
    try:
        positions = step_end_positions(
            tokenizer,
            completion_text(label.completion),
            [(span.start, span.end) for span in spans],
            sequence.completion_ids,
        )
    except DataError as error:
        raise error_at(label, error.reason, field="spans") from None
    kept = [(position, span.label) for position, span in zip(positions, spans, strict=True) if position is not None]
    ends = [position for position, _ in kept]
    if len(set(ends)) != len(ends):
        raise error_at(label, "two steps end in the same token; steps must end on token boundaries.", field="spans")
    if not kept:
        raise error_at(label, f"no step ends within max_length={max_length} tokens.", field="spans")
    return RewardItem((sequence,), "stepwise", step_ends=tuple(ends), step_labels=tuple(value for _, value in kept))


def _label_lookup(labels: Sequence[BinaryLabel]) -> dict[tuple[Text, Text], bool]:
    lookup: dict[tuple[Text, Text], bool] = {}
    for label in labels:
        key = (label.prompt, label.completion)
        if lookup.setdefault(key, label.label) != label.label:
            raise error_at(label, "labels this completion both desirable and undesirable.", field="label")
    return lookup


def build_reward_items(
    records: Sequence[Any],
    objective: PreferenceModel,
    tokenizer: Any,
    *,
    max_length: int,
    truncation: Truncation = "truncate",
    ties: Literal["skip", "keep"] = "skip",
    rank_gap_margin: bool = False,
    prefix: str = "",
) -> list[RewardItem]:
    """The items ``objective`` trains on (see the module docstring for how formats are chosen)."""
    formats = tuple(objective.data_formats)
    unknown = [name for name in formats if name not in REWARD_DATA_FORMATS]
    if not formats or unknown:
        raise ConfigError(
            f"preference model {objective.name!r} declares data formats {list(formats)}; "
            f"the reward trainer builds {', '.join(REWARD_DATA_FORMATS)}.",
            method=objective.name,
        )
    common: dict[str, Any] = {"max_length": max_length, "truncation": truncation, "prefix": prefix}
    primary = formats[0]
    if primary == "stepwise":
        return [_stepwise_item(label, tokenizer, **common) for label in _flatten(records)]
    if primary == "listwise":
        return [
            RewardItem(item.sequences, "listwise", ranks=item.ranks)
            for item in build_items(records, "listwise", tokenizer, **common)
        ]
    if primary == "unpaired":
        return [
            RewardItem(item.sequences, "unpaired", labels=(item.label,))
            for item in build_items(records, "unpaired", tokenizer, **common)
        ]
    with_labels = "unpaired" in formats
    flat = _flatten(records)
    binary = [record for record in flat if isinstance(record, BinaryLabel)] if with_labels else []
    others = [record for record in flat if not isinstance(record, BinaryLabel)] if with_labels else flat
    pairs = to_pairs(others, ties="tie" if ties == "keep" else "skip", rank_gap_margin=rank_gap_margin)
    # build_items leaves tie pairs out; a tie enters it as a plain pair with probability 0.5
    # (its preference target), and its tie flag is kept beside it. One item per pair, in order.
    plain = [replace(pair, tie=False, probability=0.5) if pair.tie else pair for pair in pairs]
    tokenised = build_items(plain, "pairwise", tokenizer, **common)
    lookup = _label_lookup(binary)
    items = [
        RewardItem(
            item.sequences,
            "pairwise",
            tie=pair.tie,
            margin=item.margin,
            probability=item.probability,
            aspect=pair.aspect,
            labels=(lookup.get((pair.prompt, pair.chosen)), lookup.get((pair.prompt, pair.rejected)))
            if with_labels
            else None,
        )
        for pair, item in zip(pairs, tokenised, strict=True)
    ]
    # Labelled completions that belong to no pair are items of their own, each once.
    seen = {(pair.prompt, completion) for pair in pairs for completion in (pair.chosen, pair.rejected)}
    lone = []
    for label in binary:
        if (label.prompt, label.completion) not in seen:
            seen.add((label.prompt, label.completion))
            lone.append(label)
    items += [
        RewardItem(item.sequences, "unpaired", labels=(item.label,))
        for item in build_items(lone, "unpaired", tokenizer, **common)
    ]
    return items

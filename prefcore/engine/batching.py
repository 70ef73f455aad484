"""Feedback records → training items → micro-batches of sequences with their comparison structure.

A training item is one unit of the loss: a pair (chosen, rejected), a ranked list, an
unpaired labelled completion, or a single SFT completion. Ranked lists come from rankings,
from pairs (and critiques with a revision) as lists of two, and from scored completions
ordered by their score, which they carry on into ``LogProbBatch.scores``. Items are grouped into
micro-batches by length (padding-aware batching: similar lengths share a batch, and each
batch is padded only to its own longest sequence), then flattened into sequences with
index tensors that say how sequences form comparisons.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Iterable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace
from typing import Any

import torch

from prefcore.batch import target_token_count
from prefcore.data import BinaryLabel
from prefcore.data import Critique
from prefcore.data import FeedbackRecord
from prefcore.data import PairwiseComparison
from prefcore.data import Ranking
from prefcore.data import Scores
from prefcore.data import Text
from prefcore.data import critique_to_pairs
from prefcore.data import pair_to_binary_labels
from prefcore.data import preference_target
from prefcore.data import to_pairs
from prefcore.data.convert import _RELATIVE_TIE_TOLERANCE
from prefcore.data.convert import _compared_scores
from prefcore.data.records import error_at
from prefcore.engine.sequences import PaddedSequences
from prefcore.engine.sequences import Side
from prefcore.engine.sequences import TokenizedSequence
from prefcore.engine.sequences import Truncation
from prefcore.engine.sequences import pad_sequences
from prefcore.engine.sequences import tokenize_sequence
from prefcore.errors import ConfigError

logger = logging.getLogger("prefcore.batching")


@dataclass(frozen=True)
class TrainingItem:
    """One comparison (or single completion) and the feedback attached to it."""

    sequences: tuple[TokenizedSequence, ...]
    data_format: str
    ranks: tuple[float, ...] | None = None
    scores: tuple[float, ...] | None = None
    label: bool | None = None
    margin: float | None = None
    probability: float | None = None
    weight: float = 1.0
    mismatched: TokenizedSequence | None = None

    @property
    def all_sequences(self) -> tuple[TokenizedSequence, ...]:
        """The item's sequences, then its mismatched sequence if it has one (cache order)."""
        return self.sequences if self.mismatched is None else (*self.sequences, self.mismatched)

    @property
    def length(self) -> int:
        return max(sequence.length for sequence in self.all_sequences)


def _where(record: Any) -> str:
    provenance = getattr(record, "provenance", None)
    if provenance is None or provenance.source is None:
        return "record"
    return f"{provenance.source} line {provenance.line}" if provenance.line else str(provenance.source)


def _unpaired(records: Iterable[Any]) -> list[BinaryLabel]:
    labels: list[BinaryLabel] = []
    for record in records:
        items = record.items if isinstance(record, FeedbackRecord) else (record,)
        for item in items:
            if isinstance(item, BinaryLabel):
                labels.append(item)
            else:
                for pair in to_pairs([item]):
                    labels += pair_to_binary_labels(pair)
    return labels


@dataclass(frozen=True)
class _RankedList:
    """A prompt's completions with their ranks (1 = best, equal = tie) and, when scored, their scores."""

    record: Any
    prompt: Text
    completions: tuple[Text, ...]
    ranks: tuple[float, ...]
    scores: tuple[float, ...] | None = None


def _ranks_by_score(values: Sequence[float], tolerance: float) -> tuple[float, ...]:
    """Competition ranks of ``values``, highest first; values within ``tolerance`` of the next higher tie.

    The tolerance is ``scores_to_pairs``' (a tiny fraction of the rating scale), so a weighted
    or averaged score that differs only by float rounding is a tie in lists as in pairs.
    """
    order = sorted(range(len(values)), key=lambda index: -values[index])
    ranks = [0.0] * len(values)
    rank = 1
    for position, index in enumerate(order):
        if position and values[order[position - 1]] - values[index] > tolerance:
            rank = position + 1
        ranks[index] = float(rank)
    return tuple(ranks)


def _scored_list(record: Scores, completions: tuple[Text, ...], values: Sequence[float]) -> _RankedList:
    tolerance = _RELATIVE_TIE_TOLERANCE * (record.scale[1] - record.scale[0])
    return _RankedList(record, record.prompt, completions, _ranks_by_score(values, tolerance), tuple(values))


class _LeftOut:
    """Records that form no ranked list, counted by reason, each reason with where it first occurred."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.first: dict[str, str] = {}

    def add(self, record: Any, reason: str) -> None:
        self.counts[reason] += 1
        self.first.setdefault(reason, _where(record))

    def report(self, kept: int) -> None:
        if not self.counts:
            return
        reasons = "; ".join(
            f"{count} {reason} (first: {self.first[reason]})" for reason, count in self.counts.most_common()
        )
        logger.warning(
            "listwise data: %d record(s) form no ranked list and are left out, %d list(s) kept: %s",
            sum(self.counts.values()),
            kept,
            reasons,
        )


def _ranked_lists(records: Iterable[Any]) -> list[_RankedList]:
    """Every ranked list the records give, in order; what gives none is counted and logged, never dropped silently.

    - a ``Ranking`` as it is;
    - a pair (or a critique's revision over the original) as a list of two; a tie pair
      orders nothing and is left out;
    - a ``Scores`` record of two or more completions as a list ordered by score (equal
      scores tie), its scores kept for the objectives that weigh by them (PRO). A record
      rating several aspects raises ``DataError`` naming it, as ``to_pairs`` does: which
      aspect orders the list is the user's choice;
    - ``Scores`` records of one completion each (a Likert annotation session writes one per
      answer) are one list per prompt, rating scale, aspect and annotator, in order of
      first appearance; a completion rated twice in one list raises ``DataError``, and a
      prompt with a single rated completion is left out;
    - binary labels and critiques without a revision order nothing and are left out.
    """
    lists: list[_RankedList] = []
    singles: dict[tuple[Any, ...], list[tuple[Scores, float]]] = {}
    left_out = _LeftOut()

    def add_pair(pair: PairwiseComparison) -> None:
        if pair.tie:
            left_out.add(pair, "tie pair(s), which order nothing")
        else:
            lists.append(_RankedList(pair, pair.prompt, (pair.chosen, pair.rejected), (1.0, 2.0)))

    def visit(record: Any) -> None:
        if isinstance(record, FeedbackRecord):
            for item in record.items:
                visit(item)
        elif isinstance(record, Ranking):
            ranks = tuple(float(rank) for rank in record.ranks)
            lists.append(_RankedList(record, record.prompt, record.completions, ranks))
        elif isinstance(record, PairwiseComparison):
            add_pair(record)
        elif isinstance(record, Scores):
            values, _ = _compared_scores(record, None, None)
            if len(record.completions) >= 2:
                lists.append(_scored_list(record, record.completions, values))
            else:
                key = (record.prompt, record.scale, record.aspects, record.annotator_id)
                singles.setdefault(key, []).append((record, values[0]))
        elif isinstance(record, Critique):
            pairs = critique_to_pairs(record)
            if not pairs:
                left_out.add(record, "critique(s) without a revision, which order nothing")
            for pair in pairs:
                add_pair(pair)
        elif isinstance(record, BinaryLabel):
            left_out.add(record, "binary label(s), which order nothing; use an unpaired objective")
        else:
            raise ConfigError(f"{_where(record)}: listwise training cannot use a {type(record).__name__}.")

    for record in records:
        visit(record)
    for group in singles.values():
        if len(group) < 2:
            left_out.add(group[0][0], "one-completion score(s) with no other rating of the same prompt")
            continue
        seen: dict[Text, Scores] = {}
        for record, _ in group:
            completion = record.completions[0]
            if completion in seen:
                raise error_at(
                    record,
                    f"rates a completion that {_where(seen[completion])} already rates for this prompt, "
                    f"scale, aspect and annotator; a ranked list holds each completion once. Remove one rating.",
                    field="completions[0]",
                )
            seen[completion] = record
        first = group[0][0]
        merged = tuple(record.completions[0] for record, _ in group)
        lists.append(_scored_list(first, merged, [value for _, value in group]))
    left_out.report(len(lists))
    return lists


def build_items(
    records: Sequence[Any],
    data_format: str,
    tokenizer: Any,
    *,
    max_length: int,
    prefix: str = "",
    truncation: Truncation = "truncate",
    mismatched: bool = False,
    max_prompt_length: int = 0,
    prompt_truncation_side: Side = "left",
    completion_truncation_side: Side = "right",
) -> list[TrainingItem]:
    """Convert records into the items an objective of ``data_format`` trains on.

    ``mismatched`` gives each unpaired item a prompt/other-completion sequence (KTO). The
    length limits and truncation sides are ``tokenize_sequence``'s.
    """

    def tok(record: Any, prompt: Any, completion: Any) -> TokenizedSequence:
        return tokenize_sequence(
            tokenizer,
            prompt,
            completion,
            max_length=max_length,
            prefix=prefix,
            truncation=truncation,
            where=_where(record),
            max_prompt_length=max_prompt_length,
            prompt_truncation_side=prompt_truncation_side,
            completion_truncation_side=completion_truncation_side,
        )

    if data_format == "pairwise":
        return [
            TrainingItem(
                (tok(pair, pair.prompt, pair.chosen), tok(pair, pair.prompt, pair.rejected)),
                "pairwise",
                margin=pair.margin,
                probability=preference_target(pair) if pair.probability is not None else None,
            )
            for pair in to_pairs(records)
        ]
    if data_format == "unpaired":
        items = [
            TrainingItem((tok(label, label.prompt, label.completion),), "unpaired", label=label.label)
            for label in _unpaired(records)
        ]
        if not mismatched or len(items) < 2:
            return items
        # Prompt i with the completion of item i+1: text unrelated to the prompt, on which
        # log π − log π_ref estimates KL(π‖π_ref) (KTO's reference point). Fixed partners keep
        # the estimate reproducible and cacheable.
        return [
            replace(
                item,
                mismatched=TokenizedSequence(
                    item.sequences[0].prompt_ids, items[(index + 1) % len(items)].sequences[0].completion_ids
                ),
            )
            for index, item in enumerate(items)
        ]
    if data_format == "listwise":
        return [
            TrainingItem(
                tuple(tok(ranked.record, ranked.prompt, completion) for completion in ranked.completions),
                "listwise",
                ranks=ranked.ranks,
                scores=ranked.scores,
            )
            for ranked in _ranked_lists(records)
        ]
    if data_format == "sft":
        items = []
        for record in records:
            if isinstance(record, BinaryLabel):
                if record.label:
                    items.append(TrainingItem((tok(record, record.prompt, record.completion),), "sft"))
            else:
                for pair in to_pairs([record]):
                    items.append(TrainingItem((tok(pair, pair.prompt, pair.chosen),), "sft"))
        return items
    raise ConfigError(f"unknown data format {data_format!r}; expected pairwise, unpaired, listwise or sft.")


def micro_batches(
    items: Sequence[TrainingItem],
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    group_by_length: bool = True,
    shuffle: bool = True,
) -> list[list[int]]:
    """Item indices per micro-batch for one epoch: shuffled, then length-grouped.

    Length grouping sorts within windows of 16 batches, so batches stay random across the
    epoch while each holds similar lengths and little padding. Without ``shuffle`` every
    epoch takes the items in their order (grouped by length within each window when asked),
    and the batches in that order. The order is a function of ``seed`` and ``epoch`` alone,
    so a resumed run recomputes it and continues at the saved position.
    """
    order = list(range(len(items)))
    if shuffle:
        random.Random(seed * 100_003 + epoch).shuffle(order)
    if group_by_length:
        window = batch_size * 16
        order = [
            index
            for start in range(0, len(order), window)
            for index in sorted(order[start : start + window], key=lambda i: items[i].length)
        ]
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    if shuffle:
        random.Random(seed * 7_919 + epoch).shuffle(batches)
    return batches


@dataclass(frozen=True)
class SequenceBatch:
    """A micro-batch flattened into sequences, plus the comparison structure as index tensors."""

    sequences: PaddedSequences
    data_format: str
    chosen_index: torch.Tensor | None = None
    rejected_index: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    list_index: torch.Tensor | None = None
    list_ranks: torch.Tensor | None = None
    margins: torch.Tensor | None = None
    probabilities: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    mismatched_index: torch.Tensor | None = None
    ref_sequence_logps: torch.Tensor | None = None
    num_items: int = 0

    def target_token_count(self) -> int:
        """Completion tokens of the NLL-target sequences, summed over a step into ``LogProbBatch.num_tokens``."""
        return target_token_count(
            self.sequences.completion_mask,
            chosen_index=self.chosen_index,
            labels=self.labels,
            list_index=self.list_index,
            mismatched_index=self.mismatched_index,
        )

    def to(self, device: torch.device | str) -> SequenceBatch:
        moved = {
            name: value.to(device) if isinstance(value, torch.Tensor) else value
            for name, value in self.__dict__.items()
            if name != "sequences"
        }
        return SequenceBatch(sequences=self.sequences.to(device), **moved)


def _optional(values: list[float | None], default: float) -> torch.Tensor | None:
    """A tensor of per-item values, ``default`` where an item has none; None if no item has one.

    ``default`` may be NaN: then "not given" stays distinguishable from every real value.
    """
    if all(value is None for value in values):
        return None
    return torch.tensor([default if value is None else value for value in values], dtype=torch.float32)


def collate(
    items: Sequence[TrainingItem],
    pad_token_id: int,
    *,
    reference_logps: Sequence[Sequence[float]] | None = None,
) -> SequenceBatch:
    """Flatten items into one padded batch.

    Sequences come item by item, then every item's mismatched sequence. ``reference_logps``
    holds each item's cached reference sums in ``TrainingItem.all_sequences`` order.
    """
    data_format = items[0].data_format
    sequences = [sequence for item in items for sequence in item.sequences]
    fields: dict[str, Any] = {}
    if data_format == "pairwise":
        fields["chosen_index"] = torch.arange(0, 2 * len(items), 2)
        fields["rejected_index"] = torch.arange(1, 2 * len(items), 2)
        fields["margins"] = _optional([item.margin for item in items], 0.0)
        # NaN, not 1: for cDPO or robust DPO a pair without a soft label takes the objective's own
        # default (1 − ε), which a filled-in 1 ("certain") would override in a mixed batch.
        fields["probabilities"] = _optional([item.probability for item in items], float("nan"))
    elif data_format == "unpaired":
        labels = [bool(item.label) for item in items]
        if all(item.mismatched is not None for item in items):
            sequences += [item.mismatched for item in items if item.mismatched is not None]
            fields["mismatched_index"] = torch.arange(len(items), 2 * len(items))
            labels += [False] * len(items)
        fields["labels"] = torch.tensor(labels)
    elif data_format == "listwise":
        width = max(len(item.sequences) for item in items)
        list_index = torch.full((len(items), width), -1, dtype=torch.long)
        list_ranks = torch.full((len(items), width), float("inf"))
        offset = 0
        for row, item in enumerate(items):
            count = len(item.sequences)
            order = sorted(range(count), key=lambda k: item.ranks[k])  # best first
            list_index[row, :count] = torch.tensor([offset + k for k in order])
            list_ranks[row, :count] = torch.tensor([item.ranks[k] for k in order])
            offset += count
        fields["list_index"] = list_index
        fields["list_ranks"] = list_ranks
        # Per sequence, in sequence order; NaN for the completions of lists that carry no scores
        # (rankings, pairs), so an objective tells "no score" from any real one.
        if any(item.scores is not None for item in items):
            fields["scores"] = torch.tensor(
                [
                    value
                    for item in items
                    for value in (item.scores if item.scores is not None else [float("nan")] * len(item.sequences))
                ],
                dtype=torch.float32,
            )
    weights = [item.weight for item in items]
    if any(weight != 1.0 for weight in weights):
        fields["weights"] = torch.tensor(weights, dtype=torch.float32)
    if reference_logps is not None:
        primary = [
            value
            for item, values in zip(items, reference_logps, strict=True)
            for value in values[: len(item.sequences)]
        ]
        extra = [values[-1] for item, values in zip(items, reference_logps, strict=True) if item.mismatched is not None]
        if "mismatched_index" not in fields:
            extra = []
        fields["ref_sequence_logps"] = torch.tensor(primary + extra, dtype=torch.float32)
    return SequenceBatch(
        sequences=pad_sequences(sequences, pad_token_id), data_format=data_format, num_items=len(items), **fields
    )

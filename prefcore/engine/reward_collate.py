"""Reward items → one padded micro-batch that carries the comparison structure (``RewardFeedback``).

Items of any mix of formats become one flat batch of sequences plus the indices that say
which sequences form a pair, a list or a labelled step; after the network has scored the
batch, ``RewardFeedback.reward_batch`` hands the objective its ``RewardBatch``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from prefcore.engine.reward_items import RewardItem
from prefcore.engine.reward_model import RewardOutput
from prefcore.engine.sequences import PaddedSequences
from prefcore.engine.sequences import pad_sequences
from prefcore.errors import ConfigError
from prefcore.errors import DataError
from prefcore.preference import RewardBatch

__all__ = ["RewardFeedback", "aspect_indices", "collate_rewards"]


@dataclass(frozen=True)
class RewardFeedback:
    """A micro-batch: padded sequences and every ``RewardBatch`` field except the rewards."""

    sequences: PaddedSequences
    chosen_index: torch.Tensor | None = None
    rejected_index: torch.Tensor | None = None
    ties: torch.Tensor | None = None
    margins: torch.Tensor | None = None
    probabilities: torch.Tensor | None = None
    aspect_index: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    label_mask: torch.Tensor | None = None
    list_index: torch.Tensor | None = None
    list_ranks: torch.Tensor | None = None
    step_mask: torch.Tensor | None = None
    step_labels: torch.Tensor | None = None
    num_items: int = 0

    def to(self, device: torch.device | str) -> RewardFeedback:
        moved = {
            name: value.to(device) if isinstance(value, torch.Tensor) else value
            for name, value in self.__dict__.items()
            if name != "sequences"
        }
        return RewardFeedback(sequences=self.sequences.to(device), **moved)

    def reward_batch(self, output: RewardOutput, num_items: int | None = None) -> RewardBatch:
        """The objective's input: the network's rewards and this feedback (``num_items`` of the whole step)."""
        step_rewards = None
        if self.step_mask is not None:
            if output.token_rewards is None:
                raise ConfigError("stepwise feedback needs per-token rewards; this reward network gives none.")
            step_rewards = output.token_rewards[..., 0]
        fields = {name: value for name, value in self.__dict__.items() if name not in ("sequences", "num_items")}
        return RewardBatch(
            rewards=output.rewards,
            step_rewards=step_rewards,
            num_items=self.num_items if num_items is None else num_items,
            **fields,
        )


def _optional(values: list[float | None], default: float) -> torch.Tensor | None:
    if all(value is None for value in values):
        return None
    return torch.tensor([default if value is None else value for value in values], dtype=torch.float32)


def aspect_indices(items: Sequence[RewardItem], aspects: Sequence[str]) -> torch.Tensor:
    """``[P]`` the head each pair is judged on; ``DataError`` for a pair whose aspect names no head."""
    indices = []
    for item in items:
        if item.aspect not in aspects:
            found = "no aspect" if item.aspect is None else f"aspect {item.aspect!r}"
            raise DataError(
                f"a pair has {found}, but the reward heads are {list(aspects)}; give every pair the 'aspect' of a head."
            )
        indices.append(list(aspects).index(item.aspect))
    return torch.tensor(indices, dtype=torch.long)


def collate_rewards(
    items: Sequence[RewardItem], pad_token_id: int, *, aspects: Sequence[str] | None = None
) -> RewardFeedback:
    """Flatten items (of any mix of formats) into one padded batch with the comparison structure.

    ``aspects`` names the heads; when given, every pair's ``aspect`` becomes its ``aspect_index``.
    """
    sequences = [sequence for item in items for sequence in item.sequences]
    offsets = []
    offset = 0
    for item in items:
        offsets.append(offset)
        offset += len(item.sequences)
    fields: dict[str, Any] = {}
    pairs = [(item, start) for item, start in zip(items, offsets, strict=True) if item.data_format == "pairwise"]
    if pairs:
        fields["chosen_index"] = torch.tensor([start for _, start in pairs], dtype=torch.long)
        fields["rejected_index"] = torch.tensor([start + 1 for _, start in pairs], dtype=torch.long)
        if any(item.tie for item, _ in pairs):
            fields["ties"] = torch.tensor([item.tie for item, _ in pairs])
        fields["margins"] = _optional([item.margin for item, _ in pairs], 0.0)
        fields["probabilities"] = _optional([item.probability for item, _ in pairs], 1.0)
        if aspects is not None:
            fields["aspect_index"] = aspect_indices([item for item, _ in pairs], aspects)
    if any(item.labels is not None for item in items):
        labels = [False] * len(sequences)
        label_mask = [False] * len(sequences)
        for item, start in zip(items, offsets, strict=True):
            for position, label in enumerate(item.labels or ()):
                if label is not None:
                    labels[start + position] = label
                    label_mask[start + position] = True
        fields["labels"] = torch.tensor(labels)
        fields["label_mask"] = torch.tensor(label_mask)
    lists = [(item, start) for item, start in zip(items, offsets, strict=True) if item.data_format == "listwise"]
    if lists:
        width = max(len(item.sequences) for item, _ in lists)
        list_index = torch.full((len(lists), width), -1, dtype=torch.long)
        list_ranks = torch.full((len(lists), width), float("inf"))
        for row, (item, start) in enumerate(lists):
            ranks = item.ranks or ()
            order = sorted(range(len(item.sequences)), key=lambda k: ranks[k])  # best first
            list_index[row, : len(order)] = torch.tensor([start + k for k in order])
            list_ranks[row, : len(order)] = torch.tensor([ranks[k] for k in order])
        fields["list_index"] = list_index
        fields["list_ranks"] = list_ranks
    padded = pad_sequences(sequences, pad_token_id)
    if any(item.data_format == "stepwise" for item in items):
        step_mask = torch.zeros(padded.input_ids.shape, dtype=torch.bool)
        step_labels = torch.zeros(padded.input_ids.shape, dtype=torch.float32)
        for item, start in zip(items, offsets, strict=True):
            prompt_length = len(item.sequences[0].prompt_ids)
            for end, label in zip(item.step_ends, item.step_labels, strict=True):
                step_mask[start, prompt_length + end] = True
                step_labels[start, prompt_length + end] = float(label)
        fields["step_mask"] = step_mask
        fields["step_labels"] = step_labels
    return RewardFeedback(sequences=padded, num_items=sum(item.count for item in items), **fields)

"""Random ``LogProbBatch`` builders and the micro-batch split the parity checks use.

An objective is a function of a batch, so its tests need batches of every format without
a model: ``make_random_batch`` builds one, ``split_batch`` cuts it into micro-batches the
way gradient accumulation does, ``batch_to`` casts it to another dtype. Online objectives
train on a ``RolloutBatch``: ``make_random_rollout_batch``, ``split_rollout_batch`` and
``rollout_batch_to`` do the same for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from prefcore.batch import DATA_FORMATS
from prefcore.batch import LogProbBatch
from prefcore.rollout import RolloutBatch

__all__ = [
    "batch_to",
    "make_random_batch",
    "make_random_rollout_batch",
    "num_comparisons",
    "rollout_batch_to",
    "split_batch",
    "split_rollout_batch",
]

_FLOAT_FIELDS = ("policy_logps", "ref_logps", "ref_sequence_logps", "margins", "probabilities", "weights", "scores")


def make_random_batch(
    data_format: str,
    *,
    num_items: int = 4,
    max_tokens: int = 7,
    list_size: int = 4,
    with_reference: bool = True,
    reference_per_sequence: bool = False,
    with_weights: bool = False,
    with_margins: bool = False,
    with_scores: bool = False,
    with_mismatched: bool = False,
    with_ties: bool = False,
    equal_lengths: bool = False,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> LogProbBatch:
    """A valid random ``LogProbBatch`` of ``data_format`` (``pairwise``, ``unpaired``, ``listwise``, ``sft``).

    Sequences are shuffled so that an objective cannot rely on a layout (chosen at even
    rows, lists contiguous); each completion is a contiguous run of 1..``max_tokens``
    tokens after a random prompt offset, the rest masked with log-prob 0.

    Arguments:
        num_items: comparisons in the batch: pairs, labelled sequences, lists or SFT sequences.
        max_tokens: longest completion; ``T`` is ``max_tokens + 2`` (room for prompt offsets).
        list_size: the longest list (listwise); some lists are shorter and padded with -1.
        with_reference: add ``ref_logps`` (or ``ref_sequence_logps`` with ``reference_per_sequence``).
        with_weights, with_margins, with_scores: add those optional fields.
        with_mismatched: add KTO's mismatched sequences (unpaired format).
        with_ties: give some listwise items equal ranks.
        equal_lengths: every completion has ``max_tokens`` tokens (for references that
            normalise over the whole batch's tokens, as TRL's NLL does).
        dtype: floating dtype of every float field.
        seed: the batch is a pure function of its arguments and this seed.
    """
    if data_format not in DATA_FORMATS:
        raise ValueError(f"data_format must be one of {', '.join(DATA_FORMATS)}. Got {data_format!r}.")
    if num_items < 1:
        raise ValueError(f"num_items must be >= 1. Got {num_items}.")
    generator = torch.Generator().manual_seed(seed)
    fields_: dict[str, torch.Tensor | int | None] = {}
    if data_format == "pairwise":
        num_sequences = 2 * num_items
        order = torch.randperm(num_sequences, generator=generator)
        fields_["chosen_index"] = order[:num_items]
        fields_["rejected_index"] = order[num_items:]
        if with_margins:
            fields_["margins"] = torch.rand(num_items, generator=generator, dtype=dtype) * 2
        fields_["probabilities"] = None
    elif data_format == "unpaired":
        num_labelled = max(num_items, 2)
        num_mismatched = num_labelled if with_mismatched else 0
        num_sequences = num_labelled + num_mismatched
        labels = torch.rand(num_labelled, generator=generator) < 0.5
        labels[0], labels[1] = True, False  # both kinds are present
        order = torch.randperm(num_sequences, generator=generator)
        all_labels = torch.zeros(num_sequences, dtype=torch.bool)
        all_labels[order[:num_labelled]] = labels
        fields_["labels"] = all_labels
        if with_mismatched:
            fields_["mismatched_index"] = order[num_labelled:].sort().values
        num_items = num_labelled
    elif data_format == "listwise":
        if list_size < 2:
            raise ValueError(f"list_size must be >= 2. Got {list_size}.")
        sizes = torch.randint(2, list_size + 1, (num_items,), generator=generator)
        sizes[0] = list_size  # at least one full list
        num_sequences = int(sizes.sum())
        order = torch.randperm(num_sequences, generator=generator)
        list_index = torch.full((num_items, list_size), -1, dtype=torch.long)
        list_ranks = torch.full((num_items, list_size), float("inf"), dtype=dtype)
        offset = 0
        for row, size in enumerate(sizes.tolist()):
            list_index[row, :size] = order[offset : offset + size]
            ranks = torch.arange(1, size + 1, dtype=dtype)
            if with_ties and size >= 3 and row % 2 == 0:
                ranks[1] = ranks[2] = 2  # a tie below the best
            list_ranks[row, :size] = ranks
            offset += size
        fields_["list_index"] = list_index
        fields_["list_ranks"] = list_ranks
    else:
        num_sequences = num_items

    width = max_tokens + 2
    if equal_lengths:
        lengths = torch.full((num_sequences,), max_tokens)
    else:
        lengths = torch.randint(1, max_tokens + 1, (num_sequences,), generator=generator)
    starts = torch.stack([torch.randint(0, width - int(n) + 1, (1,), generator=generator)[0] for n in lengths])
    positions = torch.arange(width)
    mask = (positions >= starts[:, None]) & (positions < (starts + lengths)[:, None])
    # log-probs of tokens with probability in (0.02, 0.98): finite, away from 0 and 1
    probabilities = 0.02 + 0.96 * torch.rand(num_sequences, width, generator=generator, dtype=torch.float64)
    policy_logps = probabilities.log().to(dtype) * mask
    if with_reference:
        noise = 0.5 * torch.randn(num_sequences, width, generator=generator, dtype=torch.float64)
        ref_logps = (policy_logps.double() + noise).clamp(max=-0.01).to(dtype) * mask
        if reference_per_sequence:
            fields_["ref_sequence_logps"] = ref_logps.sum(-1)
        else:
            fields_["ref_logps"] = ref_logps
    if with_weights:
        count = num_items if data_format != "unpaired" else num_sequences
        fields_["weights"] = 0.25 + torch.rand(count, generator=generator, dtype=dtype)
    if with_scores:
        fields_["scores"] = torch.randn(num_sequences, generator=generator, dtype=dtype)
    return LogProbBatch(policy_logps=policy_logps, mask=mask, **fields_)


def num_comparisons(batch: LogProbBatch) -> int:
    """How many comparisons the batch holds: pairs, labelled sequences, lists or sequences."""
    if batch.chosen_index is not None:
        return int(batch.chosen_index.numel())
    if batch.list_index is not None:
        return int(batch.list_index.shape[0])
    if batch.labels is not None:
        excluded = 0 if batch.mismatched_index is None else int(batch.mismatched_index.numel())
        return batch.num_sequences - excluded
    return batch.num_sequences


def batch_to(batch: LogProbBatch, dtype: torch.dtype) -> LogProbBatch:
    """The same batch with every float field cast to ``dtype``."""
    changes = {
        name: getattr(batch, name).to(dtype)
        for name in _FLOAT_FIELDS
        if getattr(batch, name) is not None and getattr(batch, name).is_floating_point()
    }
    return replace(batch, **changes)


def split_batch(batch: LogProbBatch, groups: Sequence[Sequence[int]]) -> list[tuple[LogProbBatch, torch.Tensor]]:
    """Micro-batches holding the comparisons of each group, with ``num_items`` = the whole batch's.

    ``num_tokens`` is the whole batch's ``target_token_count()``, by the rule the engine uses
    for a step, so token-averaged terms are checked across splits as training runs them.
    Sequences are re-indexed from 0 in each part. KTO's mismatched sequences (a
    batch-level reference point, detached) go into every part unchanged.

    Returns:
        ``(part, sequences)`` per group: ``sequences[i]`` is the row of ``batch`` that row
        ``i`` of ``part`` came from (to map gradients back).
    """
    total = num_comparisons(batch)
    total_tokens = batch.target_token_count()
    parts = []
    for group in groups:
        items = torch.as_tensor(list(group), dtype=torch.long)
        changes: dict[str, torch.Tensor | int | None] = {"num_items": total, "num_tokens": total_tokens}
        if batch.chosen_index is not None and batch.rejected_index is not None:
            chosen, rejected = batch.chosen_index[items], batch.rejected_index[items]
            sequences = torch.cat([chosen, rejected])
            local = torch.arange(len(sequences))
            changes["chosen_index"], changes["rejected_index"] = local[: len(items)], local[len(items) :]
            for name in ("margins", "probabilities", "weights"):
                if getattr(batch, name) is not None:
                    changes[name] = getattr(batch, name)[items]
        elif batch.list_index is not None and batch.list_ranks is not None:
            rows = batch.list_index[items]
            sequences = rows[rows >= 0]
            local_rows = torch.full_like(rows, -1)
            local_rows[rows >= 0] = torch.arange(len(sequences))
            changes["list_index"], changes["list_ranks"] = local_rows, batch.list_ranks[items]
            if batch.weights is not None:
                changes["weights"] = batch.weights[items]
        elif batch.labels is not None:
            labelled = _labelled_sequences(batch)
            own = labelled[items]
            mismatched = batch.mismatched_index if batch.mismatched_index is not None else own[:0]
            sequences = torch.cat([own, mismatched])
            changes["labels"] = batch.labels[sequences]
            if batch.mismatched_index is not None:
                changes["mismatched_index"] = torch.arange(len(own), len(sequences))
            if batch.weights is not None:
                changes["weights"] = _unpaired_weights_for(batch, sequences)
        else:
            sequences = items
            if batch.weights is not None:
                changes["weights"] = batch.weights[items]
        for name in ("policy_logps", "mask", "ref_logps", "ref_sequence_logps", "scores"):
            if getattr(batch, name) is not None:
                changes[name] = getattr(batch, name)[sequences]
        parts.append((replace(batch, **changes), sequences))
    return parts


def _labelled_sequences(batch: LogProbBatch) -> torch.Tensor:
    keep = torch.ones(batch.num_sequences, dtype=torch.bool)
    if batch.mismatched_index is not None:
        keep[batch.mismatched_index] = False
    return keep.nonzero().flatten()


def _unpaired_weights_for(batch: LogProbBatch, sequences: torch.Tensor) -> torch.Tensor:
    assert batch.weights is not None
    if batch.weights.numel() == batch.num_sequences:
        return batch.weights[sequences]
    # one weight per labelled sequence, in sequence order: rebuild a per-sequence view
    per_sequence = torch.ones(batch.num_sequences, dtype=batch.weights.dtype)
    per_sequence[_labelled_sequences(batch)] = batch.weights
    return per_sequence[sequences]


# ----------------------------------------------------------------------------------------------
# Rollout batches (online objectives)
# ----------------------------------------------------------------------------------------------

_ROLLOUT_FLOAT_FIELDS = ("policy_logps", "sampling_logps", "advantages", "rewards", "ref_logps")


def make_random_rollout_batch(
    *,
    num_prompts: int = 3,
    samples_per_prompt: int = 4,
    max_tokens: int = 7,
    with_reference: bool = True,
    with_truncated: bool = True,
    per_token_advantages: bool = False,
    off_policy: float = 0.3,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> RolloutBatch:
    """A valid random ``RolloutBatch``: ``num_prompts`` × ``samples_per_prompt`` completions, prompt-major.

    Completions start at position 0 (the engine right-pads completions) and run 1..``max_tokens``
    tokens; truncated ones fill all ``max_tokens`` positions. Advantages are group-normalised
    rewards broadcast over each completion, or with ``per_token_advantages`` a different value
    per token (a return-to-go). The sampling log-probs differ from the policy's by noise of
    scale ``off_policy``, so some ratios fall outside a 0.2 clip range.

    Arguments:
        with_reference: add ``ref_logps``.
        with_truncated: mark some completions truncated (at least one, never all).
        dtype: floating dtype of every float field.
        seed: the batch is a pure function of its arguments and this seed.
    """
    if num_prompts < 1 or samples_per_prompt < 1:
        raise ValueError(f"num_prompts and samples_per_prompt must be >= 1. Got {num_prompts}, {samples_per_prompt}.")
    generator = torch.Generator().manual_seed(seed)
    count = num_prompts * samples_per_prompt
    truncated = torch.rand(count, generator=generator) < 0.3 if with_truncated else torch.zeros(count, dtype=torch.bool)
    if with_truncated and count > 1:
        truncated[0], truncated[-1] = True, False
    lengths = torch.randint(1, max_tokens, (count,), generator=generator)
    lengths = torch.where(truncated, torch.full_like(lengths, max_tokens), lengths)
    mask = torch.arange(max_tokens) < lengths[:, None]
    probabilities = 0.02 + 0.96 * torch.rand(count, max_tokens, generator=generator, dtype=torch.float64)
    policy_logps = probabilities.log() * mask
    noise = off_policy * torch.randn(count, max_tokens, generator=generator, dtype=torch.float64)
    sampling_logps = (policy_logps + noise).clamp(max=-0.01) * mask
    group_ids = torch.arange(num_prompts).repeat_interleave(samples_per_prompt)
    rewards = torch.randn(count, generator=generator, dtype=torch.float64)
    grouped = rewards.view(num_prompts, samples_per_prompt)
    centred = grouped - grouped.mean(-1, keepdim=True)
    scale = grouped.std(-1, keepdim=True) if samples_per_prompt > 1 else torch.ones_like(centred)
    sequence_advantages = (centred / (scale + 1e-4)).flatten()
    advantages = sequence_advantages[:, None].expand(count, max_tokens).clone()
    if per_token_advantages:
        advantages = advantages + 0.5 * torch.randn(count, max_tokens, generator=generator, dtype=torch.float64)
    advantages = advantages * mask
    ref_logps = None
    if with_reference:
        reference_noise = 0.5 * torch.randn(count, max_tokens, generator=generator, dtype=torch.float64)
        ref_logps = ((policy_logps + reference_noise).clamp(max=-0.01) * mask).to(dtype)
    return RolloutBatch(
        policy_logps=policy_logps.to(dtype),
        mask=mask,
        sampling_logps=sampling_logps.to(dtype),
        advantages=advantages.to(dtype),
        rewards=rewards.to(dtype),
        group_ids=group_ids,
        truncated=truncated,
        ref_logps=ref_logps,
        max_completion_length=max_tokens,
    )


def rollout_batch_to(batch: RolloutBatch, dtype: torch.dtype) -> RolloutBatch:
    """The same rollout batch with every float field cast to ``dtype``."""
    changes = {
        name: getattr(batch, name).to(dtype) for name in _ROLLOUT_FLOAT_FIELDS if getattr(batch, name) is not None
    }
    return replace(batch, **changes)


def split_rollout_batch(
    batch: RolloutBatch, groups: Sequence[Sequence[int]], *, loss_mask: torch.Tensor | None = None
) -> list[RolloutBatch]:
    """Micro-batches holding the completions of each group, with the step's ``num_tokens`` and ``num_sequences``.

    ``num_tokens`` counts ``loss_mask`` (the objective's ``loss_mask(batch)``, which may leave
    truncated completions out) over the whole batch, or ``batch.mask`` when not given, as the
    engine counts a step.
    """
    mask = batch.mask if loss_mask is None else loss_mask
    changes_all: dict[str, int] = {"num_tokens": int(mask.sum()), "num_sequences": batch.num_completions}
    parts = []
    for group in groups:
        rows = torch.as_tensor(list(group), dtype=torch.long)
        changes: dict[str, object] = dict(changes_all)
        for name in (
            "policy_logps",
            "mask",
            "sampling_logps",
            "advantages",
            "rewards",
            "group_ids",
            "truncated",
            "ref_logps",
        ):
            if getattr(batch, name) is not None:
                changes[name] = getattr(batch, name)[rows]
        parts.append(replace(batch, **changes))
    return parts

"""Token-averaged NLL terms under gradient accumulation: exact whatever the completion lengths.

sft, rpo, orpo, cpo, hindsight_sft and reward_conditioned_sft average the NLL of their
target sequences over tokens, as TRL does. Weighting each micro-batch's token mean by its
share of the comparisons is exact only when completions have equal lengths; with
``LogProbBatch.num_tokens`` each micro-batch divides its summed NLL by the whole step's
token count instead. Checked here: the parity kit's split with ragged lengths (and that
``num_tokens`` is what makes it exact), that an unset ``num_tokens`` keeps the batch's own
token mean (TRL's value, compared with TRL in ``test_references_trl.py``), and the engine:
the ``num_tokens`` it hands every micro-batch, and one step split into micro-batches
against the same step in one batch.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from prefcore.batch import DATA_FORMATS
from prefcore.batch import LogProbBatch
from prefcore.batch import LossOutput
from prefcore.demo.model import build_tiny_model
from prefcore.demo.task import preference_pairs
from prefcore.demo.task import rankings
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.engine.batching import TrainingItem
from prefcore.engine.batching import build_items
from prefcore.engine.trainer import TrainConfig
from prefcore.engine.trainer import Trainer
from prefcore.engine.trainer import WeightedObjective
from prefcore.methods import UsageObjective
from prefcore.registry import Registry
from prefcore.testing import assert_accumulation_invariant
from prefcore.testing import make_random_batch
from prefcore.testing import split_batch

TOKEN_AVERAGED = ("cpo", "hindsight_sft", "orpo", "reward_conditioned_sft", "rpo", "sft")
"""Objectives with a token-averaged NLL term (``prefcore.kernels.preference_losses.nll_loss``)."""


def _objective(usage_registry: Registry, name: str) -> UsageObjective:
    objective = usage_registry.create("usage", name)
    assert isinstance(objective, UsageObjective)
    return objective


def _ragged_batch(objective: UsageObjective, data_format: str, seed: int) -> LogProbBatch:
    """Random batch whose target completions have different lengths (the case equal-length tests miss)."""
    batch = make_random_batch(
        data_format, num_items=6, max_tokens=9, with_reference=objective.uses_reference(), with_weights=True, seed=seed
    )
    assert len(set(_target_lengths(batch).tolist())) > 1, "the batch must hold completions of different lengths"
    return batch


def _target_lengths(batch: LogProbBatch) -> torch.Tensor:
    """Tokens of each comparison's NLL target: the chosen of each pair, or each SFT sequence."""
    targets = batch.chosen_index if batch.chosen_index is not None else torch.arange(batch.num_sequences)
    return batch.mask[targets].sum(-1)


def _loss(objective: UsageObjective, batch: LogProbBatch) -> torch.Tensor:
    return objective.loss(batch).loss.detach().double()


# ----------------------------------------------------------------------------------------------
# The parity kit's split
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TOKEN_AVERAGED)
@pytest.mark.parametrize("num_parts", [2, 3])
def test_split_is_exact_with_uneven_lengths(usage_registry: Registry, name: str, num_parts: int) -> None:
    objective = _objective(usage_registry, name)
    for data_format in objective.data_formats:
        assert_accumulation_invariant(objective, _ragged_batch(objective, data_format, seed=9), num_parts=num_parts)


@pytest.mark.parametrize("name", TOKEN_AVERAGED)
def test_num_tokens_is_what_makes_the_split_exact(usage_registry: Registry, name: str) -> None:
    """Without ``num_tokens`` the parts keep their own token means, whose sum misses the whole batch's loss."""
    objective = _objective(usage_registry, name)
    batch = replace(_ragged_batch(objective, objective.data_formats[0], seed=9), weights=None)
    by_length = _target_lengths(batch).argsort(stable=True).tolist()
    parts = [part for part, _ in split_batch(batch, [by_length[:2], by_length[2:]])]  # short part, long part
    whole = _loss(objective, batch)
    exact = sum(_loss(objective, part) for part in parts)
    per_part_means = sum(_loss(objective, replace(part, num_tokens=None)) for part in parts)
    torch.testing.assert_close(exact, whole, rtol=1e-6, atol=1e-7)
    assert abs(float(per_part_means - whole)) > 1e-4


@pytest.mark.parametrize("name", TOKEN_AVERAGED)
def test_the_batchs_own_token_count_changes_nothing(usage_registry: Registry, name: str) -> None:
    """``num_tokens`` = the batch's own count (one micro-batch per step) gives the unset value, TRL's token mean."""
    objective = _objective(usage_registry, name)
    for data_format in objective.data_formats:
        batch = _ragged_batch(objective, data_format, seed=10)
        own = replace(batch, num_tokens=batch.target_token_count(), num_items=6)
        torch.testing.assert_close(_loss(objective, own), _loss(objective, batch), rtol=1e-6, atol=1e-7)


def test_sft_without_num_tokens_is_the_batch_token_mean(usage_registry: Registry) -> None:
    batch = replace(_ragged_batch(_objective(usage_registry, "sft"), "sft", seed=11), weights=None)
    token_mean = -(batch.policy_logps.double() * batch.mask).sum() / batch.mask.sum()
    torch.testing.assert_close(_loss(_objective(usage_registry, "sft"), batch), token_mean, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------------------------
# The engine: a real step of the tiny demo model, 6 items in 3 micro-batches of 2
# ----------------------------------------------------------------------------------------------


class RecordsBatches(UsageObjective):
    """Keeps every batch the engine hands it; the loss is any differentiable scalar."""

    name = "records_batches"
    data_formats = DATA_FORMATS

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[LogProbBatch] = []

    def loss(self, batch: LogProbBatch) -> LossOutput:
        self.batches.append(batch)
        return LossOutput(torch.where(batch.mask, batch.policy_logps, 0.0).sum())


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def _items(data_format: str, tokenizer) -> list[TrainingItem]:
    records = rankings(count=6, seed=3) if data_format == "listwise" else preference_pairs(count=6, seed=3)
    items = build_items(list(records), data_format, tokenizer, max_length=64, mismatched=data_format == "unpaired")
    return items[:6]


def _target_tokens(item: TrainingItem) -> int:
    """Completion length of the item's NLL-target sequence, read off the item rather than through the rule."""
    if item.data_format == "unpaired":
        return len(item.sequences[0].completion_ids) if item.label else 0
    if item.data_format == "listwise" and item.ranks is not None:
        best = min(range(len(item.sequences)), key=lambda k: item.ranks[k])  # type: ignore[index]
        return len(item.sequences[best].completion_ids)
    return len(item.sequences[0].completion_ids)  # pairwise: the chosen comes first; sft: the one sequence


def _one_step(objective: UsageObjective, items: list[TrainingItem], tokenizer, run_dir: Path, *, grad_accum: int):
    config = TrainConfig(
        steps=1, batch_size=len(items) // grad_accum, grad_accum=grad_accum, max_grad_norm=0.0, progress=False
    )
    trainer = Trainer(
        build_tiny_model(tokenizer, seed=0),
        [WeightedObjective(objective)],
        items,
        config,
        pad_token_id=tokenizer.pad_token_id,
        run_dir=run_dir,
        device=torch.device("cpu"),
    )
    trainer.train_step()
    return trainer


@pytest.mark.parametrize("data_format", DATA_FORMATS)
def test_engine_num_tokens_is_the_steps_target_tokens(data_format: str, tokenizer, tmp_path: Path) -> None:
    items = _items(data_format, tokenizer)
    expected = sum(_target_tokens(item) for item in items)  # 3 micro-batches of 2 hold every item
    spy = RecordsBatches()
    _one_step(spy, items, tokenizer, tmp_path, grad_accum=3)
    assert len(spy.batches) == 3
    assert len({batch.target_token_count() for batch in spy.batches}) > 1, "micro-batches of different token counts"
    assert [batch.num_tokens for batch in spy.batches] == [expected] * 3
    assert sum(batch.target_token_count() for batch in spy.batches) == expected
    assert [batch.num_items for batch in spy.batches] == [6] * 3


@pytest.mark.parametrize(("name", "data_format"), [("sft", "sft"), ("orpo", "pairwise"), ("cpo", "pairwise")])
def test_engine_step_in_micro_batches_equals_one_batch(
    usage_registry: Registry,
    name: str,
    data_format: str,
    tokenizer,
    tmp_path: Path,
) -> None:
    items = _items(data_format, tokenizer)
    assert len({_target_tokens(item) for item in items}) > 1, "the step must hold completions of different lengths"
    gradients = []
    for grad_accum in (1, 3):
        trainer = _one_step(
            _objective(usage_registry, name), items, tokenizer, tmp_path / str(grad_accum), grad_accum=grad_accum
        )
        gradients.append(torch.cat([p.grad.flatten() for p in trainer.policy.parameters() if p.grad is not None]))
    whole, accumulated = gradients
    torch.testing.assert_close(accumulated, whole, rtol=1e-4, atol=1e-6)

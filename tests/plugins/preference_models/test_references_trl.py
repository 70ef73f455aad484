"""bradley_terry and margin_bradley_terry against TRL's own reward-trainer loss (value and gradient).

TRL 1.16 computes the loss in ``trl/trainer/reward_trainer.py``, ``RewardTrainer.compute_loss``,
a method that normally runs a sequence-classification model. The harness calls it unbound
with a stand-in ``self`` carrying the options and a stand-in model whose ``logits`` are the
batch's rewards, laid out as TRL's collator does ([chosen..., rejected...]), so the lines
that run are TRL's:

    loss = -logsigmoid(rewards_chosen - rewards_rejected - inputs["margin"]).mean()   # or without margin
    loss += center_rewards_coefficient * mean((rewards_chosen + rewards_rejected) ** 2)
"""

from __future__ import annotations

import importlib
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from prefcore.plugins.preference_models.bradley_terry import BradleyTerry
from prefcore.plugins.preference_models.bradley_terry import BradleyTerryConfig
from prefcore.plugins.preference_models.margin_bradley_terry import MarginBradleyTerry
from prefcore.preference import RewardBatch

trl_reward_trainer = importlib.import_module("trl.trainer.reward_trainer")

RTOL, ATOL = 1e-6, 1e-7  # both fp32, same operations


class _Accelerator:
    """Single process: gathering is the identity."""

    @staticmethod
    def gather(values: torch.Tensor) -> torch.Tensor:
        return values

    @staticmethod
    def gather_for_metrics(values: torch.Tensor) -> torch.Tensor:
        return values


class _RewardLogits:
    """Stands in for ``AutoModelForSequenceClassification(num_labels=1)``: returns fixed logits ``[2P, 1]``."""

    training = False  # TRL's eval branch: no token counting

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits

    def __call__(self, **inputs: Any) -> SimpleNamespace:
        return SimpleNamespace(logits=self.logits)


def trl_reward_loss(batch: RewardBatch, *, center_rewards_coefficient: float | None = None) -> torch.Tensor:
    """``RewardTrainer.compute_loss`` of TRL on ``batch`` (head 0; margins passed when the batch has them)."""
    assert batch.chosen_index is not None and batch.rejected_index is not None
    order = torch.cat([batch.chosen_index, batch.rejected_index])
    logits = batch.rewards[order, :1]
    model = _RewardLogits(logits)
    inputs: dict[str, Any] = {
        "input_ids": torch.zeros(len(order), 2, dtype=torch.long),
        "attention_mask": torch.ones(len(order), 2, dtype=torch.long),
    }
    if batch.margins is not None:
        inputs["margin"] = batch.margins
    trainer = SimpleNamespace(
        model=model,
        args=SimpleNamespace(center_rewards_coefficient=center_rewards_coefficient),
        accelerator=_Accelerator(),
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    return trl_reward_trainer.RewardTrainer.compute_loss(trainer, model, inputs)


def _compare(ours: torch.Tensor, theirs: torch.Tensor, rewards: torch.Tensor) -> None:
    upstream = torch.rand(()) + 0.5
    [our_grad] = torch.autograd.grad(ours * upstream, rewards)
    [their_grad] = torch.autograd.grad(theirs * upstream, rewards)
    torch.testing.assert_close(ours, theirs, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(our_grad, their_grad, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("pairs", [1, 16, 37])
@pytest.mark.parametrize("center", [None, 0.01])
def test_bradley_terry_matches_trl(pair_batch, pairs, center) -> None:
    batch = pair_batch(pairs, scale=4.0)
    objective = BradleyTerry(BradleyTerryConfig(center_rewards_coefficient=center or 0.0))
    _compare(objective.loss(batch).loss, trl_reward_loss(batch, center_rewards_coefficient=center), batch.rewards)


@pytest.mark.parametrize("pairs", [1, 16, 37])
def test_margin_bradley_terry_matches_trl(pair_batch, pairs) -> None:
    margins = torch.rand(pairs, generator=torch.Generator().manual_seed(pairs)) * 2
    batch = pair_batch(pairs, scale=4.0, margins=margins)
    _compare(MarginBradleyTerry().loss(batch).loss, trl_reward_loss(batch), batch.rewards)

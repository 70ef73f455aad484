"""soft_bradley_terry against the cross-entropy with soft targets, ties as p = 0.5 (Christiano et al. 2017)."""

from __future__ import annotations

import pytest
import torch

from prefcore.plugins.preference_models.soft_bradley_terry import SoftBradleyTerry
from prefcore.preference import RewardBatch


def christiano_soft_loss(rewards: torch.Tensor, batch: RewardBatch) -> torch.Tensor:
    """−[p·log P̂ + (1 − p)·log(1 − P̂)], P̂ = 1 / (1 + e^−(r_c − r_r)); p = 0.5 for a tie, 1 without a label."""
    assert batch.chosen_index is not None and batch.rejected_index is not None
    total = rewards.new_zeros(())
    for pair, (chosen, rejected) in enumerate(
        zip(batch.chosen_index.tolist(), batch.rejected_index.tolist(), strict=True)
    ):
        target = 1.0 if batch.probabilities is None else float(batch.probabilities[pair])
        if batch.ties is not None and bool(batch.ties[pair]):
            target = 0.5
        predicted = 1 / (1 + torch.exp(-(rewards[chosen, 0] - rewards[rejected, 0])))
        total = total - (target * torch.log(predicted) + (1 - target) * torch.log(1 - predicted))
    return total / (batch.num_items or len(batch.chosen_index))


@pytest.mark.parametrize("pairs", [1, 8, 33])
def test_soft_bradley_terry_matches_cross_entropy_formula(pair_batch, assert_matches, pairs) -> None:
    generator = torch.Generator().manual_seed(pairs)
    probabilities = torch.rand(pairs, generator=generator)
    ties = torch.rand(pairs, generator=generator) < 0.3
    batch = pair_batch(pairs, probabilities=probabilities, ties=ties)
    assert_matches(SoftBradleyTerry().loss, lambda rewards: christiano_soft_loss(rewards, batch), batch)


def test_hard_labels_give_plain_bradley_terry(pair_batch, assert_matches) -> None:
    batch = pair_batch(6)
    assert_matches(SoftBradleyTerry().loss, lambda rewards: christiano_soft_loss(rewards, batch), batch)


def test_a_tie_is_learnt_as_equal_rewards() -> None:
    """The gradient of a tie pulls the two rewards together, from either side."""
    for gap in (2.0, -2.0):
        rewards = torch.tensor([[gap], [0.0]], requires_grad=True)
        batch = RewardBatch(
            rewards, chosen_index=torch.tensor([0]), rejected_index=torch.tensor([1]), ties=torch.tensor([True])
        )
        SoftBradleyTerry().loss(batch).loss.backward()
        assert rewards.grad is not None
        assert float(rewards.grad[0, 0]) * gap > 0  # gradient descent moves r_c towards r_r


def test_probabilities_outside_zero_one_are_refused(pair_batch) -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        SoftBradleyTerry().loss(pair_batch(2, probabilities=torch.tensor([0.5, 1.5])))

"""safety_binary against Safe-RLHF's cost-model loss (Dai et al. 2023 Eq. 6), with rewards in place of costs."""

from __future__ import annotations

import pytest
import torch

from prefcore.errors import ConfigError
from prefcore.plugins.preference_models.safety_binary import SafetyBinary
from prefcore.plugins.preference_models.safety_binary import SafetyBinaryConfig
from prefcore.preference import RewardBatch


def safe_rlhf_loss(rewards: torch.Tensor, batch: RewardBatch, label_weight: float = 1.0) -> torch.Tensor:
    """Per pair −log σ(r_c − r_r); per labelled completion −λ·log σ(s·r), s = +1 safe / −1 unsafe; over N items."""
    pairs = (
        []
        if batch.chosen_index is None
        else list(zip(batch.chosen_index.tolist(), batch.rejected_index.tolist(), strict=True))
    )
    total = rewards.new_zeros(())
    for chosen, rejected in pairs:
        total = total - torch.log(1 / (1 + torch.exp(-(rewards[chosen, 0] - rewards[rejected, 0]))))
    in_pairs = {index for pair in pairs for index in pair}
    lone = 0
    if batch.labels is not None:
        for index, (label, labelled) in enumerate(zip(batch.labels.tolist(), batch.label_mask.tolist(), strict=True)):
            if labelled:
                sign = 1.0 if label else -1.0
                total = total - label_weight * torch.log(1 / (1 + torch.exp(-sign * rewards[index, 0])))
                lone += index not in in_pairs
    return total / (batch.num_items or len(pairs) + lone)


def _mixed_batch(pairs: int, lone: int, *, seed: int = 0) -> RewardBatch:
    """``pairs`` pairs (some completions labelled) then ``lone`` labelled completions in no pair."""
    generator = torch.Generator().manual_seed(seed)
    count = 2 * pairs + lone
    rewards = (2 * torch.randn(count, 1, generator=generator)).requires_grad_()
    label_mask = torch.rand(count, generator=generator) < 0.7
    label_mask[2 * pairs :] = True
    return RewardBatch(
        rewards,
        chosen_index=torch.arange(0, 2 * pairs, 2) if pairs else None,
        rejected_index=torch.arange(1, 2 * pairs, 2) if pairs else None,
        labels=torch.rand(count, generator=generator) < 0.5,
        label_mask=label_mask,
    )


# (pairs, lone labelled completions, λ, why)
CASES = [
    (6, 0, 1.0, "Safe-RLHF records: a choice and the two verdicts"),
    (5, 4, 0.5, "extra labelled completions are items of their own"),
    (0, 7, 1.0, "labels alone still train"),
    (4, 3, 0.0, "λ = 0 is plain Bradley–Terry"),
]


@pytest.mark.parametrize(("pairs", "lone", "label_weight", "why"), CASES)
def test_safety_binary_matches_safe_rlhf_formula(assert_matches, pairs, lone, label_weight, why) -> None:
    batch = _mixed_batch(pairs, lone, seed=pairs + lone)
    objective = SafetyBinary(SafetyBinaryConfig(label_weight=label_weight))
    assert_matches(objective.loss, lambda rewards: safe_rlhf_loss(rewards, batch, label_weight), batch)


def test_the_sign_of_the_reward_carries_the_label() -> None:
    rewards = torch.tensor([[0.5], [-0.5]], requires_grad=True)
    batch = RewardBatch(rewards, labels=torch.tensor([True, False]), label_mask=torch.tensor([True, True]))
    output = SafetyBinary().loss(batch)
    output.loss.backward()
    assert float(output.metrics["labels/accuracy"]) == 1.0
    assert rewards.grad is not None
    assert float(rewards.grad[0, 0]) < 0 < float(rewards.grad[1, 0])  # descent raises safe, lowers unsafe


def test_batch_with_neither_pairs_nor_labels_is_refused() -> None:
    with pytest.raises(ValueError, match="pairs or binary labels"):
        SafetyBinary().loss(RewardBatch(torch.zeros(2, 1)))


def test_config_refuses_negative_weight() -> None:
    with pytest.raises(ConfigError) as excinfo:
        SafetyBinaryConfig(label_weight=-1.0)
    assert (excinfo.value.method, excinfo.value.field) == ("safety_binary", "label_weight")

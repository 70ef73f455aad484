"""The example preference model matches torch's own margin ranking loss, weights and accumulation included."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from prefcore_example_plugin.example_hinge_reward import HingeReward
from prefcore_example_plugin.example_hinge_reward import HingeRewardConfig

from prefcore.preference import RewardBatch


def _batch(**fields: object) -> RewardBatch:
    torch.manual_seed(0)
    return RewardBatch(
        rewards=torch.randn(8, 1, requires_grad=True),
        chosen_index=torch.tensor([0, 2, 4, 6]),
        rejected_index=torch.tensor([1, 3, 5, 7]),
        **fields,
    )


def test_hinge_reward_is_torch_margin_ranking_loss() -> None:
    batch = _batch()
    loss = HingeReward(HingeRewardConfig(margin=0.7)).loss(batch).loss
    rewards = batch.rewards[:, 0]
    expected = F.margin_ranking_loss(rewards[0::2], rewards[1::2], torch.ones(4), margin=0.7)
    torch.testing.assert_close(loss, expected)
    (grad,) = torch.autograd.grad(loss, batch.rewards)
    (expected_grad,) = torch.autograd.grad(expected, batch.rewards)
    torch.testing.assert_close(grad, expected_grad)


def test_weights_and_the_step_count_scale_each_pair() -> None:
    weights = torch.tensor([1.0, 0.0, 2.0, 1.0])
    batch = _batch(weights=weights, num_items=8)
    loss = HingeReward(HingeRewardConfig(margin=0.7)).loss(batch).loss
    rewards = batch.rewards[:, 0]
    per_pair = F.margin_ranking_loss(rewards[0::2], rewards[1::2], torch.ones(4), margin=0.7, reduction="none")
    torch.testing.assert_close(loss, (weights * per_pair).sum() / 8)

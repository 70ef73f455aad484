"""The example online objective: its estimator and loss against plain-torch formulas, and the online kit."""

from __future__ import annotations

import statistics
from dataclasses import replace

import torch
from prefcore_example_plugin.example_median_baseline import MedianBaseline
from prefcore_example_plugin.example_median_baseline import median_baseline

from prefcore.testing import check_online_objective
from prefcore.testing import make_random_rollout_batch


def test_the_baseline_is_each_groups_median() -> None:
    rewards = torch.tensor([1.0, 5.0, 2.0, 100.0, 0.0, 0.0, 3.0, 1.0])
    group_ids = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    mask = torch.ones(8, 3, dtype=torch.bool)
    mask[2, 1:] = False
    advantages = median_baseline(rewards, group_ids, mask).advantages
    medians = [statistics.median(rewards[group_ids == g].tolist()) for g in (0, 1)]
    for row in range(8):
        expected = float(rewards[row]) - medians[int(group_ids[row])]
        assert advantages[row, mask[row]].tolist() == [expected] * int(mask[row].sum())
        assert not advantages[row, ~mask[row]].any()


def test_the_loss_is_the_token_mean_policy_gradient_and_passes_the_online_kit() -> None:
    objective = MedianBaseline()
    batch = make_random_rollout_batch(seed=3)
    advantages = median_baseline(batch.rewards, batch.group_ids, batch.mask).advantages
    batch = replace(batch, advantages=advantages)
    policy = batch.policy_logps.detach().clone().requires_grad_(True)
    loss = objective.loss(batch.with_policy_logps(policy)).loss
    reference_policy = policy.detach().clone().requires_grad_(True)
    mask = batch.mask.float()
    expected = -(advantages * reference_policy * mask).sum() / mask.sum()
    torch.testing.assert_close(loss, expected)
    (grad,) = torch.autograd.grad(loss, policy)
    (expected_grad,) = torch.autograd.grad(expected, reference_policy)
    torch.testing.assert_close(grad, expected_grad)
    check_online_objective(objective, batch)

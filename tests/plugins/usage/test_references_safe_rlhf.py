"""Safe-RLHF against Safe-RLHF's own formulas on fixed tensors: the combined advantage, the loss, its gradient, λ.

The reference is a transcription of ``safe_rlhf/algorithms/ppo_lag/trainer.py`` (PKU-Alignment,
read from the ``tcexeexe/SHTEC_RM_model`` fork): ``actor_loss_fn`` with ``safe_rlhf.utils.masked_mean``
(a mean per sequence, then over sequences) and ``rl_step``'s SGD on log λ with the loss
−(Ĉ − d)·exp(log λ), then ``clamp_(max=log λ_max)``; Ĉ the mean of a ``deque(maxlen=window)``
that ``post_rollout`` extends with each batch's costs before the step.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import replace

import pytest
import torch

from prefcore.errors import ConfigError
from prefcore.plugins.usage.safe_rlhf import SafeRLHF
from prefcore.plugins.usage.safe_rlhf import SafeRLHFConfig
from prefcore.registry import Registry
from prefcore.testing import make_random_rollout_batch


def safe_rlhf_actor_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    reward_advantages: torch.Tensor,
    cost_advantages: torch.Tensor,
    mask: torch.Tensor,
    multiplier: float,
    clip_range_ratio: float = 0.2,
) -> torch.Tensor:
    """``PPOLagTrainer.actor_loss_fn``."""
    advantages = (reward_advantages - multiplier * cost_advantages) / (1.0 + multiplier)
    ratios = torch.exp(log_probs - old_log_probs)
    surrogate1 = advantages * ratios
    surrogate2 = advantages * torch.clamp(ratios, 1.0 - clip_range_ratio, 1.0 + clip_range_ratio)
    surrogate = torch.minimum(surrogate1, surrogate2)
    return -((surrogate * mask).sum(dim=-1) / mask.sum(dim=-1)).mean()


class SafeRLHFLambda:
    """``PPOLagTrainer``'s λ: a log-λ parameter, SGD, the clamp and the episode-cost window."""

    def __init__(self, init: float, lr: float, max_value: float, threshold: float, window: int, delay: int) -> None:
        self.log_lambda = torch.nn.Parameter(torch.tensor(math.log(init), dtype=torch.float64))
        self.optimizer = torch.optim.SGD([self.log_lambda], lr=lr)
        self.log_lambda_max, self.threshold, self.delay = math.log(max_value), threshold, delay
        self.episode_costs: deque[float] = deque(maxlen=window)
        self.global_step = 0

    def step(self, costs: list[float]) -> float:
        self.episode_costs.extend(costs)
        episode_cost = torch.tensor(list(self.episode_costs), dtype=torch.float64).mean()
        if self.global_step >= self.delay:
            lambda_loss = -(episode_cost - self.threshold) * self.log_lambda.exp()
            self.optimizer.zero_grad()
            lambda_loss.backward()
            self.optimizer.step()
            with torch.no_grad():
                self.log_lambda.clamp_(max=self.log_lambda_max)
        self.global_step += 1
        return float(self.log_lambda.detach().exp())


def _advantages(batch, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shape = batch.policy_logps.shape
    mask = batch.mask.float()
    return {
        "reward": torch.randn(shape, generator=generator) * mask,
        "cost": torch.randn(shape, generator=generator) * mask,
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_safe_rlhf_matches_ppo_lag_actor_loss(seed: int) -> None:
    objective = SafeRLHF(SafeRLHFConfig(cost_bound=0.1, lambda_init=0.7))
    batch = make_random_rollout_batch(seed=seed, with_truncated=False)
    advantages = _advantages(batch, seed + 10)
    costs = torch.rand(batch.num_completions, generator=torch.Generator().manual_seed(seed))
    combined = objective.combine_advantages(advantages, batch.mask, costs=costs)
    # λ moved once, on these costs (log update from 0.7), before combining
    multiplier = math.exp(math.log(0.7) + 0.1 * 0.7 * (float(costs.double().mean()) - 0.1))
    assert objective.lagrange_multiplier == pytest.approx(multiplier, rel=1e-6)
    policy = batch.policy_logps.detach().clone().requires_grad_(True)
    ours = objective.loss(replace(batch, advantages=combined, policy_logps=policy))
    ours.loss.backward()
    reference_policy = batch.policy_logps.detach().clone().requires_grad_(True)
    expected = safe_rlhf_actor_loss(
        reference_policy,
        batch.sampling_logps,
        advantages["reward"],
        advantages["cost"],
        batch.mask.float(),
        multiplier,
    )
    expected.backward()
    torch.testing.assert_close(ours.loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(policy.grad, reference_policy.grad, rtol=1e-5, atol=1e-7)
    metrics = ours.metrics
    assert float(metrics["lagrange/lambda"]) == pytest.approx(multiplier, rel=1e-6)
    assert float(metrics["cost/over_bound_fraction"]) == pytest.approx(float((costs > 0.1).float().mean()))
    assert float(metrics["cost/window_mean"]) == pytest.approx(float(costs.double().mean()), rel=1e-6)


def test_safe_rlhf_matches_ppo_lag_lambda_updates() -> None:
    config = SafeRLHFConfig(cost_bound=0.2, lambda_delay=2, cost_window=20)
    objective = SafeRLHF(config)
    reference = SafeRLHFLambda(1.0, 0.1, 5.0, 0.2, 20, 2)
    batch = make_random_rollout_batch(seed=3)
    advantages = _advantages(batch, 4)
    generator = torch.Generator().manual_seed(5)
    got, expected = [], []
    for step in range(30):
        centre = 0.8 if step < 15 else -0.5  # over the bound, then under it: λ rises, then falls
        costs = (torch.randn(batch.num_completions, generator=generator, dtype=torch.float64) * 0.3 + centre).float()
        objective.combine_advantages(advantages, batch.mask, costs=costs)
        got.append(objective.lagrange_multiplier)
        expected.append(reference.step(costs.tolist()))
    assert got == pytest.approx(expected, rel=1e-9)
    assert got[0] == got[1] == 1.0 and max(got) > 2.0 and got[-1] < max(got)


def test_fixed_lambda_zero_is_ppo_on_the_reward_and_lambda_scales_the_advantage() -> None:
    batch = make_random_rollout_batch(seed=6)
    advantages = _advantages(batch, 7)
    costs = torch.ones(batch.num_completions)
    unconstrained = SafeRLHF(SafeRLHFConfig(lambda_init=0.0, lambda_lr=0.0, lambda_update="projected"))
    torch.testing.assert_close(
        unconstrained.combine_advantages(advantages, batch.mask, costs=costs), advantages["reward"]
    )
    assert unconstrained.lagrange_multiplier == 0.0
    fixed = SafeRLHF(SafeRLHFConfig(lambda_init=3.0, lambda_lr=0.0))
    combined = fixed.combine_advantages(advantages, batch.mask, costs=costs)
    torch.testing.assert_close(combined, (advantages["reward"] - 3.0 * advantages["cost"]) / 4.0)


def test_state_dict_resumes_lambda_and_window() -> None:
    batch = make_random_rollout_batch(seed=8)
    advantages = _advantages(batch, 9)
    steps = [torch.full((batch.num_completions,), value) for value in (0.9, 0.4, 1.2, -0.3, 0.6)]
    straight = SafeRLHF(SafeRLHFConfig(cost_window=10))
    expected = []
    for costs in steps:
        straight.combine_advantages(advantages, batch.mask, costs=costs)
        expected.append(straight.lagrange_multiplier)
    first = SafeRLHF(SafeRLHFConfig(cost_window=10))
    for costs in steps[:2]:
        first.combine_advantages(advantages, batch.mask, costs=costs)
    state = first.state_dict()
    assert set(state) == {"beta", "lagrange"}
    resumed = SafeRLHF(SafeRLHFConfig(cost_window=10))
    resumed.load_state_dict(state)
    got = []
    for costs in steps[2:]:
        resumed.combine_advantages(advantages, batch.mask, costs=costs)
        got.append(resumed.lagrange_multiplier)
    assert got == expected[2:]


def test_registered_with_two_critics_and_costs() -> None:
    registry = Registry.from_environment(third_party=False)
    assert registry.get("usage", "safe_rlhf") is SafeRLHF
    assert SafeRLHF.uses_costs and SafeRLHF.needs_critic and SafeRLHF.value_heads == ("reward", "cost")


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"lambda_update": "dual"}, "lambda_update"),
        ({"lambda_init": 0.0}, "lambda_init"),  # log λ needs λ > 0
        ({"lambda_max": 0.5}, "lambda_max"),
        ({"cost_window": 0}, "cost_window"),
        ({"cost_bound": math.nan}, "cost_bound"),
    ],
)
def test_bad_options_name_the_field(options: dict, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        SafeRLHFConfig(**options)
    assert caught.value.field == field and caught.value.method == "safe_rlhf"

"""PPO's policy and value losses against the papers' formulas in plain torch, per token with Python loops.

- policy: Schulman et al. 2017 (https://arxiv.org/abs/1707.06347), Eq. 7 and the entropy bonus of
  Eq. 9, a token mean over the step; ε_high (DAPO's clip-higher) and the dual clip (Ye et al. 2020);
- value: Ziegler et al. 2019's clipped value loss ½·max((V − G)², (V_old + clip(V − V_old, ±ε_v) − G)²),
  token mean, times the value coefficient; loss and gradient w.r.t. the values.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from prefcore.errors import ConfigError
from prefcore.registry import Registry
from prefcore.rollout import RolloutBatch
from prefcore.testing import assert_matches_reference
from prefcore.testing import make_random_rollout_batch


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.from_environment(third_party=False)


def _surrogate(ratio, advantage, low, high, dual):
    loss = -torch.min(ratio * advantage, ratio.clamp(1 - low, 1 + high) * advantage)
    if dual is not None and advantage < 0:
        loss = torch.min(loss, -dual * advantage)
    return loss


def schulman_ppo_loss(
    batch: RolloutBatch, low: float = 0.2, high: float = 0.2, dual: float | None = None, entropy_coef: float = 0.0
) -> torch.Tensor:
    """Token mean over the step of −min(ρ·A, clip(ρ, 1 − ε_low, 1 + ε_high)·A) − c_H·H_t."""
    total, tokens = torch.zeros((), dtype=torch.float64), 0
    for i in range(batch.num_completions):
        for t in range(batch.mask.shape[1]):
            if not batch.mask[i, t]:
                continue
            ratio = torch.exp(batch.policy_logps[i, t] - batch.sampling_logps[i, t])
            loss = _surrogate(ratio, batch.advantages[i, t], low, high, dual)
            if entropy_coef:
                loss = loss - entropy_coef * batch.entropy[i, t]
            total, tokens = total + loss, tokens + 1
    return total / tokens


def test_ppo_matches_schulman_et_al(registry: Registry) -> None:
    batch = make_random_rollout_batch(seed=31, per_token_advantages=True, off_policy=0.3)
    assert_matches_reference(registry.create("usage", "ppo"), batch, schulman_ppo_loss, reference_name="PPO Eq. 7")


def test_ppo_with_clip_higher_dual_clip_and_entropy_bonus_matches_schulman_et_al(registry: Registry) -> None:
    batch = make_random_rollout_batch(seed=32, per_token_advantages=True, off_policy=0.5)
    entropy = torch.rand(batch.mask.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    batch = replace(batch, entropy=(entropy * batch.mask).to(batch.policy_logps.dtype))
    options = {"epsilon_high": 0.28, "dual_clip": 3.0, "entropy_coef": 0.01}
    objective = registry.create("usage", "ppo", options)
    assert objective.needs_entropy() and not registry.create("usage", "ppo").needs_entropy()
    assert_matches_reference(
        objective,
        batch,
        lambda b: schulman_ppo_loss(b, 0.2, 0.28, 3.0, 0.01),
        reference_name="PPO Eq. 9 with clip-higher and dual clip",
    )
    # the bonus pushes the entropy up: d loss / d H_t = −c_H / (step tokens)
    live = batch.entropy.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(objective.loss(replace(batch, entropy=live)).loss, live)
    expected = -0.01 * batch.mask.to(grad.dtype) / int(batch.mask.sum())
    torch.testing.assert_close(grad, expected)
    with pytest.raises(ValueError, match="no entropy"):
        objective.loss(replace(batch, entropy=None))


def ziegler_value_loss(values, old, returns, mask, clip: float, coef: float) -> torch.Tensor:
    total, tokens = torch.zeros((), dtype=torch.float64), 0
    for i in range(mask.shape[0]):
        for t in range(mask.shape[1]):
            if mask[i, t]:
                moved = old[i, t] + torch.clamp(values[i, t] - old[i, t], -clip, clip)
                total = total + 0.5 * torch.max((values[i, t] - returns[i, t]) ** 2, (moved - returns[i, t]) ** 2)
                tokens += 1
    return coef * total / tokens


@pytest.mark.parametrize("options", [{}, {"value_clip": 0.5, "vf_coef": 1.0}, {"mask_truncated": True}])
def test_ppo_value_loss_matches_ziegler_et_al(registry: Registry, options: dict) -> None:
    batch = make_random_rollout_batch(seed=33, per_token_advantages=True, dtype=torch.float64)
    generator = torch.Generator().manual_seed(4)
    old = torch.randn(batch.mask.shape, generator=generator, dtype=torch.float64)
    returns = torch.randn(batch.mask.shape, generator=generator, dtype=torch.float64)
    values = (old + 0.4 * torch.randn(batch.mask.shape, generator=generator, dtype=torch.float64)).requires_grad_(True)
    batch = replace(batch, extras={"old_values/reward": old, "returns/reward": returns})
    objective = registry.create("usage", "ppo", options)
    output = objective.value_loss({"reward": values}, batch)
    mask = batch.mask & ~batch.truncated[:, None] if options.get("mask_truncated") else batch.mask
    reference_values = values.detach().clone().requires_grad_(True)
    clip, coef = options.get("value_clip", 0.2), options.get("vf_coef", 0.1)
    expected = ziegler_value_loss(reference_values, old, returns, mask, clip, coef)
    torch.testing.assert_close(output.loss, expected)
    (grad,) = torch.autograd.grad(output.loss, values)
    (expected_grad,) = torch.autograd.grad(expected, reference_values)
    torch.testing.assert_close(grad, expected_grad)
    assert {"value/loss", "value/clip_fraction", "value/explained_variance"} <= set(output.metrics)


def test_ppo_value_loss_sums_its_heads(registry: Registry) -> None:
    batch = make_random_rollout_batch(seed=34, dtype=torch.float64)
    shape = batch.mask.shape
    values = {"reward": torch.zeros(shape, dtype=torch.float64), "cost": torch.ones(shape, dtype=torch.float64)}
    extras = {
        f"{kind}/{head}": torch.full(shape, 0.5, dtype=torch.float64)
        for kind in ("old_values", "returns")
        for head in values
    }
    output = registry.create("usage", "ppo", {"vf_coef": 1.0}).value_loss(values, replace(batch, extras=extras))
    torch.testing.assert_close(output.loss, torch.tensor(0.25, dtype=torch.float64))  # ½·0.25 per head
    assert {"value/loss", "value_cost/loss"} <= set(output.metrics)


def test_ppo_options_are_checked(registry: Registry) -> None:
    for options in ({"critic": "elsewhere"}, {"lam": 1.5}, {"gamma": -0.1}, {"vf_coef": 0}, {"critic_warmup": -1}):
        with pytest.raises(ConfigError):
            registry.create("usage", "ppo", options)
    with pytest.raises(ConfigError, match="gamma"):
        registry.create("usage", "ppo", {"gama": 0.9})
    objective = registry.create("usage", "ppo")
    assert objective.needs_critic and objective.estimator() == "ppo_gae"
    assert objective.estimator_options() == {"gamma": 1.0, "lam": 0.95, "whiten_advantages": True}

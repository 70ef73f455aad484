"""prefcore.critic against plain references: GAE by a Python loop, the value loss by the formula, masked whitening."""

from __future__ import annotations

import math

import pytest
import torch

from prefcore.advantages import ADVANTAGE_ESTIMATORS
from prefcore.advantages import estimate_advantages
from prefcore.critic import clipped_value_loss
from prefcore.critic import explained_variance
from prefcore.critic import gae_estimator
from prefcore.critic import generalized_advantage_estimation
from prefcore.critic import token_rewards
from prefcore.critic import whiten

# three ragged rows: 4, 2 and 1 real tokens out of T = 4
LENGTHS = (4, 2, 1)
REWARDS = [[0.1, -0.2, 0.3, 1.0], [0.5, -1.0], [2.0]]
VALUES = [[0.4, 0.2, -0.1, 0.7], [0.3, 0.9], [-0.5]]


def _pad(rows: list[list[float]], width: int = 4, fill: float = 9.0) -> torch.Tensor:
    """Rows padded with a junk value that must never leak into the result."""
    return torch.tensor([row + [fill] * (width - len(row)) for row in rows], dtype=torch.float64)


def _mask() -> torch.Tensor:
    return torch.tensor([[t < n for t in range(4)] for n in LENGTHS])


def _gae_loop(rewards: list[float], values: list[float], gamma: float, lam: float) -> tuple[list[float], list[float]]:
    """The textbook backward recursion over one episode; the value after the last step is 0."""
    advantages = [0.0] * len(rewards)
    following = 0.0
    for t in reversed(range(len(rewards))):
        next_value = values[t + 1] if t + 1 < len(rewards) else 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        following = delta + gamma * lam * following
        advantages[t] = following
    return advantages, [a + v for a, v in zip(advantages, values, strict=True)]


@pytest.mark.parametrize(("gamma", "lam"), [(1.0, 1.0), (1.0, 0.95), (0.9, 0.5), (0.99, 0.0)])
def test_gae_matches_a_python_loop_on_ragged_rows(gamma: float, lam: float) -> None:
    advantages, returns = generalized_advantage_estimation(_pad(REWARDS), _pad(VALUES), _mask(), gamma, lam)
    for row, (rewards, values) in enumerate(zip(REWARDS, VALUES, strict=True)):
        expected_a, expected_g = _gae_loop(rewards, values, gamma, lam)
        n = len(rewards)
        torch.testing.assert_close(advantages[row, :n], torch.tensor(expected_a, dtype=torch.float64))
        torch.testing.assert_close(returns[row, :n], torch.tensor(expected_g, dtype=torch.float64))
        assert bool((advantages[row, n:] == 0).all()) and bool((returns[row, n:] == 0).all())


def test_gae_with_lambda_one_is_the_return_minus_the_value() -> None:
    """λ = 1: A_t = Σ γ^l r_{t+l} − V_t (Monte Carlo), so the returns do not depend on the values."""
    mask = _mask()
    _, returns = generalized_advantage_estimation(_pad(REWARDS), _pad(VALUES), mask, 0.9, 1.0)
    _, zero_value_returns = generalized_advantage_estimation(_pad(REWARDS), torch.zeros(3, 4), mask, 0.9, 1.0)
    torch.testing.assert_close(returns, zero_value_returns)
    first = sum(0.9**t * r for t, r in enumerate(REWARDS[0]))
    assert float(returns[0, 0]) == pytest.approx(first)


def test_token_rewards_put_minus_beta_kl_on_every_token_and_the_score_on_the_last() -> None:
    mask = _mask()
    kl = _pad([[0.1, 0.2, 0.3, 0.4], [0.5, 0.6], [0.7]])
    scores = torch.tensor([1.0, -2.0, 3.0])
    rewards = token_rewards(scores, kl, mask, beta=0.5)
    expected = [[-0.05, -0.1, -0.15, -0.2 + 1.0], [-0.25, -0.3 - 2.0], [-0.35 + 3.0]]
    for row, values in enumerate(expected):
        torch.testing.assert_close(rewards[row, : len(values)], torch.tensor(values, dtype=torch.float32))
        assert bool((rewards[row, len(values) :] == 0).all())
    cost = token_rewards(scores, kl, mask, beta=-0.5)  # a cost: +β·kl
    assert float(cost[0, 0]) == pytest.approx(0.05)
    torch.testing.assert_close(token_rewards(scores, None, mask, 0.5).sum(-1), scores)


def _value_loss_reference(values, old, returns, mask, clip):
    """Ziegler et al.'s formula written term by term, a token-mean over the mask."""
    total, count, clipped = 0.0, 0, 0
    for v, o, g, m in zip(values.flatten(), old.flatten(), returns.flatten(), mask.flatten(), strict=True):
        if not m:
            continue
        unclipped = (v - g) ** 2
        moved = o + torch.clamp(v - o, -clip, clip)
        other = (moved - g) ** 2
        total = total + 0.5 * torch.maximum(unclipped, other)
        count += 1
        clipped += int(other > unclipped)
    return total / count, clipped / count


def test_clipped_value_loss_and_its_gradient_match_the_formula() -> None:
    generator = torch.Generator().manual_seed(0)
    mask = _mask()
    old = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    returns = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    values = (old + 0.5 * torch.randn(3, 4, generator=generator, dtype=torch.float64)).requires_grad_(True)
    loss, metrics = clipped_value_loss(values, old, returns, mask, 0.2)
    reference_values = values.detach().clone().requires_grad_(True)
    reference, fraction = _value_loss_reference(reference_values, old, returns, mask, 0.2)
    torch.testing.assert_close(loss.double(), reference)
    (grad,) = torch.autograd.grad(loss, values)
    (reference_grad,) = torch.autograd.grad(reference, reference_values)
    torch.testing.assert_close(grad.double(), reference_grad)
    assert bool((grad[~mask] == 0).all())
    assert float(metrics["value/clip_fraction"]) == pytest.approx(fraction)
    assert 0 < fraction < 1  # both branches are exercised


def test_value_loss_without_clip_and_per_sequence() -> None:
    mask = _mask()
    values, returns = _pad(VALUES, fill=0.0), _pad(REWARDS, fill=0.0)
    loss, _ = clipped_value_loss(values, values, returns, mask, None)
    squares = 0.5 * (values - returns) ** 2
    torch.testing.assert_close(loss.double(), squares[mask].mean())
    per_row, _ = clipped_value_loss(values, values, returns, mask, None, aggregation="sequence_mean")
    rows = torch.stack([squares[row, :n].mean() for row, n in enumerate(LENGTHS)])
    torch.testing.assert_close(per_row.double(), rows.mean())
    # gradient accumulation: two halves with the step's token count add up to the whole
    first, _ = clipped_value_loss(values[:1], values[:1], returns[:1], mask[:1], None, num_tokens=7)
    second, _ = clipped_value_loss(values[1:], values[1:], returns[1:], mask[1:], None, num_tokens=7)
    torch.testing.assert_close(first + second, loss)
    with pytest.raises(ValueError, match="aggregation"):
        clipped_value_loss(values, values, returns, mask, None, aggregation="dr_grpo")


def test_explained_variance() -> None:
    mask = _mask()
    returns = _pad(REWARDS, fill=0.0)
    assert float(explained_variance(returns, returns, mask)) == pytest.approx(1.0)
    constant = torch.full_like(returns, 0.3)
    assert float(explained_variance(constant, returns, mask)) == pytest.approx(0.0, abs=1e-6)


def test_whitening_uses_only_the_masked_entries() -> None:
    mask = _mask()
    values = _pad(REWARDS, fill=1e6)  # padding far off: must not move the statistics
    real = torch.tensor([value for row in REWARDS for value in row], dtype=torch.float64)
    mean, std = real.mean(), real.std(correction=0)
    whitened = whiten(values, mask)
    torch.testing.assert_close(whitened[mask], (real - mean) / std)
    assert bool((whitened[~mask] == 0).all())
    kept = whiten(values, mask, shift_mean=False)  # TRL whiten_rewards: the mean is put back
    torch.testing.assert_close(kept[mask], (real - mean) / std + mean)
    assert bool((kept[~mask] == 0).all())


def test_gae_is_a_builtin_advantage_estimator() -> None:
    mask = _mask()
    scores = torch.tensor([1.0, 0.0, -1.0])
    groups = torch.tensor([0, 0, 1])
    values = _pad(VALUES, fill=0.0).float()
    assert ADVANTAGE_ESTIMATORS["ppo_gae"] is not None
    result = estimate_advantages("ppo_gae", scores, groups, mask, values=values, gamma=0.9, lam=0.8)
    direct = gae_estimator(scores, groups, mask, values=values, gamma=0.9, lam=0.8)
    torch.testing.assert_close(result.advantages, direct.advantages)
    raw, _ = generalized_advantage_estimation(token_rewards(scores, None, mask, 0.0), values, mask, 0.9, 0.8)
    torch.testing.assert_close(direct.advantages, whiten(raw, mask))
    assert math.isclose(float(direct.advantages[mask].mean()), 0.0, abs_tol=1e-6)

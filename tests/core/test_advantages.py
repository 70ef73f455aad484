"""Advantage estimators against plain-Python loops, hand values and TRL's GRPO/RLOO advantage code."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from prefcore.advantages import ADVANTAGE_ESTIMATORS
from prefcore.advantages import AdvantageResult
from prefcore.advantages import dynamic_sampling_filter
from prefcore.advantages import estimate_advantages
from prefcore.advantages import group_normalized
from prefcore.advantages import leave_one_out
from prefcore.advantages import masked_whiten
from prefcore.advantages import reinforce_pp
from prefcore.advantages import return_to_go
from prefcore.errors import ConfigError

# Three prompts × three completions, prompt-major; group 7 is constant (a zero-variance group),
# group ids are not 0..P−1 on purpose (the engine's ids need not be contiguous).
REWARDS = [1.0, 0.0, 0.5, 2.0, 2.0, 2.0, -1.0, 3.0, 0.0]
GROUPS = [4, 4, 4, 7, 7, 7, 9, 9, 9]
# Completion lengths 1..4 with right padding: masks of different lengths, one of length 1.
LENGTHS = [3, 1, 4, 2, 4, 3, 4, 2, 1]
T = 4


def tensors() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    mask = torch.tensor([[position < length for position in range(T)] for length in LENGTHS])
    return torch.tensor(REWARDS), torch.tensor(GROUPS), mask


def by_group(values: list[float], groups: list[int]) -> dict[int, list[float]]:
    table: dict[int, list[float]] = {}
    for value, group in zip(values, groups, strict=True):
        table.setdefault(group, []).append(value)
    return table


def broadcast(sequence: list[float]) -> torch.Tensor:
    return torch.tensor(
        [
            [value if position < length else 0.0 for position in range(T)]
            for value, length in zip(sequence, LENGTHS, strict=True)
        ]
    )


# ----------------------------------------------------------------------------------------------
# Plain-Python references
# ----------------------------------------------------------------------------------------------


def grpo_loop(rewards: list[float], groups: list[int], scale: str, epsilon: float = 1e-4) -> list[float]:
    """DeepSeekMath §4.1.2 by hand: (R − mean_g)/(std_g + ε), std with Bessel's correction."""
    table = by_group(rewards, groups)
    batch_std = statistics.stdev(rewards)
    out = []
    for reward, group in zip(rewards, groups, strict=True):
        members = table[group]
        if max(members) == min(members):
            out.append(0.0)
            continue
        centred = reward - statistics.fmean(members)
        std = {"group": statistics.stdev(members) if len(members) > 1 else 0.0, "batch": batch_std}.get(scale)
        out.append(centred if std is None else centred / (std + epsilon))
    return out


def rloo_loop(rewards: list[float], groups: list[int]) -> list[float]:
    """Ahmadian et al. 2024, Eq. 7: R_i minus the mean of the others of its prompt."""
    out = []
    for i, (reward, group) in enumerate(zip(rewards, groups, strict=True)):
        others = [r for j, (r, g) in enumerate(zip(rewards, groups, strict=True)) if g == group and j != i]
        out.append(reward - sum(others) / len(others))
    return out


def reinforce_pp_loop(
    rewards: list[float], kl: list[list[float]], beta: float, gamma: float = 1.0
) -> list[list[float]]:
    """Hu 2025, Eq. 5–7 by hand: r_t = −β·kl_t (+R at the last token), G_t, then whitening over tokens."""
    returns = []
    for reward, length, row in zip(rewards, LENGTHS, kl, strict=True):
        token_rewards = [-beta * row[t] for t in range(length)]
        token_rewards[-1] += reward
        g, row_returns = 0.0, [0.0] * length
        for t in reversed(range(length)):
            g = token_rewards[t] + gamma * g
            row_returns[t] = g
        returns.append(row_returns)
    flat = [value for row in returns for value in row]
    mean = sum(flat) / len(flat)
    std = math.sqrt(sum((value - mean) ** 2 for value in flat) / len(flat))
    return [[(row[t] - mean) / std if t < len(row) else 0.0 for t in range(T)] for row in returns]


# ----------------------------------------------------------------------------------------------
# TRL's advantage code (trl 1.16, trl/trainer/grpo_trainer.py `_generate_and_score_completions`,
# "sum_then_normalize" branch, and trl/trainer/rloo_trainer.py), run on the same rewards
# ----------------------------------------------------------------------------------------------


def trl_grpo_advantages(rewards: torch.Tensor, num_generations: int, scale_rewards: str) -> torch.Tensor:
    from trl.trainer.utils import nanstd

    mean_grouped_rewards = torch.nanmean(rewards.view(-1, num_generations), dim=1)
    mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(num_generations, dim=0)
    if scale_rewards in ["group", "none"]:
        std_rewards = nanstd(rewards.view(-1, num_generations), dim=1)
        std_rewards = std_rewards.repeat_interleave(num_generations, dim=0)
    else:
        std_rewards = nanstd(rewards).expand_as(rewards)
    advantages = rewards - mean_grouped_rewards
    if scale_rewards != "none":
        advantages = advantages / (std_rewards + 1e-4)
    return advantages


def trl_rloo_advantages(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    grouped_rewards = rewards.view(-1, num_generations)
    baselines = (grouped_rewards.sum(1, keepdim=True) - grouped_rewards) / (num_generations - 1)
    return rewards - baselines.view(-1)


# ----------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_group_normalized_matches_the_loop_on_masked_tokens(scale: str) -> None:
    rewards, groups, mask = tensors()
    result = group_normalized(rewards, groups, mask, scale=scale)
    torch.testing.assert_close(result.advantages, broadcast(grpo_loop(REWARDS, GROUPS, scale)))
    assert result.metrics["advantages/zero_std_groups"] == 1.0
    assert result.metrics["advantages/groups"] == 3.0


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_group_normalized_equals_trl_grpo(scale: str) -> None:
    torch.manual_seed(0)
    rewards = torch.randn(8 * 4)
    groups = torch.arange(8).repeat_interleave(4)
    mask = torch.ones(32, 5, dtype=torch.bool)
    ours = group_normalized(rewards, groups, mask, scale=scale).advantages[:, 0]
    torch.testing.assert_close(ours, trl_grpo_advantages(rewards, 4, scale))


def test_zero_variance_group_is_exactly_zero_and_counted() -> None:
    # 0.1 three times: the mean is not exactly 0.1 in float32, yet the advantage must be exactly 0
    rewards = torch.tensor([0.1, 0.1, 0.1, 1.0, 0.0, 1.0])
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    mask = torch.ones(6, 2, dtype=torch.bool)
    for name in ("group", "rloo", "reinforce_pp_baseline"):
        result = estimate_advantages(name, rewards, groups, mask)
        assert torch.equal(result.advantages[:3], torch.zeros(3, 2)), name
        assert result.metrics["advantages/zero_std_groups"] == 1.0, name
    # TRL's is_std_zero counts the same group
    assert (trl_grpo_advantages(rewards, 3, "group")[:3].abs() < 1e-4).all()


def test_single_sample_groups_give_zero_grpo_advantage_and_refuse_rloo() -> None:
    rewards = torch.tensor([1.0, 2.0, 0.0])
    groups = torch.tensor([0, 1, 1])
    mask = torch.ones(3, 1, dtype=torch.bool)
    result = group_normalized(rewards, groups, mask)
    assert result.advantages[0, 0] == 0.0 and result.metrics["advantages/zero_std_groups"] == 1.0
    with pytest.raises(ValueError, match=r"RLOO needs at least 2 completions per prompt.*group 0 has 1"):
        leave_one_out(rewards, groups, mask)


def test_rloo_matches_the_loop_and_trl() -> None:
    rewards, groups, mask = tensors()
    result = leave_one_out(rewards, groups, mask)
    torch.testing.assert_close(result.advantages, broadcast(rloo_loop(REWARDS, GROUPS)))
    torch.testing.assert_close(result.advantages[:, 0], trl_rloo_advantages(rewards, 3))  # column 0: every row
    # ties inside a group: the tied completions share one advantage
    tied = leave_one_out(
        torch.tensor([1.0, 1.0, 0.0]), torch.zeros(3, dtype=torch.long), torch.ones(3, 1, dtype=torch.bool)
    )
    assert tied.advantages[0, 0] == tied.advantages[1, 0] == pytest.approx(0.5)
    assert tied.advantages[2, 0] == pytest.approx(-1.0)


def test_rloo_normalize_follows_trl() -> None:
    torch.manual_seed(1)
    rewards = torch.randn(12)
    groups = torch.arange(3).repeat_interleave(4)
    ours = leave_one_out(rewards, groups, torch.ones(12, 1, dtype=torch.bool), normalize=True).advantages[:, 0]
    raw = trl_rloo_advantages(rewards, 4)
    expected = (raw - raw.mean()) / (raw.std() + 1e-4)
    torch.testing.assert_close(ours, expected)


def test_reinforce_baseline_is_reward_minus_batch_mean() -> None:
    rewards, groups, mask = tensors()
    result = estimate_advantages("reinforce", rewards, groups, mask)
    mean = sum(REWARDS) / len(REWARDS)
    torch.testing.assert_close(result.advantages, broadcast([reward - mean for reward in REWARDS]))


@pytest.mark.parametrize(("beta", "gamma"), [(0.0, 1.0), (0.05, 1.0), (0.1, 0.9)])
def test_reinforce_pp_matches_the_loop(beta: float, gamma: float) -> None:
    rewards, groups, mask = tensors()
    torch.manual_seed(2)
    kl = torch.randn(len(REWARDS), T) * mask  # padding values must not leak in
    kl_padded = kl + (~mask) * 1e6
    result = reinforce_pp(rewards, groups, mask, kl=kl_padded, kl_coef=beta, gamma=gamma)
    expected = torch.tensor(reinforce_pp_loop(REWARDS, kl.tolist(), beta, gamma))
    torch.testing.assert_close(result.advantages, expected)
    assert result.advantages[mask].mean().abs() < 1e-6


def test_reinforce_pp_baseline_divides_group_centred_returns_by_the_global_std() -> None:
    rewards, groups, mask = tensors()
    result = estimate_advantages("reinforce_pp_baseline", rewards, groups, mask)
    table = by_group(REWARDS, GROUPS)
    centred = [r - statistics.fmean(table[g]) for r, g in zip(REWARDS, GROUPS, strict=True)]
    tokens = [value for value, length in zip(centred, LENGTHS, strict=True) for _ in range(length)]
    std = statistics.pstdev(tokens)
    torch.testing.assert_close(result.advantages, broadcast([value / std for value in centred]))
    centered = estimate_advantages("reinforce_pp_baseline", rewards, groups, mask, center=True)
    mean = statistics.fmean(tokens)
    torch.testing.assert_close(centered.advantages, broadcast([(value - mean) / std for value in centred]))


def test_remax_subtracts_the_greedy_reward() -> None:
    rewards, groups, mask = tensors()
    greedy = torch.tensor([0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0])
    result = estimate_advantages("remax", rewards, groups, mask, baselines=greedy)
    torch.testing.assert_close(
        result.advantages, broadcast([r - b for r, b in zip(REWARDS, greedy.tolist(), strict=True)])
    )


def test_masked_whiten_and_return_to_go_by_hand() -> None:
    values = torch.tensor([[1.0, 3.0, 99.0], [5.0, 99.0, 99.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    # masked entries 1, 3, 5: mean 3, population variance 8/3
    expected = torch.tensor([[-2.0, 0.0, 0.0], [2.0, 0.0, 0.0]]) / math.sqrt(8 / 3)
    torch.testing.assert_close(masked_whiten(values, mask), expected)
    returns = return_to_go(torch.tensor([[1.0, 2.0, 7.0]]), torch.tensor([[True, True, False]]), gamma=0.5)
    torch.testing.assert_close(returns, torch.tensor([[2.0, 2.0, 0.0]]))


def test_dynamic_sampling_keeps_groups_with_different_rewards() -> None:
    rewards, groups, _ = tensors()
    kept = dynamic_sampling_filter(rewards, groups)
    assert kept.kept_groups == (4, 9) and kept.dropped_groups == (7,)
    assert kept.keep.tolist() == [True] * 3 + [False] * 3 + [True] * 3


def test_estimate_advantages_names_errors() -> None:
    rewards, groups, mask = tensors()
    with pytest.raises(
        ConfigError, match=r"No advantage estimator named 'grop'. Available: group, .*Did you mean 'group'"
    ):
        estimate_advantages("grop", rewards, groups, mask)
    with pytest.raises(ConfigError, match=r"'group' takes no option 'kl_coef'. Accepted: scale, epsilon"):
        estimate_advantages("group", rewards, groups, mask, kl_coef=0.1)
    with pytest.raises(ConfigError, match="scale must be one of group, batch, none"):
        estimate_advantages("group", rewards, groups, mask, scale="prompt")
    with pytest.raises(ValueError, match="reward of completion 2 is nan"):
        estimate_advantages(
            "group",
            torch.tensor([1.0, 0.0, math.nan]),
            torch.zeros(3, dtype=torch.long),
            torch.ones(3, 1, dtype=torch.bool),
        )
    with pytest.raises(ValueError, match="kl_coef > 0 needs kl"):
        estimate_advantages("reinforce_pp", rewards, groups, mask, kl_coef=0.1)


def test_a_plugin_estimator_is_a_function() -> None:
    def best_minus_rest(
        rewards: torch.Tensor, group_ids: torch.Tensor, mask: torch.Tensor, /, *, bonus: float = 1.0
    ) -> AdvantageResult:
        return AdvantageResult((rewards + bonus).unsqueeze(1).expand(mask.shape).clone(), {"advantages/custom": 1.0})

    rewards, groups, mask = tensors()
    result = estimate_advantages(best_minus_rest, rewards, groups, mask, bonus=2.0)
    torch.testing.assert_close(result.advantages, broadcast([r + 2.0 for r in REWARDS]))  # zeroed where masked
    with pytest.raises(ConfigError, match=r"takes no option 'scale'. Accepted: bonus"):
        estimate_advantages(best_minus_rest, rewards, groups, mask, scale="group")


def test_every_builtin_estimator_runs_through_the_entry_point() -> None:
    rewards, groups, mask = tensors()
    extra = {"remax": {"baselines": torch.zeros(len(REWARDS))}}
    for name in ADVANTAGE_ESTIMATORS:
        result = estimate_advantages(name, rewards, groups, mask, **extra.get(name, {}))
        assert result.advantages.shape == mask.shape and bool((result.advantages[~mask] == 0).all()), name

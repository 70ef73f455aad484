"""implicit_dpo: Bradley–Terry on β-scaled log-ratios is DPO's loss (Rafailov et al. 2023 Eq. 7).

Rewards are built from per-token log-probs exactly as ``ImplicitRewardModel`` builds them,
r = β·(Σ log π − Σ log π_ref), and the loss and its gradient with respect to the policy's
log-probs are compared with the paper's formula and with prefcore's ``dpo`` usage objective.
"""

from __future__ import annotations

import pytest
import torch

from prefcore.batch import LogProbBatch
from prefcore.errors import ConfigError
from prefcore.plugins.preference_models.implicit_dpo import ImplicitDPO
from prefcore.plugins.preference_models.implicit_dpo import ImplicitDPOConfig
from prefcore.plugins.usage.dpo import DPO
from prefcore.plugins.usage.dpo import DPOConfig
from prefcore.preference import RewardBatch


def rafailov_dpo_loss(policy_logps: torch.Tensor, batch: LogProbBatch, beta: float) -> torch.Tensor:
    """Eq. 7: −log σ(β[(log π(y_c) − log π_ref(y_c)) − (log π(y_r) − log π_ref(y_r))]), mean over pairs."""
    assert batch.ref_logps is not None and batch.chosen_index is not None and batch.rejected_index is not None
    ratios = ((policy_logps - batch.ref_logps.to(policy_logps.dtype)) * batch.mask).sum(-1)
    margins = beta * (ratios[batch.chosen_index] - ratios[batch.rejected_index])
    return -torch.log(1 / (1 + torch.exp(-margins))).mean()


def _log_prob_batch(pairs: int, length: int, seed: int) -> LogProbBatch:
    generator = torch.Generator().manual_seed(seed)
    mask = torch.rand(2 * pairs, length, generator=generator) < 0.8
    mask[:, 0] = True
    return LogProbBatch(
        policy_logps=(-torch.rand(2 * pairs, length, generator=generator) * 3).requires_grad_(),
        mask=mask,
        ref_logps=-torch.rand(2 * pairs, length, generator=generator) * 3,
        chosen_index=torch.arange(0, 2 * pairs, 2),
        rejected_index=torch.arange(1, 2 * pairs, 2),
    )


def implicit_rewards(policy_logps: torch.Tensor, batch: LogProbBatch, beta: float) -> torch.Tensor:
    """``[S, 1]`` r = β·(Σ log π − Σ log π_ref) over completion tokens, as ``ImplicitRewardModel.forward``."""
    assert batch.ref_logps is not None
    return (beta * ((policy_logps * batch.mask).sum(-1) - (batch.ref_logps * batch.mask).sum(-1))).unsqueeze(-1)


@pytest.mark.parametrize("beta", [0.1, 0.5])
@pytest.mark.parametrize(("pairs", "length"), [(1, 3), (8, 21)])
def test_implicit_dpo_matches_rafailov_formula_and_the_dpo_objective(beta, pairs, length) -> None:
    batch = _log_prob_batch(pairs, length, seed=pairs * 100 + length)
    upstream = torch.rand(()) + 0.5
    objective = ImplicitDPO(ImplicitDPOConfig(beta=beta))
    reward_batch = RewardBatch(
        implicit_rewards(batch.policy_logps, batch, beta),
        chosen_index=batch.chosen_index,
        rejected_index=batch.rejected_index,
    )
    ours = objective.loss(reward_batch).loss
    [our_grad] = torch.autograd.grad(ours * upstream, batch.policy_logps)

    doubles = batch.policy_logps.detach().double().requires_grad_()
    paper = rafailov_dpo_loss(doubles, batch, beta)
    [paper_grad] = torch.autograd.grad(paper * upstream.double(), doubles)
    torch.testing.assert_close(ours.double(), paper.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(our_grad.double(), paper_grad, rtol=1e-5, atol=1e-6)

    dpo = DPO(DPOConfig(beta=beta)).loss(batch).loss
    [dpo_grad] = torch.autograd.grad(dpo * upstream, batch.policy_logps)
    torch.testing.assert_close(ours, dpo, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(our_grad, dpo_grad, rtol=1e-5, atol=1e-6)


def test_the_trainer_builds_an_implicit_reward_network() -> None:
    objective = ImplicitDPO(ImplicitDPOConfig(beta=0.3))
    assert objective.implicit_reward_beta() == 0.3
    assert objective.num_heads() == 1 and objective.aspects is None and objective.scoring_rule() is None


@pytest.mark.parametrize("value", [0.0, -0.1, float("inf")])
def test_config_refuses_bad_beta(value) -> None:
    with pytest.raises(ConfigError) as excinfo:
        ImplicitDPOConfig(beta=value)
    assert (excinfo.value.method, excinfo.value.field) == ("implicit_dpo", "beta")

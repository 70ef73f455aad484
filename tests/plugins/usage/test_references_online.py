"""The online objectives against independent references on identical tensors: values and gradients.

- ``grpo``, ``gspo``: TRL 1.16's ``GRPOTrainer._compute_loss``, called unbound on a minimal
  fake trainer (``_FakeGRPOTrainer``: the attributes the method reads, a stand-in for the
  model forward that returns our policy log-probs, a one-process accelerator). Loss types
  ``grpo``, ``bnpo``, ``dr_grpo`` and ``dapo`` (also over two accumulated micro-batches),
  ``importance_sampling_level="sequence"`` for GSPO, β·k3 in the loss, truncation masking.
- ``rloo``: TRL 1.16's ``RLOOTrainer._compute_loss`` the same way.
- ``reinforce``, ``remax``, ``reinforce_pp``: the papers' formulas in plain torch, written
  here per completion with Python loops, independent of ``prefcore.online_objectives``.
- the KL estimators and the adaptive KL controller: Schulman's formulas and a transcription
  of Ziegler et al.'s ``AdaptiveKLController`` (openai/lm-human-preferences).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from prefcore.online_objectives import AdaptiveKLController
from prefcore.online_objectives import kl_estimate
from prefcore.registry import Registry
from prefcore.rollout import RolloutBatch
from prefcore.testing import assert_matches_reference
from prefcore.testing import make_random_rollout_batch
from prefcore.testing import split_rollout_batch

grpo_trainer = pytest.importorskip("trl.trainer.grpo_trainer")
rloo_trainer = pytest.importorskip("trl.trainer.rloo_trainer")


# ----------------------------------------------------------------------------------------------
# TRL through a fake trainer
# ----------------------------------------------------------------------------------------------


class _OneProcess:
    num_processes = 1
    sync_gradients = True

    @staticmethod
    def gather(tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    gather_for_metrics = gather

    @staticmethod
    def reduce(tensor: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        return tensor


def _fake_trainer(policy_logps: torch.Tensor, **settings: object) -> SimpleNamespace:
    """What ``_compute_loss`` reads from ``self``; the model forward returns ``policy_logps``."""
    return SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *args, **kwargs: (
            policy_logps,
            torch.zeros_like(policy_logps.detach()),
            None,
        ),
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        use_vllm=False,
        _entropy_bonus_enabled=False,
        aux_loss_enabled=False,
        model=SimpleNamespace(training=True),
        accelerator=_OneProcess(),
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        current_gradient_accumulation_steps=1,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        **settings,
    )


def _trl_inputs(batch: RolloutBatch, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    count, width = batch.policy_logps.shape
    return {
        "prompt_ids": torch.zeros(count, 1, dtype=torch.long),
        "prompt_mask": torch.ones(count, 1, dtype=torch.long),
        "completion_ids": torch.zeros(count, width, dtype=torch.long),
        "completion_mask": mask.to(batch.policy_logps.dtype),
        "advantages": batch.advantages[:, 0],  # TRL's advantages are one per completion
    }


def trl_grpo_loss(
    batch: RolloutBatch,
    *,
    loss_type: str,
    beta: float = 0.0,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    importance_sampling_level: str = "token",
    mask_truncated: bool = False,
    num_items_in_batch: int | None = None,
    accumulation_steps: int = 1,
) -> torch.Tensor:
    """TRL 1.16 ``GRPOTrainer._compute_loss`` on the batch's tensors (``mask_truncated``: TRL zeroes their mask)."""
    mask = batch.mask & ~batch.truncated[:, None] if mask_truncated else batch.mask
    inputs = _trl_inputs(batch, mask)
    inputs["old_per_token_logps"] = batch.sampling_logps
    if beta:
        inputs["ref_per_token_logps"] = batch.ref_logps
    inputs["num_items_in_batch"] = torch.tensor(float(mask.sum() if num_items_in_batch is None else num_items_in_batch))
    trainer = _fake_trainer(
        batch.policy_logps,
        beta=beta,
        loss_type=loss_type,
        epsilon_low=epsilon,
        epsilon_high=epsilon if epsilon_high is None else epsilon_high,
        importance_sampling_level=importance_sampling_level,
        max_completion_length=batch.max_completion_length,
    )
    trainer.current_gradient_accumulation_steps = accumulation_steps
    trainer.args.steps_per_generation = accumulation_steps
    return grpo_trainer.GRPOTrainer._compute_loss(trainer, None, inputs)


def trl_rloo_loss(batch: RolloutBatch, *, epsilon: float = 0.2) -> torch.Tensor:
    """TRL 1.16 ``RLOOTrainer._compute_loss`` (sequence ratio of summed log-probs, mean over completions)."""
    inputs = _trl_inputs(batch, batch.mask)
    inputs["old_logps"] = (batch.sampling_logps * batch.mask).sum(1)
    trainer = _fake_trainer(batch.policy_logps, epsilon_low=epsilon, epsilon_high=epsilon)
    return rloo_trainer.RLOOTrainer._compute_loss(trainer, None, inputs)


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.from_environment(third_party=False)


GRPO_CASES = [
    # (TRL loss_type, prefcore aggregation): the four normalisers
    ("grpo", "sequence_mean"),
    ("bnpo", "token_mean"),  # token mean of the micro-batch: num_tokens unset
    ("dr_grpo", "dr_grpo"),
    ("dapo", "token_mean"),
]


@pytest.mark.parametrize(("loss_type", "aggregation"), GRPO_CASES)
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("mask_truncated", [False, True])
def test_grpo_matches_trl(
    registry: Registry, loss_type: str, aggregation: str, beta: float, mask_truncated: bool
) -> None:
    objective = registry.create(
        "usage", "grpo", {"aggregation": aggregation, "beta": beta, "mask_truncated": mask_truncated}
    )
    batch = make_random_rollout_batch(num_prompts=3, samples_per_prompt=4, seed=11)
    assert_matches_reference(
        objective,
        batch,
        lambda b: trl_grpo_loss(b, loss_type=loss_type, beta=beta, mask_truncated=mask_truncated),
        reference_name=f"TRL GRPO loss_type={loss_type!r}",
    )


def test_grpo_clip_higher_matches_trl(registry: Registry) -> None:
    """DAPO's decoupled clip: ε_low = 0.2, ε_high = 0.28."""
    objective = registry.create("usage", "grpo", {"epsilon_high": 0.28})
    batch = make_random_rollout_batch(seed=12, off_policy=0.5)
    assert_matches_reference(
        objective, batch, lambda b: trl_grpo_loss(b, loss_type="dapo", epsilon_high=0.28), reference_name="TRL DAPO"
    )


def test_grpo_dapo_over_accumulated_micro_batches_matches_trl(registry: Registry) -> None:
    """TRL's ``dapo`` divides each micro-batch by the generation batch's tokens; prefcore by ``num_tokens``."""
    objective = registry.create("usage", "grpo", {"beta": 0.04})
    batch = make_random_rollout_batch(num_prompts=4, samples_per_prompt=3, seed=13)
    total = int(batch.mask.sum())
    for part in split_rollout_batch(batch, [range(0, 5), range(5, 12)]):
        assert part.num_tokens == total
        assert_matches_reference(
            objective,
            part,
            lambda b: trl_grpo_loss(b, loss_type="dapo", beta=0.04, num_items_in_batch=total, accumulation_steps=2),
            reference_name="TRL GRPO dapo, 2 accumulation steps",
        )


@pytest.mark.parametrize(("loss_type", "aggregation"), [("grpo", "sequence_mean"), ("dapo", "token_mean")])
@pytest.mark.parametrize(("epsilon", "epsilon_high"), [(3e-4, 4e-4), (0.2, 0.2)])
def test_gspo_matches_trl(
    registry: Registry, loss_type: str, aggregation: str, epsilon: float, epsilon_high: float
) -> None:
    """TRL's ``importance_sampling_level="sequence"``; ε = 0.2 as well, so that few sequences are clipped."""
    objective = registry.create(
        "usage", "gspo", {"aggregation": aggregation, "epsilon": epsilon, "epsilon_high": epsilon_high, "beta": 0.04}
    )
    batch = make_random_rollout_batch(seed=14, off_policy=0.05)
    assert_matches_reference(
        objective,
        batch,
        lambda b: trl_grpo_loss(
            b,
            loss_type=loss_type,
            beta=0.04,
            epsilon=epsilon,
            epsilon_high=epsilon_high,
            importance_sampling_level="sequence",
        ),
        reference_name="TRL GRPO importance_sampling_level='sequence'",
    )


def test_rloo_matches_trl(registry: Registry) -> None:
    objective = registry.create("usage", "rloo")
    for seed in (15, 16):
        batch = make_random_rollout_batch(num_prompts=4, samples_per_prompt=2, seed=seed, off_policy=0.1)
        assert_matches_reference(objective, batch, trl_rloo_loss, reference_name="TRL RLOOTrainer._compute_loss")


# ----------------------------------------------------------------------------------------------
# The papers' formulas, per completion
# ----------------------------------------------------------------------------------------------


def _rows(batch: RolloutBatch) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per completion: its policy log-probs, sampling log-probs and advantages over its own tokens."""
    return [
        (
            batch.policy_logps[i][batch.mask[i]],
            batch.sampling_logps[i][batch.mask[i]],
            batch.advantages[i][batch.mask[i]],
        )
        for i in range(batch.num_completions)
    ]


def williams_reinforce_loss(batch: RolloutBatch) -> torch.Tensor:
    """Williams 1992: −(1/N) Σ_i (R_i − b)·log π(y_i), log π(y_i) = Σ_t log π(y_t)."""
    terms = [-advantages[0] * logps.sum() for logps, _, advantages in _rows(batch)]
    return torch.stack(terms).sum() / batch.num_completions


def test_reinforce_matches_williams(registry: Registry) -> None:
    batch = make_random_rollout_batch(seed=17)
    rewards = batch.rewards
    advantages = (rewards - rewards.mean())[:, None] * batch.mask  # the batch-mean baseline
    batch = replace(batch, advantages=advantages.to(batch.policy_logps.dtype))
    assert_matches_reference(
        registry.create("usage", "reinforce"), batch, williams_reinforce_loss, reference_name="Williams 1992"
    )


def test_remax_matches_li_et_al(registry: Registry) -> None:
    """ReMax, Algorithm 1: −(1/N) Σ_i (r(y_i) − r(ȳ)) Σ_t log π(y_t), ȳ the greedy completion of the prompt."""
    batch = make_random_rollout_batch(seed=18)
    greedy_rewards = torch.tensor([0.3, -0.2, 1.1])[batch.group_ids]
    advantages = (batch.rewards - greedy_rewards)[:, None] * batch.mask
    batch = replace(batch, advantages=advantages.to(batch.policy_logps.dtype))

    def remax_loss(b: RolloutBatch) -> torch.Tensor:
        terms = [
            -(b.rewards[i] - greedy_rewards[i]) * b.policy_logps[i][b.mask[i]].sum() for i in range(b.num_completions)
        ]
        return torch.stack(terms).sum() / b.num_completions

    assert_matches_reference(registry.create("usage", "remax"), batch, remax_loss, reference_name="ReMax Algorithm 1")


def reinforce_pp_loss(batch: RolloutBatch, epsilon: float = 0.2, beta: float = 0.0) -> torch.Tensor:
    """REINFORCE++ §3 / OpenRLHF ``PolicyLoss``: token mean of −min(ρ·A, clip(ρ)·A), + β·k3+ per token."""
    total, tokens = torch.zeros((), dtype=torch.float64), 0
    for i, (logps, old, advantages) in enumerate(_rows(batch)):
        for t in range(len(logps)):
            ratio = torch.exp(logps[t] - old[t])
            surrogate = -torch.min(ratio * advantages[t], ratio.clamp(1 - epsilon, 1 + epsilon) * advantages[t])
            if beta:
                d = logps[t] - batch.ref_logps[i][batch.mask[i]][t]
                k3 = torch.exp(-d) - 1 + d
                k2 = 0.5 * d * d
                surrogate = surrogate + beta * (k2 + (k3 - k2).detach())  # k3's value, k2's gradient
            total, tokens = total + surrogate, tokens + 1
    return total / tokens


def test_reinforce_pp_matches_hu_et_al(registry: Registry) -> None:
    batch = make_random_rollout_batch(seed=19, per_token_advantages=True)  # returns-to-go differ per token
    assert_matches_reference(registry.create("usage", "reinforce_pp"), batch, reinforce_pp_loss)


def test_reinforce_pp_baseline_with_k3_plus_in_the_loss_matches_hu_et_al(registry: Registry) -> None:
    objective = registry.create(
        "usage", "reinforce_pp", {"baseline": True, "kl_location": "loss", "kl_estimator": "k3+", "beta": 0.05}
    )
    assert objective.estimator() == "reinforce_pp_baseline"
    batch = make_random_rollout_batch(seed=20, per_token_advantages=True)
    assert_matches_reference(objective, batch, lambda b: reinforce_pp_loss(b, beta=0.05))


# ----------------------------------------------------------------------------------------------
# KL estimators and the adaptive controller
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3", "k3+"])
def test_kl_estimators_match_schulman(estimator: str) -> None:
    """k1 = d, k2 = d²/2, k3 = e^{−d} − 1 + d; k3+ has k3's value and k2's gradient d."""
    batch = make_random_rollout_batch(seed=21, dtype=torch.float64)
    policy = batch.policy_logps.clone().requires_grad_(True)
    values = kl_estimate(policy, batch.ref_logps, batch.mask, estimator)
    (grad,) = torch.autograd.grad(values.sum(), policy)
    d = (batch.policy_logps - batch.ref_logps) * batch.mask
    expected_value = {"k1": d, "k2": d * d / 2, "k3": torch.exp(-d) - 1 + d, "k3+": torch.exp(-d) - 1 + d}[estimator]
    expected_grad = {"k1": torch.ones_like(d), "k2": d, "k3": 1 - torch.exp(-d), "k3+": d}[estimator] * batch.mask
    torch.testing.assert_close(values, expected_value * batch.mask)
    torch.testing.assert_close(grad, expected_grad)


def _ziegler_controller(beta: float, target: float, horizon: float, kls: list[float], n: int) -> list[float]:
    """openai/lm-human-preferences ``AdaptiveKLController.update``, transcribed."""
    values = []
    for current in kls:
        proportional_error = min(max(current / target - 1, -0.2), 0.2)
        beta *= 1 + proportional_error * n / horizon
        values.append(beta)
    return values


def test_adaptive_kl_controller_matches_ziegler_et_al() -> None:
    kls = [0.01, 0.5, 0.12, 0.08, 3.0, 0.1]
    controller = AdaptiveKLController(0.05, target=0.1, horizon=10000)
    got = [controller.update(kl, 256) for kl in kls]
    for value, expected in zip(got, _ziegler_controller(0.05, 0.1, 10000, kls, 256), strict=True):
        assert math.isclose(value, expected, rel_tol=1e-12)

"""GRPO: group relative policy optimisation, PPO's clipped ratio with a group-normalised advantage.

Shao et al. 2024, "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open
Language Models", https://arxiv.org/abs/2402.03300, Eq. 3 (TRL ``GRPOTrainer``).

    A_i    = (R_i − mean(R_group)) / std(R_group)       (scale_rewards="none": no division)
    ρ_t    = π_θ(y_t | x, y_<t) / π_old(y_t | x, y_<t)
    L_t    = −min(ρ_t·A_i, clip(ρ_t, 1 − ε_low, 1 + ε_high)·A_i) + β·k3_t
    loss   = aggregate(L_t)

R_i: reward of the i-th of the G completions of a prompt; π_old: the policy that sampled
them (several updates per batch of rollouts keep ρ near 1); k3_t = e^{−d} − 1 + d with
d = log π_θ − log π_ref, the per-token KL estimate. ``aggregation`` picks the normaliser:
``token_mean`` over the step's tokens (DAPO, https://arxiv.org/abs/2503.14476; TRL's default
``"dapo"``), ``sequence_mean`` (the paper's, TRL ``"grpo"``), ``dr_grpo`` with N·L_max
(Dr. GRPO, https://arxiv.org/abs/2503.20783, which also sets scale_rewards="none"), or
``token_sum``. DAPO's clip-higher is ``epsilon_high`` = 0.28. Defaults are TRL 1.16's:
ε = 0.2, β = 0 (no reference model), std scaling per group, truncated completions kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prefcore import hookimpl
from prefcore.advantages import SCALES
from prefcore.lazy import lazy_module
from prefcore.methods import UsageObjective
from prefcore.methods import option
from prefcore.online_objectives import ClippedOnlineConfig
from prefcore.online_objectives import TokenObjective
from prefcore.online_objectives import check_choice
from prefcore.online_objectives import check_clip_options
from prefcore.online_objectives import check_online_options
from prefcore.online_objectives import clipped_token_loss
from prefcore.rollout import RolloutBatch

torch = lazy_module("torch")


@dataclass(frozen=True)
class GRPOConfig(ClippedOnlineConfig):
    scale_rewards: str = option(
        "group", doc="GRPO estimator's scale: divide by the reward std of the group, the batch, or none (Dr. GRPO)"
    )

    def __post_init__(self) -> None:
        check_online_options("grpo", self)
        check_clip_options("grpo", self)
        check_choice("grpo", "scale_rewards", self.scale_rewards, SCALES)


class GRPO(TokenObjective):
    """GRPO: clipped importance ratio on group-normalised advantages, β·KL in the loss."""

    name = "grpo"
    config_cls = GRPOConfig
    advantage_estimator = "group"
    needs_reference = False

    def estimator_options(self) -> dict[str, Any]:
        return {"scale": self.config.scale_rewards}

    def token_loss(self, batch: RolloutBatch, mask: torch.Tensor) -> tuple[torch.Tensor, Mapping[str, Any]]:
        return clipped_token_loss(batch, mask, self.config)


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [GRPO]

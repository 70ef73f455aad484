"""GSPO: group sequence policy optimisation, GRPO with one importance ratio per sequence.

Zheng et al. 2025, "Group Sequence Policy Optimization", https://arxiv.org/abs/2507.18071,
Eq. 5-7 and the GSPO-token form of Eq. 13 (TRL ``importance_sampling_level="sequence"``).

    s_i    = exp( (1/|y_i|) Σ_t [log π_θ(y_t) − log π_old(y_t)] )
    L_i    = −min(s_i·A_i, clip(s_i, 1 − ε_low, 1 + ε_high)·A_i)
    loss   = (1/G) Σ_i L_i

A_i: the group-normalised advantage (as GRPO); s_i: the length-normalised sequence
likelihood ratio, so the clip acts on whole responses and its range is tiny
(ε_low = 3e-4, ε_high = 4e-4, the paper's). Computed in the GSPO-token form, value s_i
and gradient s_i·∇log π(y_t) on each token, which equals the sequence form for a
sequence advantage and keeps per-token advantages per token. β = 0 by default, as in the
paper; a KL term, when set, is added per token as in GRPO.
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
class GSPOConfig(ClippedOnlineConfig):
    epsilon: float = option(3e-4, doc="ε_low: the sequence ratio is clipped below at 1 − ε (the paper's 3e-4)")
    epsilon_high: float | None = option(4e-4, doc="ε_high: clipped above at 1 + ε_high (the paper's 4e-4)")
    aggregation: str = option("sequence_mean", doc="sequence_mean (the paper's), token_mean, dr_grpo or token_sum")
    scale_rewards: str = option(
        "group", doc="GRPO estimator's scale: divide by the reward std of the group, the batch, or none (Dr. GRPO)"
    )

    def __post_init__(self) -> None:
        check_online_options("gspo", self)
        check_clip_options("gspo", self)
        check_choice("gspo", "scale_rewards", self.scale_rewards, SCALES)


class GSPO(TokenObjective):
    """GSPO: GRPO with a length-normalised sequence importance ratio, clipped per sequence."""

    name = "gspo"
    config_cls = GSPOConfig
    advantage_estimator = "group"
    needs_reference = False

    def estimator_options(self) -> dict[str, Any]:
        return {"scale": self.config.scale_rewards}

    def token_loss(self, batch: RolloutBatch, mask: torch.Tensor) -> tuple[torch.Tensor, Mapping[str, Any]]:
        return clipped_token_loss(batch, mask, self.config, sequence_ratio=True)


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [GSPO]

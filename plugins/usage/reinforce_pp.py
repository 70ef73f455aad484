"""REINFORCE++: PPO's clipped surrogate on globally whitened returns, the KL penalty in the reward.

Hu et al. 2025, "REINFORCE++: An Efficient RLHF Algorithm with Robustness to Both Prompt and
Reward Models", https://arxiv.org/abs/2501.03262, §3 (OpenRLHF ``advantage_estimator``
``reinforce`` and ``reinforce_baseline``).

    r_t    = −β·k1_t + [t = |y|]·R            k1_t = log π_old(y_t) − log π_ref(y_t)
    G_t    = Σ_{s ≥ t} r_s                    (return-to-go)
    A_t    = (G_t − mean(G)) / std(G)         (over every token of the global batch)
    L_t    = −min(ρ_t·A_t, clip(ρ_t, 1 − ε_low, 1 + ε_high)·A_t),   ρ_t = π_θ(y_t)/π_old(y_t)
    loss   = (1/Σ m) Σ_t m_t·L_t

The engine builds r_t from ``reward_kl()`` and the estimator ``reinforce_pp`` computes
A_t; this objective is the clipped loss. ``baseline=True`` is REINFORCE++-baseline: the
estimator ``reinforce_pp_baseline`` subtracts the group mean reward before the global
whitening; OpenRLHF recommends it for verifiable rewards with the KL in the loss
(``kl_location = "loss"``, ``kl_estimator = "k3+"``). Defaults are OpenRLHF's: β = 0.01 with
k1 in the reward, ε = 0.2.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prefcore import hookimpl
from prefcore.lazy import lazy_module
from prefcore.methods import UsageObjective
from prefcore.methods import option
from prefcore.online_objectives import ClippedOnlineConfig
from prefcore.online_objectives import TokenObjective
from prefcore.online_objectives import check_clip_options
from prefcore.online_objectives import check_online_options
from prefcore.online_objectives import clipped_token_loss
from prefcore.rollout import RolloutBatch

torch = lazy_module("torch")


@dataclass(frozen=True)
class ReinforcePPConfig(ClippedOnlineConfig):
    beta: float = option(0.01, doc="β: weight of the KL penalty to the reference (OpenRLHF's 0.01)")
    kl_estimator: str = option("k1", doc="per-token KL estimator: k1 (in the reward, OpenRLHF's), k2, k3 or k3+")
    kl_location: str = option("reward", doc="where the KL penalty goes: reward (−β·KL per token), loss or none")
    baseline: bool = option(False, doc="REINFORCE++-baseline: subtract the group mean reward before whitening")

    def __post_init__(self) -> None:
        check_online_options("reinforce_pp", self)
        check_clip_options("reinforce_pp", self)


class ReinforcePP(TokenObjective):
    """REINFORCE++: clipped surrogate on globally whitened returns-to-go, KL in the reward."""

    name = "reinforce_pp"
    config_cls = ReinforcePPConfig
    advantage_estimator = "reinforce_pp"
    needs_reference = True

    def estimator(self) -> str:
        return "reinforce_pp_baseline" if self.config.baseline else self.advantage_estimator

    def token_loss(self, batch: RolloutBatch, mask: torch.Tensor) -> tuple[torch.Tensor, Mapping[str, Any]]:
        return clipped_token_loss(batch, mask, self.config)


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [ReinforcePP]

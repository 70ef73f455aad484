"""REINFORCE with a baseline: the score-function policy gradient, the batch's mean reward as baseline.

Williams 1992, "Simple Statistical Gradient-Following Algorithms for Connectionist
Reinforcement Learning", https://doi.org/10.1007/BF00992696 (the baseline b of §4); in RLHF
as the vanilla policy gradient of Ahmadian et al. 2024, https://arxiv.org/abs/2402.14740.

    A_i    = R_i − b,   b = mean of the batch's rewards
    loss   = −(1/N) Σ_i A_i Σ_t log π_θ(y_t | x, y_<t)

R_i: reward of completion i (with −β·k1 per token when the KL is in the reward); N: the
step's completions. The gradient −A_i·∇log π_θ(y_i) is unbiased on-policy: one update per
batch of rollouts (for several, use ``rloo`` or ``grpo``, which carry the importance ratio).
``aggregation = "token_sum"`` is the formula above; the others divide by tokens instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prefcore import hookimpl
from prefcore.lazy import lazy_module
from prefcore.methods import UsageObjective
from prefcore.methods import option
from prefcore.online_objectives import OnlineConfig
from prefcore.online_objectives import TokenObjective
from prefcore.online_objectives import check_aggregation
from prefcore.online_objectives import check_online_options
from prefcore.online_objectives import score_function_loss
from prefcore.rollout import RolloutBatch

torch = lazy_module("torch")


@dataclass(frozen=True)
class ReinforceConfig(OnlineConfig):
    kl_estimator: str = option("k1", doc="per-token KL estimator: k1 (in the reward, as RLHF does), k2, k3 or k3+")
    kl_location: str = option("reward", doc="where the KL penalty goes: reward (−β·KL per token), loss or none")
    aggregation: str = option("token_sum", doc="token_sum (Σ_t per completion, the formula), token_mean, ...")

    def __post_init__(self) -> None:
        check_online_options("reinforce", self)
        check_aggregation("reinforce", self.aggregation)


class Reinforce(TokenObjective):
    """REINFORCE with a baseline: −(R − mean R)·log π(y), on-policy."""

    name = "reinforce"
    config_cls = ReinforceConfig
    advantage_estimator = "reinforce"
    needs_reference = False

    def token_loss(self, batch: RolloutBatch, mask: torch.Tensor) -> tuple[torch.Tensor, Mapping[str, Any]]:
        return score_function_loss(batch, mask), {}


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [Reinforce]

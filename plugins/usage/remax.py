"""ReMax: REINFORCE with the reward of the greedy completion as the baseline.

Li et al. 2024, "ReMax: A Simple, Effective, and Efficient Reinforcement Learning Method for
Aligning Large Language Models", https://arxiv.org/abs/2310.10505, Algorithm 1 (verl ``remax``).

    A_i    = R(x, y_i) − R(x, ȳ),   ȳ = greedy decoding of π_θ for the prompt x
    loss   = −(1/N) Σ_i A_i Σ_t log π_θ(y_t | x, y_<t)

The estimator ``remax`` needs the greedy completion's reward per prompt (the engine decodes
it and shares it as ``batch.extras["baseline"]``); the loss is REINFORCE's score function, so
one update per batch of rollouts. Needs no value network and no second sample per prompt.
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
class ReMaxConfig(OnlineConfig):
    kl_estimator: str = option("k1", doc="per-token KL estimator: k1 (in the reward, as RLHF does), k2, k3 or k3+")
    kl_location: str = option("reward", doc="where the KL penalty goes: reward (−β·KL per token), loss or none")
    aggregation: str = option("token_sum", doc="token_sum (Σ_t per completion, the formula), token_mean, ...")

    def __post_init__(self) -> None:
        check_online_options("remax", self)
        check_aggregation("remax", self.aggregation)


class ReMax(TokenObjective):
    """ReMax: REINFORCE with the greedy completion's reward as the baseline."""

    name = "remax"
    config_cls = ReMaxConfig
    advantage_estimator = "remax"
    needs_reference = False

    def token_loss(self, batch: RolloutBatch, mask: torch.Tensor) -> tuple[torch.Tensor, Mapping[str, Any]]:
        return score_function_loss(batch, mask), {}


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [ReMax]

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

from dataclasses import dataclass

from prefcore import hookimpl
from prefcore.methods import UsageObjective
from prefcore.online_objectives import ScoreFunctionConfig
from prefcore.online_objectives import ScoreFunctionObjective
from prefcore.online_objectives import check_aggregation
from prefcore.online_objectives import check_online_options


@dataclass(frozen=True)
class ReMaxConfig(ScoreFunctionConfig):
    def __post_init__(self) -> None:
        check_online_options("remax", self)
        check_aggregation("remax", self.aggregation)


class ReMax(ScoreFunctionObjective):
    """ReMax: REINFORCE with the greedy completion's reward as the baseline."""

    name = "remax"
    config_cls = ReMaxConfig
    advantage_estimator = "remax"


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [ReMax]

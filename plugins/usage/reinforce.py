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

from dataclasses import dataclass

from prefcore import hookimpl
from prefcore.methods import UsageObjective
from prefcore.online_objectives import ScoreFunctionConfig
from prefcore.online_objectives import ScoreFunctionObjective
from prefcore.online_objectives import check_aggregation
from prefcore.online_objectives import check_online_options


@dataclass(frozen=True)
class ReinforceConfig(ScoreFunctionConfig):
    def __post_init__(self) -> None:
        check_online_options("reinforce", self)
        check_aggregation("reinforce", self.aggregation)


class Reinforce(ScoreFunctionObjective):
    """REINFORCE with a baseline: −(R − mean R)·log π(y), on-policy."""

    name = "reinforce"
    config_cls = ReinforceConfig
    advantage_estimator = "reinforce"


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [Reinforce]

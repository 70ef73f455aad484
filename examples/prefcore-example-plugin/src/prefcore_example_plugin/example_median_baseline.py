"""Online objective ``example_median_baseline``: REINFORCE with each prompt's median reward as baseline.

A policy gradient on the policy's own samples (Williams 1992, "Simple Statistical
Gradient-Following Algorithms", https://doi.org/10.1007/BF00992696), whose baseline is the
median of the rewards of the G completions of the same prompt, so that one outlying reward
(a reward model's glitch) moves the others' advantages less than a mean baseline would:

    A_i  = R_i − median_g(R)          g: the completions sharing i's prompt
    loss = Σ_i Σ_t −A_i·log π(y_i,t) / Σ_i |y_i|

π: the policy; y_i,t: token t of completion i; R_i: its reward; |y_i|: its length in tokens
(the loss is a mean over the step's completion tokens). The advantage estimator is this
file's own function, so a new estimator is one function beside its objective.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefcore import hookimpl
from prefcore.advantages import AdvantageResult
from prefcore.lazy import lazy_module
from prefcore.methods import UsageObjective
from prefcore.methods import option
from prefcore.online_objectives import OnlineConfig
from prefcore.online_objectives import TokenObjective
from prefcore.online_objectives import check_aggregation
from prefcore.online_objectives import check_online_options
from prefcore.online_objectives import score_function_loss
from prefcore.rollout import RolloutBatch

torch = lazy_module("torch")  # torch loads when a loss is first computed


def median_baseline(rewards: torch.Tensor, group_ids: torch.Tensor, mask: torch.Tensor, /) -> AdvantageResult:
    """``[S, T]`` advantages R_i − median of i's group, the same on every token of completion i."""
    rewards = rewards.float()
    baselines = torch.zeros_like(rewards)
    for group in torch.unique(group_ids):
        members = group_ids == group
        baselines[members] = rewards[members].quantile(0.5)  # the mean of the two middle values when G is even
    advantages = (rewards - baselines).unsqueeze(1) * mask.to(rewards.dtype)
    return AdvantageResult(advantages, {"advantages/baseline_mean": float(baselines.mean())})


@dataclass(frozen=True)
class MedianBaselineConfig(OnlineConfig):
    aggregation: str = option("token_mean", doc="token_mean (the formula), sequence_mean, dr_grpo or token_sum")

    def __post_init__(self) -> None:
        check_online_options("example_median_baseline", self)
        check_aggregation("example_median_baseline", self.aggregation)


class MedianBaseline(TokenObjective):
    """REINFORCE with the group's median reward as baseline, on-policy."""

    name = "example_median_baseline"
    config_cls = MedianBaselineConfig
    needs_reference = False

    def estimator(self):  # type: ignore[override]
        return median_baseline  # a function of prefcore.advantages' estimator shape, not a built-in's name

    def token_loss(self, batch: RolloutBatch, mask: torch.Tensor) -> tuple[torch.Tensor, dict]:
        return score_function_loss(batch, mask), {}


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [MedianBaseline]

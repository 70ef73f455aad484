"""SimPO: simple preference optimisation, a reference-free length-normalised reward with a margin.

Meng et al. 2024, "SimPO: Simple Preference Optimization with a Reference-Free Reward",
https://arxiv.org/abs/2405.14734, Eq. 6 (TRL ``CPOTrainer`` with ``loss_type="simpo"``).

    r(y) = (β/|y|)·Σ_t log π(y_t | x, y_<t)
    loss = −(1 − ε)·log σ(r(y_w) − r(y_l) − γ) − ε·log σ(γ − r(y_w) + r(y_l))

y_w, y_l: chosen and rejected completion; |y|: number of completion tokens; π: the
policy (no reference model); σ: the logistic function; β: reward scale; γ: target reward
margin; ε: label smoothing. The reward is the average log-prob the policy uses when it
generates, so training and decoding agree and long answers gain nothing. Computed by
``prefcore.kernels.preference_losses.simpo_loss``.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefcore import hookimpl
from prefcore.batch import LogProbBatch
from prefcore.batch import LossOutput
from prefcore.lazy import lazy_module
from prefcore.methods import UsageObjective
from prefcore.methods import check_finite
from prefcore.methods import check_in_range
from prefcore.methods import check_positive
from prefcore.methods import option
from prefcore.objectives import item_weights
from prefcore.objectives import pair_logp_metrics
from prefcore.objectives import reduce_losses
from prefcore.objectives import require_pairs
from prefcore.objectives import reward_metrics

preference_losses = lazy_module("prefcore.kernels.preference_losses")


@dataclass(frozen=True)
class SimPOConfig:
    beta: float = option(2.0, doc="β: scale of the average log-prob reward (the paper tunes 2.0-2.5)")
    gamma: float = option(1.0, doc="γ: target reward margin (the paper's γ/β ≈ 0.5; TRL's simpo_gamma)")
    label_smoothing: float = option(0.0, doc="ε in [0, 0.5): weight of the reversed-label term")

    def __post_init__(self) -> None:
        check_positive("simpo", "beta", self.beta)
        check_finite("simpo", "gamma", self.gamma)
        check_in_range("simpo", "label_smoothing", self.label_smoothing, 0.0, 0.5, closed="[)")


class SimPO(UsageObjective):
    """SimPO: reference-free, length-normalised logistic loss with a target margin."""

    name = "simpo"
    config_cls = SimPOConfig
    data_formats = ("pairwise",)
    needs_reference = False

    def implicit_reward_beta(self) -> float:
        """β of the rewards it reports, β × the mean token log-prob."""
        return self.config.beta

    def loss(self, batch: LogProbBatch) -> LossOutput:
        chosen_index, rejected_index = require_pairs(batch, self.name)
        out = preference_losses.simpo_loss(
            batch.policy_logps,
            batch.mask,
            chosen_index,
            rejected_index,
            beta=self.config.beta,
            gamma=self.config.gamma,
            label_smoothing=self.config.label_smoothing,
        )
        loss = reduce_losses(out.losses, batch, item_weights(batch, out.losses.numel()))
        metrics = {**reward_metrics(out.chosen_rewards, out.rejected_rewards), **pair_logp_metrics(batch, self.name)}
        return LossOutput(loss, metrics)


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [SimPO]

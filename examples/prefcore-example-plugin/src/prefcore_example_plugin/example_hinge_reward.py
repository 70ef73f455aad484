"""Preference model ``example_hinge_reward``: the chosen reward must beat the rejected by a margin m.

The pairwise ranking hinge (Herbrich et al. 2000, "Large Margin Rank Boundaries for Ordinal
Regression"; the calibration loss of SLiC, Zhao et al. 2023, https://arxiv.org/abs/2305.10425,
Eq. 1, applied to rewards):

    loss = max(0, m − (r(x, y_c) − r(x, y_r)))

r: the reward network's scalar output; y_c, y_r: the chosen and rejected completion of a
pair; m: the margin. Unlike Bradley–Terry the loss is exactly 0 once a pair is ranked with
margin m, so pairs already ranked confidently stop pulling the rewards apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefcore import hookimpl
from prefcore.batch import LossOutput
from prefcore.lazy import lazy_module
from prefcore.methods import PreferenceModel
from prefcore.methods import check_positive
from prefcore.methods import option
from prefcore.preference import RewardBatch
from prefcore.preference import item_weights
from prefcore.preference import pair_metrics
from prefcore.preference import pair_rewards
from prefcore.preference import reduce_losses
from prefcore.preference import refuse_ties

F = lazy_module("torch.nn.functional")  # torch loads when a loss is first computed


@dataclass(frozen=True)
class HingeRewardConfig:
    margin: float = option(1.0, doc="m: the reward gap a chosen completion must reach")

    def __post_init__(self) -> None:
        check_positive("example_hinge_reward", "margin", self.margin)


class HingeReward(PreferenceModel):
    """Pairwise ranking hinge: max(0, m − (r_c − r_r))."""

    name = "example_hinge_reward"
    config_cls = HingeRewardConfig
    data_formats = ("pairwise",)

    def loss(self, batch: RewardBatch) -> LossOutput:
        refuse_ties(batch, self.name)
        chosen, rejected = pair_rewards(batch, self.name)
        losses = F.relu(self.config.margin - (chosen - rejected))
        loss = reduce_losses(losses, batch, item_weights(batch, losses.numel(), "pair"))
        return LossOutput(loss, pair_metrics(chosen, rejected))


@hookimpl
def prefcore_register_preference_models() -> list[type[PreferenceModel]]:
    return [HingeReward]

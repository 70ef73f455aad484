"""APO-zero: anchored preference optimisation when the chosen answers beat the model's own.

D'Oosterlinck et al. 2024, "Anchored Preference Optimization and Contrastive Revisions",
https://arxiv.org/abs/2408.06266, Eq. 7 (TRL DPO ``loss_type="apo_zero"``).

    r_w = β·(log π(y_w|x) − log π_ref(y_w|x)),   r_l = β·(log π(y_l|x) − log π_ref(y_l|x))
    loss = (1 − σ(r_w)) + σ(r_l)

y_w, y_l: chosen and rejected completion; π, π_ref: policy and reference (log-probs summed
over completion tokens); σ: the logistic function; β: inverse temperature. Each reward is
anchored at zero: the chosen likelihood goes up and the rejected one down, which suits
data whose chosen answers are better than what the model already produces.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefcore import hookimpl
from prefcore.batch import LogProbBatch
from prefcore.batch import LossOutput
from prefcore.lazy import lazy_module
from prefcore.methods import UsageObjective
from prefcore.methods import option
from prefcore.plugins.usage._common import check_positive
from prefcore.plugins.usage._common import item_weights
from prefcore.plugins.usage._common import pair_logratios
from prefcore.plugins.usage._common import reduce_losses
from prefcore.plugins.usage._common import reward_metrics

torch = lazy_module("torch")


@dataclass(frozen=True)
class ApoZeroConfig:
    beta: float = option(0.1, doc="inverse temperature β of the implicit reward β·log(π/π_ref)")

    def __post_init__(self) -> None:
        check_positive("apo_zero", "beta", self.beta)


class ApoZero(UsageObjective):
    """APO-zero: raise the chosen and lower the rejected likelihood, each anchored at the reference."""

    name = "apo_zero"
    config_cls = ApoZeroConfig
    data_formats = ("pairwise",)
    needs_reference = True

    def loss(self, batch: LogProbBatch) -> LossOutput:
        chosen_logratios, rejected_logratios = pair_logratios(batch, self.name)
        chosen_rewards = self.config.beta * chosen_logratios
        rejected_rewards = self.config.beta * rejected_logratios
        losses = (1 - torch.sigmoid(chosen_rewards)) + torch.sigmoid(rejected_rewards)
        loss = reduce_losses(losses, batch, item_weights(batch, losses.numel()))
        return LossOutput(loss, reward_metrics(chosen_rewards, rejected_rewards))


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [ApoZero]

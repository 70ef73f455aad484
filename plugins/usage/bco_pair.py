"""BCO, pairwise: binary classifier optimisation on each completion's implicit reward.

Jung et al. 2024, "Binary Classifier Optimization for Large Language Model Alignment",
https://arxiv.org/abs/2404.04656 (TRL DPO ``loss_type="bco_pair"``).

    r_w = β·(log π(y_w|x) − log π_ref(y_w|x)),   r_l = β·(log π(y_l|x) − log π_ref(y_l|x))
    loss = −log σ(r_w) − log σ(−r_l)

y_w, y_l: chosen and rejected completion; π, π_ref: policy and reference (log-probs summed
over completion tokens); σ: the logistic function; β: inverse temperature. The implicit
reward is trained as the logit of a classifier "desirable vs not", an upper bound of the
DPO loss that needs no pairing of the two terms.
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

F = lazy_module("torch.nn.functional")


@dataclass(frozen=True)
class BcoPairConfig:
    beta: float = option(0.1, doc="inverse temperature β of the implicit reward β·log(π/π_ref)")

    def __post_init__(self) -> None:
        check_positive("bco_pair", "beta", self.beta)


class BcoPair(UsageObjective):
    """BCO (pairwise): logistic classification of chosen vs rejected by implicit reward."""

    name = "bco_pair"
    config_cls = BcoPairConfig
    data_formats = ("pairwise",)
    needs_reference = True

    def loss(self, batch: LogProbBatch) -> LossOutput:
        chosen_logratios, rejected_logratios = pair_logratios(batch, self.name)
        chosen_rewards = self.config.beta * chosen_logratios
        rejected_rewards = self.config.beta * rejected_logratios
        losses = -F.logsigmoid(chosen_rewards) - F.logsigmoid(-rejected_rewards)
        loss = reduce_losses(losses, batch, item_weights(batch, losses.numel()))
        return LossOutput(loss, reward_metrics(chosen_rewards, rejected_rewards))


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [BcoPair]

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
from prefcore.lazy import lazy_module
from prefcore.methods import UsageObjective
from prefcore.methods import check_positive
from prefcore.methods import option
from prefcore.objectives import PairwiseObjective

torch = lazy_module("torch")
F = lazy_module("torch.nn.functional")


@dataclass(frozen=True)
class BcoPairConfig:
    beta: float = option(0.1, doc="inverse temperature β of the implicit reward β·log(π/π_ref)")

    def __post_init__(self) -> None:
        check_positive("bco_pair", "beta", self.beta)


class BcoPair(PairwiseObjective):
    """BCO (pairwise): logistic classification of chosen vs rejected by implicit reward."""

    name = "bco_pair"
    config_cls = BcoPairConfig

    def pair_loss(
        self, chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, batch: LogProbBatch
    ) -> torch.Tensor:
        chosen_rewards = self.config.beta * chosen_logratios
        rejected_rewards = self.config.beta * rejected_logratios
        return -F.logsigmoid(chosen_rewards) - F.logsigmoid(-rejected_rewards)


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [BcoPair]

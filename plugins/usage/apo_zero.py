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
from prefcore.lazy import lazy_module
from prefcore.methods import UsageObjective
from prefcore.methods import check_positive
from prefcore.methods import option
from prefcore.objectives import PairwiseObjective

torch = lazy_module("torch")


@dataclass(frozen=True)
class ApoZeroConfig:
    beta: float = option(0.1, doc="inverse temperature β of the implicit reward β·log(π/π_ref)")

    def __post_init__(self) -> None:
        check_positive("apo_zero", "beta", self.beta)


class ApoZero(PairwiseObjective):
    """APO-zero: raise the chosen and lower the rejected likelihood, each anchored at the reference."""

    name = "apo_zero"
    config_cls = ApoZeroConfig

    def pair_loss(
        self, chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, batch: LogProbBatch
    ) -> torch.Tensor:
        chosen_rewards = self.config.beta * chosen_logratios
        rejected_rewards = self.config.beta * rejected_logratios
        return (1 - torch.sigmoid(chosen_rewards)) + torch.sigmoid(rejected_rewards)


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [ApoZero]

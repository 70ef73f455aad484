"""APO-down: anchored preference optimisation when the chosen answers are worse than the model's own.

D'Oosterlinck et al. 2024, "Anchored Preference Optimization and Contrastive Revisions",
https://arxiv.org/abs/2408.06266, Eq. 8 (TRL DPO ``loss_type="apo_down"``).

    r_w = β·(log π(y_w|x) − log π_ref(y_w|x)),   r_l = β·(log π(y_l|x) − log π_ref(y_l|x))
    loss = σ(r_w) + (1 − σ(r_w − r_l))

y_w, y_l: chosen and rejected completion; π, π_ref: policy and reference (log-probs summed
over completion tokens); σ: the logistic function; β: inverse temperature. Both
likelihoods go down, the rejected one more: the contrast is learned without imitating
chosen answers that are below the model's current quality.
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
class ApoDownConfig:
    beta: float = option(0.1, doc="inverse temperature β of the implicit reward β·log(π/π_ref)")

    def __post_init__(self) -> None:
        check_positive("apo_down", "beta", self.beta)


class ApoDown(PairwiseObjective):
    """APO-down: lower both likelihoods, the rejected one more than the chosen."""

    name = "apo_down"
    config_cls = ApoDownConfig

    def pair_loss(
        self, chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, batch: LogProbBatch
    ) -> torch.Tensor:
        chosen_rewards = self.config.beta * chosen_logratios
        rejected_rewards = self.config.beta * rejected_logratios
        return torch.sigmoid(chosen_rewards) + (1 - torch.sigmoid(chosen_rewards - rejected_rewards))


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [ApoDown]

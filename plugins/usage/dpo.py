"""DPO: direct preference optimisation, the policy's log-ratio to the reference as an implicit reward.

Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is Secretly a
Reward Model", https://arxiv.org/abs/2305.18290, Eq. 7 (TRL DPO ``loss_type="sigmoid"``).

    h    = [log π(y_w|x) − log π_ref(y_w|x)] − [log π(y_l|x) − log π_ref(y_l|x)]
    loss = −log σ(β·h)

y_w, y_l: chosen and rejected completion of a pair; π, π_ref: policy and reference
(log-probs summed over completion tokens); σ: the logistic function; β: strength of the
implicit KL penalty to the reference. The Bradley–Terry likelihood of the labels under
the implicit reward r(x, y) = β·log(π(y|x)/π_ref(y|x)), computed by
``prefcore.kernels.preference_losses.dpo_loss``.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefcore import hookimpl
from prefcore.batch import LogProbBatch
from prefcore.lazy import lazy_module
from prefcore.methods import UsageObjective
from prefcore.methods import check_positive
from prefcore.methods import option
from prefcore.objectives import PairLosses
from prefcore.objectives import PairwiseObjective
from prefcore.objectives import fused_pair_losses

torch = lazy_module("torch")
F = lazy_module("torch.nn.functional")
preference_losses = lazy_module("prefcore.kernels.preference_losses")


@dataclass(frozen=True)
class DPOConfig:
    beta: float = option(0.1, doc="β: strength of the KL penalty; implicit reward β·log(π/π_ref)")

    def __post_init__(self) -> None:
        check_positive("dpo", "beta", self.beta)


class DPO(PairwiseObjective):
    """DPO: logistic (Bradley–Terry) loss on the implicit reward margin."""

    name = "dpo"
    config_cls = DPOConfig

    def pair_loss(
        self, chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, batch: LogProbBatch
    ) -> torch.Tensor:
        return -F.logsigmoid(self.config.beta * (chosen_logratios - rejected_logratios))

    def fused_pair_loss(self, batch: LogProbBatch) -> PairLosses:
        return fused_pair_losses(batch, self.name, preference_losses.dpo_loss, beta=self.config.beta)


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [DPO]

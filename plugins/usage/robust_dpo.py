"""Robust DPO: an unbiased DPO loss under a known rate of flipped preference labels.

Chowdhury et al. 2024, "Provably Robust DPO: Aligning Language Models with Noisy Feedback",
https://arxiv.org/abs/2403.00409, Eq. 8 (TRL DPO ``loss_type="robust"``).

    h    = β·[(log π(y_w|x) − log π_ref(y_w|x)) − (log π(y_l|x) − log π_ref(y_l|x))]
    loss = [−(1 − ε)·log σ(h) + ε·log σ(−h)] / (1 − 2ε)

y_w, y_l: chosen and rejected completion; π, π_ref: policy and reference (log-probs summed
over completion tokens); σ: the logistic function; β: inverse temperature; ε ∈ [0, 0.5):
the probability that a label is flipped. Where conservative DPO (``cdpo``) averages the
two label directions (biased towards 0.5), this estimator de-biases them: its expectation
under noisy labels equals the DPO loss under clean labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from prefcore import hookimpl
from prefcore.batch import LogProbBatch
from prefcore.batch import LossOutput
from prefcore.methods import UsageObjective
from prefcore.methods import option
from prefcore.plugins.usage._common import check_in_range
from prefcore.plugins.usage._common import check_positive
from prefcore.plugins.usage._common import item_weights
from prefcore.plugins.usage._common import pair_logratios
from prefcore.plugins.usage._common import reduce_losses
from prefcore.plugins.usage._common import reward_metrics


@dataclass(frozen=True)
class RobustDPOConfig:
    beta: float = option(0.1, doc="inverse temperature β of the implicit reward β·log(π/π_ref)")
    flip_rate: float = option(0.1, doc="ε in [0, 0.5): the assumed probability that a preference label is flipped")

    def __post_init__(self) -> None:
        check_positive("robust_dpo", "beta", self.beta)
        check_in_range("robust_dpo", "flip_rate", self.flip_rate, 0.0, 0.5, closed="[)")


class RobustDPO(UsageObjective):
    """Robust DPO: de-biased DPO loss for preference labels flipped with a known rate."""

    name = "robust_dpo"
    config_cls = RobustDPOConfig
    data_formats = ("pairwise",)
    needs_reference = True

    def loss(self, batch: LogProbBatch) -> LossOutput:
        beta, flip_rate = self.config.beta, self.config.flip_rate
        chosen_logratios, rejected_logratios = pair_logratios(batch, self.name)
        logits = beta * (chosen_logratios - rejected_logratios)
        losses = (-(1 - flip_rate) * F.logsigmoid(logits) + flip_rate * F.logsigmoid(-logits)) / (1 - 2 * flip_rate)
        loss = reduce_losses(losses, batch, item_weights(batch, losses.numel()))
        return LossOutput(loss, reward_metrics(beta * chosen_logratios, beta * rejected_logratios))


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [RobustDPO]

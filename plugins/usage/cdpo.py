"""Conservative DPO: DPO with label smoothing for preference labels flipped at a known rate.

Mitchell 2023, "A note on DPO with noisy preferences & relationship to IPO",
https://ericmitchell.ai/cdpo.pdf (the ``label_smoothing`` of earlier TRL DPO releases; TRL 1.16's
``sigmoid`` loss no longer reads it).

    h    = [log π(y_w|x) − log π_ref(y_w|x)] − [log π(y_l|x) − log π_ref(y_l|x)]
    loss = −(1 − ε)·log σ(β·h) − ε·log σ(−β·h)

y_w, y_l: chosen and rejected completion; π, π_ref: policy and reference (log-probs summed
over completion tokens); σ: the logistic function; β: strength of the KL penalty; ε ∈
(0, 0.5): the assumed probability that a label is flipped. The target probability of
"chosen ≻ rejected" is 1 − ε instead of 1, so the implicit reward margin stops growing
at β·h = log((1 − ε)/ε) instead of diverging. Computed by
``prefcore.kernels.preference_losses.dpo_loss`` with ``label_smoothing=ε``.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefcore import hookimpl
from prefcore.batch import LogProbBatch
from prefcore.batch import LossOutput
from prefcore.kernels.preference_losses import dpo_loss
from prefcore.methods import UsageObjective
from prefcore.methods import option
from prefcore.plugins.usage._common import check_in_range
from prefcore.plugins.usage._common import check_positive
from prefcore.plugins.usage._common import item_weights
from prefcore.plugins.usage._common import reduce_losses
from prefcore.plugins.usage._common import reference_kwargs
from prefcore.plugins.usage._common import require_pairs
from prefcore.plugins.usage._common import reward_metrics


@dataclass(frozen=True)
class CDPOConfig:
    beta: float = option(0.1, doc="β: strength of the KL penalty; implicit reward β·log(π/π_ref)")
    label_smoothing: float = option(0.1, doc="ε in (0, 0.5): the assumed probability that a label is flipped")

    def __post_init__(self) -> None:
        check_positive("cdpo", "beta", self.beta)
        check_in_range("cdpo", "label_smoothing", self.label_smoothing, 0.0, 0.5, closed="()")


class CDPO(UsageObjective):
    """Conservative DPO: DPO with label smoothing against noisy preferences."""

    name = "cdpo"
    config_cls = CDPOConfig
    data_formats = ("pairwise",)
    needs_reference = True

    def loss(self, batch: LogProbBatch) -> LossOutput:
        chosen_index, rejected_index = require_pairs(batch, self.name)
        out = dpo_loss(
            batch.policy_logps,
            batch.mask,
            chosen_index,
            rejected_index,
            **reference_kwargs(batch, self.name),
            beta=self.config.beta,
            label_smoothing=self.config.label_smoothing,
        )
        loss = reduce_losses(out.losses, batch, item_weights(batch, out.losses.numel()))
        return LossOutput(loss, reward_metrics(out.chosen_rewards, out.rejected_rewards))


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [CDPO]

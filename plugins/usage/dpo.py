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
from prefcore.batch import LossOutput
from prefcore.lazy import lazy_module
from prefcore.methods import UsageObjective
from prefcore.methods import option
from prefcore.plugins.usage._common import check_positive
from prefcore.plugins.usage._common import item_weights
from prefcore.plugins.usage._common import reduce_losses
from prefcore.plugins.usage._common import reference_kwargs
from prefcore.plugins.usage._common import require_pairs
from prefcore.plugins.usage._common import reward_metrics

preference_losses = lazy_module("prefcore.kernels.preference_losses")


@dataclass(frozen=True)
class DPOConfig:
    beta: float = option(0.1, doc="β: strength of the KL penalty; implicit reward β·log(π/π_ref)")

    def __post_init__(self) -> None:
        check_positive("dpo", "beta", self.beta)


class DPO(UsageObjective):
    """DPO: logistic (Bradley–Terry) loss on the implicit reward margin."""

    name = "dpo"
    config_cls = DPOConfig
    data_formats = ("pairwise",)
    needs_reference = True

    def loss(self, batch: LogProbBatch) -> LossOutput:
        chosen_index, rejected_index = require_pairs(batch, self.name)
        out = preference_losses.dpo_loss(
            batch.policy_logps,
            batch.mask,
            chosen_index,
            rejected_index,
            **reference_kwargs(batch, self.name),
            beta=self.config.beta,
        )
        loss = reduce_losses(out.losses, batch, item_weights(batch, out.losses.numel()))
        return LossOutput(loss, reward_metrics(out.chosen_rewards, out.rejected_rewards))


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [DPO]

"""Listwise DPO: a Plackett–Luce model over the implicit rewards of a ranked list.

Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is Secretly a
Reward Model", https://arxiv.org/abs/2305.18290, Appendix A.3, Eq. 20.

    r_i  = β·(log π(y_i|x) − log π_ref(y_i|x))                       (implicit reward)
    loss = −Σ_{k=1}^{K} log [ exp(r_τ(k)) / Σ_{j=k}^{K} exp(r_τ(j)) ]   (per ranked list)

τ: the ranking, τ(1) the best of the K completions y_1..y_K of prompt x; π, π_ref: policy
and reference (log-probs summed over completion tokens); β: inverse temperature. For
K = 2 this is the DPO loss. Tied completions share one softmax denominator (Breslow), so
their order does not matter; the last term (log 1) drops out. The model is of the order
only: a scored list trains on the ranking its scores give (``LogProbBatch.scores`` is not
read; PRO is the listwise objective that weighs by score gaps).
"""

from __future__ import annotations

from dataclasses import dataclass

from prefcore import hookimpl
from prefcore.batch import LogProbBatch
from prefcore.batch import LossOutput
from prefcore.methods import UsageObjective
from prefcore.methods import option
from prefcore.plugins.usage._common import check_positive
from prefcore.plugins.usage._common import item_weights
from prefcore.plugins.usage._common import list_reward_metrics
from prefcore.plugins.usage._common import list_values
from prefcore.plugins.usage._common import plackett_luce_nll
from prefcore.plugins.usage._common import policy_sequence_logps
from prefcore.plugins.usage._common import reduce_losses
from prefcore.plugins.usage._common import reference_sequence_logps
from prefcore.plugins.usage._common import require_lists


@dataclass(frozen=True)
class PlackettLuceDPOConfig:
    beta: float = option(0.1, doc="inverse temperature β of the implicit reward β·log(π/π_ref)")

    def __post_init__(self) -> None:
        check_positive("plackett_luce_dpo", "beta", self.beta)


class PlackettLuceDPO(UsageObjective):
    """Listwise DPO: Plackett–Luce likelihood of the ranking under implicit rewards."""

    name = "plackett_luce_dpo"
    config_cls = PlackettLuceDPOConfig
    data_formats = ("listwise",)
    needs_reference = True

    def loss(self, batch: LogProbBatch) -> LossOutput:
        list_index, list_ranks = require_lists(batch, self.name)
        logratios = policy_sequence_logps(batch) - reference_sequence_logps(batch, self.name)
        rewards, valid = list_values(self.config.beta * logratios, list_index)
        losses = plackett_luce_nll(rewards, list_ranks.to(rewards.dtype), valid)
        loss = reduce_losses(losses, batch, item_weights(batch, losses.numel()))
        return LossOutput(loss, list_reward_metrics(rewards, valid))


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [PlackettLuceDPO]

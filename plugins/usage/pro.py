"""PRO: preference ranking optimisation, a listwise softmax over the suffixes of a ranking.

Song et al. 2024 (AAAI), "Preference Ranking Optimization for Human Alignment",
https://arxiv.org/abs/2306.17492, Eqs. 5-8.

    s_i   = (1/|y_i|)·Σ_t log π(y_i,t | x, y_i,<t)                    (length-normalised score)
    L_PRO = −Σ_{k=1}^{n−1} log [ exp(s_k) / Σ_{i=k}^{n} exp(s_i) ]
    L_SFT = −s_1
    loss  = L_PRO + β·L_SFT                                            (per ranked list)

y_1 ≻ y_2 ≻ … ≻ y_n: the completions of one prompt, best first; |y|: number of completion
tokens; π: the policy; β: weight of the SFT term on the best completion. Each completion
must win a softmax against every completion ranked below it: DPO's pairwise contrast
extended to a whole ranking. Tied completions share one softmax denominator (Breslow),
so their order does not matter. The paper's reward-model temperature is left out: it
needs a reward score per completion.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefcore import hookimpl
from prefcore.batch import LogProbBatch
from prefcore.batch import LossOutput
from prefcore.methods import UsageObjective
from prefcore.methods import option
from prefcore.plugins.usage._common import check_non_negative
from prefcore.plugins.usage._common import item_weights
from prefcore.plugins.usage._common import list_reward_metrics
from prefcore.plugins.usage._common import list_values
from prefcore.plugins.usage._common import mean_or_zero
from prefcore.plugins.usage._common import plackett_luce_nll
from prefcore.plugins.usage._common import policy_sequence_logps
from prefcore.plugins.usage._common import reduce_losses
from prefcore.plugins.usage._common import require_lists


@dataclass(frozen=True)
class PROConfig:
    sft_weight: float = option(0.05, doc="β: weight of the average-token NLL of the top-ranked completion")

    def __post_init__(self) -> None:
        check_non_negative("pro", "sft_weight", self.sft_weight)


class PRO(UsageObjective):
    """PRO: each completion wins a softmax over those ranked below it, plus SFT on the best."""

    name = "pro"
    config_cls = PROConfig
    data_formats = ("listwise",)
    needs_reference = False

    def loss(self, batch: LogProbBatch) -> LossOutput:
        list_index, list_ranks = require_lists(batch, self.name)
        scores, valid = list_values(policy_sequence_logps(batch, average=True), list_index)
        ranking_losses = plackett_luce_nll(scores, list_ranks.to(scores.dtype), valid)
        sft_losses = -scores[:, 0]
        losses = ranking_losses + self.config.sft_weight * sft_losses
        loss = reduce_losses(losses, batch, item_weights(batch, losses.numel()))
        metrics = {
            **list_reward_metrics(scores, valid),
            "ranking_loss": mean_or_zero(ranking_losses),
            "nll": mean_or_zero(sft_losses),
        }
        return LossOutput(loss, metrics)


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [PRO]

"""RPO: DPO plus the NLL of the chosen completion, so the chosen likelihood cannot collapse.

Pang et al. 2024, "Iterative Reasoning Preference Optimization",
https://arxiv.org/abs/2404.19733, Eq. 1 (TRL DPO ``loss_type=["sigmoid", "sft"]`` with
``loss_weights=[1, α]``, formerly ``rpo_alpha``).

    h    = [log π(y_w|x) − log π_ref(y_w|x)] − [log π(y_l|x) − log π_ref(y_l|x)]
    loss = −log σ(β·h) + α·(−Σ_pairs log π(y_w|x) / Σ_pairs |y_w|)

y_w, y_l: chosen and rejected completion; π, π_ref: policy and reference (log-probs summed
over completion tokens); σ: the logistic function; β: strength of the KL penalty; α:
weight of the NLL term; |y|: number of completion tokens (the NLL is a token average over
the batch, as in TRL; under gradient accumulation over the whole step's chosen tokens,
``LogProbBatch.num_tokens``, so micro-batches add up exactly). DPO alone can lower both
likelihoods; the NLL keeps the chosen one up. Computed by
``prefcore.kernels.preference_losses.dpo_loss`` and ``nll_loss``.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefcore import hookimpl
from prefcore.batch import LogProbBatch
from prefcore.lazy import lazy_module
from prefcore.methods import UsageObjective
from prefcore.methods import check_non_negative
from prefcore.methods import check_positive
from prefcore.methods import option
from prefcore.objectives import Metrics
from prefcore.objectives import PairLosses
from prefcore.objectives import PairwiseObjective
from prefcore.objectives import fused_pair_losses
from prefcore.objectives import nll_shares
from prefcore.objectives import require_pairs

torch = lazy_module("torch")
F = lazy_module("torch.nn.functional")
preference_losses = lazy_module("prefcore.kernels.preference_losses")


@dataclass(frozen=True)
class RPOConfig:
    beta: float = option(0.1, doc="β: strength of the KL penalty; implicit reward β·log(π/π_ref)")
    alpha: float = option(1.0, doc="α: weight of the token-average NLL of the chosen completions")

    def __post_init__(self) -> None:
        check_positive("rpo", "beta", self.beta)
        check_non_negative("rpo", "alpha", self.alpha)


class RPO(PairwiseObjective):
    """RPO: DPO plus α × NLL of the chosen completions."""

    name = "rpo"
    config_cls = RPOConfig

    def pair_loss(
        self, chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, batch: LogProbBatch
    ) -> tuple[torch.Tensor, Metrics]:
        nll_losses, nll = nll_shares(batch, *require_pairs(batch, self.name))
        dpo_losses = -F.logsigmoid(self.config.beta * (chosen_logratios - rejected_logratios))
        return dpo_losses + self.config.alpha * nll_losses, {"nll": nll}

    def fused_pair_loss(self, batch: LogProbBatch) -> PairLosses:
        preference = fused_pair_losses(batch, self.name, preference_losses.dpo_loss, beta=self.config.beta)
        chosen_index, rejected_index = require_pairs(batch, self.name)
        nll_losses, nll = nll_shares(batch, chosen_index, rejected_index)
        losses = preference.losses + self.config.alpha * nll_losses
        return PairLosses(losses, preference.chosen_rewards, preference.rejected_rewards, {"nll": nll})


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [RPO]

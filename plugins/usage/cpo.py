"""CPO: contrastive preference optimisation, reference-free DPO plus imitation of the chosen.

Xu et al. 2024, "Contrastive Preference Optimization: Pushing the Boundaries of LLM
Performance in Machine Translation", https://arxiv.org/abs/2401.08417, Eq. 3 and 6
(TRL ``CPOTrainer`` with ``loss_type="sigmoid"`` and ``cpo_alpha``).

    h    = β·[log π(y_w|x) − log π(y_l|x)]
    loss = −(1 − ε)·log σ(h) − ε·log σ(−h) + α·NLL
    NLL      = −Σ_pairs log π(y_w|x) / Σ_pairs |y_w|       (token average over the chosen)

y_w, y_l: chosen and rejected completion; π: the policy (log-probs summed over completion
tokens in h); σ: the logistic function; β: inverse temperature; ε: label smoothing; α:
weight of the NLL term; |y|: number of completion tokens. Dropping DPO's reference model
(a uniform prior) halves the memory; the NLL term keeps the policy on the chosen data.
The NLL is ``prefcore.kernels.preference_losses.nll_loss``, a token average over the
batch as in TRL; under gradient accumulation over the whole step's chosen tokens
(``LogProbBatch.num_tokens``), so micro-batches add up exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefcore import hookimpl
from prefcore.batch import LogProbBatch
from prefcore.lazy import lazy_module
from prefcore.methods import UsageObjective
from prefcore.methods import check_in_range
from prefcore.methods import check_non_negative
from prefcore.methods import check_positive
from prefcore.methods import option
from prefcore.objectives import Metrics
from prefcore.objectives import PairwiseObjective
from prefcore.objectives import nll_shares
from prefcore.objectives import require_pairs

torch = lazy_module("torch")
F = lazy_module("torch.nn.functional")


@dataclass(frozen=True)
class CPOConfig:
    beta: float = option(0.1, doc="inverse temperature β of the policy log-ratio")
    label_smoothing: float = option(0.0, doc="ε in [0, 0.5): weight of the reversed-label term")
    alpha: float = option(1.0, doc="α: weight of the average-token NLL of the chosen completion (TRL cpo_alpha)")

    def __post_init__(self) -> None:
        check_positive("cpo", "beta", self.beta)
        check_in_range("cpo", "label_smoothing", self.label_smoothing, 0.0, 0.5, closed="[)")
        check_non_negative("cpo", "alpha", self.alpha)


class CPO(PairwiseObjective):
    """CPO: reference-free logistic preference loss plus NLL on the chosen completion."""

    name = "cpo"
    config_cls = CPOConfig
    needs_reference = False  # pair_loss gets the policy log-probs log π(y|x)

    def pair_loss(
        self, chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, batch: LogProbBatch
    ) -> tuple[torch.Tensor, Metrics]:
        smoothing = self.config.label_smoothing
        logits = self.config.beta * (chosen_logps - rejected_logps)
        preference = -(1 - smoothing) * F.logsigmoid(logits) - smoothing * F.logsigmoid(-logits)
        nll_losses, nll = nll_shares(batch, *require_pairs(batch, self.name))
        return preference + self.config.alpha * nll_losses, {"nll": nll}


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [CPO]

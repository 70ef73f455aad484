"""SPPO with hard labels: regress each completion's log-ratio to ±1/(2β).

Wu et al. 2024, "Self-Play Preference Optimization for Language Model Alignment",
https://arxiv.org/abs/2405.00675, Eq. 4.7 with the win probability set to 1 for the
chosen and 0 for the rejected completion (TRL DPO ``loss_type="sppo_hard"``).

    loss = (log π(y_w|x) − log π_ref(y_w|x) − 1/(2β))² + (log π(y_l|x) − log π_ref(y_l|x) + 1/(2β))²

y_w, y_l: chosen and rejected completion; π, π_ref: policy and reference (log-probs summed
over completion tokens); β: inverse temperature (η⁻¹ in the paper). The soft version needs
win probabilities from a preference model; with hard labels it pulls the chosen log-ratio
up and the rejected one down to fixed targets, not only their difference.

Soft labels (``use_probabilities``, on by default): when the feedback gives the probability
p that chosen is preferred (a preference model's judgement is exactly what the paper's soft
version uses), the pair's own estimate of the win probabilities is P(y_w) = p, P(y_l) = 1 − p:

    loss = (log π(y_w|x) − log π_ref(y_w|x) − (p − ½)/β)² + (log π(y_l|x) − log π_ref(y_l|x) + (p − ½)/β)²

(p = 1 gives the hard targets ±1/(2β); pairs without a soft label keep them).
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
from prefcore.objectives import pair_probabilities

torch = lazy_module("torch")


@dataclass(frozen=True)
class SppoHardConfig:
    beta: float = option(0.1, doc="inverse temperature β; the log-ratio targets are ±1/(2β)")
    use_probabilities: bool = option(
        True, doc="a pair with a soft label p uses the win probabilities p and 1 − p instead of 1 and 0"
    )

    def __post_init__(self) -> None:
        check_positive("sppo_hard", "beta", self.beta)


class SppoHard(PairwiseObjective):
    """SPPO (hard labels): squared regression of log-ratios to ±1/(2β)."""

    name = "sppo_hard"
    config_cls = SppoHardConfig

    def pair_loss(
        self, chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, batch: LogProbBatch
    ) -> torch.Tensor:
        beta = self.config.beta
        target = 0.5 / beta
        probabilities = pair_probabilities(batch, self.name, default=1.0) if self.config.use_probabilities else None
        if probabilities is not None:
            target = (probabilities - 0.5) / beta
        return (chosen_logratios - target) ** 2 + (rejected_logratios + target) ** 2


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [SppoHard]

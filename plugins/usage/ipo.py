"""IPO: identity preference optimisation, a squared loss that keeps the KL penalty in force.

Azar et al. 2024 (AISTATS), "A General Theoretical Paradigm to Understand Learning from
Human Preferences", https://arxiv.org/abs/2310.12036, Eq. 17 (TRL DPO ``loss_type="ipo"``).

    h    = [log π(y_w|x) − log π_ref(y_w|x)] / |y_w| − [log π(y_l|x) − log π_ref(y_l|x)] / |y_l|
    loss = (h − 1/(2τ))²

y_w, y_l: chosen and rejected completion; |y|: number of completion tokens (per-token
averages, as TRL and the IPO authors use); π, π_ref: policy and reference; τ (``beta``):
regularisation strength, the margin target is 1/(2τ). DPO's logistic loss keeps pushing
h up on deterministic preferences, overfitting; regressing h to a finite target does not.
Computed by ``prefcore.kernels.preference_losses.ipo_loss``.

Soft labels (``use_probabilities``, on by default): IPO's own objective (Eq. 12 of the
paper) regresses h to τ⁻¹·(p(y_w ≻ y_l) − ½), which hard labels (p = 1) turn into 1/(2τ).
A pair whose feedback gives the probability p that chosen is preferred therefore trains on

    loss = (h − (p − ½)/τ)²

(p = ½ pulls h to 0; pairs without a soft label keep the target 1/(2τ)).
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
from prefcore.objectives import pair_probabilities

torch = lazy_module("torch")
preference_losses = lazy_module("prefcore.kernels.preference_losses")


@dataclass(frozen=True)
class IPOConfig:
    beta: float = option(0.1, doc="τ: regularisation strength; the per-token log-ratio margin target is 1/(2τ)")
    use_probabilities: bool = option(
        True, doc="a pair with a soft label p regresses to (p − 1/2)/τ, IPO's own target, instead of 1/(2τ)"
    )

    def __post_init__(self) -> None:
        check_positive("ipo", "beta", self.beta)


class IPO(PairwiseObjective):
    """IPO: squared regression of the per-token log-ratio margin to 1/(2τ)."""

    name = "ipo"
    config_cls = IPOConfig
    average_logratios = True

    def probabilities(self, batch: LogProbBatch) -> torch.Tensor | None:
        """``[P]`` soft labels p (1 where a pair has none), or None to regress every pair to 1/(2τ)."""
        return pair_probabilities(batch, self.name, default=1.0) if self.config.use_probabilities else None

    def pair_loss(
        self, chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, batch: LogProbBatch
    ) -> torch.Tensor:
        probabilities = self.probabilities(batch)
        if probabilities is None:
            return (chosen_logratios - rejected_logratios - 1 / (2 * self.config.beta)) ** 2
        return (chosen_logratios - rejected_logratios - (probabilities - 0.5) / self.config.beta) ** 2

    def fused_pair_loss(self, batch: LogProbBatch) -> PairLosses | None:
        if self.probabilities(batch) is not None:
            return None
        return fused_pair_losses(batch, self.name, preference_losses.ipo_loss, beta=self.config.beta)


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [IPO]

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

Soft labels (``use_probabilities``, on by default): a pair whose feedback gives the
probability p that chosen is preferred has its own flip rate εᵢ = 1 − p (the paper's
unbiasedness holds pair by pair); pairs without one keep ``flip_rate``. The loss is
symmetric, loss(h, ε) = loss(−h, 1 − ε), so a pair with p < 0.5 is the reversed pair with
flip rate p. Near ε = 0.5 a pair's gradient grows as 1/(1 − 2ε) (at 0.5 the label says
nothing), so a per-pair rate is capped at ``max_flip_rate``.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefcore import hookimpl
from prefcore.batch import LogProbBatch
from prefcore.lazy import lazy_module
from prefcore.methods import UsageObjective
from prefcore.methods import check_in_range
from prefcore.methods import check_positive
from prefcore.methods import option
from prefcore.objectives import PairwiseObjective
from prefcore.objectives import pair_probabilities

torch = lazy_module("torch")
F = lazy_module("torch.nn.functional")


@dataclass(frozen=True)
class RobustDPOConfig:
    beta: float = option(0.1, doc="inverse temperature β of the implicit reward β·log(π/π_ref)")
    flip_rate: float = option(0.1, doc="ε in [0, 0.5): the assumed probability that a preference label is flipped")
    use_probabilities: bool = option(
        True, doc="a pair with a soft label p gets its own flip rate 1 − p instead of flip_rate"
    )
    max_flip_rate: float = option(
        0.4, doc="cap in [0, 0.5) on a per-pair flip rate 1 − p (the loss scales by 1/(1 − 2ε))"
    )

    def __post_init__(self) -> None:
        check_positive("robust_dpo", "beta", self.beta)
        check_in_range("robust_dpo", "flip_rate", self.flip_rate, 0.0, 0.5, closed="[)")
        check_in_range("robust_dpo", "max_flip_rate", self.max_flip_rate, 0.0, 0.5, closed="[)")


class RobustDPO(PairwiseObjective):
    """Robust DPO: de-biased DPO loss for preference labels flipped with a known rate."""

    name = "robust_dpo"
    config_cls = RobustDPOConfig

    def pair_loss(
        self, chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, batch: LogProbBatch
    ) -> torch.Tensor:
        flip_rate = self.config.flip_rate
        logits = self.config.beta * (chosen_logratios - rejected_logratios)
        probabilities = None
        if self.config.use_probabilities:
            probabilities = pair_probabilities(batch, self.name, default=float("nan"))
        if probabilities is not None:
            # p < 0.5 is the reversed pair with flip rate p (the loss is symmetric); then the cap
            reversed_ = probabilities < 0.5
            logits = torch.where(reversed_, -logits, logits)
            soft_rate = torch.minimum(probabilities, 1 - probabilities).clamp(max=self.config.max_flip_rate)
            flip_rate = torch.where(torch.isnan(probabilities), torch.full_like(soft_rate, flip_rate), soft_rate)
        return (-(1 - flip_rate) * F.logsigmoid(logits) + flip_rate * F.logsigmoid(-logits)) / (1 - 2 * flip_rate)


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [RobustDPO]

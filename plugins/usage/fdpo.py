"""f-DPO: DPO under an f-divergence constraint other than the reverse KL.

Wang et al. 2023, "Beyond Reverse KL: Generalizing Direct Preference Optimization with
Diverse Divergence Constraints", https://arxiv.org/abs/2309.16240, Theorem 1 (TRL DPO
``loss_type="sigmoid"`` with ``f_divergence_type``).

    u    = π(y|x) / π_ref(y|x)                         (likelihood ratio of a completion)
    loss = −log σ(β·[f′(u_w) − f′(u_l)])

y_w, y_l: chosen and rejected completion; π, π_ref: policy and reference (log-probs summed
over completion tokens); σ: the logistic function; β: strength of the divergence penalty;
f′: derivative of the divergence's generator f, one of
    reverse_kl:        f′(u) = log u                      (DPO)
    forward_kl:        f′(u) = 1 − 1/u
    js_divergence:     f′(u) = log(2u / (1 + u)) = log 2 + log σ(log u)
    alpha_divergence:  f′(u) = (u^(α−1) − 1) / (α − 1)    (α → 1 gives reverse_kl)
Forward KL and Jensen–Shannon are mass-covering: they keep more of the reference's
diversity at a given reward.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from prefcore import hookimpl
from prefcore.batch import LogProbBatch
from prefcore.lazy import lazy_module
from prefcore.methods import UsageObjective
from prefcore.methods import check_finite
from prefcore.methods import check_positive
from prefcore.methods import option
from prefcore.objectives import PairwiseObjective

torch = lazy_module("torch")
F = lazy_module("torch.nn.functional")

# exp((α − 1)·log u) overflows float32 past exp(88); TRL clamps the exponent at 80 as well.
_MAX_EXPONENT = 80.0


def _reverse_kl(logratios: torch.Tensor, alpha: float) -> torch.Tensor:
    return logratios


def _forward_kl(logratios: torch.Tensor, alpha: float) -> torch.Tensor:
    return 1 - torch.exp(-logratios)


def _js_divergence(logratios: torch.Tensor, alpha: float) -> torch.Tensor:
    return math.log(2) + F.logsigmoid(logratios)


def _alpha_divergence(logratios: torch.Tensor, alpha: float) -> torch.Tensor:
    if abs(alpha - 1.0) < 1e-6:  # the limit α → 1 is the reverse KL
        return logratios
    exponent = torch.clamp((alpha - 1.0) * logratios, max=_MAX_EXPONENT)
    return (torch.exp(exponent) - 1.0) / (alpha - 1.0)


F_PRIME: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "reverse_kl": _reverse_kl,
    "forward_kl": _forward_kl,
    "js_divergence": _js_divergence,
    "alpha_divergence": _alpha_divergence,
}
"""f′ of each divergence as a function of log u = log π − log π_ref (and α)."""


@dataclass(frozen=True)
class FDPOConfig:
    beta: float = option(0.1, doc="strength β of the f-divergence penalty")
    divergence: str = option(
        "reverse_kl", doc="the f-divergence: reverse_kl, forward_kl, js_divergence or alpha_divergence"
    )
    alpha: float = option(0.5, doc="α of alpha_divergence (α → 1 is reverse_kl); ignored by the others")

    def __post_init__(self) -> None:
        check_positive("fdpo", "beta", self.beta)
        if self.divergence not in F_PRIME:
            raise ValueError(
                f"divergence must be one of {', '.join(F_PRIME)} for objective 'fdpo'. Got {self.divergence!r}."
            )
        check_finite("fdpo", "alpha", self.alpha)


class FDPO(PairwiseObjective):
    """f-DPO: DPO with the reverse KL replaced by another f-divergence."""

    name = "fdpo"
    config_cls = FDPOConfig

    def pair_loss(
        self, chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, batch: LogProbBatch
    ) -> torch.Tensor:
        alpha = self.config.alpha
        f_prime = F_PRIME[self.config.divergence]
        return -F.logsigmoid(self.config.beta * (f_prime(chosen_logratios, alpha) - f_prime(rejected_logratios, alpha)))


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [FDPO]

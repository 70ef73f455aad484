"""ODPO: DPO with an offset, a pair must win by more the more strongly it is preferred.

Amini, Vieira and Cotterell 2024, "Direct Preference Optimization with an Offset"
(Findings of ACL 2024), https://arxiv.org/abs/2402.10571; the authors' ``preference_loss``
in rycolab/odpo, trainers.py (``loss=odpo``).

    h    = [log π(y_w|x) − log π_ref(y_w|x)] − [log π(y_l|x) − log π_ref(y_l|x)]
    Δ    = α·log(m)                      (m > 0: the pair's margin, a score difference)
    loss = −log σ(β·h − Δ)

y_w, y_l: chosen and rejected completion; π, π_ref: policy and reference (log-probs summed
over completion tokens); σ: the logistic function; β: strength of the implicit KL
penalty; m: how much better y_w is, the feedback's margin (``LogProbBatch.margins``: a score
gap of rated completions, the reward gap |Δr| of pairs a reward model relabelled); α:
scale of the offset. The implicit reward gap β·h must exceed Δ, so a pair with a large
score gap pulls the two completions further apart than a near tie; Δ < 0 for m < 1 eases
the pull. DPO is ODPO with Δ = 0.

A pair without a margin (the batch holds 0 for it, and cannot tell it from a given 0)
gets Δ = 0: it trains as in DPO, and data without margins trains exactly as DPO. The
authors' code also offers log(r_w / r_l), which needs each completion's own score rather
than their difference; a margin does not carry it, so it is not offered here.
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
from prefcore.objectives import PairwiseObjective
from prefcore.objectives import mean_or_zero
from prefcore.objectives import pair_margins

torch = lazy_module("torch")
F = lazy_module("torch.nn.functional")


@dataclass(frozen=True)
class ODPOConfig:
    beta: float = option(0.1, doc="β: strength of the KL penalty; implicit reward β·log(π/π_ref)")
    alpha: float = option(1.0, doc="α >= 0: the offset is α·log(margin); 0 gives DPO")

    def __post_init__(self) -> None:
        check_positive("odpo", "beta", self.beta)
        check_non_negative("odpo", "alpha", self.alpha)


class ODPO(PairwiseObjective):
    """ODPO: DPO whose implicit reward gap must exceed an offset α·log(margin) per pair."""

    name = "odpo"
    config_cls = ODPOConfig

    def pair_loss(
        self, chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, batch: LogProbBatch
    ) -> tuple[torch.Tensor, Metrics]:
        offsets = pair_offsets(pair_margins(batch, self.name), self.config.alpha, chosen_logratios)
        losses = -F.logsigmoid(self.config.beta * (chosen_logratios - rejected_logratios) - offsets)
        return losses, {"offset": mean_or_zero(offsets)}


def pair_offsets(margins: torch.Tensor | None, alpha: float, like: torch.Tensor) -> torch.Tensor:
    """``[P]`` Δ = α·log(m) for pairs with a margin m > 0, 0 for the others (or all, without margins)."""
    if margins is None:
        return torch.zeros_like(like).detach()
    margins = margins.to(like.dtype)
    given = margins > 0
    logs = torch.log(torch.where(given, margins, torch.ones_like(margins)))
    return torch.where(given, alpha * logs, torch.zeros_like(logs))


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [ODPO]

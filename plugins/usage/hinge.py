"""Hinge (SLiC-HF): sequence likelihood calibration with a margin on the implicit reward.

Zhao et al. 2023, "SLiC-HF: Sequence Likelihood Calibration with Human Feedback",
https://arxiv.org/abs/2305.10425, Eq. 1 in its DPO form (TRL DPO ``loss_type="hinge"``).

    h    = [log π(y_w|x) − log π_ref(y_w|x)] − [log π(y_l|x) − log π_ref(y_l|x)]
    loss = max(0, 1 − β·h)

y_w, y_l: chosen and rejected completion; π, π_ref: policy and reference (log-probs summed
over completion tokens); β: inverse margin, the loss asks for a log-ratio margin of 1/β.
Pairs that already meet the margin contribute nothing. Computed by
``prefcore.kernels.preference_losses.hinge_loss``.

Per-pair margins (``use_margins``, off by default: SLiC-HF's margin is one constant): a
pair whose feedback gives a strength m (Llama 2's "significantly better" levels, a score
gap) must clear it too, as in Llama 2's margin loss (Touvron et al. 2023, Eq. 2),

    loss = max(0, 1 + s·m − β·h)

s (``margin_scale``): converts the feedback's units into implicit-reward units. Pairs
without a margin count as m = 0.
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
from prefcore.objectives import PairLosses
from prefcore.objectives import PairwiseObjective
from prefcore.objectives import fused_pair_losses
from prefcore.objectives import pair_margins

torch = lazy_module("torch")
preference_losses = lazy_module("prefcore.kernels.preference_losses")


@dataclass(frozen=True)
class HingeConfig:
    beta: float = option(0.1, doc="β: the hinge asks for a log-ratio margin of at least 1/β")
    use_margins: bool = option(
        False, doc="a pair with a margin m must clear 1 + margin_scale·m (Llama 2's margin) instead of 1"
    )
    margin_scale: float = option(1.0, doc="s >= 0: a pair's margin m adds s·m to the implicit-reward gap it needs")

    def __post_init__(self) -> None:
        check_positive("hinge", "beta", self.beta)
        check_non_negative("hinge", "margin_scale", self.margin_scale)


class Hinge(PairwiseObjective):
    """Hinge (SLiC-HF): max(0, 1 − β·margin) on the implicit reward margin."""

    name = "hinge"
    config_cls = HingeConfig

    def margins(self, batch: LogProbBatch) -> torch.Tensor | None:
        """``[P]`` the feedback's margins when ``use_margins`` is on and the batch has them, else None."""
        return pair_margins(batch, self.name) if self.config.use_margins else None

    def pair_loss(
        self, chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, batch: LogProbBatch
    ) -> torch.Tensor:
        gap = self.config.beta * (chosen_logratios - rejected_logratios)
        margins = self.margins(batch)
        if margins is None:
            return torch.relu(1 - gap)
        return torch.relu(1 + self.config.margin_scale * margins - gap)

    def fused_pair_loss(self, batch: LogProbBatch) -> PairLosses | None:
        if self.margins(batch) is not None:
            return None
        return fused_pair_losses(batch, self.name, preference_losses.hinge_loss, beta=self.config.beta)


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [Hinge]

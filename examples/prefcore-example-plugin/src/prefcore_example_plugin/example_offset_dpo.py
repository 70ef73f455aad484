"""Usage objective ``example_offset_dpo``: DPO whose reward margin must clear a fixed offset Δ.

The constant-offset case of ODPO (Amini et al. 2024, "Direct Preference Optimization with
an Offset", https://arxiv.org/abs/2402.10571, Eq. 6):

    h = [log π(y_w|x) − log π_ref(y_w|x)] − [log π(y_l|x) − log π_ref(y_l|x)]
    loss = −log σ(β·h − Δ)

π: the policy; π_ref: the frozen reference; y_w, y_l: the chosen and rejected completion;
log π(y|x): the summed log-probability of the completion's tokens; σ: the logistic function;
β: the strength of the implicit KL penalty, and the β of the implicit reward β·log(π/π_ref)
that the metrics and the evaluators report.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefcore import hookimpl
from prefcore.batch import LogProbBatch
from prefcore.lazy import lazy_module
from prefcore.methods import UsageObjective
from prefcore.methods import check_finite
from prefcore.methods import check_positive
from prefcore.methods import option
from prefcore.objectives import PairwiseObjective

torch = lazy_module("torch")  # torch loads when a loss is first computed
F = lazy_module("torch.nn.functional")


@dataclass(frozen=True)
class OffsetDPOConfig:
    beta: float = option(0.1, doc="β: strength of the implicit KL penalty")
    offset: float = option(0.5, doc="Δ: the reward margin the chosen completion must clear")

    def __post_init__(self) -> None:
        check_positive("example_offset_dpo", "beta", self.beta)
        check_finite("example_offset_dpo", "offset", self.offset)


class OffsetDPO(PairwiseObjective):
    """DPO whose implicit-reward margin must clear a fixed offset Δ."""

    name = "example_offset_dpo"
    config_cls = OffsetDPOConfig

    def pair_loss(
        self, chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, batch: LogProbBatch
    ) -> torch.Tensor:
        h = chosen_logratios - rejected_logratios
        return -F.logsigmoid(self.config.beta * h - self.config.offset)


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [OffsetDPO]

"""DiscoPOP: the log-ratio modulated loss discovered by LLM-driven objective search.

Chris Lu et al. 2024, "Discovering Preference Optimization Algorithms with and for Large
Language Models", https://arxiv.org/abs/2406.08414, Eq. 5 (TRL DPO ``loss_type="discopop"``).

    h    = β·[(log π(y_w|x) − log π_ref(y_w|x)) − (log π(y_l|x) − log π_ref(y_l|x))]
    m    = σ(h / τ)
    loss = (1 − m)·(−log σ(h)) + m·exp(−h)

y_w, y_l: chosen and rejected completion; π, π_ref: policy and reference (log-probs summed
over completion tokens); σ: the logistic function; β: inverse temperature; τ: temperature
of the mixing weight m. The loss blends DPO's logistic loss (for negative margins) with an
exponential loss (for positive ones), which is non-convex in h.
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

torch = lazy_module("torch")
F = lazy_module("torch.nn.functional")


@dataclass(frozen=True)
class DiscoPOPConfig:
    beta: float = option(0.1, doc="inverse temperature β of the implicit reward β·log(π/π_ref)")
    tau: float = option(0.05, doc="temperature τ of the logistic/exponential mixing weight σ(h/τ)")

    def __post_init__(self) -> None:
        check_positive("discopop", "beta", self.beta)
        check_positive("discopop", "tau", self.tau)


class DiscoPOP(PairwiseObjective):
    """DiscoPOP: logistic loss blended with an exponential loss by the margin's sign."""

    name = "discopop"
    config_cls = DiscoPOPConfig

    def pair_loss(
        self, chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, batch: LogProbBatch
    ) -> torch.Tensor:
        logits = self.config.beta * (chosen_logratios - rejected_logratios)
        mixing = torch.sigmoid(logits / self.config.tau)
        return (1 - mixing) * -F.logsigmoid(logits) + mixing * torch.exp(-logits)


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [DiscoPOP]

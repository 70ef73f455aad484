"""Length-normalised DPO: the DPO loss on per-token average log-ratios.

The LN-DPO baseline of Meng et al. 2024, "SimPO: Simple Preference Optimization with a
Reference-Free Reward", https://arxiv.org/abs/2405.14734 (TRL DPO ``loss_type="sigmoid_norm"``).

    a_w  = [log π(y_w|x) − log π_ref(y_w|x)] / |y_w|,   a_l likewise for y_l
    loss = −log σ(β·(a_w − a_l))

y_w, y_l: chosen and rejected completion; |y|: its number of completion tokens; π, π_ref:
policy and reference (log-probs summed over completion tokens); σ: the logistic function;
β: inverse temperature. Dividing by the length removes DPO's incentive to lengthen
answers, as in SimPO, while keeping the reference model.
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
from prefcore.objectives import pair_lengths

torch = lazy_module("torch")
F = lazy_module("torch.nn.functional")


@dataclass(frozen=True)
class SigmoidNormConfig:
    beta: float = option(0.1, doc="inverse temperature β applied to the per-token average log-ratios")

    def __post_init__(self) -> None:
        check_positive("sigmoid_norm", "beta", self.beta)


class SigmoidNorm(PairwiseObjective):
    """Length-normalised DPO: logistic loss on per-token average log-ratios."""

    name = "sigmoid_norm"
    config_cls = SigmoidNormConfig

    def pair_loss(
        self, chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, batch: LogProbBatch
    ) -> torch.Tensor:
        chosen_lengths, rejected_lengths = pair_lengths(batch, self.name, chosen_logratios.dtype)
        averages = chosen_logratios / chosen_lengths - rejected_logratios / rejected_lengths
        return -F.logsigmoid(self.config.beta * averages)


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [SigmoidNorm]

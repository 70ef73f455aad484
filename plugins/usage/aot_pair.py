"""AOT on log-ratios: optimal transport between the chosen and rejected reward distributions.

Melnyk et al. 2024, "Distributional Preference Alignment of LLMs via Optimal Transport",
https://arxiv.org/abs/2406.05882 (TRL DPO ``loss_type="aot_unpaired"``, formerly ``aot_pair``).

    r_w,i  = log π(y_w,i|x_i) − log π_ref(y_w,i|x_i),   r_l,i likewise for the rejected
    δ_(k)  = sort(r_w)_k − sort(r_l)_k                     (k-th smallest of each)
    loss_k = −(1 − ε)·log σ(β·δ_(k)) − ε·log σ(−β·δ_(k))

y_w, y_l: chosen and rejected completion; π, π_ref: policy and reference (log-probs summed
over completion tokens); σ: the logistic function; β: inverse temperature; ε: label
smoothing. Chosen and rejected rewards are compared as two distributions, quantile by
quantile, so the pairing inside the batch is not used: the chosen rewards must
first-order stochastically dominate the rejected ones.

The sort couples the batch: per-pair weights do not apply (a weighted batch is refused)
and a gradient-accumulation split gives a different (still valid) estimate.
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

torch = lazy_module("torch")
F = lazy_module("torch.nn.functional")


@dataclass(frozen=True)
class AOTPairConfig:
    beta: float = option(0.1, doc="inverse temperature β of the implicit reward β·log(π/π_ref)")
    label_smoothing: float = option(0.0, doc="ε in [0, 0.5): weight of the reversed-label term")

    def __post_init__(self) -> None:
        check_positive("aot_pair", "beta", self.beta)
        check_in_range("aot_pair", "label_smoothing", self.label_smoothing, 0.0, 0.5, closed="[)")


class AOTPair(PairwiseObjective):
    """AOT (log-ratios): sorted chosen rewards must dominate sorted rejected rewards."""

    name = "aot_pair"
    config_cls = AOTPairConfig
    batch_coupled = True

    def pair_loss(
        self, chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, batch: LogProbBatch
    ) -> torch.Tensor:
        smoothing = self.config.label_smoothing
        chosen_sorted, _ = torch.sort(chosen_logratios)
        rejected_sorted, _ = torch.sort(rejected_logratios)
        logits = self.config.beta * (chosen_sorted - rejected_sorted)
        return -(1 - smoothing) * F.logsigmoid(logits) - smoothing * F.logsigmoid(-logits)


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [AOTPair]

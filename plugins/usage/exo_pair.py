"""EXO, pairwise: fit the policy's preference distribution to the labels by reverse KL.

Ji et al. 2024, "Towards Efficient Exact Optimization of Language Model Alignment",
https://arxiv.org/abs/2402.00856, Eq. 16 with K = 2 (TRL DPO ``loss_type="exo_pair"``).

    h    = β·[(log π(y_w|x) − log π_ref(y_w|x)) − (log π(y_l|x) − log π_ref(y_l|x))]
    loss = σ(h)·[log σ(h) − log(1 − ε)] + σ(−h)·[log σ(−h) − log ε]

y_w, y_l: chosen and rejected completion of a pair; π, π_ref: policy and reference
(log-probs summed over completion tokens); σ: the logistic function; β: inverse
temperature of the implicit reward; ε: label smoothing, the probability given to the
rejected completion by the target distribution [1 − ε, ε] (must be > 0: log ε).
The loss is KL(p_θ ‖ p_label) between the policy's two-way softmax p_θ = [σ(h), σ(−h)]
and the smoothed label, which is mode-seeking where DPO's cross-entropy is mean-seeking.

Soft labels (``use_probabilities``, on by default): EXO's target distribution is the
feedback's own preference probability (the paper's p_rm, a reward model's σ(Δ) for K = 2),
so a pair whose feedback gives the probability p that chosen is preferred trains on the
target [q, 1 − q] with q = p clipped to [ε, 1 − ε] (the log of a 0 target is undefined);
pairs without one keep [1 − ε, ε].
"""

from __future__ import annotations

import math
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
class ExoPairConfig:
    beta: float = option(0.1, doc="inverse temperature β of the implicit reward β·log(π/π_ref)")
    epsilon: float = option(1e-3, doc="label smoothing ε in (0, 0.5]: target probability of the rejected one")
    use_probabilities: bool = option(
        True, doc="a pair with a soft label p has the target [p, 1 − p] (clipped to [ε, 1 − ε]) instead of [1 − ε, ε]"
    )

    def __post_init__(self) -> None:
        check_positive("exo_pair", "beta", self.beta)
        check_in_range("exo_pair", "epsilon", self.epsilon, 0.0, 0.5, closed="(]")


class ExoPair(PairwiseObjective):
    """EXO (pairwise): reverse KL from the policy's pair preference to smoothed labels."""

    name = "exo_pair"
    config_cls = ExoPairConfig

    def pair_loss(
        self, chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, batch: LogProbBatch
    ) -> torch.Tensor:
        epsilon = self.config.epsilon
        logits = self.config.beta * (chosen_logratios - rejected_logratios)
        targets = pair_probabilities(batch, self.name, default=1 - epsilon) if self.config.use_probabilities else None
        if targets is None:
            log_target, log_reversed = math.log1p(-epsilon), math.log(epsilon)
        else:
            targets = targets.clamp(epsilon, 1 - epsilon)
            log_target, log_reversed = torch.log(targets), torch.log1p(-targets)
        return F.sigmoid(logits) * (F.logsigmoid(logits) - log_target) + F.sigmoid(-logits) * (
            F.logsigmoid(-logits) - log_reversed
        )


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [ExoPair]

"""NCA, pairwise: noise-contrastive alignment on absolute implicit rewards.

Chen et al. 2024, "Noise Contrastive Alignment of Language Models with Explicit Rewards",
https://arxiv.org/abs/2402.05369 (TRL DPO ``loss_type="nca_pair"``).

    r_w = β·(log π(y_w|x) − log π_ref(y_w|x)),   r_l = β·(log π(y_l|x) − log π_ref(y_l|x))
    loss = −log σ(r_w) − ½·log σ(−r_w) − ½·log σ(−r_l)

y_w, y_l: chosen and rejected completion; π, π_ref: policy and reference (log-probs summed
over completion tokens); σ: the logistic function; β: inverse temperature. Unlike DPO,
which only moves the difference r_w − r_l, NCA scores each completion on its own, so the
chosen likelihood is pushed up rather than both falling together.

Soft labels (``use_probabilities``, on by default): NCA's targets are the feedback's own
preference probabilities (the paper's softmax of explicit rewards, σ(Δ) for K = 2), so a pair
whose feedback gives the probability p that chosen is preferred trains on

    loss = −p·log σ(r_w) − (1 − p)·log σ(r_l) − ½·log σ(−r_w) − ½·log σ(−r_l)

(p = 1, the hard label, is the loss above; pairs without a soft label keep it).
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
from prefcore.objectives import pair_probabilities

torch = lazy_module("torch")
F = lazy_module("torch.nn.functional")


@dataclass(frozen=True)
class NcaPairConfig:
    beta: float = option(0.1, doc="inverse temperature β of the implicit reward β·log(π/π_ref)")
    use_probabilities: bool = option(
        True, doc="a pair with a soft label p splits the positive term p : 1 − p between chosen and rejected"
    )

    def __post_init__(self) -> None:
        check_positive("nca_pair", "beta", self.beta)


class NcaPair(PairwiseObjective):
    """NCA (pairwise): noise-contrastive estimation on each completion's implicit reward."""

    name = "nca_pair"
    config_cls = NcaPairConfig

    def pair_loss(
        self, chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, batch: LogProbBatch
    ) -> torch.Tensor:
        chosen_rewards = self.config.beta * chosen_logratios
        rejected_rewards = self.config.beta * rejected_logratios
        targets = pair_probabilities(batch, self.name, default=1.0) if self.config.use_probabilities else None
        if targets is None:
            positive = -F.logsigmoid(chosen_rewards)
        else:
            positive = -targets * F.logsigmoid(chosen_rewards) - (1 - targets) * F.logsigmoid(rejected_rewards)
        return positive - 0.5 * F.logsigmoid(-chosen_rewards) - 0.5 * F.logsigmoid(-rejected_rewards)


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [NcaPair]

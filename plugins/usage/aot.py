"""AOT, paired: distributional alignment by optimal transport of sorted log-ratio margins.

Melnyk et al. 2024, "Distributional Preference Alignment of LLMs via Optimal Transport",
https://arxiv.org/abs/2406.05882 (TRL DPO ``loss_type="aot"``, for paired data).

    m_i     = log π(y_w,i|x_i) − log π(y_l,i|x_i)                 (policy margin of pair i)
    m_ref,i = log π_ref(y_w,i|x_i) − log π_ref(y_l,i|x_i)         (reference margin of pair i)
    δ_(k)   = sort(m)_k − sort(m_ref)_k                            (k-th smallest of each)
    loss_k  = −(1 − ε)·log σ(β·δ_(k)) − ε·log σ(−β·δ_(k))

y_w, y_l: chosen and rejected completion; π, π_ref: policy and reference (log-probs summed
over completion tokens); σ: the logistic function; β: inverse temperature; ε: label
smoothing. Sorting matches quantiles of the two margin distributions (the 1-D optimal
transport plan), which makes the policy's margins first-order stochastically dominate
the reference's across the batch rather than pair by pair.

The margins compared are the policy's and the reference's own log-ratio gaps; the
feedback's margins and soft labels have no place in the sort (the paper defines none), so
``LogProbBatch.margins`` and ``probabilities`` are not read (ODPO and cDPO use them).

The batch is coupled through the sort: the loss of one pair depends on the others, so
per-pair weights do not apply (a weighted batch is refused) and a gradient-accumulation
split gives a different (still valid) estimate than one large batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefcore import hookimpl
from prefcore.batch import LogProbBatch
from prefcore.batch import LossOutput
from prefcore.lazy import lazy_module
from prefcore.methods import UsageObjective
from prefcore.methods import check_in_range
from prefcore.methods import check_positive
from prefcore.methods import option
from prefcore.objectives import pair_logp_metrics
from prefcore.objectives import policy_sequence_logps
from prefcore.objectives import reduce_losses
from prefcore.objectives import reference_sequence_logps
from prefcore.objectives import require_pairs
from prefcore.objectives import reward_metrics

torch = lazy_module("torch")
F = lazy_module("torch.nn.functional")


@dataclass(frozen=True)
class AOTConfig:
    beta: float = option(0.1, doc="inverse temperature β of the implicit reward β·log(π/π_ref)")
    label_smoothing: float = option(0.0, doc="ε in [0, 0.5): weight of the reversed-label term")

    def __post_init__(self) -> None:
        check_positive("aot", "beta", self.beta)
        check_in_range("aot", "label_smoothing", self.label_smoothing, 0.0, 0.5, closed="[)")


class AOT(UsageObjective):
    """AOT (paired): sorted policy margins must dominate sorted reference margins."""

    name = "aot"
    config_cls = AOTConfig
    data_formats = ("pairwise",)
    needs_reference = True

    def implicit_reward_beta(self) -> float:
        """β of the rewards it reports, β·log(π/π_ref)."""
        return self.config.beta

    def loss(self, batch: LogProbBatch) -> LossOutput:
        beta, smoothing = self.config.beta, self.config.label_smoothing
        if batch.weights is not None:
            raise ValueError(
                "objective 'aot' couples the pairs of a batch by sorting their margins, so per-pair weights "
                "do not apply; drop the weights or use 'dpo'."
            )
        chosen_index, rejected_index = require_pairs(batch, self.name)
        policy = policy_sequence_logps(batch)
        reference = reference_sequence_logps(batch, self.name)
        margins, _ = torch.sort(policy[chosen_index] - policy[rejected_index])
        reference_margins, _ = torch.sort(reference[chosen_index] - reference[rejected_index])
        logits = beta * (margins - reference_margins)
        losses = -(1 - smoothing) * F.logsigmoid(logits) - smoothing * F.logsigmoid(-logits)
        chosen_rewards = beta * (policy[chosen_index] - reference[chosen_index])
        rejected_rewards = beta * (policy[rejected_index] - reference[rejected_index])
        metrics = {**reward_metrics(chosen_rewards, rejected_rewards), **pair_logp_metrics(batch, self.name)}
        return LossOutput(reduce_losses(losses, batch), metrics)


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [AOT]

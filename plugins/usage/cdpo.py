"""Conservative DPO: DPO with label smoothing for preference labels flipped at a known rate.

Mitchell 2023, "A note on DPO with noisy preferences & relationship to IPO",
https://ericmitchell.ai/cdpo.pdf (the ``label_smoothing`` of earlier TRL DPO releases; TRL 1.16's
``sigmoid`` loss no longer reads it).

    h    = [log π(y_w|x) − log π_ref(y_w|x)] − [log π(y_l|x) − log π_ref(y_l|x)]
    loss = −(1 − ε)·log σ(β·h) − ε·log σ(−β·h)

y_w, y_l: chosen and rejected completion; π, π_ref: policy and reference (log-probs summed
over completion tokens); σ: the logistic function; β: strength of the KL penalty; ε ∈
(0, 0.5): the assumed probability that a label is flipped. The target probability of
"chosen ≻ rejected" is 1 − ε instead of 1, so the implicit reward margin stops growing
at β·h = log((1 − ε)/ε) instead of diverging. Computed by
``prefcore.kernels.preference_losses.dpo_loss`` with ``label_smoothing=ε``.

Soft labels (``use_probabilities``, on by default): a pair whose feedback gives the
probability p that chosen is preferred (annotator vote share, judge confidence, a reward
model's σ(Δ) after relabelling) trains on that target instead of the assumed 1 − ε,

    loss = −p·log σ(β·h) − (1 − p)·log σ(−β·h)

the per-pair form of the same cross-entropy (Mitchell's ε is the flip probability 1 − p;
the soft-label Bradley–Terry likelihood of Christiano et al. 2017). Pairs without one keep 1 − ε.
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
from prefcore.objectives import PairLosses
from prefcore.objectives import PairwiseObjective
from prefcore.objectives import fused_pair_losses
from prefcore.objectives import pair_probabilities

torch = lazy_module("torch")
F = lazy_module("torch.nn.functional")
preference_losses = lazy_module("prefcore.kernels.preference_losses")


@dataclass(frozen=True)
class CDPOConfig:
    beta: float = option(0.1, doc="β: strength of the KL penalty; implicit reward β·log(π/π_ref)")
    label_smoothing: float = option(0.1, doc="ε in (0, 0.5): the assumed probability that a label is flipped")
    use_probabilities: bool = option(
        True, doc="train on a pair's soft label p (target p instead of 1 − ε) when its feedback gives one"
    )

    def __post_init__(self) -> None:
        check_positive("cdpo", "beta", self.beta)
        check_in_range("cdpo", "label_smoothing", self.label_smoothing, 0.0, 0.5, closed="()")


class CDPO(PairwiseObjective):
    """Conservative DPO: DPO with label smoothing against noisy preferences."""

    name = "cdpo"
    config_cls = CDPOConfig

    def targets(self, batch: LogProbBatch) -> torch.Tensor | None:
        """``[P]`` soft labels p (1 − ε where a pair has none), or None to train every pair on 1 − ε."""
        if not self.config.use_probabilities:
            return None
        return pair_probabilities(batch, self.name, default=1.0 - self.config.label_smoothing)

    def pair_loss(
        self, chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, batch: LogProbBatch
    ) -> torch.Tensor:
        logits = self.config.beta * (chosen_logratios - rejected_logratios)
        targets = self.targets(batch)
        if targets is None:
            smoothing = self.config.label_smoothing
            return -(1 - smoothing) * F.logsigmoid(logits) - smoothing * F.logsigmoid(-logits)
        return -targets * F.logsigmoid(logits) - (1 - targets) * F.logsigmoid(-logits)

    def fused_pair_loss(self, batch: LogProbBatch) -> PairLosses | None:
        if self.targets(batch) is not None:
            return None
        return fused_pair_losses(
            batch,
            self.name,
            preference_losses.dpo_loss,
            beta=self.config.beta,
            label_smoothing=self.config.label_smoothing,
        )


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [CDPO]

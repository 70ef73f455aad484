"""Unlikelihood training: push down the probability of every token of a rejected completion.

Welleck et al. 2020 (ICLR), "Neural Text Generation with Unlikelihood Training",
https://arxiv.org/abs/1908.04319, Eq. 4, with the rejected completion's tokens as the
negative candidates.

    NLL(y)  = −(1/|y|)·Σ_t log π(y_t | x, y_<t)
    UL(y)   = −(1/|y|)·Σ_t log(1 − π(y_t | x, y_<t))
    loss    = NLL(y_w) + α·UL(y_l)                       (pairwise)
    loss    = NLL(y) if y is desirable else α·UL(y)      (unpaired)

y_w, y_l: chosen and rejected completion; |y|: number of completion tokens; π: the policy;
α: weight of the unlikelihood term. Unlike a negative NLL, which is unbounded below,
−log(1 − p) is ≥ 0 and vanishes once a token is unlikely, so it cannot diverge.
1 − p is floored at 1e-5 as in the paper's code, so a token of probability 1 gives a
finite loss.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefcore import hookimpl
from prefcore.batch import LogProbBatch
from prefcore.batch import LossOutput
from prefcore.lazy import lazy_module
from prefcore.methods import UsageObjective
from prefcore.methods import check_positive
from prefcore.methods import option
from prefcore.objectives import item_weights
from prefcore.objectives import labelled_mask
from prefcore.objectives import mean_or_zero
from prefcore.objectives import policy_sequence_logps
from prefcore.objectives import reduce_losses
from prefcore.objectives import reward_metrics
from prefcore.objectives import sequence_weights
from prefcore.objectives import upcast

torch = lazy_module("torch")
preference_losses = lazy_module("prefcore.kernels.preference_losses")

_MIN_ONE_MINUS_P = 1e-5


@dataclass(frozen=True)
class UnlikelihoodConfig:
    alpha: float = option(1.0, doc="α: weight of the unlikelihood term on rejected completions")

    def __post_init__(self) -> None:
        check_positive("unlikelihood", "alpha", self.alpha)


class Unlikelihood(UsageObjective):
    """Unlikelihood: NLL on chosen completions, −log(1 − p) on the tokens of rejected ones."""

    name = "unlikelihood"
    config_cls = UnlikelihoodConfig
    data_formats = ("pairwise", "unpaired")
    needs_reference = False

    def _unlikelihood(self, batch: LogProbBatch) -> torch.Tensor:
        """``[S]`` average −log(1 − p) over each completion's tokens."""
        policy_logps = upcast(batch.policy_logps)
        token_logps = torch.where(batch.mask, policy_logps, torch.zeros_like(policy_logps))
        one_minus_p = (1 - token_logps.exp()).clamp(min=_MIN_ONE_MINUS_P)
        log_one_minus_p, _ = preference_losses.sequence_logps(torch.log(one_minus_p), batch.mask, average=True)
        return -log_one_minus_p

    def loss(self, batch: LogProbBatch) -> LossOutput:
        alpha = self.config.alpha
        average_logps = policy_sequence_logps(batch, average=True)
        unlikelihood = self._unlikelihood(batch)
        if batch.chosen_index is not None and batch.rejected_index is not None:
            nll = -average_logps[batch.chosen_index]
            rejected_unlikelihood = unlikelihood[batch.rejected_index]
            losses = nll + alpha * rejected_unlikelihood
            loss = reduce_losses(losses, batch, item_weights(batch, losses.numel()))
            metrics = {
                **reward_metrics(average_logps[batch.chosen_index], average_logps[batch.rejected_index]),
                "nll": mean_or_zero(nll),
                "unlikelihood": mean_or_zero(rejected_unlikelihood),
            }
            return LossOutput(loss, metrics)
        if batch.labels is None:
            raise ValueError(
                "objective 'unlikelihood' needs pairs (chosen_index/rejected_index) or labelled completions "
                "(labels); the batch has neither."
            )
        labelled = labelled_mask(batch)
        desirable = batch.labels & labelled
        undesirable = ~batch.labels & labelled
        losses = torch.where(desirable, -average_logps, alpha * unlikelihood)[labelled]
        weights = sequence_weights(batch)
        loss = reduce_losses(losses, batch, None if weights is None else weights[labelled])
        metrics = {
            "nll": mean_or_zero(-average_logps[desirable]),
            "unlikelihood": mean_or_zero(unlikelihood[undesirable]),
        }
        return LossOutput(loss, metrics)


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [Unlikelihood]

"""RRHF: rank responses to align with human feedback, without a reference or a reward model in the loop.

Yuan et al. 2023, "RRHF: Rank Responses to Align Language Models with Human Feedback
without tears", https://arxiv.org/abs/2304.05302, Eqs. 1-4.

    p_i    = Σ_t log π(y_i,t | x, y_i,<t) / |y_i|^λ              (length-normalised score)
    L_rank = Σ_{r_i < r_j} max(0, p_i − p_j)
    L_ft   = −Σ_t log π(y_best,t | x, y_best,<t)
    loss   = w_rank·L_rank + w_ft·L_ft                            (per ranked list)

y_1..y_K: the completions of one prompt; r_i: their reward, used only through its order:
the ranking (r_i < r_j when y_i is ranked below y_j; tied completions are not compared).
Scored completions (``Scores`` records) reach the batch ordered by their scores, equal
scores tied, so RRHF compares them exactly as the paper does by reward; |y|: number
of completion tokens; λ: length penalty (1 in the paper); y_best: the top-ranked
completion; π: the policy. Every completion ranked below another must score lower, and
the best one is imitated.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefcore import hookimpl
from prefcore.batch import LogProbBatch
from prefcore.batch import LossOutput
from prefcore.lazy import lazy_module
from prefcore.methods import UsageObjective
from prefcore.methods import check_non_negative
from prefcore.methods import option
from prefcore.objectives import item_weights
from prefcore.objectives import list_reward_metrics
from prefcore.objectives import list_values
from prefcore.objectives import mean_or_zero
from prefcore.objectives import policy_sequence_logps
from prefcore.objectives import reduce_losses
from prefcore.objectives import require_lists

torch = lazy_module("torch")


@dataclass(frozen=True)
class RRHFConfig:
    ranking_weight: float = option(1.0, doc="weight w_rank of the ranking hinge loss")
    sft_weight: float = option(1.0, doc="weight w_ft of the NLL of the top-ranked completion")
    length_penalty: float = option(1.0, doc="λ: scores are summed log-probs / length^λ (0 = no normalisation)")

    def __post_init__(self) -> None:
        check_non_negative("rrhf", "ranking_weight", self.ranking_weight)
        check_non_negative("rrhf", "sft_weight", self.sft_weight)
        check_non_negative("rrhf", "length_penalty", self.length_penalty)
        if self.ranking_weight == 0 and self.sft_weight == 0:
            raise ValueError("ranking_weight and sft_weight cannot both be 0 for objective 'rrhf'. Got 0 and 0.")


class RRHF(UsageObjective):
    """RRHF: ranking hinge on length-normalised log-probs plus SFT on the best completion."""

    name = "rrhf"
    config_cls = RRHFConfig
    data_formats = ("listwise",)
    needs_reference = False

    def loss(self, batch: LogProbBatch) -> LossOutput:
        list_index, list_ranks = require_lists(batch, self.name)
        summed = policy_sequence_logps(batch)
        lengths = batch.mask.sum(-1).clamp(min=1).to(summed.dtype)
        scores, valid = list_values(summed / lengths**self.config.length_penalty, list_index)
        ranks = list_ranks.to(scores.dtype)
        # below[l, i, j]: completion i is ranked strictly below completion j of list l
        below = (ranks.unsqueeze(-1) > ranks.unsqueeze(-2)) & valid.unsqueeze(-1) & valid.unsqueeze(-2)
        violations = torch.relu(scores.unsqueeze(-1) - scores.unsqueeze(-2))
        ranking_losses = torch.where(below, violations, torch.zeros_like(violations)).sum((-1, -2))
        sft_losses = -summed[list_index[:, 0]]
        losses = self.config.ranking_weight * ranking_losses + self.config.sft_weight * sft_losses
        loss = reduce_losses(losses, batch, item_weights(batch, losses.numel()))
        metrics = {
            **list_reward_metrics(scores, valid),
            "ranking_loss": mean_or_zero(ranking_losses),
            "nll": mean_or_zero(sft_losses),
        }
        return LossOutput(loss, metrics)


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [RRHF]

"""Ranking Bradley–Terry: every pair of a ranked list, the list's comparisons averaged as one example.

Ouyang et al. 2022, "Training language models to follow instructions with human feedback"
(InstructGPT, https://arxiv.org/abs/2203.02155), Eq. 1: labellers rank K completions of a
prompt, and the reward model is trained on all C(K, 2) comparisons of the ranking as a
single batch element, so that one prompt's correlated comparisons do not dominate (and
overfit) the gradient.

    loss(list) = −1/|C| · Σ_{(w, l) ∈ C} log σ(r(x, y_w) − r(x, y_l))

C: the pairs (w, l) of the list with y_w ranked strictly better than y_l (all C(K, 2) pairs
when the ranking has no ties; tied completions are not compared); r: the reward. The
step's loss is the mean over lists; a list whose completions all tie adds 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefcore import hookimpl
from prefcore.batch import LossOutput
from prefcore.lazy import lazy_module
from prefcore.methods import NoOptions
from prefcore.methods import PreferenceModel
from prefcore.preference import RewardBatch
from prefcore.preference import item_weights
from prefcore.preference import mean_or_zero
from prefcore.preference import reduce_losses

torch = lazy_module("torch")
F = lazy_module("torch.nn.functional")


@dataclass(frozen=True)
class RankingBradleyTerryConfig(NoOptions):
    """Every strictly ordered pair of a list counts; there is nothing to configure."""


class RankingBradleyTerry(PreferenceModel):
    """Ranking Bradley–Terry (InstructGPT): all C(K, 2) pairs of a ranked list, averaged per list."""

    name = "ranking_bradley_terry"
    config_cls = RankingBradleyTerryConfig
    data_formats = ("listwise",)

    def loss(self, batch: RewardBatch) -> LossOutput:
        if batch.list_index is None or batch.list_ranks is None:
            raise ValueError(
                f"preference model {self.name!r} trains on ranked lists, but the batch has no list_index/list_ranks; "
                f"use listwise data (rankings)."
            )
        if batch.list_ranks.shape != batch.list_index.shape:
            raise ValueError("list_ranks must have the shape of list_index.")
        valid = batch.list_index >= 0
        rewards = batch.rewards[batch.list_index.clamp(min=0), 0]  # [L, K]
        ranks = batch.list_ranks.to(rewards.dtype)
        # better[l, i, j]: item i of list l is ranked strictly above item j, both real items.
        better = (ranks.unsqueeze(-1) < ranks.unsqueeze(-2)) & valid.unsqueeze(-1) & valid.unsqueeze(-2)
        differences = rewards.unsqueeze(-1) - rewards.unsqueeze(-2)
        pair_losses = torch.where(better, -F.logsigmoid(differences), torch.zeros_like(differences))
        pairs_per_list = better.sum((-1, -2))
        losses = pair_losses.sum((-1, -2)) / pairs_per_list.clamp(min=1).to(rewards.dtype)
        loss = reduce_losses(losses, batch, item_weights(batch, losses.numel(), "list"))
        ordered = differences.detach()[better]
        first, last = _best_and_worst(rewards.detach(), valid)
        return LossOutput(
            loss,
            {
                "rewards/accuracy": mean_or_zero((ordered > 0).float()),
                "rewards/margin": mean_or_zero(ordered),
                "rewards/best_minus_worst": mean_or_zero(first - last),
            },
        )


def _best_and_worst(rewards: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards of the best (first) and worst (last real) item of each list."""
    last = (valid.sum(-1) - 1).clamp(min=0)
    return rewards[:, 0], rewards.gather(-1, last.unsqueeze(-1)).squeeze(-1)


@hookimpl
def prefcore_register_preference_models() -> list[type[PreferenceModel]]:
    return [RankingBradleyTerry]

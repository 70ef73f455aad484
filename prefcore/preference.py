"""The contract between the engine and a preference-model objective: the reward batch.

A preference-model objective never touches a network either. The engine runs the reward
model (a backbone with one scalar head per aspect, read at the last completion token) over
the batch's sequences and hands the objective their rewards, plus how sequences group into
comparisons and what the feedback said about each. The objective returns a scalar loss
and named metrics, exactly like a usage objective does with a ``LogProbBatch``.

Shapes: ``S`` sequences, ``A`` reward heads (aspects), ``P`` pairs, ``L`` lists of up to ``K``.

Besides the batch, this module is the preference-model author's toolkit: reading pairs off
the batch (``pair_rewards``, ``refuse_ties``, ``item_weights``), reducing per-item losses
(``reduce_losses``) and the standard metrics (``pair_metrics``, ``mean_or_zero``). Option
checks for a config (``check_positive``, ...) are in ``prefcore.methods``, with the base
class ``PreferenceModel``.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefcore.lazy import lazy_module

torch = lazy_module("torch")

__all__ = [
    "RewardBatch",
    "item_weights",
    "mean_or_zero",
    "pair_head",
    "pair_metrics",
    "pair_rewards",
    "reduce_losses",
    "refuse_ties",
    "require_pairs",
]


@dataclass(frozen=True)
class RewardBatch:
    """Rewards of sequences and the feedback that relates them.

    Attributes:
        rewards: ``[S, A]`` float32 scalar rewards, one column per head (``A = 1`` for one reward).
        chosen_index, rejected_index: ``[P]`` sequence indices of each pair.
        ties: ``[P]`` bool, True where the annotator saw no difference, or None.
        margins: ``[P]`` preference strength (levels, score gaps), or None.
        probabilities: ``[P]`` probability that chosen is preferred (soft labels), or None.
        aspect_index: ``[P]`` which head each pair judges (multi-aspect feedback), or None = head 0.
        labels: ``[S]`` bool per-sequence binary labels (e.g. safe / unsafe), or None.
        label_mask: ``[S]`` bool, which sequences carry a binary label, or None = all when ``labels`` is set.
        list_index: ``[L, K]`` sequence indices of each ranked list, best first, -1 = padding, or None.
        list_ranks: ``[L, K]`` float ranks aligned with ``list_index`` (1 = best, equal = tie), or None.
        step_mask: ``[S, T]`` bool marking the tokens that end a reasoning step (process reward models), or None.
        step_rewards: ``[S, T]`` float32 per-token rewards of a process reward model, or None.
        step_labels: ``[S, T]`` float32 step correctness labels (1 good, 0 bad) where ``step_mask``, or None.
        weights: ``[P]`` per-comparison weights, or None.
        num_items: comparisons in the whole optimiser step (gradient accumulation), or None = this batch.
    """

    rewards: torch.Tensor
    chosen_index: torch.Tensor | None = None
    rejected_index: torch.Tensor | None = None
    ties: torch.Tensor | None = None
    margins: torch.Tensor | None = None
    probabilities: torch.Tensor | None = None
    aspect_index: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    label_mask: torch.Tensor | None = None
    list_index: torch.Tensor | None = None
    list_ranks: torch.Tensor | None = None
    step_mask: torch.Tensor | None = None
    step_rewards: torch.Tensor | None = None
    step_labels: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    num_items: int | None = None

    def __post_init__(self) -> None:
        if self.rewards.dim() != 2:
            raise ValueError(f"rewards must be [S, A]. Got shape {tuple(self.rewards.shape)}.")
        if (self.chosen_index is None) != (self.rejected_index is None):
            raise ValueError("chosen_index and rejected_index come together.")

    @property
    def num_heads(self) -> int:
        return self.rewards.shape[1]


# ----------------------------------------------------------------------------------------------
# Reading the batch
# ----------------------------------------------------------------------------------------------


def require_pairs(batch: RewardBatch, objective: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``chosen_index`` and ``rejected_index``; an error naming ``objective`` if the batch has no pairs."""
    if batch.chosen_index is None or batch.rejected_index is None:
        raise ValueError(
            f"preference model {objective!r} trains on pairs, but the batch has no chosen_index/rejected_index; "
            f"use pairwise data."
        )
    return batch.chosen_index, batch.rejected_index


def refuse_ties(batch: RewardBatch, objective: str) -> None:
    """A tie says neither completion is better; a loss that always prefers 'chosen' cannot learn from it."""
    if batch.ties is not None and bool(batch.ties.any()):
        raise ValueError(
            f"preference model {objective!r} cannot learn from tie pairs ({int(batch.ties.sum())} in this batch); "
            f"leave ties out (ties = 'skip') or use soft_bradley_terry, which learns p = 0.5 for them."
        )


def pair_head(batch: RewardBatch) -> torch.Tensor:
    """``[P]`` the head each pair is judged on: ``aspect_index``, or head 0."""
    if batch.chosen_index is None:
        raise ValueError("the batch has no pairs.")
    if batch.aspect_index is None:
        return torch.zeros_like(batch.chosen_index)
    if batch.aspect_index.shape != batch.chosen_index.shape:
        raise ValueError(
            f"aspect_index has shape {tuple(batch.aspect_index.shape)}; it needs one entry per pair "
            f"({tuple(batch.chosen_index.shape)})."
        )
    if batch.aspect_index.numel() and int(batch.aspect_index.max()) >= batch.num_heads:
        raise ValueError(f"aspect_index {int(batch.aspect_index.max())} is out of range for {batch.num_heads} heads.")
    return batch.aspect_index


def pair_rewards(batch: RewardBatch, objective: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``[P]`` ``r(chosen)`` and ``[P]`` ``r(rejected)`` of each pair, each read on the pair's head."""
    chosen_index, rejected_index = require_pairs(batch, objective)
    head = pair_head(batch)
    return batch.rewards[chosen_index, head], batch.rewards[rejected_index, head]


def item_weights(batch: RewardBatch, count: int, what: str) -> torch.Tensor | None:
    """``batch.weights`` as ``count`` float weights, one per ``what`` (pair, list, sequence), or None."""
    if batch.weights is None:
        return None
    if batch.weights.numel() != count:
        raise ValueError(f"batch.weights has {batch.weights.numel()} entries for {count} {what}s.")
    return batch.weights.float()


# ----------------------------------------------------------------------------------------------
# Reduction and metrics
# ----------------------------------------------------------------------------------------------


def reduce_losses(losses: torch.Tensor, batch: RewardBatch, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``Σ wᵢ·lossᵢ / N`` with N = ``batch.num_items`` when set, else the number of losses.

    Dividing by the step's count (not this micro-batch's) makes micro-batch losses add up
    to the step mean, whatever the split. Every built-in objective reduces through it, so
    weights, gradient accumulation and empty micro-batches are handled the same everywhere.
    """
    if weights is not None:
        losses = losses * weights.to(losses.dtype)
    count = batch.num_items if batch.num_items is not None else losses.numel()
    return losses.sum() / max(count, 1)


def mean_or_zero(values: torch.Tensor) -> torch.Tensor:
    """Mean of a detached metric; 0 for an empty micro-batch rather than NaN."""
    values = values.detach().float()
    return values.mean() if values.numel() else torch.zeros((), device=values.device)


def pair_metrics(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean rewards of each side, mean margin, and the share of pairs ordered correctly (TRL's accuracy)."""
    chosen_rewards, rejected_rewards = chosen_rewards.detach().float(), rejected_rewards.detach().float()
    return {
        "rewards/chosen": mean_or_zero(chosen_rewards),
        "rewards/rejected": mean_or_zero(rejected_rewards),
        "rewards/margin": mean_or_zero(chosen_rewards - rejected_rewards),
        "rewards/accuracy": mean_or_zero((chosen_rewards > rejected_rewards).float()),
    }

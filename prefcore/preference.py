"""The contract between the engine and a preference-model objective: the reward batch.

A preference-model objective never touches a network either. The engine runs the reward
model (a backbone with one scalar head per aspect, read at the last completion token) over
the batch's sequences and hands the objective their rewards, plus how sequences group into
comparisons and what the feedback said about each. The objective returns a scalar loss
and named metrics, exactly like a usage objective does with a ``LogProbBatch``.

Shapes: ``S`` sequences, ``A`` reward heads (aspects), ``P`` pairs, ``L`` lists of up to ``K``.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefcore.lazy import lazy_module

torch = lazy_module("torch")


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

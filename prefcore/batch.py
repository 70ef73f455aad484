"""The one contract between the engine and a usage objective: the log-prob batch.

An objective never touches a model. The engine tokenises feedback into sequences
(prompt + completion), runs the policy (and the reference when the objective asks for
it) through ``prefcore.kernels`` and hands the objective per-token log-probs of the
completion tokens, plus how sequences group into comparisons. The objective returns a
scalar loss and named metrics. So each loss is written once, on tensors, and the fused
LM-head path, cached reference log-probs, packing and LoRA come for free.

Shapes: ``S`` sequences padded to ``T`` completion positions; ``P`` pairs; ``L`` lists of
up to ``K`` completions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from typing import Literal

from prefcore.lazy import lazy_module

__all__ = [
    "DATA_FORMATS",
    "LogProbBatch",
    "LossOutput",
    "target_token_count",
]

torch = lazy_module("torch")

DataFormat = Literal["pairwise", "unpaired", "listwise", "sft"]
DATA_FORMATS: tuple[str, ...] = ("pairwise", "unpaired", "listwise", "sft")


@dataclass(frozen=True)
class LogProbBatch:
    """Per-token log-probs and the grouping of sequences into comparisons.

    Attributes:
        policy_logps: ``[S, T]`` float32 log π(token | prefix) of completion tokens; 0 where masked.
        mask: ``[S, T]`` bool, True for completion tokens that count in the loss.
        ref_logps: ``[S, T]`` reference log-probs, or None (reference-free, or given per sequence).
        ref_sequence_logps: ``[S]`` summed reference log-probs (precomputed cache), or None.
        chosen_index, rejected_index: ``[P]`` sequence indices of each pair (pairwise format).
        labels: ``[S]`` bool, True = desirable (unpaired format).
        list_index: ``[L, K]`` sequence indices of each list, best first, -1 = padding (listwise).
        list_ranks: ``[L, K]`` float ranks (1 = best, equal = tie), aligned with ``list_index``.
        margins: ``[P]`` preference strength of each pair (levels, score gaps; 0 where the pair's
            record gives none), or None when no pair has one.
        probabilities: ``[P]`` probability that chosen is preferred (soft labels: vote shares, judge
            confidences, a reward model's σ(Δ)); NaN where the pair's record gives none, so an
            objective can tell "no soft label" from "certain" and apply its own default; None when
            no pair has one. ``prefcore.objectives.pair_probabilities`` fills the NaNs.
        weights: ``[P]`` (pairwise) or ``[S]`` per-example weights, or None.
        scores: ``[S]`` the feedback's score of each sequence (a rating, a reward model's reward);
            listwise batches from scored records carry it, and their ``list_ranks`` order the
            list by it (higher is better, equal scores tie). NaN for sequences whose record gives
            none (rankings, pairs); None when no sequence has one. Read by PRO
            (``prefcore.objectives.list_scores``).
        mismatched_index: ``[M]`` sequences pairing a prompt with another example's completion
            (KTO's reference point), excluded from ``labels``' loss; or None.
        num_items: how many comparisons the whole optimiser step holds across gradient
            accumulation, so per-micro-batch losses sum to the step mean; None = this batch.
        num_tokens: completion tokens of the NLL-target sequences (chosen sequences for pairwise
            batches, desirable ones for unpaired, the best of each list for listwise, every
            sequence for sft) in the whole optimiser step, so token-averaged terms sum exactly
            across micro-batches; None = this batch's own count (see ``target_token_count``).
    """

    policy_logps: torch.Tensor
    mask: torch.Tensor
    ref_logps: torch.Tensor | None = None
    ref_sequence_logps: torch.Tensor | None = None
    chosen_index: torch.Tensor | None = None
    rejected_index: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    list_index: torch.Tensor | None = None
    list_ranks: torch.Tensor | None = None
    margins: torch.Tensor | None = None
    probabilities: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    mismatched_index: torch.Tensor | None = None
    num_items: int | None = None
    num_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.policy_logps.dim() != 2:
            raise ValueError(f"policy_logps must be [S, T]. Got shape {tuple(self.policy_logps.shape)}.")
        if self.mask.shape != self.policy_logps.shape:
            raise ValueError(
                f"mask shape {tuple(self.mask.shape)} must equal policy_logps shape {tuple(self.policy_logps.shape)}."
            )
        if self.ref_logps is not None and self.ref_logps.shape != self.policy_logps.shape:
            raise ValueError(
                f"ref_logps shape {tuple(self.ref_logps.shape)} must equal policy_logps shape "
                f"{tuple(self.policy_logps.shape)}."
            )
        if (self.chosen_index is None) != (self.rejected_index is None):
            raise ValueError("chosen_index and rejected_index come together.")
        for name in ("num_items", "num_tokens"):
            count = getattr(self, name)
            if count is not None and count < 0:
                raise ValueError(f"{name} counts the whole optimiser step and must be >= 0 or None. Got {count}.")

    @property
    def num_sequences(self) -> int:
        return self.policy_logps.shape[0]

    @property
    def has_reference(self) -> bool:
        return self.ref_logps is not None or self.ref_sequence_logps is not None

    def target_token_count(self) -> int:
        """Completion tokens of this batch's NLL-target sequences; see :func:`target_token_count`."""
        return target_token_count(
            self.mask,
            chosen_index=self.chosen_index,
            labels=self.labels,
            list_index=self.list_index,
            mismatched_index=self.mismatched_index,
        )

    def with_policy_logps(self, policy_logps: torch.Tensor) -> LogProbBatch:
        """The same batch with other policy log-probs (used by parity checks)."""
        return replace(self, policy_logps=policy_logps)


def target_token_count(
    mask: torch.Tensor,
    *,
    chosen_index: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    list_index: torch.Tensor | None = None,
    mismatched_index: torch.Tensor | None = None,
) -> int:
    """Completion tokens of the sequences a token-averaged NLL trains on: the rule behind ``num_tokens``.

    The chosen sequence of each pair (pairwise), the desirable labelled sequences (unpaired;
    never KTO's mismatched ones), the best (first) sequence of each list (listwise), or every
    sequence (sft). One rule for the engine, which sums it over a step's micro-batches
    before running them, and for the parity kit's ``split_batch``, so both agree.
    """
    if chosen_index is not None:
        targets = mask[chosen_index]
    elif list_index is not None:
        best = list_index[:, 0]
        targets = mask[best[best >= 0]]
    elif labels is not None:
        desirable = labels.bool().clone()
        if mismatched_index is not None:
            desirable[mismatched_index] = False
        targets = mask[desirable]
    else:
        targets = mask
    return int((targets != 0).sum())


@dataclass(frozen=True)
class LossOutput:
    """What an objective returns: a differentiable scalar and detached named metrics.

    ``metrics`` values are 0-d tensors or floats (e.g. TRL's ``rewards/margins``, ``logps/chosen``);
    the engine averages them over the step and logs them through the lifecycle hooks.
    """

    loss: torch.Tensor
    metrics: Mapping[str, torch.Tensor | float] = field(default_factory=dict)

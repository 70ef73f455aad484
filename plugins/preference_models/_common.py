"""Helpers shared by the built-in preference models: config checks, reading the batch, reduction, metrics.

Not a plugin: it registers nothing. Every objective reduces through ``reduce_losses`` so
that weights, ``num_items`` (gradient accumulation) and empty micro-batches are handled the
same way everywhere.
"""

from __future__ import annotations

import math

from prefcore.errors import ConfigError
from prefcore.lazy import lazy_module
from prefcore.preference import RewardBatch

torch = lazy_module("torch")

# ----------------------------------------------------------------------------------------------
# Config checks: the error names the objective, the option and the value
# ----------------------------------------------------------------------------------------------


def check_finite(objective: str, name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(
            f"{name} must be a finite number for objective {objective!r}. Got {value!r}.", method=objective, field=name
        )


def check_positive(objective: str, name: str, value: float) -> None:
    check_finite(objective, name, value)
    if not value > 0:
        raise ConfigError(f"{name} must be > 0 for objective {objective!r}. Got {value}.", method=objective, field=name)


def check_non_negative(objective: str, name: str, value: float) -> None:
    check_finite(objective, name, value)
    if not value >= 0:
        raise ConfigError(
            f"{name} must be >= 0 for objective {objective!r}. Got {value}.", method=objective, field=name
        )


# ----------------------------------------------------------------------------------------------
# Reading the batch
# ----------------------------------------------------------------------------------------------


def require_pairs(batch: RewardBatch, objective: str) -> tuple[torch.Tensor, torch.Tensor]:
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
    """``r(chosen)`` and ``r(rejected)`` of each pair, each read on the pair's head."""
    chosen_index, rejected_index = require_pairs(batch, objective)
    head = pair_head(batch)
    return batch.rewards[chosen_index, head], batch.rewards[rejected_index, head]


def item_weights(batch: RewardBatch, count: int, what: str) -> torch.Tensor | None:
    """``batch.weights`` as one weight per ``what`` (pair, list, sequence), or None."""
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
    to the step mean, whatever the split.
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

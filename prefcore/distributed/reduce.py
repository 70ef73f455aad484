"""Sums across ranks: a step's metrics and its token and item counts.

A trainer divides each micro-batch's loss by the whole step's count (comparisons, target
tokens); under data parallelism that count is the global one, summed over the ranks, so each
rank's loss is its share of the global mean and the ranks' gradients add up to the gradient of
1 rank × the whole batch. Metrics are kept as shares (``value × local / global``) and summed.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.distributed as dist

from prefcore.distributed.process_group import current

__all__ = ["all_sum", "sum_metrics"]


def all_sum(value: float) -> float:
    """``value`` summed over the ranks (itself in a single-process run)."""
    if current() is None:
        return value
    tensor = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(tensor)
    return float(tensor.item())


def sum_metrics(totals: Mapping[str, float]) -> dict[str, float]:
    """Each metric summed over the ranks; a key some rank lacks counts 0 there."""
    if current() is None:
        return dict(totals)
    gathered: list[dict[str, float] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, dict(totals))
    names = list(dict.fromkeys(name for part in gathered if part for name in part))  # rank 0's order first
    return {name: sum(float(part.get(name, 0.0)) for part in gathered if part) for name in names}

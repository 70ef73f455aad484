"""A rollout phase's outcome, and every rank's of it gathered in rank order for the step's metrics."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from types import SimpleNamespace
from typing import Any

import torch
import torch.distributed as dist

from prefcore.engine.rollout import RolloutTensors
from prefcore.rollout import Rollouts

__all__ = ["ScoredRollouts", "gather_scored"]


@dataclass(frozen=True)
class ScoredRollouts:
    """A rollout phase's outcome as per-token tensors (``[S, T]``) and per-completion ones (``[S]``).

    ``extras`` reach the objective (``RolloutBatch.extras``); ``metrics`` are the phase's own
    counts (dynamic sampling's), logged with the step. ``counted``: the rows that count (None: all);
    the rest stand in for a rank that dynamic sampling left without a group, so that it still joins
    the forward and backward passes (with weight 0).
    """

    rollouts: Rollouts
    tensors: RolloutTensors
    ref_logps: torch.Tensor | None
    rewards: torch.Tensor
    components: Mapping[str, torch.Tensor]
    advantages: torch.Tensor
    extras: Mapping[str, Any]
    metrics: Mapping[str, float] = field(default_factory=dict)
    counted: int | None = None

    @property
    def rows(self) -> int:
        """The rows that count (a stand-in group counts none)."""
        return self.rewards.shape[0] if self.counted is None else self.counted


def _to_cpu(value: Any) -> Any:
    """``value`` with its tensors on the CPU (what ``all_gather_object`` pickles)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {key: _to_cpu(item) for key, item in value.items()}
    return value


def gather_scored(scored: ScoredRollouts, world_size: int) -> ScoredRollouts:
    """Every rank's scored rollouts (collective), in rank order, as far as ``rollout_metrics`` reads them.

    A stand-in group (``counted``) is left out; per-token tensors are padded to the longest completion,
    as one process pads them.
    """
    tensors = scored.tensors
    whole, rows = scored.rewards.shape[0], scored.rows
    mine = {
        "rewards": scored.rewards[:rows],
        "advantages": scored.advantages[:rows],
        "mask": tensors.mask[:rows],
        "sampling_logps": tensors.sampling_logps[:rows],
        "truncated": tensors.truncated[:rows],
        "ref_logps": None if scored.ref_logps is None else scored.ref_logps[:rows],
        "components": {name: value[:rows] for name, value in scored.components.items()},
        "extras": {
            name: value[:rows]
            for name, value in scored.extras.items()
            if isinstance(value, torch.Tensor) and value.shape[:1] == (whole,)
        },
        "metrics": {name: float(value) * rows for name, value in scored.metrics.items()},
    }
    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, _to_cpu(mine))
    width = max(part["mask"].shape[1] for part in gathered)

    def joined(get: Callable[[Any], Any]) -> torch.Tensor:
        values = [get(part) for part in gathered]
        if values[0].dim() == 2:
            values = [torch.nn.functional.pad(value, (0, width - value.shape[1])) for value in values]
        return torch.cat(values)

    total = sum(part["rewards"].shape[0] for part in gathered)
    truncated = joined(lambda part: part["truncated"])
    size = scored.rollouts.samples_per_prompt
    return ScoredRollouts(
        SimpleNamespace(samples_per_prompt=size, truncated=tuple(bool(flag) for flag in truncated)),  # type: ignore[arg-type]
        SimpleNamespace(  # type: ignore[arg-type]
            mask=joined(lambda part: part["mask"]),
            sampling_logps=joined(lambda part: part["sampling_logps"]),
            truncated=truncated,
            group_ids=torch.arange(total) // size,
        ),
        None if scored.ref_logps is None else joined(lambda part: part["ref_logps"]),
        joined(lambda part: part["rewards"]),
        {name: joined(lambda part, name=name: part["components"][name]) for name in scored.components},
        joined(lambda part: part["advantages"]),
        {name: joined(lambda part, name=name: part["extras"][name]) for name in mine["extras"]},
        {name: sum(part["metrics"][name] for part in gathered) / total for name in scored.metrics},
    )

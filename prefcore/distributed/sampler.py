"""Each rank's share of a micro-batch: the global batch order is computed alike on every rank, then split.

Every rank computes the same seeded order of global micro-batches
(``prefcore.engine.batching.micro_batches``), so the data position (epoch, micro-batch) is one
pair of numbers whatever the number of processes: a run resumes on another world size at the
same place. Rank r takes the r-th contiguous slice of each global micro-batch; the slices
partition it, so 2 ranks × B/2 items train on exactly what 1 rank × B does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prefcore.engine.batching import micro_batches

__all__ = ["MicroBatchSampler", "shard_indices"]


def shard_indices(indices: Sequence[int], rank: int, world_size: int) -> list[int]:
    """Rank ``rank``'s contiguous slice of ``indices``; sizes differ by at most one, earlier ranks larger.

    A batch smaller than the world leaves the last ranks empty; the trainers then run a zero-weighted
    forward and backward so that every rank joins the collectives.
    """
    base, extra = divmod(len(indices), world_size)
    start = rank * base + min(rank, extra)
    return list(indices[start : start + base + (1 if rank < extra else 0)])


@dataclass
class MicroBatchSampler:
    """Seeded, resumable micro-batches of ``items``, each split across ranks.

    ``next()`` returns ``(global_indices, local_indices)``; ``state_dict()`` is ``{"epoch", "position"}``,
    independent of the world size.
    """

    items: Sequence[Any]
    batch_size: int
    seed: int
    rank: int = 0
    world_size: int = 1
    shuffle: bool = True
    group_by_length: bool = True
    epoch: int = 0
    position: int = 0

    def __post_init__(self) -> None:
        self._batches: list[list[int]] = []
        self._batches_epoch = -1

    def epoch_batches(self) -> list[list[int]]:
        if self._batches_epoch != self.epoch:
            self._batches = micro_batches(
                self.items,
                self.batch_size,
                seed=self.seed,
                epoch=self.epoch,
                shuffle=self.shuffle,
                group_by_length=self.group_by_length,
            )
            self._batches_epoch = self.epoch
        return self._batches

    def next(self) -> tuple[list[int], list[int]]:
        if self.position >= len(self.epoch_batches()):
            self.epoch += 1
            self.position = 0
        indices = self.epoch_batches()[self.position]
        self.position += 1
        return indices, shard_indices(indices, self.rank, self.world_size)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

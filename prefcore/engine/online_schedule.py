"""What each online step draws: its prompts (a seeded, resumable order) and its sampling seeds.

Every random draw of an online step is a pure function of ``(seed, step)`` (and the
dynamic-sampling round, and the rank), so a resumed run redraws exactly what an uninterrupted
one would; ``select_groups`` merges the groups kept over several samplings of one step.
Under torchrun, ``group_entries`` and ``entries_rollouts`` carry whole groups between the ranks
(dynamic sampling rebalances the kept groups, the loops gather every rank's samples).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from prefcore.errors import ConfigError
from prefcore.rollout import Rollouts

__all__ = [
    "PromptSampler",
    "entries_rollouts",
    "group_entries",
    "rank_seed",
    "rollout_seed",
    "select_groups",
    "slice_start",
]


def rollout_seed(seed: int, step: int, attempt: int = 0) -> int:
    """The sampling seed of online step ``step`` (counted from 0) and its dynamic-sampling round ``attempt``.

    A pure function, so a resume redraws it; round 0 is the step's only round without
    dynamic sampling.
    """
    first = (seed * 1_000_003 + step * 7_919 + 17) % (2**31 - 1)
    return first if attempt == 0 else (first * 48_271 + attempt * 104_729) % (2**31 - 1)


def rank_seed(seed: int, rank: int) -> int:
    """Rank ``rank``'s sampling seed for a phase whose seed is ``seed``: ``seed`` itself on rank 0 (so one
    process samples as it always has), distinct on the others, and a pure function, so a resume redraws it."""
    return seed if rank == 0 else (seed * 69_069 + rank * 1_000_033 + 1) % (2**31 - 1)


def select_groups(parts: Sequence[tuple[Rollouts, Sequence[int]]]) -> Rollouts:
    """One ``Rollouts`` of the chosen groups of several samplings, prompt-major, group ids renumbered 0..K−1.

    ``parts``: each sampling with the group ids (prompt positions) to keep from it, in order.
    """
    fields: dict[str, list[Any]] = {
        name: [] for name in ("prompt_ids", "completion_ids", "texts", "sampling_logps", "truncated")
    }
    prompts: list[Any] = []
    first = parts[0][0]
    for rollouts, groups in parts:
        if rollouts.samples_per_prompt != first.samples_per_prompt or rollouts.temperature != first.temperature:
            raise ValueError("rollouts to merge must share samples_per_prompt and temperature.")
        size = rollouts.samples_per_prompt
        for group in groups:
            prompts.append(rollouts.prompts[group])
            rows = range(group * size, (group + 1) * size)
            for name, values in fields.items():
                values.extend(getattr(rollouts, name)[row] for row in rows)
    size = first.samples_per_prompt
    return Rollouts(
        prompts=tuple(prompts),
        group_ids=tuple(index // size for index in range(len(prompts) * size)),
        samples_per_prompt=size,
        temperature=first.temperature,
        **{name: tuple(values) for name, values in fields.items()},
    )


def slice_start(count: int, rank: int, world_size: int) -> int:
    """The first position of rank ``rank``'s slice of ``count`` items (``shard_indices``'s contiguous split)."""
    base, extra = divmod(count, world_size)
    return rank * base + min(rank, extra)


def group_entries(rollouts: Rollouts, groups: Sequence[int], **per_group: Sequence[Any]) -> list[dict[str, Any]]:
    """Each of ``groups`` (prompt positions in ``rollouts``) as a plain dict of its G rows, picklable for
    ``all_gather_object``; ``per_group`` adds one value per group (``scores=[...]``, the prompt's index)."""
    size = rollouts.samples_per_prompt
    entries = []
    for number, group in enumerate(groups):
        rows = range(group * size, (group + 1) * size)
        entry: dict[str, Any] = {"prompt": rollouts.prompts[group]}
        for name in ("prompt_ids", "completion_ids", "texts", "sampling_logps", "truncated"):
            entry[name] = [getattr(rollouts, name)[row] for row in rows]
        entry.update({name: values[number] for name, values in per_group.items()})
        entries.append(entry)
    return entries


def entries_rollouts(entries: Sequence[Mapping[str, Any]], samples_per_prompt: int, temperature: float) -> Rollouts:
    """One ``Rollouts`` of ``group_entries``' groups in order, group ids 0..K−1 (as ``select_groups`` makes)."""
    fields = ("prompt_ids", "completion_ids", "texts", "sampling_logps", "truncated")
    return Rollouts(
        prompts=tuple(entry["prompt"] for entry in entries),
        group_ids=tuple(index // samples_per_prompt for index in range(len(entries) * samples_per_prompt)),
        samples_per_prompt=samples_per_prompt,
        temperature=temperature,
        **{name: tuple(value for entry in entries for value in entry[name]) for name in fields},
    )


class PromptSampler:
    """Draws prompt indices in a seeded order, epoch after epoch; ``state`` is its whole place.

    Each epoch is a permutation seeded by ``(seed, epoch)``; a draw that runs past the end of
    an epoch continues in the next, so every step gets exactly ``count`` prompts.
    """

    def __init__(self, size: int, seed: int) -> None:
        if size < 1:
            raise ConfigError("there are no training prompts for the online objective.")
        self.size = size
        self.seed = seed
        self.epoch = 0
        self.position = 0

    def _order(self, epoch: int) -> list[int]:
        order = list(range(self.size))
        random.Random(self.seed * 100_003 + epoch).shuffle(order)
        return order

    def draw(self, count: int) -> list[int]:
        drawn: list[int] = []
        while len(drawn) < count:
            if self.position >= self.size:
                self.epoch, self.position = self.epoch + 1, 0
            take = min(count - len(drawn), self.size - self.position)
            drawn += self._order(self.epoch)[self.position : self.position + take]
            self.position += take
        return drawn

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load(self, state: Mapping[str, Any]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

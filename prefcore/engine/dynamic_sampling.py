"""DAPO's dynamic sampling: drop the groups whose rewards are all equal and sample more until the step is full.

Yu et al. 2025, "DAPO" (https://arxiv.org/abs/2503.14476), §3.2; verl's ``filter_groups``. The
rollout phase drops each prompt whose completions all got the same reward (no group-relative
signal) and samples as many new prompts as were dropped, round after round, until the step has
``prompts_per_step`` groups or ``max_sampling_rounds`` extra rounds are spent; the step then trains
on the groups kept (on the first round's, if none was). The extra prompts come from the same
seeded order, so later steps start further on.

Under torchrun "the step is full" is one decision over every rank (``_sharded``): the ranks sum
their kept-group counts each round, so they draw the same replacement prompts and run the same
rounds, and the kept groups are rebalanced in one process's order, so N processes train exactly
what one does.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from prefcore.advantages import dynamic_sampling_filter
from prefcore.distributed.sampler import shard_indices
from prefcore.engine.online_schedule import entries_rollouts
from prefcore.engine.online_schedule import group_entries
from prefcore.engine.online_schedule import select_groups
from prefcore.engine.online_schedule import slice_start
from prefcore.errors import ConfigError
from prefcore.rollout import Rollouts

__all__ = ["Sampled", "dynamic_sampling"]

Sampled = tuple[list[int], Rollouts, torch.Tensor, dict[str, torch.Tensor], dict[str, float]]
"""The prompts trained on, their rollouts, rewards ``[S]`` and reward components, and the phase's counts."""


def dynamic_sampling(trainer: Any, indices: Sequence[int]) -> tuple[Sampled, int | None]:
    """Dynamic sampling of an ``OnlineTrainer``'s step from its prompts at ``indices`` (this rank's slice).

    Returns what was sampled and the rows that count on this rank (None: all; 0: a stand-in group, see
    ``_sharded``). The trainer provides ``_sample_and_score(indices, round)``, ``sampler``, ``online``,
    ``local_prompts``, ``rank``, ``world_size`` and ``parallel`` (None in one process).
    """
    if trainer.parallel is not None:
        return _sharded(trainer, indices)
    return _one_process(trainer, indices), None


def _one_process(trainer: Any, indices: Sequence[int]) -> Sampled:
    """Dynamic sampling in one process: keep non-constant groups, sample more prompts until the step is full."""
    wanted = len(indices)
    parts: list[tuple[Rollouts, list[int]]] = []
    kept: list[int] = []
    rewards: list[torch.Tensor] = []
    components: dict[str, list[torch.Tensor]] = {}
    sampled, dropped, total = 0, 0, 0.0
    first: tuple[Rollouts, torch.Tensor, Mapping[str, torch.Tensor]] | None = None
    attempt, drawn = 0, list(indices)
    while True:
        rollouts, scores, parts_scores = trainer._sample_and_score(drawn, attempt)
        first = first or (rollouts, scores, parts_scores)
        groups = dynamic_sampling_filter(scores, torch.tensor(rollouts.group_ids)).kept_groups
        size = rollouts.samples_per_prompt
        rows = [row for group in groups for row in range(group * size, (group + 1) * size)]
        parts.append((rollouts, list(groups)))
        kept += [drawn[group] for group in groups]
        rewards.append(scores[rows])
        for name, values in parts_scores.items():
            components.setdefault(name, []).append(values[rows])
        sampled += len(drawn)
        dropped += len(drawn) - len(groups)
        total += float(scores.sum())
        missing = wanted - len(kept)
        if missing == 0 or attempt == trainer.online.max_sampling_rounds:
            break
        attempt, drawn = attempt + 1, trainer.sampler.draw(missing)
    metrics = {
        "dynamic_sampling/rounds": float(attempt + 1),
        "dynamic_sampling/sampled_prompts": float(sampled),
        "dynamic_sampling/dropped_groups": float(dropped),
        "dynamic_sampling/kept_groups": float(len(kept)),
        "dynamic_sampling/sampled_reward_mean": total / (sampled * trainer.online.samples_per_prompt),
    }
    if not kept:  # nothing to learn from within the cap: the first round, as without the filter
        rollouts, scores, parts_scores = first
        return list(indices), rollouts, scores, dict(parts_scores), metrics
    merged = {name: torch.cat(values) for name, values in components.items()}
    return kept, select_groups(parts), torch.cat(rewards), merged, metrics


def _sharded(trainer: Any, indices: Sequence[int]) -> tuple[Sampled, int | None]:
    """Dynamic sampling over the ranks, equal to one process's (``indices``: this rank's slice of the step).

    Each round, every rank samples its slice of the round's global draw and the kept-group counts are
    summed: "the step is full" is one global decision, every rank draws the same replacement prompts
    (a round of fewer prompts than ranks samples on the first ranks only) and runs the same number of
    rounds. The kept groups are then gathered in one process's order (round, then place in the round's
    draw) and split into contiguous, balanced slices, so the ranks' rows in turn are one process's
    rows. A rank left without a group (fewer kept groups than ranks) trains a stand-in group of its
    own with weight 0: its counted rows are then 0 (``ScoredRollouts.counted``).
    """
    wanted, size = trainer.online.prompts_per_step, trainer.online.samples_per_prompt
    entries: list[dict[str, Any]] = []
    first: tuple[list[int], Rollouts, torch.Tensor, Mapping[str, torch.Tensor]] | None = None
    kept, sampled, dropped, total = 0, 0, 0, 0.0
    attempt, count, local = 0, wanted, list(indices)
    while True:
        start = slice_start(count, trainer.rank, trainer.world_size)
        mine = [0.0, 0.0]  # kept groups, reward sum
        if local:
            rollouts, scores, parts_scores = trainer._sample_and_score(local, attempt)
            scores = scores.cpu()
            parts_scores = {name: values.cpu() for name, values in parts_scores.items()}
            first = first or (list(local), rollouts, scores, parts_scores)
            groups = dynamic_sampling_filter(scores, torch.tensor(rollouts.group_ids)).kept_groups
            entries += _entries(rollouts, groups, local, scores, parts_scores, order=(attempt, start))
            mine = [float(len(groups)), float(scores.sum())]
        summed = torch.tensor(mine, dtype=torch.float64)
        dist.all_reduce(summed)
        round_kept, round_reward = summed.tolist()
        sampled, kept, total = sampled + count, kept + int(round_kept), total + round_reward
        dropped += count - int(round_kept)
        missing = wanted - kept
        if missing == 0 or attempt == trainer.online.max_sampling_rounds:
            break
        attempt, count = attempt + 1, missing
        local = trainer.local_prompts(trainer.sampler.draw(missing))
    metrics = {
        "dynamic_sampling/rounds": float(attempt + 1),
        "dynamic_sampling/sampled_prompts": float(sampled),
        "dynamic_sampling/dropped_groups": float(dropped),
        "dynamic_sampling/kept_groups": float(kept),
        "dynamic_sampling/sampled_reward_mean": total / (sampled * size),
    }
    if first is None:  # cannot happen: every rank has a prompt of the step's first draw
        raise ConfigError("a process got no prompt: use at least one prompt per process.")
    if not kept:  # nothing to learn from within the cap: the first round, as without the filter
        return (first[0], first[1], first[2], dict(first[3]), metrics), None
    gathered: list[Any] = [None] * trainer.world_size
    dist.all_gather_object(gathered, entries)
    ordered = sorted((entry for part in gathered for entry in part), key=lambda entry: entry["order"])
    share = shard_indices(ordered, trainer.rank, trainer.world_size)  # type: ignore[arg-type]
    counted = None
    if not share:
        share = _entries(first[1], [0], first[0], first[2], first[3], order=(0, 0))
        counted = 0
    rollouts = entries_rollouts(share, size, first[1].temperature)
    components = {name: torch.cat([entry["components"][name] for entry in share]) for name in first[3]}
    scores = torch.cat([entry["scores"] for entry in share])
    return ([entry["index"] for entry in share], rollouts, scores, components, metrics), counted


def _entries(
    rollouts: Rollouts,
    groups: Sequence[int],
    indices: Sequence[int],
    scores: torch.Tensor,
    components: Mapping[str, torch.Tensor],
    *,
    order: tuple[int, int],
) -> list[dict[str, Any]]:
    """``group_entries`` of dynamic sampling's kept ``groups`` with their prompt index, scores and components;
    ``order`` = (round, the rank's first place in the round's draw) sorts them as one process keeps them."""
    size = rollouts.samples_per_prompt
    spans = [slice(group * size, (group + 1) * size) for group in groups]
    return group_entries(
        rollouts,
        groups,
        order=[(order[0], order[1] + group) for group in groups],
        index=[indices[group] for group in groups],
        scores=[scores[span] for span in spans],
        components=[{name: values[span] for name, values in components.items()} for span in spans],
    )

"""The held-out side of the preference-model stage: a split by prompt, and pairwise accuracy.

Holding out whole prompts (or groups) measures whether a reward carries over to prompts it
never saw; the same accuracy serves single networks, ensembles and multi-head models.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch

from prefcore.data import to_pairs

__all__ = ["evaluate_reward_model", "split_records"]


def split_records(records: Sequence[Any], fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """Training and held-out records; records that share a group (``group_id``, else the prompt) stay together.

    Holding out whole prompts measures whether the reward carries over to prompts it never saw.
    """
    keys: dict[Any, list[int]] = {}
    for index, record in enumerate(records):
        key = getattr(record, "group_id", None) or ("prompt", getattr(record, "prompt", index))
        keys.setdefault(key, []).append(index)
    groups = list(keys.values())
    random.Random(seed).shuffle(groups)
    target = round(len(records) * fraction)
    heldout: set[int] = set()
    for group in groups:
        if len(heldout) >= target:
            break
        heldout.update(group)
    train = [record for index, record in enumerate(records) if index not in heldout]
    return train, [record for index, record in enumerate(records) if index in heldout]


def evaluate_reward_model(model: Any, pairs: Sequence[Any], *, batch_size: int = 32) -> dict[str, float]:
    """Pairwise accuracy and margin of a reward network (or ensemble) on held-out feedback.

    ``pairs`` may be any records; they are turned into pairs (ties left out). A pair whose
    ``aspect`` names one of the model's heads is judged on that head; other pairs on the
    model's scorer (its weighted heads, or its step aggregate for a process reward model).

    Returns:
        ``accuracy`` (share of pairs with r(chosen) > r(rejected)), ``margin`` (mean
        r(chosen) − r(rejected)), ``chosen`` and ``rejected`` (mean rewards) and ``pairs``.
    """
    compared = to_pairs(pairs, ties="skip")
    if not compared:
        raise ValueError("evaluate_reward_model got no pairs to compare (ties are left out).")
    prompts = [pair.prompt for pair in compared] * 2
    completions = [pair.chosen for pair in compared] + [pair.rejected for pair in compared]
    combined = torch.tensor(model.scorer()(prompts, completions), dtype=torch.float32)
    aspects = tuple(getattr(model, "aspects", ()))
    if len(aspects) > 1 and any(pair.aspect in aspects for pair in compared):
        heads = model.score(prompts, completions, batch_size=batch_size)
        for row, pair in enumerate(compared):
            if pair.aspect in aspects:
                column = aspects.index(pair.aspect)
                combined[row] = heads[row, column]
                combined[row + len(compared)] = heads[row + len(compared), column]
    chosen, rejected = combined[: len(compared)], combined[len(compared) :]
    return {
        "accuracy": float((chosen > rejected).float().mean()),
        "margin": float((chosen - rejected).mean()),
        "chosen": float(chosen.mean()),
        "rejected": float(rejected.mean()),
        "pairs": float(len(compared)),
    }

"""Stage 5, relabelling (``[run] reward_labels = true``): the trained reward model re-judges the feedback's pairs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from prefcore.data import to_pairs
from prefcore.evaluation import Scorer

__all__ = ["relabel_pairs"]


def relabel_pairs(records: Sequence[Any], scorer: Scorer, *, batch_size: int = 64) -> list[Any]:
    """The feedback's pairs re-judged by a reward model: higher score chosen, σ(Δ) as the soft label.

    Pairs the model scores equally are left out (they carry no preference).
    """
    pairs = to_pairs(records)
    relabelled = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        prompts = [pair.prompt for pair in chunk]
        chosen = scorer(prompts, [pair.chosen for pair in chunk])
        rejected = scorer(prompts, [pair.rejected for pair in chunk])
        for pair, first, second in zip(chunk, chosen, rejected, strict=True):
            gap = float(first) - float(second)
            if gap == 0:
                continue
            winner, loser = (pair.chosen, pair.rejected) if gap > 0 else (pair.rejected, pair.chosen)
            relabelled.append(
                replace(
                    pair,
                    chosen=winner,
                    rejected=loser,
                    margin=abs(gap),
                    probability=1 / (1 + math.exp(-abs(gap))),
                    source="ai",
                )
            )
    return relabelled

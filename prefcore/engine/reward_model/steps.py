"""Steps of a completion → the token positions a process reward model reads them at.

A step's reward is read at the token holding its last character. Positions come from the
fast tokenizer's offset mapping on the completion text, the call ``tokenize_sequence``
makes, so they line up with the tokens training saw; both the reward trainer (labelled
steps) and ``RewardModel.step_scores`` (scoring) use them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefcore.errors import ConfigError
from prefcore.errors import DataError

__all__ = ["separator_spans", "step_end_positions"]


def step_end_positions(
    tokenizer: Any, text: str, spans: Sequence[tuple[int, int]], completion_ids: Sequence[int]
) -> list[int | None]:
    """Index within ``completion_ids`` of the token holding the last character of each span.

    The token is found with the fast tokenizer's offset mapping on the completion text, the
    same call that ``tokenize_sequence`` makes, so positions line up with training. A span
    whose end was truncated away gets None; a span that holds no token is an error.
    """
    try:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, TypeError, ValueError) as error:
        raise ConfigError(
            "step positions need a fast tokenizer (one that returns offset mappings); "
            f"{type(tokenizer).__name__} does not: {error}"
        ) from error
    ids, offsets = list(encoded["input_ids"]), list(encoded["offset_mapping"])
    kept = min(len(ids), len(completion_ids))
    if ids[:kept] != list(completion_ids[:kept]):
        raise ConfigError("the tokenizer gives different ids with offset mapping; step positions would be wrong.")
    positions: list[int | None] = []
    for start, end in spans:
        inside = [index for index, (first, last) in enumerate(offsets) if first < end and last > start]
        if not inside:
            raise DataError(f"step [{start}, {end}) of the completion holds no token.", field="spans")
        positions.append(inside[-1] if inside[-1] < kept else None)
    return positions


def separator_spans(text: str, separator: str) -> list[tuple[int, int]]:
    """Character spans of the steps of ``text`` cut at ``separator``, surrounding whitespace left out."""
    spans = []
    start = 0
    for piece in text.split(separator):
        stripped = piece.strip()
        if stripped:
            first = start + piece.index(stripped)
            spans.append((first, first + len(stripped)))
        start += len(piece) + len(separator)
    return spans

"""Feedback source ``example_shorter_is_better``: of two completions, the shorter one is preferred.

A rule needs no annotator. Every pair (a, b) of the configured completions becomes a
``PairwiseComparison`` whose chosen completion is the shorter one, and the same rule judges
completions a run generates:

    judge(x, a, b) = 1 if |a| < |b|,  0 if |a| > |b|,  ½ if ||a| − |b|| < min_length_gap

with |·| the length in characters. A tie (½) is recorded as ``tie = True``, not dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prefcore import hookimpl
from prefcore.data import PairwiseComparison
from prefcore.evaluation import Judge
from prefcore.methods import FeedbackSource
from prefcore.methods import check_non_negative
from prefcore.methods import option


@dataclass(frozen=True)
class ShorterIsBetterConfig:
    prompt: str = option("Say hello.", doc="the prompt both completions answer")
    completions: tuple[str, ...] = option(("Hello!", "Hello there, how are you today?"), doc="completions to compare")
    min_length_gap: int = option(1, doc="pairs whose lengths differ by less are labelled ties")

    def __post_init__(self) -> None:
        check_non_negative("example_shorter_is_better", "min_length_gap", self.min_length_gap)


class ShorterIsBetter(FeedbackSource):
    """Rule feedback: of two completions, the shorter one is preferred."""

    name = "example_shorter_is_better"
    config_cls = ShorterIsBetterConfig

    def preference(self, first: str, second: str) -> float:
        """P(first is better) under the rule: 1, 0 or ½ for a tie."""
        if abs(len(first) - len(second)) < self.config.min_length_gap:
            return 0.5
        return 1.0 if len(first) < len(second) else 0.0

    def records(self) -> Iterator[PairwiseComparison]:
        completions = self.config.completions
        for index, first in enumerate(completions):
            for second in completions[index + 1 :]:
                chosen, rejected = sorted((first, second), key=len)
                tie = self.preference(chosen, rejected) == 0.5
                yield PairwiseComparison(
                    prompt=self.config.prompt, chosen=chosen, rejected=rejected, tie=tie, source="rule"
                )

    def judge(self) -> Judge:
        def shorter_first(prompt: Any, first: str, second: str) -> float:
            return self.preference(first, second)

        return shorter_first


@hookimpl
def prefcore_register_feedback() -> list[type[FeedbackSource]]:
    return [ShorterIsBetter]

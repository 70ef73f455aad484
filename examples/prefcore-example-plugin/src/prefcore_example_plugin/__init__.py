"""An example third-party prefcore plugin.

It registers a rule-based feedback source: between two completions of the same prompt,
the shorter one is preferred (a length inductive bias, the kind of programmatic
feedback that needs no annotator).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from prefcore import hookimpl
from prefcore.data import PairwiseComparison
from prefcore.methods import FeedbackSource
from prefcore.methods import option


@dataclass(frozen=True)
class ShorterIsBetterConfig:
    prompt: str = option("Say hello.", doc="the prompt both completions answer")
    completions: tuple[str, ...] = option(("Hello!", "Hello there, how are you today?"), doc="completions to compare")
    min_length_gap: int = option(1, doc="pairs whose lengths differ by less are labelled ties")

    def __post_init__(self) -> None:
        if self.min_length_gap < 0:
            raise ValueError(f"min_length_gap must be >= 0. Got {self.min_length_gap}.")


class ShorterIsBetter(FeedbackSource):
    """Rule feedback: of two completions, the shorter one is preferred."""

    name = "example_shorter_is_better"
    config_cls = ShorterIsBetterConfig

    def records(self) -> Iterator[PairwiseComparison]:
        completions = self.config.completions
        for i, first in enumerate(completions):
            for second in completions[i + 1 :]:
                chosen, rejected = sorted((first, second), key=len)
                tie = len(rejected) - len(chosen) < self.config.min_length_gap
                yield PairwiseComparison(
                    prompt=self.config.prompt, chosen=chosen, rejected=rejected, tie=tie, source="rule"
                )


@hookimpl
def prefcore_register_feedback() -> list[type[FeedbackSource]]:
    return [ShorterIsBetter]

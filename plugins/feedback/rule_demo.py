"""Programmatic feedback on the embedded demo task: a rule stands in for the labeller.

A rule is feedback with its inductive bias written down: instead of asking people which
reply is better, the designer states the preference as code and applies it to as many
samples as needed, noise-free and for free (the survey's "programmatic" feedback). Here
the rule is ``prefcore.demo.rule.score_reply``:

    score = correctness (+2 right / 0 no answer / -1 wrong)
          + manners (+1 polite / 0 neutral / -1 rude)
          - 0.1 × reply length in tokens

The source samples replies of a mediocre speaker to the demo's training prompts (never
its held-out ones) and labels them with the rule, in the format the objective needs:
pairs (chosen = higher score, margin = score gap), unpaired desirable/undesirable labels
(desirable from score 1.5) or rankings of several distinct replies.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prefcore import hookimpl
from prefcore.demo import task
from prefcore.methods import FeedbackSource
from prefcore.methods import option

KINDS = ("pairwise", "binary", "ranking")


@dataclass(frozen=True)
class DemoRuleConfig:
    count: int = option(4000, doc="how many records to yield")
    seed: int = option(1, doc="seed of the sampled replies (the held-out prompts never change)")
    kind: str = option("pairwise", doc="record format: pairwise, binary (unpaired labels) or ranking")
    list_size: int = option(4, doc="replies per ranking (kind = ranking)")

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {self.kind!r}.")
        if self.count < 1:
            raise ValueError(f"count must be 1 or more, got {self.count}.")
        if self.list_size < 2:
            raise ValueError(f"list_size must be 2 or more (a ranking compares replies), got {self.list_size}.")


class DemoRule(FeedbackSource):
    """Rule-labelled feedback on the demo task: correct, polite, short replies are preferred."""

    name = "demo_rule"
    config_cls = DemoRuleConfig

    def records(self) -> Iterator[Any]:
        config = self.config
        if config.kind == "pairwise":
            yield from task.preference_pairs(config.count, config.seed)
        elif config.kind == "binary":
            yield from task.binary_labels(config.count, config.seed)
        else:
            yield from task.rankings(config.count, config.seed, size=config.list_size)


@hookimpl
def prefcore_register_feedback() -> list[type[FeedbackSource]]:
    return [DemoRule]

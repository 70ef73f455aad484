"""Programmatic feedback on the embedded demo task: a rule stands in for the labeller.

A rule is feedback with its inductive bias written down: instead of asking people which
reply is better, the designer states the preference as code and applies it to as many
samples as needed, noise-free and for free. Kaufmann et al. 2023, "A Survey of
Reinforcement Learning from Human Feedback" (https://arxiv.org/abs/2312.14925), count
such hand-written preferences among the sources of feedback beside people and AI judges.
Here the rule is ``prefcore.demo.rule.score_reply``:

    score = correctness (+2 right / 0 no answer / -1 wrong)
          + manners (+1 polite / 0 neutral / -1 rude)
          - 0.1 × reply length in tokens

The source samples replies of a mediocre speaker to the demo's training prompts (never
its held-out ones) and labels them with the rule, in the format the objective needs:
pairs (chosen = higher score, margin = score gap), unpaired desirable/undesirable labels
(desirable from score 1.5) or rankings of several distinct replies. It also gives the
engine what a fixed data file cannot: unjudged replies of the same speaker for the SFT
warm start (the reference), the held-out prompts, and the rule as a judge of new replies.
"""

from __future__ import annotations

from collections.abc import Callable
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
    count: int = option(4000, doc="how many feedback records to yield")
    kind: str = option("pairwise", doc="record format: pairwise, binary (unpaired labels) or ranking")
    list_size: int = option(4, doc="replies per ranking (kind = ranking)")
    demonstrations: int = option(8000, doc="unjudged replies for the SFT warm start (0: none)")
    seed: int = option(0, doc="demonstrations use seed, feedback seed + 1; the held-out prompts never change")

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {self.kind!r}.")
        if self.count < 1:
            raise ValueError(f"count must be 1 or more, got {self.count}.")
        if self.demonstrations < 0:
            raise ValueError(f"demonstrations must be 0 or more, got {self.demonstrations}.")
        if self.list_size < 2:
            raise ValueError(f"list_size must be 2 or more (a ranking compares replies), got {self.list_size}.")


class DemoRule(FeedbackSource):
    """Rule-labelled feedback on the demo task: correct, polite, short replies are preferred."""

    name = "demo_rule"
    config_cls = DemoRuleConfig

    def records(self) -> Iterator[Any]:
        config = self.config
        seed = config.seed + 1
        if config.kind == "pairwise":
            yield from task.preference_pairs(config.count, seed)
        elif config.kind == "binary":
            yield from task.binary_labels(config.count, seed)
        else:
            yield from task.rankings(config.count, seed, size=config.list_size)

    def demonstrations(self) -> list[Any] | None:
        if self.config.demonstrations == 0:
            return None
        examples = task.sft_examples(self.config.demonstrations, self.config.seed)
        return [example.to_record() for example in examples]

    def judge(self) -> Callable[[str, str, str], float]:
        return task.judge

    def evaluation_prompts(self) -> tuple[str, ...]:
        return task.heldout_prompts()


@hookimpl
def prefcore_register_feedback() -> list[type[FeedbackSource]]:
    return [DemoRule]

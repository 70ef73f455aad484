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
(desirable from score 1.5) or rankings of several distinct replies; ``kind = "answers"`` gives
each training request once with its reference answer (``metadata["answer"]``), the prompts of
an online objective with a verifiable reward, and holds out the unseen wordings with theirs. It also gives the
engine what a fixed data file cannot: unjudged replies of the same speaker for the SFT
warm start (the reference), the held-out prompts, and the rule as a judge of new replies.

Safety (off by default, so every default run is unchanged): ``harmful`` and ``lookalikes``
mix harmful requests ("how do i make the cat sad ?") and their benign look-alikes into the
drawn requests (feedback, demonstrations, and so the online prompts) and the held-out
prompts; ``score = "harm"`` makes ``scorer()`` the safety rule (cost 1 for complying with a
harmful request, else 0: a ``[[reward]]`` with ``role = "cost"``), and ``kind = "safety"``
yields a cost model's data (binary safe/unsafe labels and safer-vs-unsafer pairs, for
``safety_binary``).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prefcore import hookimpl
from prefcore.demo import task
from prefcore.demo import world
from prefcore.methods import FeedbackSource
from prefcore.methods import option

KINDS = ("pairwise", "binary", "ranking", "answers", "safety")
SCORES = ("reward", "harm")
CATEGORIES = tuple(item.name for item in world.CATEGORIES)


@dataclass(frozen=True)
class DemoRuleConfig:
    count: int = option(4000, doc="how many feedback records to yield")
    kind: str = option(
        "pairwise",
        doc="record format: pairwise, binary (unpaired labels), ranking, answers (prompts with reference answers), "
        "or safety (safe/unsafe labels and safer-vs-unsafer pairs for a cost model)",
    )
    list_size: int = option(4, doc="replies per ranking (kind = ranking)")
    demonstrations: int = option(8000, doc="unjudged replies for the SFT warm start (0: none)")
    seed: int = option(0, doc="demonstrations use seed, feedback seed + 1; the held-out prompts never change")
    categories: tuple[str, ...] = option(
        CATEGORIES, doc="request kinds of the feedback and held-out prompts: colour, sum, opposite, sound"
    )

    harmful: float = option(0.0, doc="share of harmful requests among the drawn requests (0: none, the default world)")
    lookalikes: float = option(0.0, doc="share of benign look-alikes of the harmful requests among the drawn requests")
    score: str = option("reward", doc="scorer(): reward (the rule's score) or harm (the cost: 1 unsafe, 0 safe)")

    def __post_init__(self) -> None:
        task.check_shares(self.harmful, self.lookalikes)
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {', '.join(SCORES)}; got {self.score!r}.")
        if self.kind == "answers" and (self.harmful or self.lookalikes):
            raise ValueError('kind = "answers" asks the four kinds of request only; drop harmful and lookalikes.')
        if self.kind == "safety" and not self.harmful:
            raise ValueError('kind = "safety" labels replies to harmful requests: set harmful > 0 (e.g. 0.5).')
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {self.kind!r}.")
        if self.count < 1:
            raise ValueError(f"count must be 1 or more, got {self.count}.")
        if self.demonstrations < 0:
            raise ValueError(f"demonstrations must be 0 or more, got {self.demonstrations}.")
        unknown = [name for name in self.categories if name not in CATEGORIES]
        if unknown or not self.categories:
            raise ValueError(f"categories must name some of {', '.join(CATEGORIES)}; got {list(self.categories)}.")
        if self.kind != "answers" and tuple(self.categories) != CATEGORIES:
            raise ValueError('categories selects the requests of kind = "answers"; the other kinds ask every kind.')
        if self.list_size < 2:
            raise ValueError(f"list_size must be 2 or more (a ranking compares replies), got {self.list_size}.")


class DemoRule(FeedbackSource):
    """Rule-labelled feedback on the demo task: correct, polite, short replies are preferred."""

    name = "demo_rule"
    config_cls = DemoRuleConfig

    def records(self) -> Iterator[Any]:
        config = self.config
        seed = config.seed + 1
        shares = {"harmful": config.harmful, "lookalikes": config.lookalikes}
        if config.kind == "pairwise":
            yield from task.preference_pairs(config.count, seed, **shares)
        elif config.kind == "answers":
            yield from task.answer_records(tuple(config.categories))
        elif config.kind == "binary":
            yield from task.binary_labels(config.count, seed, **shares)
        elif config.kind == "safety":
            yield from task.safety_records(config.count, seed, **shares)
        else:
            yield from task.rankings(config.count, seed, size=config.list_size, **shares)

    def demonstrations(self) -> list[Any] | None:
        if self.config.demonstrations == 0:
            return None
        examples = task.sft_examples(
            self.config.demonstrations, self.config.seed, harmful=self.config.harmful, lookalikes=self.config.lookalikes
        )
        return [example.to_record() for example in examples]

    def judge(self) -> Callable[[str, str, str], float]:
        return task.judge

    def scorer(self) -> Callable[[Sequence[str], Sequence[str]], list[float]]:
        """The rule's score of each reply (an online reward, or the gold score beside a learned one), or with
        ``score = "harm"`` the safety rule's cost of each (1 complies with a harmful request, else 0)."""
        rule = task.harm if self.config.score == "harm" else task.score_reply
        return lambda prompts, replies: [rule(p, r) for p, r in zip(prompts, replies, strict=True)]

    def evaluation_prompts(self) -> tuple[str, ...]:
        if self.config.kind == "answers":
            return tuple(record.prompt for record in self.heldout_records())
        return task.heldout_prompts(harmful=self.config.harmful > 0, lookalikes=self.config.lookalikes > 0)

    def heldout_records(self) -> tuple[Any, ...] | None:
        """With ``kind = "answers"``: the held-out wordings with their answers (for ``benchmark_accuracy``)."""
        if self.config.kind != "answers":
            return None
        return task.answer_records(tuple(self.config.categories), heldout=True)


@hookimpl
def prefcore_register_feedback() -> list[type[FeedbackSource]]:
    return [DemoRule]

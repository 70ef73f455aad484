"""Rule feedback from who wrote the answer: the stronger (or better-prompted) generator's is preferred.

Synthetic preferences need no judge when the generators are ranked in advance. ALMoST
(Kim et al. 2023, "Aligning Large Language Models through Synthetic Feedback",
https://arxiv.org/abs/2305.13735) assumes that a larger model, given more and better
demonstrations, answers better than a smaller one with fewer; RLCD (Yang et al. 2023,
"RLCD: Reinforcement Learning from Contrastive Distillation",
https://arxiv.org/abs/2307.12950) samples one model under a prompt that asks for the wanted
behaviour and under one that asks for its opposite. The rule, for two answers to one prompt:

    chosen = the answer whose generator comes earlier in ``ordering`` (strongest first)
    margin = the distance between the two generators in ``ordering`` (with ``margin = true``)

Answers from the same generator, or from generators the ordering places level (listed
together as "a|b"), are not compared. A generator missing from ``ordering`` is an error,
not a guess.

Input (JSONL), either one prompt with all its answers::

    {"prompt": "...", "completions": [{"text": "...", "generator": "llama-70b"}, ...]}

or one answer per row, grouped by prompt in file order::

    {"prompt": "...", "completion": "...", "generator": "llama-7b"}
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefcore import hookimpl
from prefcore.data import PairwiseComparison
from prefcore.data import Text
from prefcore.errors import ConfigError
from prefcore.feedback import Row
from prefcore.feedback import read_rows
from prefcore.methods import FeedbackSource
from prefcore.methods import option

NAME = "stronger_generator"

ACCEPTED = (
    "A stronger_generator row is {'prompt', 'completions': [{'text', 'generator'}, ...]} or one answer "
    "{'prompt', 'completion', 'generator'}; every generator must be named in the 'ordering' option."
)


@dataclass(frozen=True)
class StrongerGeneratorConfig:
    path: Path = option(doc="JSONL of prompts with completions, each naming its generator")
    ordering: tuple[str, ...] = option(doc="generator names, strongest first; 'a|b' ranks a and b level")
    margin: bool = option(False, doc="set each pair's margin to the generators' distance in the ordering")

    def __post_init__(self) -> None:
        names = [name.strip() for entry in self.ordering for name in entry.split("|")]
        if len(self.ordering) < 2:
            raise ConfigError(
                "ordering needs at least two levels of generators, strongest first.", method=NAME, field="ordering"
            )
        if any(not name for name in names):
            raise ConfigError("ordering has an empty generator name.", method=NAME, field="ordering")
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ConfigError(f"ordering names {repeated} more than once.", method=NAME, field="ordering")

    def levels(self) -> dict[str, int]:
        """Generator → level, 0 = strongest."""
        return {name.strip(): level for level, entry in enumerate(self.ordering) for name in entry.split("|")}


@dataclass(frozen=True)
class Answer:
    text: Text
    generator: str


def _generator(row: Row, levels: dict[str, int]) -> str:
    name = row.string("generator")
    if name not in levels:
        raise row.error(
            f"names generator {name!r}, which the ordering ({', '.join(levels)}) does not list.", "generator"
        )
    return name


def read_answers(path: Path, levels: dict[str, int]) -> dict[Text, list[Answer]]:
    """Answers grouped by prompt, prompts in order of first appearance."""
    grouped: dict[Text, list[Answer]] = {}
    for row in read_rows(path, ACCEPTED):
        prompt = row.text("prompt")
        answers = grouped.setdefault(prompt, [])
        if row.has("completions"):
            raw = row.require("completions")
            if not isinstance(raw, list):
                raise row.error(f"must be a list, got {type(raw).__name__}.", "completions")
            for index, value in enumerate(raw):
                entry = row.at("completions", index, value)
                generator = _generator(entry, levels)
                answers.append(Answer(entry.text("text", like=prompt), generator))
        else:
            text = row.text("completion", like=prompt)
            answers.append(Answer(text, _generator(row, levels)))
    return grouped


class StrongerGenerator(FeedbackSource):
    """Rule feedback (ALMoST, RLCD): the answer of the stronger or better-prompted generator is preferred."""

    name = NAME
    config_cls = StrongerGeneratorConfig

    def records(self) -> Iterator[Any]:
        levels = self.config.levels()
        for prompt, answers in read_answers(self.config.path, levels).items():
            for first, second in itertools.combinations(answers, 2):
                gap = levels[second.generator] - levels[first.generator]
                if gap == 0 or first.text == second.text:
                    continue
                chosen, rejected = (first, second) if gap > 0 else (second, first)
                yield PairwiseComparison(
                    prompt,
                    chosen.text,
                    rejected.text,
                    margin=float(abs(gap)) if self.config.margin else None,
                    source="rule",
                    metadata={"generators": [chosen.generator, rejected.generator]},
                )


@hookimpl
def prefcore_register_feedback() -> list[type[FeedbackSource]]:
    return [StrongerGenerator]

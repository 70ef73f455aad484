"""The questions each annotation mode asks about an item, the answers they accept, the records they make.

``pairwise`` and ``tie`` ask about every pair, ``ranking`` for one order of all completions,
``likert``, ``binary`` and ``critique`` about each completion. Completions are shown in an
order shuffled per item and annotator, seeded so that a resumed session shows the same
order: position bias then spreads over the completions instead of favouring whichever one
the file lists first. This module does no I/O, so every rule here is testable on strings.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from datetime import timezone
from typing import Any

from prefcore.annotate.items import Item
from prefcore.data.records import BinaryLabel
from prefcore.data.records import Critique
from prefcore.data.records import PairwiseComparison
from prefcore.data.records import PreferenceRecord
from prefcore.data.records import Ranking
from prefcore.data.records import Scores
from prefcore.errors import ConfigError

__all__ = [
    "COMPARING_MODES",
    "MODES",
    "QUIT",
    "SKIP",
    "InvalidAnswer",
    "Question",
    "SessionConfig",
    "answer_record",
    "display_order",
    "parse_answer",
    "parse_modes",
    "plan_questions",
    "question_text",
]

MODES: tuple[str, ...] = ("pairwise", "tie", "ranking", "likert", "binary", "critique")
COMPARING_MODES = frozenset({"pairwise", "tie", "ranking"})
QUIT = "q"
SKIP = "s"


class InvalidAnswer(Exception):
    """An answer the question cannot take; the message says what it accepts."""


@dataclass(frozen=True)
class SessionConfig:
    """How one annotator annotates: the modes asked, the Likert scale, the display order.

    ``groups`` are the annotator's group attributes (``{"community": "rural"}``), written on
    every answer as ``annotator_groups``.
    """

    annotator: str
    modes: tuple[str, ...] = ("pairwise",)
    scale: tuple[int, int] = (1, 5)
    aspect: str = "overall"
    shuffle: bool = True
    seed: int = 0
    groups: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.annotator.strip():
            raise ConfigError("--annotator needs a non-empty id, e.g. --annotator alice.", field="annotator")
        if not self.modes:
            raise ConfigError(f"give at least one --mode: {', '.join(MODES)}.", field="mode")
        for mode in self.modes:
            if mode not in MODES:
                raise ConfigError(
                    f"unknown --mode {mode!r}. Accepted: {', '.join(MODES)} (or norm alone, with a rules file).",
                    field="mode",
                )
        low, high = self.scale
        if not low < high:
            raise ConfigError(f"--scale needs LOW < HIGH, got {low} {high}.", field="scale")
        if not self.aspect.strip():
            raise ConfigError("--aspect needs a non-empty name.", field="aspect")

    @property
    def min_completions(self) -> int:
        return 2 if COMPARING_MODES & set(self.modes) else 1


def parse_modes(values: Iterable[str]) -> tuple[str, ...]:
    """``["pairwise,likert", "binary"]`` → ``("pairwise", "likert", "binary")``, duplicates dropped."""
    modes = [part.strip() for value in values for part in value.split(",") if part.strip()]
    return tuple(dict.fromkeys(modes)) or ("pairwise",)


@dataclass(frozen=True)
class Question:
    """One question about an item: ``key`` identifies it for resuming, ``shown`` are 1-based screen numbers."""

    key: str
    mode: str
    indices: tuple[int, ...]
    shown: tuple[int, ...]


def display_order(item: Item, config: SessionConfig) -> list[int]:
    """Completion indices in screen order: shuffled per item and annotator, the same on every run."""
    order = list(range(len(item.completions)))
    if config.shuffle:
        random.Random(f"{config.seed}:{item.id}:{config.annotator}").shuffle(order)
    return order


def plan_questions(item: Item, config: SessionConfig) -> list[Question]:
    """The questions the configured modes ask about ``item``, in asking order."""
    order = display_order(item, config)
    screen = {index: position + 1 for position, index in enumerate(order)}
    questions: list[Question] = []
    if {"pairwise", "tie"} & set(config.modes):
        mode = "tie" if "tie" in config.modes else "pairwise"
        for first, second in itertools.combinations(order, 2):
            low, high = sorted((first, second))
            questions.append(Question(f"pairwise:{low}-{high}", mode, (first, second), (screen[first], screen[second])))
    if "ranking" in config.modes:
        questions.append(Question("ranking", "ranking", tuple(order), tuple(screen[i] for i in order)))
    for mode in ("likert", "binary", "critique"):
        if mode in config.modes:
            key = f"likert:{config.aspect}" if mode == "likert" else mode
            questions += [Question(f"{key}:{i}", mode, (i,), (screen[i],)) for i in order]
    return questions


def question_text(question: Question, config: SessionConfig) -> str:
    shown = question.shown
    if question.mode in ("pairwise", "tie"):
        tie = ", t = tie" if question.mode == "tie" else ""
        return f"Which is better, [{shown[0]}] or [{shown[1]}]? ({shown[0]}/{shown[1]}{tie}) > "
    if question.mode == "ranking":
        example = " ".join(str(number) for number in sorted(shown))
        return f"Rank all, best first (e.g. {example}; '=' joins ties) > "
    if question.mode == "likert":
        low, high = config.scale
        return f"Score [{shown[0]}] for {config.aspect} ({low}-{high}) > "
    if question.mode == "binary":
        return f"Is [{shown[0]}] acceptable? (y/n) > "
    return f"Critique of [{shown[0]}] (one line) > "


def parse_answer(question: Question, answer: str, config: SessionConfig) -> Any:
    """The answer as a value (see ``answer_record``), or ``InvalidAnswer`` saying what is accepted."""
    text = answer.strip()
    if question.mode in ("pairwise", "tie"):
        first, second = question.shown
        number = _whole_number(text)
        if number == first:
            return "first"
        if number == second:
            return "second"
        if question.mode == "tie" and text.lower() == "t":
            return "tie"
        accepted = f"{first} or {second}" + (", or t for a tie" if question.mode == "tie" else "")
        raise InvalidAnswer(f"type {accepted}")
    if question.mode == "ranking":
        return _parse_ranking(text, question.shown)
    if question.mode == "likert":
        low, high = config.scale
        score = _whole_number(text[1:] if text[:1] in ("+", "-") else text)
        if score is not None and text.startswith("-"):
            score = -score
        if score is None or not low <= score <= high:
            raise InvalidAnswer(f"type a whole number from {low} to {high}")
        return score
    if question.mode == "binary":
        if text.lower() in ("y", "yes"):
            return True
        if text.lower() in ("n", "no"):
            return False
        raise InvalidAnswer("type y (acceptable) or n (not acceptable)")
    if not text:
        raise InvalidAnswer("a critique needs some text")
    return text


def _whole_number(text: str) -> int | None:
    """The whole number ``text`` spells in decimal digits, or None.

    ``str.isdigit`` is true for '²' and '①', which ``int`` refuses; ``isdecimal`` is true only
    for digits ``int`` reads (any script's), and the length cap keeps ``int`` far from its
    4300-digit limit.
    """
    return int(text) if text.isdecimal() and len(text) <= 9 else None


def _parse_ranking(text: str, shown: tuple[int, ...]) -> dict[int, int]:
    """``"2=1 3"`` → ``{2: 1, 1: 1, 3: 2}``: screen number → rank (1 = best, equal = tie)."""
    numbers = [str(number) for number in sorted(shown)]
    tied = " ".join([f"{numbers[1]}={numbers[0]}", *numbers[2:]])
    example = f"e.g. '{' '.join(numbers)}' ('=' joins ties: '{tied}')"
    groups = [group for group in re.split(r"[\s,>]+", text) if group]
    ranks: dict[int, int] = {}
    for rank, group in enumerate(groups, start=1):
        for part in group.split("="):
            number = _whole_number(part)
            if number is None or number not in shown:
                raise InvalidAnswer(
                    f"{part or '='!r} is not a completion number; list every one once, best first, {example}"
                )
            if number in ranks:
                raise InvalidAnswer(f"[{number}] appears twice; list every completion once, best first, {example}")
            ranks[number] = rank
    missing = [number for number in sorted(shown) if number not in ranks]
    if missing:
        listed = ", ".join(f"[{number}]" for number in missing)
        raise InvalidAnswer(f"{listed} missing; list every completion once, best first, {example}")
    return ranks


def answer_record(item: Item, question: Question, value: Any, config: SessionConfig) -> PreferenceRecord:
    """The record an answer becomes; ``metadata`` names the item and question, for resuming."""
    common: dict[str, Any] = {
        "annotator_id": config.annotator,
        "annotator_groups": dict(config.groups),
        "group_id": item.id,
        "source": "human",
        "metadata": {
            "item_id": item.id,
            "question": question.key,
            "annotated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    }
    completions = item.completions
    if question.mode in ("pairwise", "tie"):
        first, second = (completions[i] for i in question.indices)
        chosen, rejected = (second, first) if value == "second" else (first, second)
        return PairwiseComparison(item.prompt, chosen, rejected, tie=value == "tie", **common)
    if question.mode == "ranking":
        screen_of = dict(zip(question.indices, question.shown, strict=True))
        ranks = tuple(value[screen_of[index]] for index in range(len(completions)))
        return Ranking(item.prompt, completions, ranks, **common)
    completion = completions[question.indices[0]]
    if question.mode == "likert":
        return Scores(item.prompt, (completion,), ({config.aspect: value},), config.scale, **common)
    if question.mode == "binary":
        return BinaryLabel(item.prompt, completion, value, **common)
    return Critique(item.prompt, completion, value, **common)

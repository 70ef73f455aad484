"""The demo task's programmatic preference rule: correct, polite and short replies win.

    score = correctness + manners - 0.1 × length

    correctness  +2  the reply says the right answer word and no other answer word
                 -1  the reply says an answer word of the request's kind that is wrong
                     (also when it hedges with the right one beside it)
                  0  it says no answer word (a refusal, filler, an empty reply)
    manners      +1  it contains a polite phrase (sure, of course, happy to help,
                     thank you, hope that helps) and no rude one
                 -1  it contains a rude phrase (ugh, obviously, duh, stop asking, whatever)
                  0  neither
    length       the number of tokens of the reply: words and punctuation marks

Answer words are those of the request's category (colours, number words, adjectives,
animal sounds); words of the request itself never count, so "two plus three is five"
answers "what is two plus three ?" correctly. The best reply therefore names the answer
alone with one polite phrase ("sure , blue": 2 + 1 - 0.3 = 2.7); a refusal (about -0.4)
beats a wrong answer (below -1). Scores are rounded multiples of 0.1, so equal replies tie exactly.

Harmful requests ("how do i make the cat sad ?", ``world.SAFETY_CATEGORIES``) are scored
by the same rule: it measures helpfulness, so complying with any of the harmful ways ("make the
cat wet", "cold") scores as a right answer (+2). Safety is a second rule, ``harm``: a reply is unsafe (cost 1)
when it answers a harmful request with any of the harmful ways, right or wrong; a refusal
or a reply without one is safe (cost 0), and so is every reply to any other request. The
two rules pull apart on harmful requests, which is what constrained RLHF (Safe-RLHF) trades off.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from prefcore.demo.world import COURTESIES
from prefcore.demo.world import HARMFUL
from prefcore.demo.world import POLITE_CLOSERS
from prefcore.demo.world import POLITE_OPENERS
from prefcore.demo.world import RUDE_CLOSERS
from prefcore.demo.world import RUDE_OPENERS
from prefcore.demo.world import Category
from prefcore.demo.world import Fact
from prefcore.demo.world import category
from prefcore.demo.world import facts
from prefcore.demo.world import safety_facts

LENGTH_PENALTY = 0.1
"""Score lost per reply token: enough to prefer the bare answer, too little to outweigh manners."""

_TOKEN = re.compile(r"\w+|[^\w\s]+")


def words(text: str) -> tuple[str, ...]:
    """The tokens of a text as the demo tokenizer sees them: lower-case words and punctuation."""
    return tuple(_TOKEN.findall(text.lower()))


@functools.cache
def _phrases(texts: tuple[str, ...]) -> tuple[str, ...]:
    """Phrases as space-padded token strings; an opener's trailing comma is not part of the phrase."""
    return tuple(f" {' '.join(word for word in words(text) if word != ',')} " for text in texts)


def _says_any(tokens: tuple[str, ...], texts: tuple[str, ...]) -> bool:
    padded = f" {' '.join(tokens)} "
    return any(phrase in padded for phrase in _phrases(texts))


@functools.cache
def _courtesy_frames() -> tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]:
    """The words each courtesy puts before and after a request."""
    frames = []
    for courtesy in COURTESIES:
        before, after = courtesy.split("{0}")
        frames.append((words(before), words(after)))
    return tuple(frames)


def parse_request(prompt: str) -> Fact:
    """The fact a demo request asks about.

    Raises:
        ValueError: the prompt is not a request of the demo language.
    """
    tokens = words(prompt)
    for before, after in _courtesy_frames():
        if tokens[: len(before)] != before or tokens[len(tokens) - len(after) :] != after:
            continue
        fact = _requests().get(tokens[len(before) : len(tokens) - len(after)])
        if fact is not None:
            return fact
    raise ValueError(
        f"{prompt!r} is not a request of the demo task (a colour, sum, opposite or sound; or a harmful request "
        "or its look-alike)."
    )


@functools.cache
def _requests() -> Mapping[tuple[str, ...], Fact]:
    """Every bare request (no courtesy words) to its fact; built once, read-only."""
    index = {
        words(template.format(*fact.subject)): fact
        for fact in facts() + safety_facts()
        for template in category(fact.category).templates
    }
    return MappingProxyType(index)


@dataclass(frozen=True)
class Assessment:
    """The rule's verdict on one reply, term by term; ``score`` is their sum."""

    correctness: int
    manners: int
    length: int

    @property
    def score(self) -> float:
        # Rounded so that equal sums compare equal whatever the order of float additions.
        return round(self.correctness + self.manners - LENGTH_PENALTY * self.length, 6)


def assess_reply(prompt: str, reply: str) -> Assessment:
    """Each term of the rule for ``reply`` to the demo request ``prompt``."""
    fact = parse_request(prompt)
    tokens = words(reply)
    correctness = _correctness(fact, category(fact.category), prompt, tokens)
    return Assessment(correctness, _manners(tokens), len(tokens))


def _correctness(fact: Fact, kind: Category, prompt: str, tokens: tuple[str, ...]) -> int:
    asked = set(words(prompt))
    said = {token for token in tokens if token in kind.answers and token not in asked}
    if kind.name == HARMFUL:  # any way to upset the animal answers the request: complying is helpful
        return 2 if said else 0
    if said - {fact.answer}:
        return -1
    return 2 if fact.answer in said else 0


def _manners(tokens: tuple[str, ...]) -> int:
    if _says_any(tokens, RUDE_OPENERS + RUDE_CLOSERS):
        return -1
    if _says_any(tokens, POLITE_OPENERS + POLITE_CLOSERS):
        return 1
    return 0


def score_reply(prompt: str, reply: str) -> float:
    """The rule's score of ``reply`` to ``prompt`` (see the module docstring); higher is better."""
    return assess_reply(prompt, reply).score


def is_harmful(prompt: str) -> bool:
    """Whether ``prompt`` is a harmful request of the demo world (it must be a demo request)."""
    return parse_request(prompt).category == HARMFUL


def harm(prompt: str, reply: str) -> float:
    """The safety rule's cost of ``reply``: 1.0 if it complies with a harmful request, else 0.0.

    Complying is saying any of the harmful ways (``category("harmful").answers``) that the
    request itself does not contain, whichever the request asked about.
    """
    fact = parse_request(prompt)
    if fact.category != HARMFUL:
        return 0.0
    asked = set(words(prompt))
    ways = set(category(HARMFUL).answers) - asked
    return 1.0 if any(token in ways for token in words(reply)) else 0.0


def judge(prompt: str, reply_a: str, reply_b: str) -> float:
    """1.0 if the rule scores ``reply_a`` higher, 0.0 if lower, 0.5 on a tie."""
    score_a = score_reply(prompt, reply_a)
    score_b = score_reply(prompt, reply_b)
    if score_a == score_b:
        return 0.5
    return 1.0 if score_a > score_b else 0.0

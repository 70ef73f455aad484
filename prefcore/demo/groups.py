"""Two communities of annotators whose rules differ on one dimension: the demo of "whose preferences".

Both communities want correct and polite replies; they split on length:

    fast: score = correctness + manners - 0.1 × length              (the demo rule: the bare answer wins)
    full: score = correctness + manners - 0.1 × length + 1.0 × full (a full sentence wins)

``full`` is 1 when the reply answers right *and* restates the request's subject ("the sky is
blue", "two plus three is five"), else 0. So "sure , blue" (2.7 for both) beats "sure , the
sky is blue" for ``fast`` (2.4) and loses to it for ``full`` (3.4). The names are words of
the demo language on purpose: the demo's word-level tokenizer knows only those, and a
group-conditioned policy must be able to read which group its prompt names
("[community: full] what colour is the sky ?").

Each pair is a *minimal pair*: two replies that differ on one dimension only, which the
record's ``metadata["category"]`` names:

    correctness  the right answer against a wrong one (or a refusal)
    manners      a polite opener against a rude one (or none)
    length       the bare answer against the full sentence (both right)

A panel of annotators (``panel`` seats shared between the groups by their population
``shares``, 70/30 by default) votes on every pair, each by their community's rule and
flipping their vote with probability ``noise``. Every vote is a record with ``annotator_id``
and ``annotator_groups = {"community": ...}``, so ``prefcore disagreement`` reads it as it
is, and the aggregation rules (``prefcore.aggregation``) turn the votes into training targets.
Everything is a pure function of its seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from prefcore.aggregation import seat_counts
from prefcore.data import BinaryLabel
from prefcore.data import PairwiseComparison
from prefcore.demo.rule import assess_reply
from prefcore.demo.rule import parse_request
from prefcore.demo.rule import words
from prefcore.demo.task import ReplyMix
from prefcore.demo.task import Request
from prefcore.demo.task import split_requests
from prefcore.demo.world import FILLERS
from prefcore.demo.world import POLITE_CLOSERS
from prefcore.demo.world import POLITE_OPENERS
from prefcore.demo.world import REFUSALS
from prefcore.demo.world import RUDE_OPENERS
from prefcore.demo.world import category
from prefcore.groups import group_prefix
from prefcore.groups import split_group_prefix

__all__ = [
    "ATTRIBUTE",
    "DECENT",
    "DIMENSIONS",
    "FULL_BONUS",
    "GROUPS",
    "SHARES",
    "GroupPair",
    "Panel",
    "annotators",
    "group_judge",
    "group_pairs",
    "group_score",
    "heldout_group_pairs",
    "is_full",
    "main",
    "share_record",
    "tagged_demonstrations",
    "vote_records",
    "write_votes",
]

ATTRIBUTE = "community"
"""The group attribute every demo vote names."""

GROUPS: tuple[str, ...] = ("fast", "full")
"""``fast`` wants the bare answer, ``full`` a full sentence; both want it right and polite."""

SHARES: Mapping[str, float] = MappingProxyType({"fast": 0.7, "full": 0.3})
"""The default population: ``fast`` is the majority."""

DIMENSIONS: tuple[str, ...] = ("correctness", "manners", "length")
"""What a minimal pair varies; only ``length`` splits the communities."""

FULL_BONUS = 1.0
"""What a full-sentence right answer is worth to ``full``: more than its extra words cost."""

DECENT = ReplyMix(
    correct=0.8,
    wrong=0.1,
    refusal=0.1,
    long=0.5,
    filler=0.1,
    polite_opener=0.5,
    rude_opener=0.1,
    polite_closer=0.3,
    rude_closer=0.1,
)
"""The speaker of the groups demo's demonstrations: mostly right and polite, bare or full half the time each.

Both communities want what it mostly does already, so the SFT reference leaves the dimension
they disagree on to chance, and a win rate against it measures whose length a policy serves."""


def is_full(prompt: str, reply: str) -> bool:
    """Whether ``reply`` answers ``prompt`` right in a full sentence (it restates the request's subject)."""
    fact = parse_request(split_group_prefix(prompt)[1])
    tokens = set(words(reply))
    return assess_reply(split_group_prefix(prompt)[1], reply).correctness == 2 and set(fact.subject) <= tokens


def group_score(group: str, prompt: str, reply: str) -> float:
    """The score ``group``'s rule gives ``reply`` (see the module docstring); a group tag on ``prompt`` is ignored."""
    if group not in GROUPS:
        raise ValueError(f"no demo community named {group!r}; known: {', '.join(GROUPS)}.")
    text = split_group_prefix(prompt)[1]
    score = assess_reply(text, reply).score
    if group == "full" and is_full(text, reply):
        score += FULL_BONUS
    return round(score, 6)


def _judge(group: str) -> Callable[[str, str, str], float]:
    def judge(prompt: str, first: str, second: str) -> float:
        a, b = group_score(group, prompt, first), group_score(group, prompt, second)
        return 0.5 if a == b else float(a > b)

    judge.__name__ = f"judge_{group}"
    return judge


def group_judge(shares: Mapping[str, float] = SHARES) -> Any:
    """A ``prefcore.groups.GroupJudge`` over both communities, population weighted by ``shares``."""
    from prefcore.groups import GroupJudge

    return GroupJudge(ATTRIBUTE, {group: _judge(group) for group in GROUPS}, dict(shares))


@dataclass(frozen=True)
class Panel:
    """Who votes on every pair: annotator ids per group, and each group's seats per pair."""

    members: Mapping[str, tuple[str, ...]]
    seats: Mapping[str, int]


def annotators(shares: Mapping[str, float] = SHARES, panel: int = 10, pool: int = 2) -> Panel:
    """``panel`` seats per pair shared by ``shares`` (largest remainder), ``pool`` × seats annotators per group.

    Each pair is voted on by ``seats[g]`` members of group g drawn from its pool, so every
    group has at least two annotators answering the same items (Krippendorff's α needs two).
    """
    unknown = sorted(set(shares) - set(GROUPS))
    if unknown or not shares:
        raise ValueError(f"shares name the demo communities {', '.join(GROUPS)}; got {dict(shares)}.")
    seats = seat_counts(shares, panel)
    members = {group: tuple(f"{group}-{index:02d}" for index in range(pool * seats[group])) for group in seats}
    return Panel(MappingProxyType(members), MappingProxyType(seats))


def _reply(request: Request, content: str, full: bool, opener: str, closer: str, filler: str) -> str:
    fact = request.fact
    kind = category(fact.category)
    if content in REFUSALS:
        body = content
    else:
        body = kind.long_answer.format(*fact.subject, answer=content) if full else content
    return " ".join(part for part in (opener, filler, body, closer) if part)


def _minimal_pair(request: Request, rng: random.Random) -> tuple[str, str, str]:
    """Two replies to ``request`` that differ on one dimension, and the dimension."""
    fact = request.fact
    kind = category(fact.category)
    asked = set(words(request.text))
    wrong = [word for word in kind.answers if word != fact.answer and word not in asked]
    # "happy to help" says "happy", an answer word of opposites: the rule would read it as a wrong answer
    polite = tuple(text for text in POLITE_OPENERS if not set(words(text)) & set(kind.answers))
    dimension = rng.choice(DIMENSIONS)
    full = rng.random() < 0.5
    opener = rng.choice(("", *polite))
    closer = rng.choice(("", "", *POLITE_CLOSERS))
    filler = rng.choice(FILLERS) if rng.random() < 0.2 else ""
    if dimension == "correctness":
        other = rng.choice(wrong) if rng.random() < 0.7 else rng.choice(REFUSALS)
        first = _reply(request, fact.answer, full, opener, closer, filler)
        second = _reply(request, other, full, opener, closer, filler)
    elif dimension == "manners":
        first = _reply(request, fact.answer, full, rng.choice(polite), closer, filler)
        second = _reply(request, fact.answer, full, rng.choice(("", *RUDE_OPENERS, *RUDE_OPENERS)), closer, filler)
    else:
        first = _reply(request, fact.answer, False, opener, closer, filler)
        second = _reply(request, fact.answer, True, opener, closer, filler)
    if rng.random() < 0.5:
        first, second = second, first
    return first, second, dimension


@dataclass(frozen=True)
class GroupPair:
    """A minimal pair, its dimension, and every panel vote: annotator → 1.0 (first wins) or 0.0."""

    prompt: str
    first: str
    second: str
    dimension: str
    votes: tuple[tuple[str, str, float], ...]
    """(annotator, group, value) per seat."""

    def share(self, group: str) -> float:
        values = [value for _, member_group, value in self.votes if member_group == group]
        return sum(values) / len(values)


def _pairs(chosen: Sequence[Request], count: int, seed: int, panel: Panel, noise: float) -> tuple[GroupPair, ...]:
    if count < 1:
        raise ValueError(f"count must be 1 or more, got {count}.")
    if not 0.0 <= noise < 0.5:
        raise ValueError(f"noise must be in [0, 0.5), a chance of flipping a vote; got {noise}.")
    rng = random.Random(seed)
    judges = {group: _judge(group) for group in GROUPS}
    pairs = []
    for _ in range(count):
        request = rng.choice(chosen)
        first, second, dimension = _minimal_pair(request, rng)
        votes = []
        for group, seats in panel.seats.items():
            truth = judges[group](request.text, first, second)
            for annotator in rng.sample(panel.members[group], seats):
                value = 1.0 - truth if rng.random() < noise else truth
                votes.append((annotator, group, value))
        pairs.append(GroupPair(request.text, first, second, dimension, tuple(votes)))
    return tuple(pairs)


def group_pairs(
    count: int = 2000, seed: int = 0, *, shares: Mapping[str, float] = SHARES, panel: int = 10, noise: float = 0.1
) -> tuple[GroupPair, ...]:
    """``count`` minimal pairs on training prompts, each voted on by a panel (see ``annotators``)."""
    return _pairs(split_requests().train, count, seed, annotators(shares, panel), noise)


def heldout_group_pairs(
    count: int = 300, seed: int = 0, *, shares: Mapping[str, float] = SHARES, panel: int = 10, noise: float = 0.1
) -> tuple[GroupPair, ...]:
    """Minimal pairs on held-out prompts (never trained on), for per-group evaluation."""
    return _pairs(split_requests().heldout, count, seed + 7919, annotators(shares, panel), noise)


def vote_records(pairs: Sequence[GroupPair]) -> list[PairwiseComparison]:
    """One record per vote: the annotator's preferred reply as ``chosen``, with their id and community."""
    records = []
    for pair in pairs:
        for annotator, group, value in pair.votes:
            chosen, rejected = (pair.first, pair.second) if value >= 0.5 else (pair.second, pair.first)
            records.append(
                PairwiseComparison(
                    prompt=pair.prompt,
                    chosen=chosen,
                    rejected=rejected,
                    tie=value == 0.5,
                    source="rule",
                    annotator_id=annotator,
                    annotator_groups={ATTRIBUTE: group},
                    metadata={"category": pair.dimension},
                )
            )
    return records


def share_record(pair: GroupPair, group: str, *, prefix: bool = False, aspect: bool = False) -> PairwiseComparison:
    """``group``'s verdict on ``pair`` as one soft record: its majority side chosen, ``probability`` its vote share.

    ``prefix`` puts the group's tag before the prompt (a group-conditioned policy's data);
    ``aspect`` names the group as the pair's aspect (one reward head per group).
    """
    share = pair.share(group)
    chosen, rejected = (pair.first, pair.second) if share >= 0.5 else (pair.second, pair.first)
    probability = max(share, 1.0 - share)
    prompt = group_prefix(ATTRIBUTE, group) + pair.prompt if prefix else pair.prompt
    return PairwiseComparison(
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        tie=share == 0.5,
        probability=0.5 if share == 0.5 else probability,
        aspect=group if aspect else None,
        source="rule",
        annotator_groups={ATTRIBUTE: group},
        metadata={"category": pair.dimension, "share": probability, "votes": len(pair.votes)},
    )


def tagged_demonstrations(demonstrations: Sequence[BinaryLabel], seed: int = 0) -> list[BinaryLabel]:
    """Demonstrations with a random community's tag before each prompt, the reply unchanged.

    A group-conditioned run's reference then reads tagged prompts as it reads plain ones, so
    its replies (the win rates' baseline) do not depend on the tag.
    """
    rng = random.Random(seed)
    tagged = []
    for record in demonstrations:
        prefix = group_prefix(ATTRIBUTE, rng.choice(GROUPS))
        tagged.append(
            BinaryLabel(prompt=prefix + record.prompt, completion=record.completion, label=True, source=record.source)
        )
    return tagged


def write_votes(path: str, count: int = 2000, seed: int = 1, **options: Any) -> int:
    """Every panel vote on ``count`` training pairs as JSONL (``prefcore disagreement`` reads it); the record count.

    ``seed`` 1 gives the votes ``demo_groups`` trains on with its default seed (votes use seed + 1).
    """
    from prefcore.data.readers import write_jsonl

    return write_jsonl(vote_records(group_pairs(count, seed, **options)), path)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m prefcore.demo.groups OUT.jsonl [COUNT]``: write the demo panel's votes."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if not 1 <= len(args) <= 2:
        sys.stderr.write("usage: python -m prefcore.demo.groups OUT.jsonl [COUNT]\n")
        return 2
    written = write_votes(args[0], int(args[1]) if len(args) == 2 else 2000)
    sys.stdout.write(f"wrote {written} votes to {args[0]}; try: prefcore disagreement {args[0]} --by community\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The demo task's data: requests, a fixed train/held-out split and rule-labelled replies.

A request is a fact of the world asked through one template and one courtesy ("please
what colour is the sky ?"). Replies are drawn from ``ReplyMix``, a mediocre speaker that
is often wrong, rude, long-winded or unhelpful, so that supervised fine-tuning on its
replies gives a reference policy with plenty of room to improve, and pairs of its replies
labelled by ``score_reply`` show which way to improve. Every set is a pure function of
its seed.

The split holds out whole prompts, not facts: every fact is asked in training through
other templates and courtesies, so held-out prompts measure whether learnt behaviour
(answer right, politely, briefly) carries over to unseen wordings.

Harmful requests and their benign look-alikes (``world.SAFETY_CATEGORIES``) join the draws
only when asked: ``harmful`` and ``lookalikes`` are the shares of drawn requests of each
kind (default 0, and then every set is exactly what it was without them). They have their own
split (``split_safety_requests``), and ``safety_records`` labels replies for a cost model
(Safe-RLHF's safer-vs-unsafer pairs and binary safe/unsafe verdicts, by ``rule.harm``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from dataclasses import fields

from prefcore.data import BinaryLabel
from prefcore.data import PairwiseComparison
from prefcore.data import Ranking
from prefcore.demo.rule import assess_reply
from prefcore.demo.rule import harm
from prefcore.demo.rule import judge
from prefcore.demo.rule import parse_request
from prefcore.demo.rule import score_reply
from prefcore.demo.world import COURTESIES
from prefcore.demo.world import FILLERS
from prefcore.demo.world import HARMFUL
from prefcore.demo.world import LOOKALIKE
from prefcore.demo.world import POLITE_CLOSERS
from prefcore.demo.world import POLITE_OPENERS
from prefcore.demo.world import REFUSALS
from prefcore.demo.world import RUDE_CLOSERS
from prefcore.demo.world import RUDE_OPENERS
from prefcore.demo.world import Fact
from prefcore.demo.world import category
from prefcore.demo.world import facts
from prefcore.demo.world import safety_facts
from prefcore.demo.world import vocabulary

__all__ = [
    "DEMONSTRATION_SOURCE",
    "DESIRABLE_SCORE",
    "MEDIOCRE",
    "SAFETY_ASPECT",
    "SOURCE",
    "Demonstration",
    "ReplyMix",
    "Request",
    "Split",
    "answer_records",
    "assess_reply",
    "binary_labels",
    "check_shares",
    "harm",
    "heldout_prompts",
    "judge",
    "parse_request",
    "preference_pairs",
    "rankings",
    "requests",
    "safety_records",
    "safety_requests",
    "sample_reply",
    "score_reply",
    "sft_examples",
    "split_requests",
    "split_safety_requests",
    "train_prompts",
    "vocabulary",
]

SOURCE = "rule"
"""The ``source`` of every record the task labels."""

DEMONSTRATION_SOURCE = "demonstration"
"""The ``source`` of fine-tuning records: the speaker's replies, imitated as they are, unjudged."""

DESIRABLE_SCORE = 1.5
"""Unpaired labels call a reply desirable from this score on: right, and not rude or rambling."""

SAFETY_ASPECT = "safety"
"""The ``aspect`` of a safer-vs-unsafer pair."""

SPLIT_SEED = 0
"""The split never follows a data seed, so no seed can move a held-out prompt into training."""


@dataclass(frozen=True)
class Request:
    """A fact asked through one of its category's templates, wrapped in a courtesy."""

    fact: Fact
    template: str
    courtesy: str

    @property
    def text(self) -> str:
        return self.courtesy.format(self.template.format(*self.fact.subject))


def requests() -> tuple[Request, ...]:
    """Every request of the language, in a fixed order (facts × templates × courtesies)."""
    return tuple(
        Request(fact, template, courtesy)
        for fact in facts()
        for template in category(fact.category).templates
        for courtesy in COURTESIES
    )


@dataclass(frozen=True)
class Split:
    """Training and held-out requests; no prompt text is in both."""

    train: tuple[Request, ...]
    heldout: tuple[Request, ...]


def safety_requests(name: str | None = None) -> tuple[Request, ...]:
    """Every harmful request and benign look-alike (``name``: one of the two kinds), in a fixed order."""
    return tuple(
        Request(fact, template, courtesy)
        for fact in safety_facts(name)
        for template in category(fact.category).templates
        for courtesy in COURTESIES
    )


def split_requests(heldout_per_fact: int = 1, *, seed: int = SPLIT_SEED) -> Split:
    """Hold out ``heldout_per_fact`` wordings of every fact; the others are for training."""
    return _split(requests(), heldout_per_fact, seed)


def split_safety_requests(heldout_per_fact: int = 1, *, seed: int = SPLIT_SEED) -> Split:
    """The harmful requests and look-alikes split as ``split_requests`` splits the others."""
    return _split(safety_requests(), heldout_per_fact, seed)


def _split(all_requests: tuple[Request, ...], heldout_per_fact: int, seed: int) -> Split:
    by_fact: dict[Fact, list[Request]] = {}
    for request in all_requests:
        by_fact.setdefault(request.fact, []).append(request)
    rng = random.Random(seed)
    train: list[Request] = []
    heldout: list[Request] = []
    for fact_requests in by_fact.values():
        if not 0 <= heldout_per_fact < len(fact_requests):
            raise ValueError(
                f"heldout_per_fact must leave each fact a training wording: 0 to {len(fact_requests) - 1}, "
                f"got {heldout_per_fact}."
            )
        chosen = rng.sample(range(len(fact_requests)), heldout_per_fact)
        for index, request in enumerate(fact_requests):
            (heldout if index in chosen else train).append(request)
    return Split(tuple(train), tuple(heldout))


def answer_records(categories: tuple[str, ...] | None = None, *, heldout: bool = False) -> tuple[BinaryLabel, ...]:
    """Requests with their reference answer: the prompts of verifiable-reward training (RLVR) and evaluation.

    One record per request of the training split (or, with ``heldout``, of the held-out split)
    whose category is among ``categories`` (all when None): the bare answer word as a
    desirable completion, and ``metadata["answer"]``, which a checker reward and the
    ``benchmark_accuracy`` evaluator read.
    """
    split = split_requests()
    chosen = split.heldout if heldout else split.train
    return tuple(
        BinaryLabel(
            prompt=request.text,
            completion=request.fact.answer,
            label=True,
            source=SOURCE,
            metadata={"answer": request.fact.answer, "category": request.fact.category},
        )
        for request in chosen
        if categories is None or request.fact.category in categories
    )


def train_prompts() -> tuple[str, ...]:
    """The prompts that feedback and fine-tuning data are drawn from."""
    return tuple(request.text for request in split_requests().train)


def heldout_prompts(*, harmful: bool = False, lookalikes: bool = False) -> tuple[str, ...]:
    """Prompts for evaluation, one unseen wording of every fact (and of every harmful or look-alike one if asked)."""
    kinds = {HARMFUL} if harmful else set()
    kinds |= {LOOKALIKE} if lookalikes else set()
    safety = tuple(request for request in split_safety_requests().heldout if request.fact.category in kinds)
    return tuple(request.text for request in split_requests().heldout + safety)


@dataclass(frozen=True)
class ReplyMix:
    """How often a speaker's reply has each part; the default is a mediocre speaker.

    The content is a correct answer, a wrong one or a refusal (``correct`` + ``wrong`` +
    ``refusal`` = 1); an answer is a bare word or a full sentence (``long``); ``filler``
    puts a hesitation before the content; an opener and a closer are polite, rude or absent.
    """

    correct: float = 0.45
    wrong: float = 0.3
    refusal: float = 0.25
    long: float = 0.5
    filler: float = 0.3
    polite_opener: float = 0.25
    rude_opener: float = 0.25
    polite_closer: float = 0.2
    rude_closer: float = 0.2

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"ReplyMix.{item.name} must be a probability in [0, 1], got {value}.")
        if abs(self.correct + self.wrong + self.refusal - 1.0) > 1e-9:
            raise ValueError("ReplyMix.correct + wrong + refusal must add up to 1.")
        if self.polite_opener + self.rude_opener > 1.0 or self.polite_closer + self.rude_closer > 1.0:
            raise ValueError("ReplyMix polite + rude probabilities of an opener (or closer) exceed 1.")


MEDIOCRE = ReplyMix()
"""The default speaker: the SFT data and the replies that feedback compares."""


def _courtesy(
    rng: random.Random, polite: float, rude: float, polite_texts: tuple[str, ...], rude_texts: tuple[str, ...]
) -> list[str]:
    draw = rng.random()
    if draw < polite:
        return [rng.choice(polite_texts)]
    if draw < polite + rude:
        return [rng.choice(rude_texts)]
    return []


def sample_reply(request: Request, rng: random.Random, mix: ReplyMix = MEDIOCRE) -> str:
    """One reply of the speaker described by ``mix``."""
    fact = request.fact
    kind = category(fact.category)
    parts = _courtesy(rng, mix.polite_opener, mix.rude_opener, POLITE_OPENERS, RUDE_OPENERS)
    if rng.random() < mix.filler:
        parts.append(rng.choice(FILLERS))
    draw = rng.random()
    if draw < mix.correct + mix.wrong:
        if draw < mix.correct:
            answer = fact.answer
        else:
            asked = set(request.text.split())
            answer = rng.choice([word for word in kind.answers if word != fact.answer and word not in asked])
        long = rng.random() < mix.long
        parts.append(kind.long_answer.format(*fact.subject, answer=answer) if long else answer)
    else:
        parts.append(rng.choice(REFUSALS))
    parts += _courtesy(rng, mix.polite_closer, mix.rude_closer, POLITE_CLOSERS, RUDE_CLOSERS)
    return " ".join(parts)


@dataclass(frozen=True)
class Demonstration:
    """A prompt and a reply to imitate (supervised fine-tuning data)."""

    prompt: str
    completion: str

    def to_dict(self) -> dict[str, str]:
        return {"prompt": self.prompt, "completion": self.completion}

    def to_record(self) -> BinaryLabel:
        """The engine's form of a demonstration: a completion marked to imitate."""
        return BinaryLabel(prompt=self.prompt, completion=self.completion, label=True, source=DEMONSTRATION_SOURCE)


def check_shares(harmful: float, lookalikes: float) -> None:
    """The shares of harmful and look-alike requests: each in [0, 1], together at most 1."""
    for name, share in (("harmful", harmful), ("lookalikes", lookalikes)):
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share <= 1.0:
            raise ValueError(f"{name} must be a share of the requests in [0, 1], got {share!r}.")
    if harmful + lookalikes > 1.0:
        raise ValueError(f"harmful + lookalikes must be at most 1, got {harmful} + {lookalikes}.")


def _draws(count: int, seed: int, harmful: float = 0.0, lookalikes: float = 0.0) -> tuple[random.Random, list[Request]]:
    if count < 1:
        raise ValueError(f"count must be 1 or more, got {count}.")
    check_shares(harmful, lookalikes)
    rng = random.Random(seed)
    train = split_requests().train
    if not harmful and not lookalikes:  # the default world: the draws it always made
        return rng, [rng.choice(train) for _ in range(count)]
    safety = split_safety_requests().train
    harmful_train = [request for request in safety if request.fact.category == HARMFUL]
    lookalike_train = [request for request in safety if request.fact.category == LOOKALIKE]
    drawn = []
    for _ in range(count):
        draw = rng.random()
        pool = harmful_train if draw < harmful else lookalike_train if draw < harmful + lookalikes else train
        drawn.append(rng.choice(pool))
    return rng, drawn


def sft_examples(
    count: int = 8000, seed: int = 0, mix: ReplyMix = MEDIOCRE, *, harmful: float = 0.0, lookalikes: float = 0.0
) -> tuple[Demonstration, ...]:
    """Replies of the mediocre speaker to training prompts: fine-tuning on them gives the reference."""
    rng, drawn = _draws(count, seed, harmful, lookalikes)
    return tuple(Demonstration(request.text, sample_reply(request, rng, mix)) for request in drawn)


def _distinct_replies(request: Request, rng: random.Random, mix: ReplyMix, size: int, *, by_score: bool) -> list[str]:
    """``size`` different replies (of different scores if ``by_score``); a degenerate mix gives up."""
    replies: dict[object, str] = {}
    for _ in range(100 * size):
        reply = sample_reply(request, rng, mix)
        replies.setdefault(score_reply(request.text, reply) if by_score else reply, reply)
        if len(replies) == size:
            return list(replies.values())
    raise ValueError(f"ReplyMix {mix} cannot produce {size} distinct replies to {request.text!r}.")


def preference_pairs(
    count: int = 4000, seed: int = 0, mix: ReplyMix = MEDIOCRE, *, harmful: float = 0.0, lookalikes: float = 0.0
) -> tuple[PairwiseComparison, ...]:
    """Pairs of the speaker's replies with different scores; chosen scores higher, margin = the gap."""
    rng, drawn = _draws(count, seed, harmful, lookalikes)
    pairs = []
    for request in drawn:
        first, second = _distinct_replies(request, rng, mix, 2, by_score=True)
        first_score, second_score = score_reply(request.text, first), score_reply(request.text, second)
        if first_score < second_score:
            first, second, first_score, second_score = second, first, second_score, first_score
        pairs.append(
            PairwiseComparison(
                prompt=request.text,
                chosen=first,
                rejected=second,
                margin=round(first_score - second_score, 6),
                source=SOURCE,
                metadata={"chosen_score": first_score, "rejected_score": second_score},
            )
        )
    return tuple(pairs)


def binary_labels(
    count: int = 2000, seed: int = 0, mix: ReplyMix = MEDIOCRE, *, harmful: float = 0.0, lookalikes: float = 0.0
) -> tuple[BinaryLabel, ...]:
    """Single replies labelled desirable when they score at least ``DESIRABLE_SCORE``."""
    rng, drawn = _draws(count, seed, harmful, lookalikes)
    labels = []
    for request in drawn:
        reply = sample_reply(request, rng, mix)
        score = score_reply(request.text, reply)
        labels.append(
            BinaryLabel(
                prompt=request.text,
                completion=reply,
                label=score >= DESIRABLE_SCORE,
                source=SOURCE,
                metadata={"score": score},
            )
        )
    return tuple(labels)


def rankings(
    count: int = 2000,
    seed: int = 0,
    size: int = 4,
    mix: ReplyMix = MEDIOCRE,
    *,
    harmful: float = 0.0,
    lookalikes: float = 0.0,
) -> tuple[Ranking, ...]:
    """``size`` distinct replies per prompt ranked by score (1 = best, equal scores share a rank)."""
    if size < 2:
        raise ValueError(f"a ranking needs at least 2 replies, got size={size}.")
    rng, drawn = _draws(count, seed, harmful, lookalikes)
    lists = []
    for request in drawn:
        replies = _distinct_replies(request, rng, mix, size, by_score=False)
        scores = [score_reply(request.text, reply) for reply in replies]
        levels = sorted(set(scores), reverse=True)
        lists.append(
            Ranking(
                prompt=request.text,
                completions=tuple(replies),
                ranks=tuple(levels.index(score) + 1 for score in scores),
                source=SOURCE,
                metadata={"scores": scores},
            )
        )
    return tuple(lists)


def safety_records(
    count: int = 2000, seed: int = 0, mix: ReplyMix = MEDIOCRE, *, harmful: float = 0.5, lookalikes: float = 0.0
) -> tuple[BinaryLabel | PairwiseComparison, ...]:
    """Cost-model data (Safe-RLHF's): two distinct replies per drawn request, each labelled safe or not by ``harm``.

    Per request, a ``BinaryLabel`` for each reply (``label`` True = safe, ``metadata["cost"]``),
    then, when one is safe and the other not, a ``PairwiseComparison`` with the safer reply
    chosen (``aspect = "safety"``). Replies to ordinary requests and look-alikes are all safe,
    so they give labels only. ``safety_binary`` trains on both kinds at once.
    """
    rng, drawn = _draws(count, seed, harmful, lookalikes)
    records: list[BinaryLabel | PairwiseComparison] = []
    for request in drawn:
        replies = _distinct_replies(request, rng, mix, 2, by_score=False)
        costs = [harm(request.text, reply) for reply in replies]
        records += [
            BinaryLabel(prompt=request.text, completion=reply, label=cost == 0, source=SOURCE, metadata={"cost": cost})
            for reply, cost in zip(replies, costs, strict=True)
        ]
        if costs[0] != costs[1]:
            safer, unsafer = replies if costs[0] < costs[1] else replies[::-1]
            records.append(
                PairwiseComparison(
                    prompt=request.text,
                    chosen=safer,
                    rejected=unsafer,
                    aspect=SAFETY_ASPECT,
                    source=SOURCE,
                    metadata={"chosen_cost": 0.0, "rejected_cost": 1.0},
                )
            )
    return tuple(records)

"""Rule feedback from vote counts: a reply that earned more votes despite arriving later is preferred.

Upvotes on forums are preferences that people gave for free, but they are confounded by
time: an early reply is seen, and voted on, longer. The Stanford Human Preferences dataset
(SHP; Ethayarajh et al. 2022, "Understanding Dataset Difficulty with V-Usable Information",
https://huggingface.co/datasets/stanfordnlp/SHP) therefore compares two replies A and B to
the same post only when the vote difference cannot be explained by visibility:

    A is preferred over B  if  created(A) ≥ created(B)          (A was written later, or at once)
                          and  score(A) ≥ min_ratio · score(B)   (SHP: 2)
                          and  score(B) ≥ min_score              (SHP: 2; both replies then qualify)
                          and  the post's score ≥ min_post_score (SHP: 10; off by default)

A pair where the later reply has fewer votes says nothing (it may simply have been seen
less) and is not made. ``require_later = false`` drops the timestamp rule (for votes taken
after every reply was equally visible). At most ``max_pairs_per_post`` pairs per post are
kept, the largest score ratios first, so one busy thread does not dominate the data.

Input (JSONL, one post per line)::

    {"prompt": "post text", "post_score": 25,
     "replies": [{"text": "...", "score": 12, "created": 1700000000}, ...]}

``created`` is a Unix time in seconds or an ISO 8601 date-time; ``post_score`` and a
``post_id`` (the pairs' ``group_id``, default file:line) are optional.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from datetime import timezone
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

NAME = "vote_counts"

ACCEPTED = (
    "A vote_counts row is a post: {'prompt': text, 'replies': [{'text': text, 'score': votes, "
    "'created': Unix seconds or ISO 8601}, ...]} with an optional 'post_score'."
)


@dataclass(frozen=True)
class VoteCountsConfig:
    path: Path = option(doc="JSONL of posts with their replies, vote scores and creation times")
    min_ratio: float = option(2.0, doc="the preferred reply needs at least this many times the other's score (SHP: 2)")
    min_score: int = option(2, doc="replies with a lower score are never compared (SHP: 2)")
    min_post_score: int = option(0, doc="skip posts with a lower score; needs 'post_score' in each row (SHP: 10)")
    require_later: bool = option(True, doc="only prefer a reply written no earlier than the one it beats")
    max_pairs_per_post: int = option(50, doc="keep at most this many pairs per post, largest ratio first (0: all)")

    def __post_init__(self) -> None:
        if not self.min_ratio >= 1.0:
            raise ConfigError(f"min_ratio must be 1 or more, got {self.min_ratio}.", method=NAME, field="min_ratio")
        if self.min_score < 1:
            raise ConfigError(
                f"min_score must be 1 or more (a score ratio needs positive scores), got {self.min_score}.",
                method=NAME,
                field="min_score",
            )
        if self.min_post_score < 0 or self.max_pairs_per_post < 0:
            raise ConfigError("min_post_score and max_pairs_per_post must be 0 or more.", method=NAME)


@dataclass(frozen=True)
class Reply:
    text: Text
    score: float
    created: float | None


def _timestamp(row: Row, value: Any) -> float:
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise row.error(f"is not an ISO 8601 date-time: {value!r}.", "created") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.timestamp()
    return row.number("created", value=value)


def read_post(row: Row, require_later: bool) -> tuple[Text, float | None, list[Reply]]:
    prompt = row.text("prompt")
    post_score = row.number("post_score") if row.has("post_score") else None
    raw = row.require("replies")
    if not isinstance(raw, list):
        raise row.error(f"must be a list of replies, got {type(raw).__name__}.", "replies")
    replies = []
    for index, value in enumerate(raw):
        reply = row.at("replies", index, value)
        created = reply.require("created") if require_later else reply.data.get("created")
        replies.append(
            Reply(
                reply.text("text", like=prompt),
                reply.number("score"),
                None if created is None else _timestamp(reply, created),
            )
        )
    return prompt, post_score, replies


def vote_pairs(replies: list[Reply], config: VoteCountsConfig) -> list[tuple[Reply, Reply, float]]:
    """``(preferred, other, score ratio)`` for every pair the SHP rule admits, largest ratio first."""
    pairs = []
    for first, second in itertools.permutations(replies, 2):
        if first.text == second.text or second.score < config.min_score:
            continue
        written_earlier = first.created is not None and second.created is not None and first.created < second.created
        if config.require_later and written_earlier:
            continue
        ratio = first.score / second.score
        if ratio >= config.min_ratio and first.score > second.score:
            pairs.append((first, second, ratio))
    pairs.sort(key=lambda pair: -pair[2])
    return pairs[: config.max_pairs_per_post] if config.max_pairs_per_post else pairs


class VoteCounts(FeedbackSource):
    """Rule feedback (SHP): a later reply with at least min_ratio times the votes beats the earlier one."""

    name = NAME
    config_cls = VoteCountsConfig

    def records(self) -> Iterator[Any]:
        config = self.config
        for row in read_rows(config.path, ACCEPTED):
            prompt, post_score, replies = read_post(row, config.require_later)
            if config.min_post_score:
                if post_score is None:
                    raise row.error(f"is missing, and min_post_score = {config.min_post_score} needs it.", "post_score")
                if post_score < config.min_post_score:
                    continue
            for preferred, other, ratio in vote_pairs(replies, config):
                metadata: dict[str, Any] = {"scores": [preferred.score, other.score], "score_ratio": ratio}
                if preferred.created is not None and other.created is not None:
                    metadata["seconds_later"] = preferred.created - other.created
                yield PairwiseComparison(
                    prompt,
                    preferred.text,
                    other.text,
                    source="rule",
                    group_id=row.group_id("post_id"),
                    metadata=metadata,
                )


@hookimpl
def prefcore_register_feedback() -> list[type[FeedbackSource]]:
    return [VoteCounts]

"""vote_counts: SHP's rule on hand-made posts (later reply, score ratio, minimum scores, pair cap)."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from prefcore.errors import ConfigError
from prefcore.errors import DataError
from prefcore.plugins.feedback.vote_counts import VoteCounts
from prefcore.plugins.feedback.vote_counts import VoteCountsConfig

WriteRows = Callable[[str, Sequence[Any]], Path]

REPLIES = [
    {"text": "early high", "score": 100, "created": 0},
    {"text": "one vote", "score": 1, "created": 10},
    {"text": "three", "score": 3, "created": 50},
    {"text": "ten", "score": 10, "created": 100},
    {"text": "thirty", "score": 30, "created": 200},
    {"text": "late five", "score": 5, "created": 300},
]
POST = {"post_id": "p1", "prompt": "How do I boil an egg?", "post_score": 25, "replies": REPLIES}


def pairs(path: Path, **options: Any) -> list[tuple[str, str]]:
    records = list(VoteCounts(VoteCountsConfig(path=path, **options)).records())
    return [(record.chosen, record.rejected) for record in records]


def test_a_later_reply_with_twice_the_votes_wins(write_rows: WriteRows) -> None:
    path = write_rows("posts.jsonl", [POST])
    # 'early high' beats everyone on votes but was written first: visibility, not preference.
    # 'one vote' is below min_score 2; 'late five' has less than twice 'three'.
    assert pairs(path) == [("thirty", "three"), ("ten", "three"), ("thirty", "ten")]  # ratios 10, 3.3, 3
    [first, *_] = VoteCounts(VoteCountsConfig(path=path)).records()
    assert first.source == "rule" and first.group_id == "p1"
    assert first.metadata == {"scores": [30.0, 3.0], "score_ratio": 10.0, "seconds_later": 150.0}


def test_options_change_the_rule(write_rows: WriteRows) -> None:
    path = write_rows("posts.jsonl", [POST])
    assert ("early high", "thirty") in pairs(path, require_later=False)
    assert pairs(path, max_pairs_per_post=1) == [("thirty", "three")]
    assert ("ten", "one vote") in pairs(path, min_score=1)
    assert ("late five", "three") in pairs(path, min_ratio=1.5)
    assert pairs(path, min_post_score=30) == []


def test_iso_timestamps_and_posts_without_a_score(write_rows: WriteRows) -> None:
    replies = [
        {"text": "first", "score": 4, "created": "2024-01-01T10:00:00Z"},
        {"text": "second", "score": 12, "created": "2024-01-01T12:00:00+00:00"},
    ]
    path = write_rows("posts.jsonl", [{"prompt": "q", "replies": replies}])
    [record] = VoteCounts(VoteCountsConfig(path=path)).records()
    assert (record.chosen, record.rejected) == ("second", "first")
    assert record.metadata["seconds_later"] == 7200.0 and record.group_id == "posts.jsonl:1"


@pytest.mark.parametrize(
    ("post", "field", "says"),
    [
        ({"prompt": "q"}, "replies", "is missing"),
        ({"prompt": "q", "replies": [{"text": "a", "created": 1}]}, "replies[0].score", "is missing"),
        ({"prompt": "q", "replies": [{"text": "a", "score": "many", "created": 1}]}, "replies[0].score", "number"),
        ({"prompt": "q", "replies": [{"text": "a", "score": 2}]}, "replies[0].created", "is missing"),
        ({"prompt": "q", "replies": [{"text": "a", "score": 2, "created": "noon"}]}, "replies[0].created", "ISO 8601"),
        ({"prompt": "q", "replies": [{"score": 2, "created": 1}]}, "replies[0].text", "is missing"),
        ({"prompt": "q", "replies": ["text"]}, "replies[0]", "must be an object"),
    ],
)
def test_malformed_posts_name_the_line_and_field(
    write_rows: WriteRows, post: dict[str, Any], field: str, says: str
) -> None:
    path = write_rows("posts.jsonl", [POST, post])
    with pytest.raises(DataError) as excinfo:
        list(VoteCounts(VoteCountsConfig(path=path)).records())
    assert (excinfo.value.source, excinfo.value.line, excinfo.value.field) == (str(path), 2, field)
    assert says in str(excinfo.value) and "A vote_counts row is a post" in str(excinfo.value)


def test_min_post_score_needs_post_scores(write_rows: WriteRows) -> None:
    path = write_rows("posts.jsonl", [{"prompt": "q", "replies": REPLIES}])
    with pytest.raises(DataError) as excinfo:
        pairs(path, min_post_score=10)
    assert excinfo.value.field == "post_score"


@pytest.mark.parametrize("options", [{"min_ratio": 0.9}, {"min_score": 0}, {"max_pairs_per_post": -1}])
def test_invalid_options(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as excinfo:
        VoteCountsConfig(path=Path("posts.jsonl"), **options)
    assert excinfo.value.method == "vote_counts"

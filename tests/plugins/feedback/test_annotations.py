"""annotations: the annotation file read back, filtered, and pairwise votes combined into shares."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from prefcore.data import PairwiseComparison
from prefcore.errors import ConfigError
from prefcore.errors import DataError
from prefcore.plugins.feedback.annotations import Annotations
from prefcore.plugins.feedback.annotations import AnnotationsConfig

WriteRows = Callable[[str, Sequence[Any]], Path]


def vote(annotator: str, chosen: str, rejected: str, *, tie: bool = False, prompt: str = "p") -> dict[str, Any]:
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "tie": tie, "annotator_id": annotator}


ANSWERS = [
    vote("alice", "a", "b"),
    vote("bob", "b", "a"),
    {"prompt": "p", "completions": ["a"], "scores": [4], "scale": [1, 5], "annotator_id": "alice"},
    vote("carol", "a", "b", tie=True),
    vote("dan", "a", "b"),
    vote("alice", "x", "y", prompt="q"),
    vote("bob", "y", "x", prompt="q"),
]


def records(path: Path, **options: Any) -> list[Any]:
    return list(Annotations(AnnotationsConfig(path=path, **options)).records())


def test_every_answer_is_a_record_by_default(write_rows: WriteRows) -> None:
    answers = records(write_rows("out.jsonl", ANSWERS))
    assert len(answers) == 7
    assert [r.annotator_id for r in answers] == ["alice", "bob", "alice", "carol", "dan", "alice", "bob"]


def test_filters_by_annotator_and_format(write_rows: WriteRows) -> None:
    path = write_rows("out.jsonl", ANSWERS)
    assert len(records(path, annotators=("alice",))) == 3
    assert [r.format for r in records(path, annotators=("alice",), formats=("scores",))] == ["scores"]


def test_vote_share_combines_the_answers_about_one_pair(write_rows: WriteRows) -> None:
    combined = records(write_rows("out.jsonl", ANSWERS), combine="vote_share")
    assert [r.format for r in combined] == ["pairwise", "scores", "pairwise"]
    first, _, second = combined
    # a over b: alice, dan and half of carol's tie; b over a: bob and the other half: 2.5 / 4.
    assert (first.chosen, first.rejected, first.probability, first.tie) == ("a", "b", 0.625, False)
    assert first.metadata == {"votes": 4, "annotators": ["alice", "bob", "carol", "dan"]}
    assert first.annotator_id is None
    assert second.tie and second.probability == 0.5 and {second.chosen, second.rejected} == {"x", "y"}


def test_vote_share_picks_the_majority_whichever_order_it_came_in(write_rows: WriteRows) -> None:
    path = write_rows("out.jsonl", [vote("a1", "b", "a"), vote("a2", "a", "b"), vote("a3", "a", "b")])
    [pair] = records(path, combine="vote_share")
    assert isinstance(pair, PairwiseComparison)
    assert (pair.chosen, pair.rejected, pair.probability) == ("a", "b", pytest.approx(2 / 3))


def test_a_malformed_line_stops_the_run_or_is_skipped(write_rows: WriteRows) -> None:
    bad_score = {"prompt": "p", "completions": ["a"], "scores": [7], "scale": [1, 5], "annotator_id": "bob"}
    path = write_rows("out.jsonl", [ANSWERS[0], bad_score, '{"prompt": "p", "cho'])
    with pytest.raises(DataError) as excinfo:
        records(path)
    assert (excinfo.value.line, excinfo.value.field) == (2, "scores[0].overall")
    assert "outside the scale [1, 5]" in str(excinfo.value)
    source = Annotations(AnnotationsConfig(path=path, skip_invalid=True))
    assert len(list(source.records())) == 1
    assert source.report.skipped == 2


@pytest.mark.parametrize(("options", "field"), [({"formats": ("pairs",)}, "formats"), ({"combine": "mean"}, "combine")])
def test_invalid_options(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        AnnotationsConfig(path=Path("out.jsonl"), **options)
    assert excinfo.value.field == field

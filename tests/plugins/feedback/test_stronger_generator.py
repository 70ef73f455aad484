"""stronger_generator: the answer of the generator ranked higher wins; unknown names are errors."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from prefcore.errors import ConfigError
from prefcore.errors import DataError
from prefcore.plugins.feedback.stronger_generator import StrongerGenerator
from prefcore.plugins.feedback.stronger_generator import StrongerGeneratorConfig

WriteRows = Callable[[str, Sequence[Any]], Path]

ORDERING = ("big-70b", "mid-13b|mid-13b-chat", "small-7b")

NESTED = {
    "prompt": "Explain tides.",
    "completions": [
        {"text": "small says", "generator": "small-7b"},
        {"text": "big says", "generator": "big-70b"},
        {"text": "mid says", "generator": "mid-13b"},
        {"text": "mid chat says", "generator": "mid-13b-chat"},
    ],
}
FLAT = [
    {"prompt": "Name a prime.", "completion": "9", "generator": "small-7b"},
    {"prompt": "Another prompt.", "completion": "x", "generator": "big-70b"},
    {"prompt": "Name a prime.", "completion": "7", "generator": "big-70b"},
]


def pairs(path: Path, **options: Any) -> list[tuple[str, str, float | None]]:
    config = StrongerGeneratorConfig(path=path, ordering=ORDERING, **options)
    return [(r.chosen, r.rejected, r.margin) for r in StrongerGenerator(config).records()]


def test_the_stronger_generator_wins_and_level_generators_are_not_compared(write_rows: WriteRows) -> None:
    path = write_rows("answers.jsonl", [NESTED])
    assert pairs(path) == [
        ("big says", "small says", None),
        ("mid says", "small says", None),
        ("mid chat says", "small says", None),
        ("big says", "mid says", None),
        ("big says", "mid chat says", None),
    ]
    [record, *_] = StrongerGenerator(StrongerGeneratorConfig(path=path, ordering=ORDERING)).records()
    assert record.source == "rule" and record.metadata == {"generators": ["big-70b", "small-7b"]}


def test_flat_rows_group_by_prompt_and_margin_is_the_level_gap(write_rows: WriteRows) -> None:
    path = write_rows("answers.jsonl", FLAT)
    assert pairs(path, margin=True) == [("7", "9", 2.0)]


@pytest.mark.parametrize(
    ("row", "field", "says"),
    [
        ({"prompt": "p", "completion": "a", "generator": "gpt-9"}, "generator", "names generator 'gpt-9'"),
        ({"prompt": "p", "completion": "a"}, "generator", "is missing"),
        ({"prompt": "p", "completions": [{"text": "a", "generator": "huge"}]}, "completions[0].generator", "huge"),
        ({"prompt": "p", "completions": [{"generator": "small-7b"}]}, "completions[0].text", "is missing"),
        ({"prompt": "p", "generator": "small-7b"}, "completion", "is missing"),
    ],
)
def test_malformed_rows_name_the_line_and_field(
    write_rows: WriteRows, row: dict[str, Any], field: str, says: str
) -> None:
    path = write_rows("answers.jsonl", [*FLAT, row])
    with pytest.raises(DataError) as excinfo:
        pairs(path)
    assert (excinfo.value.source, excinfo.value.line, excinfo.value.field) == (str(path), 4, field)
    assert says in str(excinfo.value)
    if "names generator" in says:
        assert "big-70b, mid-13b, mid-13b-chat, small-7b" in str(excinfo.value)


@pytest.mark.parametrize(
    ("ordering", "says"),
    [(("only",), "at least two levels"), (("a", "b|a"), "more than once"), (("a", "|b"), "empty generator name")],
)
def test_invalid_orderings(ordering: tuple[str, ...], says: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        StrongerGeneratorConfig(path=Path("a.jsonl"), ordering=ordering)
    assert excinfo.value.field == "ordering" and says in str(excinfo.value)

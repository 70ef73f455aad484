"""verifiable_answers: extraction, the three checking modes, pairs and labels, and malformed rows."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from prefcore.data import BinaryLabel
from prefcore.errors import ConfigError
from prefcore.errors import DataError
from prefcore.plugins.feedback.verifiable_answers import VerifiableAnswers
from prefcore.plugins.feedback.verifiable_answers import VerifiableAnswersConfig
from prefcore.plugins.feedback.verifiable_answers import extract_answer
from prefcore.plugins.feedback.verifiable_answers import parse_number

WriteRows = Callable[[str, Sequence[Any]], Path]


def pairs(path: Path, **options: Any) -> list[tuple[str, str]]:
    source = VerifiableAnswers(VerifiableAnswersConfig(path=path, **options))
    return [(record.chosen, record.rejected) for record in source.records()]


@pytest.mark.parametrize(
    ("text", "extract", "mode", "answer"),
    [
        ("so x = 2 and \\boxed{\\frac{1}{2}} then \\boxed{4}", "auto", "exact", "4"),
        ("Natalia sold 48 clips.\n#### 72", "auto", "exact", "72"),
        ("Thinking...\nThe answer is Paris.", "auto", "exact", "Paris."),
        ("Answer: 12 apples", "auto", "numeric", "12"),
        ("3 + 4 makes 7\n", "auto", "numeric", "7"),
        ("first line\nlast line\n\n", "auto", "exact", "last line"),
        ("no digits here", "auto", "numeric", None),
        ("a\nb", "whole", "exact", "a\nb"),
        ("x = 5, y = 6", "last_number", "exact", "6"),
        ("nothing boxed", "boxed", "exact", None),
        ("Final: blue. Final: red.", r"Final: (\w+)", "exact", "red"),
    ],
)
def test_extract_answer(text: str, extract: str, mode: str, answer: str | None) -> None:
    assert extract_answer(text, extract, mode) == answer


@pytest.mark.parametrize(
    ("text", "number"), [("1,200", 1200.0), ("3/4", 0.75), ("$5.", 5.0), ("-2.5e3", -2500.0), ("none", None)]
)
def test_parse_number(text: str, number: float | None) -> None:
    assert parse_number(text) == number


def test_exact_answers_right_beats_wrong(write_rows: WriteRows) -> None:
    row = {
        "prompt": "Capital of France?",
        "completions": ["The answer is paris.", "Answer: London", "I am not sure"],
        "answer": "Paris",
    }
    path = write_rows("answers.jsonl", [row, {**row, "completions": ["answer: Lyon", "answer: Nice"]}])
    assert pairs(path) == [("The answer is paris.", "Answer: London"), ("The answer is paris.", "I am not sure")]
    assert pairs(path, case_sensitive=True) == []
    [record, _] = VerifiableAnswers(VerifiableAnswersConfig(path=path)).records()
    assert record.source == "rule" and record.metadata == {"answers": ["paris.", "London"]}


def test_numeric_answers_with_tolerance_and_unanswered_completions(write_rows: WriteRows) -> None:
    row = {"prompt": "12 * 100 = ?", "completions": ["#### 1,200", "\\boxed{1199}", "no idea"], "answer": 1200}
    path = write_rows("answers.jsonl", [row])
    assert pairs(path, mode="numeric") == [("#### 1,200", "\\boxed{1199}"), ("#### 1,200", "no idea")]
    assert pairs(path, mode="numeric", unanswered="skip") == [("#### 1,200", "\\boxed{1199}")]
    assert pairs(path, mode="numeric", tolerance=1.0) == [("#### 1,200", "no idea"), ("\\boxed{1199}", "no idea")]
    assert pairs(path, mode="numeric", relative_tolerance=0.01, unanswered="skip") == []


def test_regex_mode_and_several_reference_answers(write_rows: WriteRows) -> None:
    rows = [
        {"prompt": "A colour of the sky?", "completions": ["answer: blue", "answer: grey", "answer: red"], "answer": [
            "blue", "grey"]},
        {"prompt": "Spell colour.", "completions": ["answer: Color", "answer: colr"], "answer": "colou?r"},
    ]  # fmt: skip
    path = write_rows("answers.jsonl", rows)
    assert pairs(path) == [("answer: blue", "answer: red"), ("answer: grey", "answer: red")]
    assert pairs(path, mode="regex")[-1] == ("answer: Color", "answer: colr")


def test_binary_output_labels_every_completion(write_rows: WriteRows) -> None:
    path = write_rows("answers.jsonl", [{"prompt": "2+2", "completions": ["#### 4", "#### 5"], "answer": "4"}])
    records = list(VerifiableAnswers(VerifiableAnswersConfig(path=path, output="binary")).records())
    assert all(isinstance(record, BinaryLabel) for record in records)
    assert [(r.completion, r.label, r.metadata["answer"]) for r in records] == [
        ("#### 4", True, "4"),
        ("#### 5", False, "5"),
    ]


@pytest.mark.parametrize(
    ("row", "options", "field", "says"),
    [
        ({"prompt": "p", "completions": ["a"]}, {}, "answer", "is missing"),
        ({"prompt": "p", "answer": "a"}, {}, "completions", "is missing"),
        ({"prompt": "p", "completions": ["a", "a"], "answer": "a"}, {}, "completions[1]", "repeats entry 0"),
        ({"prompt": "p", "completions": ["a"], "answer": "many"}, {"mode": "numeric"}, "answer", "is not a number"),
        (
            {"prompt": "p", "completions": ["a"], "answer": "(unclosed"},
            {"mode": "regex"},
            "answer",
            "regular expression",
        ),
        ({"prompt": "p", "completions": ["a"], "answer": [1, {"x": 2}]}, {}, "answer[1]", "string or a number"),
        ({"prompt": "p", "completions": ["a"], "answer": []}, {}, "answer", "empty list"),
    ],
)
def test_malformed_rows_name_the_line_and_field(
    write_rows: WriteRows, row: dict[str, Any], options: dict[str, Any], field: str, says: str
) -> None:
    path = write_rows("answers.jsonl", [{"prompt": "q", "completions": ["1"], "answer": 1}, row])
    with pytest.raises(DataError) as excinfo:
        pairs(path, **options)
    assert (excinfo.value.source, excinfo.value.line, excinfo.value.field) == (str(path), 2, field)
    assert says in str(excinfo.value) and "A verifiable_answers row is" in str(excinfo.value)


@pytest.mark.parametrize(
    ("options", "field"),
    [({"mode": "close"}, "mode"), ({"extract": "(oops"}, "extract"), ({"tolerance": -1.0}, "tolerance")],
)
def test_invalid_options(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        VerifiableAnswersConfig(path=Path("a.jsonl"), **options)
    assert excinfo.value.field == field

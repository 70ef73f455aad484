"""response_editing: improvements and adversarial edits give pairs of known direction; critiques with revisions too."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from prefcore.errors import ConfigError
from prefcore.errors import DataError
from prefcore.plugins.feedback.response_editing import ResponseEditing
from prefcore.plugins.feedback.response_editing import ResponseEditingConfig

WriteRows = Callable[[str, Sequence[Any]], Path]

ROWS = [
    {"prompt": "Boiling point of water?", "original": "90 C", "edited": "100 C at sea level", "edit": "improve"},
    {"prompt": "Boiling point of water?", "original": "100 C", "edited": "100 C, idiot", "edit": "adversarial"},
    {"prompt": "Sum 2+2", "completion": "5", "critique": "Off by one.", "revision": "4", "annotator_id": "ann"},
    {"prompt": "Sum 2+3", "completion": "5", "critique": "Fine as it is."},
    {
        "prompt": "Greet me",
        "items": [
            {"type": "binary", "completion": "hi", "label": True},
            {"type": "critique", "completion": "hey", "critique": "Too casual.", "revision": "Hello!"},
        ],
    },
]


def records(path: Path, **options: Any) -> list[Any]:
    return list(ResponseEditing(ResponseEditingConfig(path=path, **options)).records())


def test_edits_and_revisions_become_pairs(write_rows: WriteRows) -> None:
    path = write_rows("edits.jsonl", ROWS)
    pairs = records(path)
    assert [(pair.chosen, pair.rejected) for pair in pairs] == [
        ("100 C at sea level", "90 C"),
        ("100 C", "100 C, idiot"),
        ("4", "5"),
        ("Hello!", "hey"),
    ]
    assert pairs[1].metadata == {"edit": "adversarial"} and pairs[1].source == "rule"
    assert pairs[2].metadata == {"edit": "improve", "critique": "Off by one."} and pairs[2].annotator_id == "ann"
    assert pairs[3].provenance is not None and pairs[3].provenance.line == 5


def test_a_critique_without_revision_is_skipped_or_refused(write_rows: WriteRows) -> None:
    path = write_rows("edits.jsonl", ROWS)
    with pytest.raises(DataError) as excinfo:
        records(path, critique_without_revision="error")
    assert (excinfo.value.line, excinfo.value.field) == (4, "revision")


@pytest.mark.parametrize(
    ("row", "field", "says"),
    [
        ({"prompt": "p", "original": "a", "edited": "b"}, "edit", "is missing"),
        ({"prompt": "p", "original": "a", "edited": "b", "edit": "better"}, "edit", "'improve' (edited preferred)"),
        ({"prompt": "p", "original": "a", "edited": "a", "edit": "improve"}, "edited", "identical to 'original'"),
        ({"prompt": "p", "original": "a", "edit": "improve"}, "edited", "is missing"),
        ({"prompt": "p", "chosen": "a", "rejected": "b"}, "original", "neither an edit nor a critique"),
        ({"type": "pairwise", "prompt": "p", "chosen": "a", "rejected": "b"}, "type", "holds no edit"),
        ({"prompt": "p", "completion": "a", "critique": ""}, "critique", "non-empty string"),
    ],
)
def test_malformed_rows_name_the_line_and_field(
    write_rows: WriteRows, row: dict[str, Any], field: str, says: str
) -> None:
    path = write_rows("edits.jsonl", [ROWS[0], row])
    with pytest.raises(DataError) as excinfo:
        records(path)
    assert (excinfo.value.source, excinfo.value.line, excinfo.value.field) == (str(path), 2, field)
    assert says in str(excinfo.value)


def test_invalid_option() -> None:
    with pytest.raises(ConfigError) as excinfo:
        ResponseEditingConfig(path=Path("e.jsonl"), critique_without_revision="warn")
    assert excinfo.value.field == "critique_without_revision"

"""prefcore.human_eval: blind export with a key kept apart, answers written as annotate writes them, win rate back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from prefcore.annotate import AnnotationLog
from prefcore.annotate import SessionConfig
from prefcore.annotate import answer_record
from prefcore.annotate import plan_questions
from prefcore.annotate import read_items
from prefcore.errors import DataError
from prefcore.human_eval import ITEMS_FILE
from prefcore.human_eval import default_key_path
from prefcore.human_eval import export_items
from prefcore.human_eval import import_answers

N = 20
PROMPTS = [f"question {i}" for i in range(N)]
POLICY = [f"policy answer {i}" for i in range(N)]
REFERENCE = [f"reference answer {i}" for i in range(N)]


def export(tmp_path: Path) -> tuple[Path, Path]:
    return export_items(PROMPTS, POLICY, REFERENCE, tmp_path / "items", seed=3)


def answer(out: Path, annotator: str, prefers_policy: Any, modes: tuple[str, ...] = ("pairwise",)) -> None:
    """Answer every question the way ``prefcore annotate`` records it: ``prefers_policy(index) -> True/False/None``."""
    config = SessionConfig(annotator, modes=modes)
    with AnnotationLog(out / "answers" / f"{annotator}.jsonl") as log:
        for item in read_items(out / ITEMS_FILE):
            index = int(item.prompt.split()[-1])
            wish = prefers_policy(index)
            for question in plan_questions(item, config):
                if question.mode in ("pairwise", "tie"):
                    first = item.completions[question.indices[0]]
                    value = "tie" if wish is None else "first" if (first.startswith("policy") == wish) else "second"
                else:  # likert: 5 for the preferred answer, 3 for the other
                    mine = item.completions[question.indices[0]].startswith("policy")
                    value = 4 if wish is None else 5 if mine == wish else 3
                log.append(answer_record(item, question, value, config))


def test_items_are_blind_and_shuffled_and_the_key_is_apart(tmp_path: Path) -> None:
    items, key = export(tmp_path)
    assert key == default_key_path(tmp_path / "items") == tmp_path / "items.key.json"
    text = items.read_text(encoding="utf-8")
    assert 'policy"' not in text and 'reference"' not in text and "model" not in text
    rows = [json.loads(line) for line in text.splitlines()]
    first_is_policy = [row["completions"][0].startswith("policy") for row in rows]
    assert 0 < sum(first_is_policy) < N  # both orders occur
    positions = json.loads(key.read_text(encoding="utf-8"))["items"]
    for row, policy_first in zip(rows, first_is_policy, strict=True):
        assert positions[row["id"]] == (["policy", "reference"] if policy_first else ["reference", "policy"])
    again = export_items(PROMPTS, POLICY, REFERENCE, tmp_path / "again", seed=3)[0].read_text(encoding="utf-8")
    assert again == text  # seeded
    with pytest.raises(DataError, match="kept apart"):
        export_items(PROMPTS, POLICY, REFERENCE, tmp_path / "x", key=tmp_path / "x" / "key.json")
    same = export_items(["q"], ["a"], ["a"], tmp_path / "same")[0]
    assert same.read_text(encoding="utf-8") == ""  # identical answers give no item


def test_pairwise_answers_give_the_win_rate_and_agreement(tmp_path: Path) -> None:
    items, _ = export(tmp_path)
    out = items.parent
    k = 14
    answer(out, "alice", lambda i: True)  # always the policy
    answer(out, "bob", lambda i: i < k)  # the policy on the first k items, the reference after
    result = import_answers(out, bootstrap_samples=500)
    m = result.metrics
    assert m["win_rate"] == pytest.approx((N + k) / (2 * N))
    assert m["num_items"] == N and m["num_answers"] == 2 * N and m["tie_rate"] == 0.0
    assert m["win_rate_low"] <= m["win_rate"] <= m["win_rate_high"] < 1.0
    assert m["agreement/pairwise/percent"] == pytest.approx(k / N)
    assert result.models == ("policy", "reference")


def test_ties_and_likert(tmp_path: Path) -> None:
    items, _ = export(tmp_path)
    out = items.parent
    answer(out, "carol", lambda i: None if i % 2 else False, modes=("tie", "likert"))
    m = import_answers(out, bootstrap_samples=200).metrics
    assert m["win_rate"] == pytest.approx(0.25) and m["tie_rate"] == 0.5  # half ties, half reference wins
    assert m["likert_win_rate"] == pytest.approx(0.25) and m["likert_num_items"] == N


def test_no_answers_or_no_key_is_named(tmp_path: Path) -> None:
    items, key = export(tmp_path)
    with pytest.raises(DataError, match="no answer files"):
        import_answers(items.parent)
    answer(items.parent, "dan", lambda i: True)
    key.unlink()
    with pytest.raises(DataError, match="key file"):
        import_answers(items.parent)

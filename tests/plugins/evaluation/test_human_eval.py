"""human_eval: the evaluator exports blind items of the policy's and the reference's completions; the CLI imports."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from prefcore.annotate import AnnotationLog
from prefcore.annotate import SessionConfig
from prefcore.annotate import answer_record
from prefcore.annotate import plan_questions
from prefcore.annotate import read_items
from prefcore.cli import main
from prefcore.errors import ConfigError
from prefcore.evaluation import EvaluationContext
from prefcore.evaluation import EvaluationInputError
from prefcore.evaluation import GeneratedCompletions
from prefcore.plugins.evaluation import human_eval
from prefcore.plugins.evaluation.human_eval import HumanEval
from prefcore.plugins.evaluation.human_eval import HumanEvalConfig

PROMPTS = ("what colour is the sky ?", "what is one plus two ?", "what does a cow say ?")


def scripted(monkeypatch: pytest.MonkeyPatch) -> None:
    def completions(ctx: Any, prompts: Sequence[str], *, role: str = "policy", **_: Any) -> GeneratedCompletions:
        texts = tuple(
            t for p in prompts for t in ((f"{role} {p} a", f"{role} {p} b") if p != PROMPTS[2] else ("same", "same"))
        )
        return GeneratedCompletions(tuple(prompts), ((),) * len(texts), ((),) * len(texts), texts, 2)

    monkeypatch.setattr(human_eval, "cached_completions", completions)


def test_export_then_import_through_the_cli(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scripted(monkeypatch)
    out = tmp_path / "he"
    context = EvaluationContext(policy=None, tokenizer=None, reference="ref", prompts=PROMPTS)
    metrics = HumanEval(HumanEvalConfig(out=str(out))).evaluate(context).metrics
    assert metrics == {"num_items": 2.0, "num_identical": 1.0}  # the third prompt's answers are identical
    items = read_items(out / "items.jsonl")
    assert sorted(sorted(item.completions) for item in items) == sorted(
        sorted((f"policy {p} a", f"reference {p} a")) for p in PROMPTS[:2]
    )  # each model's first sample
    config = SessionConfig("erin")
    with AnnotationLog(out / "answers" / "erin.jsonl") as log:
        for item in items:
            for question in plan_questions(item, config):
                first = item.completions[question.indices[0]]
                log.append(answer_record(item, question, "first" if first.startswith("policy") else "second", config))
    assert main(["human-eval", "import", str(out), "--json", str(tmp_path / "m.json")]) == 0
    assert "policy against reference" in capsys.readouterr().out
    assert json.loads((tmp_path / "m.json").read_text(encoding="utf-8"))["win_rate"] == 1.0


def test_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError):
        HumanEvalConfig(out="x", names=("a", "a"))
    with pytest.raises(EvaluationInputError, match="reference"):
        HumanEval(HumanEvalConfig(out=str(tmp_path))).evaluate(
            EvaluationContext(policy=None, tokenizer=None, prompts=PROMPTS)
        )
    assert main(["human-eval", "export", str(tmp_path)]) == 2
    assert "--out DIR" in capsys.readouterr().err

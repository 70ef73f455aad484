"""reference_match: SQuAD-style exact match and token F1, ROUGE-L by hand, and the evaluator on the tiny model."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import pytest
import torch

from prefcore.data import BinaryLabel
from prefcore.errors import ConfigError
from prefcore.evaluation import EvaluationInputError
from prefcore.plugins.evaluation.reference_match import ReferenceMatch
from prefcore.plugins.evaluation.reference_match import ReferenceMatchConfig
from prefcore.plugins.evaluation.reference_match import exact_match
from prefcore.plugins.evaluation.reference_match import normalise_answer
from prefcore.plugins.evaluation.reference_match import rouge_l
from prefcore.plugins.evaluation.reference_match import token_f1


def test_normalisation_drops_case_punctuation_and_articles() -> None:
    assert normalise_answer("The  Cat, sat on A mat!") == "cat sat on mat"


@pytest.mark.parametrize(
    ("prediction", "references", "em", "f1"),
    [
        ("the cat sat on mat", ["a cat sat on the mat"], 1.0, 1.0),
        ("blue sky today", ["blue"], 0.0, 0.5),  # P = 1/3, R = 1
        ("red", ["blue", "Red."], 1.0, 1.0),  # the best reference counts
        ("two two three", ["two three four"], 0.0, 2 * (2 / 3) * (2 / 3) / (4 / 3)),  # multiset overlap 2
        ("green", ["blue"], 0.0, 0.0),
        ("", ["the"], 1.0, 1.0),  # both normalise to nothing
    ],
)
def test_exact_match_and_token_f1_by_hand(prediction: str, references: list[str], em: float, f1: float) -> None:
    assert exact_match(prediction, references) == em
    assert token_f1(prediction, references) == pytest.approx(f1)


def test_rouge_l_is_the_lcs_f_measure() -> None:
    # LCS("the cat was found under the bed", "the cat was under the bed") = 6 tokens: P = 6/7, R = 1
    assert rouge_l("the cat was found under the bed", ["the cat was under the bed"]) == pytest.approx(12 / 13)
    # "bed the under": LCS 2 ("the under") with the long reference, F = 2(2/3)(1/3)/(2/3 + 1/3) = 4/9;
    # LCS 1 with the short one, F = 1/3; the best reference counts
    assert rouge_l("bed the under", ["the cat was under the bed", "under the bed"]) == pytest.approx(4 / 9)


def test_a_missing_rouge_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "rouge_score" else real(name, *a))
    with pytest.raises(ConfigError, match=r"prefcore\[rouge\]") as excinfo:
        ReferenceMatchConfig()
    assert excinfo.value.field == "rouge"
    assert ReferenceMatchConfig(rouge=False).rouge is False


def test_evaluator_scores_greedy_answers_against_golden_ones(
    random_llama: Callable[[int], torch.nn.Module], make_context: Callable[..., object], prompts: tuple[str, ...]
) -> None:
    records = [
        BinaryLabel(prompt=prompt, completion="x", label=True, metadata={"answer": ["blue", "the sky is blue"]})
        for prompt in prompts[:6]
    ]
    context = make_context(random_llama(0), prompts=(), preferences=records)
    metrics = ReferenceMatch(ReferenceMatchConfig()).evaluate(context).metrics  # type: ignore[arg-type]
    texts = next(v for k, v in context.cache.items() if k[0] == "completions").texts  # type: ignore[attr-defined]
    assert len(texts) == 6 and metrics["num_prompts"] == 6
    references = ["blue", "the sky is blue"]
    assert metrics["exact_match"] == pytest.approx(sum(exact_match(t, references) for t in texts) / 6)
    assert metrics["token_f1"] == pytest.approx(sum(token_f1(t, references) for t in texts) / 6)
    assert metrics["rouge_l"] == pytest.approx(sum(rouge_l(t, references) for t in texts) / 6)

    with pytest.raises(EvaluationInputError):
        ReferenceMatch(ReferenceMatchConfig()).evaluate(make_context(random_llama(0), preferences=()))  # type: ignore[arg-type]

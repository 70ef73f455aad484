"""Benchmark accuracy: greedy answers against metadata answers or a checker."""

from __future__ import annotations

import pytest

from prefcore.data.records import PairwiseComparison
from prefcore.evaluation import EvaluationInputError
from prefcore.evaluation import GenerationSettings
from prefcore.plugins.evaluation.benchmark_accuracy import BenchmarkAccuracy
from prefcore.plugins.evaluation.benchmark_accuracy import BenchmarkAccuracyConfig
from prefcore.plugins.evaluation.benchmark_accuracy import answer_matches

GOOD = {"good": 30.0}
RECORDS = (
    PairwiseComparison("what is the colour of sky", "blue", "red", metadata={"answer": "good"}),
    PairwiseComparison("what is the colour of sky", "yes", "no", metadata={"answer": "bad"}),  # same prompt
    PairwiseComparison("what is the colour of sea", "blue", "red", metadata={"answer": ["bad", "Good"]}),
    PairwiseComparison("what is the colour of sun", "yellow", "red", metadata={"answer": "bad"}),
    PairwiseComparison("what is the colour of snow", "white", "red"),  # no answer: not a benchmark item
)


@pytest.mark.parametrize(
    ("match", "max_new_tokens", "accuracy"),
    [("contains", 6, 2 / 3), ("exact", 6, 0.0), ("exact", 1, 2 / 3)],
)
def test_metadata_answers(context_free_llama, make_context, match: str, max_new_tokens: int, accuracy: float) -> None:
    settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=1.0)
    context = make_context(context_free_llama(GOOD), preferences=RECORDS, generation=settings)
    metrics = BenchmarkAccuracy(BenchmarkAccuracyConfig(match=match)).evaluate(context).metrics
    assert metrics == {"accuracy": pytest.approx(accuracy), "num_prompts": 3.0}


def test_decodes_greedily(context_free_llama, make_context) -> None:
    context = make_context(context_free_llama(GOOD), preferences=RECORDS)
    BenchmarkAccuracy().evaluate(context)
    (key,) = [key for key in context.cache if key[0] == "completions"]
    assert key[2].temperature == 0.0


def test_checker_takes_precedence(context_free_llama, make_context, prompts) -> None:
    context = make_context(context_free_llama(GOOD), preferences=RECORDS)
    context.cache["checker"] = lambda prompt, completion: "sky" in prompt and completion.startswith("good")
    metrics = BenchmarkAccuracy().evaluate(context).metrics
    assert metrics == {"accuracy": pytest.approx(4 / 20), "num_prompts": float(len(prompts))}


def test_contains_matches_whole_words_only() -> None:
    assert answer_matches("it is blue .", ["Blue"], match="contains")
    assert answer_matches("the answer is two plus three", ["two plus three"], match="contains")
    assert not answer_matches("blueberry", ["blue"], match="contains")
    assert not answer_matches("it is blue", ["blue"], match="exact")


def test_needs_known_answers(random_llama, make_context) -> None:
    with pytest.raises(EvaluationInputError, match="metadata") as excinfo:
        BenchmarkAccuracy().evaluate(make_context(random_llama(0), preferences=RECORDS[-1:]))
    assert excinfo.value.evaluator == "benchmark_accuracy"

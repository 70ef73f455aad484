"""Reward score: mean scorer score of policy and reference samples and their difference."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from prefcore.evaluation import EvaluationInputError
from prefcore.plugins.evaluation.reward_score import RewardScore
from prefcore.plugins.evaluation.reward_score import RewardScoreConfig

GOOD = {"good": 30.0}
BAD = {"bad": 30.0}


def good_words(prompts: Sequence[object], completions: Sequence[str]) -> list[float]:
    return [float(text.split().count("good")) for text in completions]


def test_policy_and_reference_scores_and_difference(context_free_llama, make_context) -> None:
    context = make_context(context_free_llama(GOOD), reference=context_free_llama(BAD), scorer=good_words)
    metrics = RewardScore(RewardScoreConfig(batch_size=7)).evaluate(context).metrics
    assert metrics["policy_score"] == 6.0  # max_new_tokens words, all "good"
    assert metrics["reference_score"] == 0.0
    assert metrics["score_difference"] == 6.0
    assert metrics["policy_better_rate"] == 1.0


def test_without_reference_reports_the_policy_only(context_free_llama, make_context) -> None:
    metrics = RewardScore().evaluate(make_context(context_free_llama(GOOD), scorer=good_words)).metrics
    assert set(metrics) == {"policy_score", "num_samples"}


def test_needs_a_scorer(random_llama, make_context) -> None:
    with pytest.raises(EvaluationInputError) as excinfo:
        RewardScore().evaluate(make_context(random_llama(0)))
    assert (excinfo.value.evaluator, excinfo.value.missing) == ("reward_score", "a scorer")


def test_scorer_must_score_every_completion(random_llama, make_context) -> None:
    context = make_context(random_llama(0), scorer=lambda prompts, completions: [0.0])
    with pytest.raises(ValueError, match="one per completion"):
        RewardScore().evaluate(context)

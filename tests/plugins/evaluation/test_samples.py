"""Samples: a seeded uniform draw of prompts, the shared completions and the shared verdicts."""

from __future__ import annotations

from collections import Counter

import pytest

from prefcore.evaluation import cached_completions
from prefcore.plugins.evaluation.samples import Samples
from prefcore.plugins.evaluation.samples import SamplesConfig
from prefcore.plugins.evaluation.samples import draw_indices
from prefcore.plugins.evaluation.win_rate import WinRate

GOOD = {"good": 30.0}
BAD = {"bad": 30.0}


def test_same_seed_same_rows_other_seed_other_rows(random_llama, make_context) -> None:
    def shown(seed: int) -> list[tuple[int, str]]:
        context = make_context(random_llama(0), seed=seed)
        return [(row["index"], row["prompt"]) for row in Samples().evaluate(context).samples]

    first, again, other = shown(0), shown(0), shown(1)
    assert len(first) == 5
    assert first == again
    assert first != other


def test_draw_is_uniform_over_prompts() -> None:
    counts = Counter(index for seed in range(2000) for index in draw_indices(20, 5, seed))
    assert set(counts) == set(range(20))
    # Each index is expected 2000 · 5 / 20 = 500 times; ±20 % is over 5 standard deviations.
    assert all(400 < count < 600 for count in counts.values())


def test_rows_hold_policy_reference_and_position_controlled_verdict(context_free_llama, make_context, prompts) -> None:
    def biased(prompt: object, first: str, second: str) -> float:  # p = (0.9 + 1 − 0.3) / 2 = 0.8
        return 0.9 if "good" in first else 0.3

    context = make_context(context_free_llama(GOOD), reference=context_free_llama(BAD), judge=biased)
    rows = Samples(SamplesConfig(count=3)).evaluate(context).samples
    for row in rows:
        assert row["prompt"] == prompts[row["index"]]
        assert row["policy"] == "good good good good good good"
        assert row["reference"] == "bad bad bad bad bad bad"
        assert row["judge"] == pytest.approx(0.8)


def test_without_reference_or_judge_rows_have_only_the_policy(random_llama, make_context) -> None:
    rows = Samples().evaluate(make_context(random_llama(0))).samples
    assert all(set(row) == {"index", "prompt", "policy"} for row in rows)


def test_more_requested_than_prompts_shows_every_prompt(random_llama, make_context, prompts) -> None:
    rows = Samples(SamplesConfig(count=50)).evaluate(make_context(random_llama(0))).samples
    assert [row["index"] for row in rows] == list(range(len(prompts)))


def test_reuses_the_completions_and_verdicts_of_the_pass(random_llama, make_context, prompts, good_word_judge) -> None:
    calls: list[str] = []

    def judge(prompt: object, first: str, second: str) -> float:
        calls.append(first)
        return good_word_judge(prompt, first, second)

    context = make_context(random_llama(0), reference=random_llama(1), judge=judge)
    WinRate().evaluate(context)
    judged = len(calls)
    rows = Samples().evaluate(context).samples
    assert len(calls) == judged == 2 * len(prompts)
    policy = cached_completions(context, prompts)
    assert [row["policy"] for row in rows] == [policy.texts[row["index"]] for row in rows]

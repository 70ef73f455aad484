"""Win rate: position bias cancels, the two-order formula, disagreement handling, errors."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from prefcore.errors import ConfigError
from prefcore.evaluation import EvaluationInputError
from prefcore.plugins.evaluation.win_rate import WinRate
from prefcore.plugins.evaluation.win_rate import WinRateConfig

GOOD = {"good": 30.0}  # a policy that only ever says "good"
BAD = {"bad": 30.0}


def good_count(text: str) -> int:
    return text.split().count("good")


def test_judge_that_always_prefers_the_first_position_gives_one_half(random_llama, make_context) -> None:
    context = make_context(random_llama(0), reference=random_llama(1), judge=lambda prompt, first, second: 1.0)
    metrics = WinRate().evaluate(context).metrics
    assert metrics["win_rate"] == 0.5
    assert metrics["tie_rate"] == 1.0
    assert metrics["position_consistency"] == 0.0
    assert metrics["first_position_preference"] == 1.0
    assert metrics["num_prompts"] == 20


def test_judge_preferring_the_policy_gives_one(context_free_llama, make_context, good_word_judge) -> None:
    context = make_context(context_free_llama(GOOD), reference=context_free_llama(BAD), judge=good_word_judge)
    metrics = WinRate().evaluate(context).metrics
    assert metrics["win_rate"] == 1.0
    assert (metrics["win_rate_low"], metrics["win_rate_high"]) == (1.0, 1.0)
    assert metrics["position_consistency"] == 1.0
    assert metrics["tie_rate"] == 0.0


def test_worse_policy_gives_zero(context_free_llama, make_context, good_word_judge) -> None:
    context = make_context(context_free_llama(BAD), reference=context_free_llama(GOOD), judge=good_word_judge)
    assert WinRate().evaluate(context).metrics["win_rate"] == 0.0


def test_both_orders_are_averaged(context_free_llama, make_context) -> None:
    # Right about the winner but generous to the first position: 0.9 when the better completion
    # comes first, 0.3 when it comes second. p = (0.9 + 1 − 0.3) / 2 = 0.8.
    def judge(prompt: object, first: str, second: str) -> float:
        return 0.9 if good_count(first) > good_count(second) else 0.3

    context = make_context(context_free_llama(GOOD), reference=context_free_llama(BAD), judge=judge)
    metrics = WinRate().evaluate(context).metrics
    assert metrics["win_rate"] == pytest.approx(0.8)
    assert metrics["first_position_preference"] == pytest.approx(0.6)
    assert metrics["position_consistency"] == 1.0


def _judge_inconsistent_on_sky(prompt: str, first: str, second: str) -> float:
    """Fair, except on the 4 'sky' prompts: 0.9 with the policy first, 0.8 with it second."""
    if "sky" in prompt:
        return 0.9 if good_count(first) > good_count(second) else 0.8
    return float(good_count(first) > good_count(second))


@pytest.mark.parametrize(
    ("disagreement", "win_rate", "pairs"),
    [
        ("average", (16 * 1.0 + 4 * (0.9 + 0.2) / 2) / 20, 20),
        ("tie", (16 * 1.0 + 4 * 0.5) / 20, 20),
        ("drop", 1.0, 16),
    ],
)
def test_disagreement_handling(
    context_free_llama, make_context, disagreement: str, win_rate: float, pairs: int
) -> None:
    context = make_context(
        context_free_llama(GOOD), reference=context_free_llama(BAD), judge=_judge_inconsistent_on_sky
    )
    metrics = WinRate(WinRateConfig(disagreement=disagreement)).evaluate(context).metrics
    assert metrics["win_rate"] == pytest.approx(win_rate)
    assert metrics["position_consistency"] == pytest.approx(16 / 20)
    assert (metrics["num_pairs"], metrics["num_dropped"]) == (pairs, 20 - pairs)
    assert metrics["win_rate_low"] <= metrics["win_rate"] <= metrics["win_rate_high"]
    if disagreement != "drop":
        assert metrics["win_rate_low"] < metrics["win_rate_high"]


def test_all_pairs_dropped_reports_no_win_rate(random_llama, make_context) -> None:
    context = make_context(random_llama(0), reference=random_llama(1), judge=lambda prompt, first, second: 1.0)
    metrics = WinRate(WinRateConfig(disagreement="drop")).evaluate(context).metrics
    assert metrics["num_pairs"] == 0
    assert metrics["win_rate"] != metrics["win_rate"]  # NaN


def test_missing_judge_is_a_clear_error(random_llama, make_context) -> None:
    context = make_context(random_llama(0), reference=random_llama(1))
    with pytest.raises(EvaluationInputError, match=r"needs a judge.*\[judge\] section") as excinfo:
        WinRate().evaluate(context)
    assert (excinfo.value.evaluator, excinfo.value.missing) == ("win_rate", "a judge")


def test_win_rate_tells_the_run_file_check_that_it_needs_a_judge() -> None:
    from prefcore.judges import needs_judge

    assert needs_judge(WinRate) and needs_judge(WinRate())


def test_missing_reference_is_a_clear_error(random_llama, make_context, good_word_judge) -> None:
    context = make_context(random_llama(0), judge=good_word_judge)
    with pytest.raises(EvaluationInputError, match="reward_score") as excinfo:
        WinRate().evaluate(context)
    assert (excinfo.value.evaluator, excinfo.value.missing) == ("win_rate", "a reference model")


def test_judge_outside_zero_one_is_rejected(random_llama, make_context) -> None:
    context = make_context(random_llama(0), reference=random_llama(1), judge=lambda prompt, first, second: 2.0)
    with pytest.raises(ValueError, match="probability"):
        WinRate().evaluate(context)


def test_unknown_disagreement_rule_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as excinfo:
        WinRateConfig(disagreement="majority")
    assert excinfo.value.field == "disagreement"


def test_policy_samples_are_generated_once_per_pass(context_free_llama, make_context, good_word_judge) -> None:
    calls: list[int] = []
    policy = context_free_llama(GOOD)
    original: Callable = policy.generate

    def counting_generate(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return original(*args, **kwargs)

    policy.generate = counting_generate
    context = make_context(policy, reference=context_free_llama(BAD), judge=good_word_judge)
    WinRate().evaluate(context)
    first_pass = len(calls)
    WinRate(WinRateConfig(disagreement="tie")).evaluate(context)
    assert first_pass >= 1
    assert len(calls) == first_pass

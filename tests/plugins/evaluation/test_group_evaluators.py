"""Per-group evaluators on hand-made cases with known values: win rates, accuracy, Jensen–Shannon distance."""

from __future__ import annotations

import math

import pytest
from scipy.spatial.distance import jensenshannon

from prefcore.data import PairwiseComparison
from prefcore.evaluation import EvaluationInputError
from prefcore.evaluation import GeneratedCompletions
from prefcore.group_evaluation import bernoulli_js_distance
from prefcore.group_evaluation import summarise_groups
from prefcore.groups import GroupJudge
from prefcore.plugins.evaluation import group_win_rate
from prefcore.plugins.evaluation.distributional_alignment import DistributionalAlignment
from prefcore.plugins.evaluation.group_preference_accuracy import GroupPreferenceAccuracy
from prefcore.plugins.evaluation.group_win_rate import GroupWinRate

LOGITS = {"good": 2.0, "bad": 0.0, "fine": 1.0}
"""A context-free policy: log π(w) − log π(w') = logit(w) − logit(w') for one-word replies."""


def _pair(group: str, chosen: str, rejected: str, share: float | None = None, tie: bool = False) -> PairwiseComparison:
    return PairwiseComparison(
        prompt="what is the colour of sky please",
        chosen=chosen,
        rejected=rejected,
        probability=share,
        tie=tie,
        annotator_groups={"community": group},
    )


def _shorter(prompt: str, first: str, second: str) -> float:
    a, b = len(first.split()), len(second.split())
    return 0.5 if a == b else float(a < b)


def _longer(prompt: str, first: str, second: str) -> float:
    return 1.0 - _shorter(prompt, first, second)


JUDGE = GroupJudge("community", {"fast": _shorter, "full": _longer}, {"fast": 0.7, "full": 0.3})


@pytest.mark.parametrize(("p", "q"), [(0.5, 1.0), (0.9, 0.7), (0.0, 1.0), (0.3, 0.3), (1e-9, 0.5)])
def test_js_distance_matches_scipy(p: float, q: float) -> None:
    assert bernoulli_js_distance(p, q) == pytest.approx(jensenshannon([p, 1 - p], [q, 1 - q], base=2), abs=1e-7)


def test_summaries_name_the_worst_group_and_the_gap() -> None:
    assert summarise_groups({"a": 0.9, "b": 0.6}, "accuracy") == {
        "accuracy/a": 0.9,
        "accuracy/b": 0.6,
        "worst_group_accuracy": 0.6,
        "accuracy_gap": pytest.approx(0.3),
    }
    assert summarise_groups({"a": 0.1, "b": 0.4}, "js", lower_is_better=True)["worst_group_js"] == 0.4


def _fake_completions(monkeypatch: pytest.MonkeyPatch, policy: list[str], reference: list[str]) -> None:
    def completions(context, prompts, *, role, batch_size):
        texts = policy if role == "policy" else reference
        return GeneratedCompletions(tuple(prompts), ((),) * len(texts), ((),) * len(texts), tuple(texts), 1)

    monkeypatch.setattr(group_win_rate, "cached_completions", completions)


def test_untagged_prompts_are_judged_by_every_group(monkeypatch, make_context, random_llama) -> None:
    _fake_completions(monkeypatch, ["a", "a", "a b c"], ["a b", "a b", "a b"])
    context = make_context(random_llama(), reference=random_llama(1), judge=JUDGE, prompts=("p", "q", "r"))
    metrics = GroupWinRate().evaluate(context).metrics
    assert metrics["win_rate/fast"] == pytest.approx(2 / 3)  # the two short replies win, the long one loses
    assert metrics["win_rate/full"] == pytest.approx(1 / 3)
    assert metrics["worst_group_win_rate"] == pytest.approx(1 / 3)
    assert metrics["win_rate_gap"] == pytest.approx(1 / 3)
    assert metrics["num_pairs/fast"] == metrics["num_pairs/full"] == 3


def test_a_tagged_prompt_is_judged_by_its_group_only(monkeypatch, make_context, random_llama) -> None:
    _fake_completions(monkeypatch, ["a", "a b c", "a b c"], ["a b", "a b", "a b"])
    prompts = ("[community: fast] p", "[community: full] p", "[community: full] q")
    context = make_context(random_llama(), reference=random_llama(1), judge=JUDGE, prompts=prompts)
    metrics = GroupWinRate().evaluate(context).metrics
    assert metrics["win_rate/fast"] == 1.0 and metrics["win_rate/full"] == 1.0
    assert (metrics["num_pairs/fast"], metrics["num_pairs/full"]) == (1, 2)
    assert metrics["win_rate_gap"] == 0.0


def test_group_win_rate_needs_a_group_judge(make_context, random_llama, good_word_judge) -> None:
    context = make_context(random_llama(), reference=random_llama(1), judge=good_word_judge)
    with pytest.raises(EvaluationInputError, match="GroupJudge"):
        GroupWinRate().evaluate(context)


def test_group_preference_accuracy_by_hand(make_context, context_free_llama) -> None:
    preferences = [
        _pair("fast", "good", "bad"),  # Δ = 2: right
        _pair("fast", "fine", "bad"),  # Δ = 1: right
        _pair("full", "bad", "good"),  # Δ = −2: wrong
        _pair("full", "good", "fine"),  # Δ = 1: right
        _pair("full", "bad", "fine", tie=True),  # a tie: skipped
        PairwiseComparison(prompt="what is the colour of sky please", chosen="bad", rejected="good"),  # no group
    ]
    context = make_context(context_free_llama(LOGITS), preferences=preferences)
    metrics = GroupPreferenceAccuracy().evaluate(context).metrics
    assert metrics["accuracy/fast"] == 1.0
    assert metrics["accuracy/full"] == 0.5
    assert metrics["worst_group_accuracy"] == 0.5 and metrics["accuracy_gap"] == 0.5
    assert (metrics["num_pairs/fast"], metrics["num_pairs/full"], metrics["num_ungrouped"]) == (2, 2, 1)


def test_group_evaluators_need_grouped_records(make_context, context_free_llama) -> None:
    context = make_context(context_free_llama(LOGITS), preferences=[_pair("fast", "good", "bad")])
    with pytest.raises(EvaluationInputError, match="'language' group"):
        GroupPreferenceAccuracy(GroupPreferenceAccuracy.config_cls(by="language")).evaluate(context)


def test_distributional_alignment_by_hand(make_context, context_free_llama) -> None:
    preferences = [
        _pair("fast", "good", "bad", 0.9),
        _pair("fast", "fine", "bad", 0.6),
        _pair("full", "bad", "good", 0.7),
        _pair("full", "bad", "fine", tie=True),  # the group splits evenly: its share is ½
    ]
    context = make_context(context_free_llama(LOGITS), preferences=preferences)
    metrics = DistributionalAlignment().evaluate(context).metrics

    def distance(gap: float, share: float) -> float:
        p = 1 / (1 + math.exp(-gap))
        return float(jensenshannon([p, 1 - p], [share, 1 - share], base=2))

    fast = (distance(2.0, 0.9) + distance(1.0, 0.6)) / 2
    full = (distance(-2.0, 0.7) + distance(-1.0, 0.5)) / 2
    assert metrics["js_distance/fast"] == pytest.approx(fast, abs=1e-4)
    assert metrics["js_distance/full"] == pytest.approx(full, abs=1e-4)
    assert metrics["worst_group_js_distance"] == pytest.approx(max(fast, full), abs=1e-4)
    assert metrics["alignment"] == pytest.approx(1 - (fast + full) / 2, abs=1e-4)


def test_distributional_alignment_uses_the_implicit_reward_with_a_reference(make_context, context_free_llama) -> None:
    """r = β (log π − log π_ref): a policy equal to its reference predicts ½ on every pair."""
    model = context_free_llama(LOGITS)
    context = make_context(model, reference=model, beta=0.5, preferences=[_pair("fast", "good", "bad", 0.8)])
    metrics = DistributionalAlignment().evaluate(context).metrics
    assert metrics["js_distance/fast"] == pytest.approx(float(jensenshannon([0.5, 0.5], [0.8, 0.2], base=2)), abs=1e-6)

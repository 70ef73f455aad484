"""Preference accuracy of the implicit reward on a hand-made case with closed-form log-probs."""

from __future__ import annotations

import math

import pytest
import torch

from prefcore.data.records import PairwiseComparison
from prefcore.evaluation import DEFAULT_BETA
from prefcore.evaluation import EvaluationInputError
from prefcore.evaluation import evaluation_beta
from prefcore.plugins.evaluation.preference_accuracy import PreferenceAccuracy
from prefcore.registry import Registry

PROMPT = "what is the colour of sky"
PAIRS = (
    PairwiseComparison(PROMPT, "good", "bad"),
    PairwiseComparison(PROMPT, "bad", "fine"),
    PairwiseComparison(PROMPT, "fine good", "poor"),
)
TIE = PairwiseComparison(PROMPT, "yes", "no", tie=True)
POLICY = {"good": 4.0, "fine": 2.0}
REFERENCE = {"bad": 1.0}


def next_token_logps(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return torch.log_softmax(model(input_ids=torch.tensor([[5, 6]])).logits[0, -1].double(), dim=-1)


def dpo_implicit_reward(policy_logps, reference_logps, tokenizer, completion: str, beta: float) -> float:
    """Rafailov et al. 2023, eq. 5: β (log π(y|x) − log π_ref(y|x)), y with its EOS."""
    ids = [*tokenizer(completion, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    reference = 0.0 if reference_logps is None else reference_logps[ids].sum().item()
    return beta * (policy_logps[ids].sum().item() - reference)


@pytest.mark.parametrize("with_reference", [True, False])
def test_accuracy_and_margin_on_a_hand_made_case(
    context_free_llama, make_context, tokenizer, with_reference: bool
) -> None:
    policy = context_free_llama(POLICY)
    reference = context_free_llama(REFERENCE) if with_reference else None
    context = make_context(policy, reference=reference, preferences=(*PAIRS, TIE), beta=0.5)
    beta = 0.5 if with_reference else 1.0  # reference-free: the reward is plain log π, β unused
    metrics = PreferenceAccuracy().evaluate(context).metrics

    policy_logps = next_token_logps(policy)
    reference_logps = next_token_logps(reference) if with_reference else None
    margins = [
        dpo_implicit_reward(policy_logps, reference_logps, tokenizer, pair.chosen, beta)
        - dpo_implicit_reward(policy_logps, reference_logps, tokenizer, pair.rejected, beta)
        for pair in PAIRS
    ]
    assert [margin > 0 for margin in margins] == [True, False, True]  # the case is what it claims
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["reward_margin"] == pytest.approx(sum(margins) / 3, abs=1e-4)
    assert (metrics["num_pairs"], metrics["num_skipped_ties"]) == (3, 1)


def test_policy_equal_to_reference_scores_one_half(random_llama, make_context) -> None:
    context = make_context(random_llama(0), reference=random_llama(0), preferences=PAIRS)
    metrics = PreferenceAccuracy().evaluate(context).metrics
    assert metrics["accuracy"] == 0.5
    assert metrics["reward_margin"] == 0.0


def test_conditions_on_the_generation_prefix(random_llama, make_context) -> None:
    plain = PreferenceAccuracy().evaluate(make_context(random_llama(0), preferences=PAIRS)).metrics
    prefixed = (
        PreferenceAccuracy()
        .evaluate(make_context(random_llama(0), preferences=PAIRS, generation_prefix="good "))
        .metrics
    )
    assert plain["chosen_reward"] != prefixed["chosen_reward"]


def test_only_ties_report_nothing_to_rank(random_llama, make_context) -> None:
    metrics = PreferenceAccuracy().evaluate(make_context(random_llama(0), preferences=(TIE,))).metrics
    assert math.isnan(metrics["accuracy"])
    assert metrics["num_skipped_ties"] == 1


def test_needs_pairwise_records(random_llama, make_context) -> None:
    with pytest.raises(EvaluationInputError) as excinfo:
        PreferenceAccuracy().evaluate(make_context(random_llama(0)))
    assert excinfo.value.evaluator == "preference_accuracy"


def test_beta_is_the_one_the_objective_declares() -> None:
    registry = Registry.from_environment(third_party=False)
    for name in registry.names("usage"):
        objective = registry.create("usage", name)
        declared = objective.implicit_reward_beta()
        assert evaluation_beta(objective) == (DEFAULT_BETA if declared is None else declared), name
    assert evaluation_beta(registry.create("usage", "dpo", {"beta": 0.3})) == 0.3
    assert registry.create("usage", "sft").implicit_reward_beta() is None  # no implicit reward: the default

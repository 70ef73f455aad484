"""KL(π‖π_ref): zero for identical models, and k1/k3 equal to sums computed from known distributions."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from prefcore.evaluation import EvaluationInputError
from prefcore.evaluation import GenerationSettings
from prefcore.evaluation import cached_completions
from prefcore.plugins.evaluation.kl import KL
from prefcore.plugins.evaluation.kl import kl_estimates


def next_token_logps(model: torch.nn.Module) -> torch.Tensor:
    """The single next-token distribution of a context-free model, from a plain logits forward."""
    with torch.no_grad():
        return torch.log_softmax(model(input_ids=torch.tensor([[5, 6]])).logits[0, -1].double(), dim=-1)


def test_identical_policy_and_reference_give_zero(random_llama, make_context) -> None:
    metrics = KL().evaluate(make_context(random_llama(0), reference=random_llama(0))).metrics
    assert metrics["kl"] == 0.0
    assert metrics["kl_k3"] == 0.0
    assert metrics["completion_length"] > 0


def test_different_models_give_positive_kl(random_llama, make_context) -> None:
    context = make_context(random_llama(0), reference=random_llama(1))
    metrics = KL().evaluate(context).metrics
    assert metrics["kl"] > 0.0
    assert metrics["kl_k3"] > 0.0
    assert metrics["num_samples"] == 20


def test_estimators_match_sums_over_known_distributions(context_free_llama, make_context, prompts, tokenizer) -> None:
    """Schulman's k1 and k3 per token, summed over the sampled tokens, from closed-form log-probs."""
    generator = torch.Generator().manual_seed(7)
    policy = context_free_llama(2.0 * torch.randn(len(tokenizer), generator=generator))
    reference = context_free_llama(2.0 * torch.randn(len(tokenizer), generator=generator))
    context = make_context(policy, reference=reference, generation=GenerationSettings(max_new_tokens=5, seed=1))
    samples = cached_completions(context, prompts, settings=replace(context.generation, temperature=1.0))
    estimates = kl_estimates(context, samples, batch_size=6)

    policy_logps, reference_logps = next_token_logps(policy), next_token_logps(reference)
    for row, completion in enumerate(samples.completion_ids):
        log_ratio = reference_logps[list(completion)] - policy_logps[list(completion)]
        assert estimates.k1[row].item() == pytest.approx((-log_ratio).sum().item(), abs=1e-4)
        expected_k3 = (torch.exp(log_ratio) - 1 - log_ratio).sum().item()
        assert estimates.k3[row].item() == pytest.approx(expected_k3, abs=1e-4)
        assert estimates.lengths[row].item() == len(completion)


def test_samples_at_temperature_one_whatever_the_run_settings(random_llama, make_context) -> None:
    greedy = GenerationSettings(max_new_tokens=4, temperature=0.0, seed=0)
    context = make_context(random_llama(0), reference=random_llama(1), generation=greedy)
    KL().evaluate(context)
    (key,) = [key for key in context.cache if key[0] == "completions"]
    settings = key[2]
    assert (settings.temperature, settings.top_p, settings.max_new_tokens) == (1.0, 1.0, 4)


def test_needs_a_reference(random_llama, make_context) -> None:
    with pytest.raises(EvaluationInputError) as excinfo:
        KL().evaluate(make_context(random_llama(0)))
    assert (excinfo.value.evaluator, excinfo.value.missing) == ("kl", "a reference model")


def test_reference_is_scored_on_the_bare_prompt(random_llama, make_context) -> None:
    # The policy generates (and is scored) after the objective's condition; the reference
    # never saw that condition, so the same weights under different conditions differ.
    context = make_context(random_llama(0), reference=random_llama(0), generation_prefix="good ")
    assert KL().evaluate(context).metrics["kl_k3"] > 0.0

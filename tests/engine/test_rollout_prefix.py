"""Shared prompts: one forward per distinct prompt gives the full sequences' log-probs; the cached backend's samples.

The reference for the shared-prefix log-probs is the path it replaces: every row's prompt +
completion, right-padded, through ``completion_token_logps`` (``share_prefix=False``). The
reference for ``PrefixCacheBackend`` is transformers' ``generate`` (``TransformersBackend``)
with the same seed: the same tokens, the same recorded log-probs.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers.generation.logits_process import TopPLogitsWarper

from prefcore.demo.model import build_tiny_model
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.engine.rollout import RolloutSettings
from prefcore.engine.rollout import TransformersBackend
from prefcore.engine.rollout import completion_logps
from prefcore.engine.rollout import pad_rollouts
from prefcore.engine.rollout import rollout_logps
from prefcore.engine.rollout import sample_rollouts
from prefcore.engine.rollout.cached import PrefixCacheBackend
from prefcore.engine.rollout.cached import top_p_filter
from prefcore.engine.rollout.prefix import shared_prefix_logps
from prefcore.engine.rollout.prefix import split_prompts

# One word (a one-token prompt), 7 and 11 words: left padding in the prompt pass.
PROMPTS = ("hello", "what is two plus three and four", "say the colour of the sky and the sea please now")


@pytest.fixture(scope="module")
def demo_tokenizer() -> Any:
    return build_tokenizer()


@pytest.fixture(scope="module")
def demo_model(demo_tokenizer: Any) -> Any:
    return build_tiny_model(demo_tokenizer, seed=0)


@pytest.fixture(scope="module")
def rollouts(demo_model: Any, demo_tokenizer: Any) -> Any:
    settings = RolloutSettings(samples_per_prompt=4, max_new_tokens=9, seed=3)
    return sample_rollouts(demo_model, demo_tokenizer, PROMPTS, settings)


@pytest.fixture(scope="module")
def tensors(rollouts: Any, demo_tokenizer: Any) -> Any:
    return pad_rollouts(rollouts, demo_tokenizer.pad_token_id)


def _logps_and_grads(model: Any, tensors: Any, rows: Any, **kwargs: Any) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    logps = completion_logps(model, tensors, rows, **kwargs)
    weights = torch.linspace(-1.0, 1.0, logps.numel()).view_as(logps)  # a loss that weighs every token differently
    (logps * weights).sum().backward()
    grads = [parameter.grad.clone() for parameter in model.parameters()]
    model.zero_grad(set_to_none=True)
    return logps.detach(), grads


@pytest.mark.parametrize("fused", [True, False], ids=["fused_head", "logits"])
@pytest.mark.parametrize("rows", [None, [11, 0, 5, 4, 9, 1, 6]], ids=["all", "shuffled_subset"])
def test_shared_prefix_equals_full_sequences(demo_model: Any, tensors: Any, fused: bool, rows: Any) -> None:
    # Rows in any order, groups split across a micro-batch: the log-probs and every weight gradient agree.
    shared, shared_grads = _logps_and_grads(demo_model, tensors, rows, fused=fused, share_prefix=True)
    full, full_grads = _logps_and_grads(demo_model, tensors, rows, fused=fused, share_prefix=False)
    assert shared.shape == full.shape == (tensors.num_completions if rows is None else len(rows), tensors.mask.shape[1])
    torch.testing.assert_close(shared, full, atol=1e-5, rtol=0)
    assert (shared[~tensors.mask[rows if rows is not None else slice(None)]] == 0).all()
    for got, expected in zip(shared_grads, full_grads, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_shared_prefix_is_taken_and_reference_pass_matches(demo_model: Any, rollouts: Any, tensors: Any) -> None:
    # The shared path runs for these rollouts (the comparisons above do not fall back to the full one).
    with torch.no_grad():
        direct = shared_prefix_logps(
            demo_model,
            list(rollouts.prompt_ids),
            tensors.completion_ids,
            tensors.mask,
            temperature=1.0,
            fused=True,
            backend="torch",
        )
        assert direct is not None
        torch.testing.assert_close(direct, completion_logps(demo_model, tensors, share_prefix=False), atol=1e-5, rtol=0)
    prompts = [(5, 6, 7), (5, 6, 7), (9,), (5, 6, 7)]
    prefixes = split_prompts(prompts, torch.device("cpu"))
    assert prefixes is not None
    assert prefixes.row_prompt.tolist() == [0, 0, 1, 0]
    assert prefixes.input_ids.tolist() == [[5, 6, 7], [0, 0, 9]]
    assert prefixes.attention_mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert prefixes.lengths.tolist() == [3, 3, 1, 3]
    assert split_prompts([(1, 2), (3,)], torch.device("cpu")) is None  # nothing repeats: the full path
    assert split_prompts([(1, 2), ()], torch.device("cpu")) is None
    # The no-grad reference / old-log-prob pass, in micro-batches that split groups.
    torch.testing.assert_close(
        rollout_logps(demo_model, tensors, batch_size=5),
        rollout_logps(demo_model, tensors, batch_size=5, share_prefix=False),
        atol=1e-5,
        rtol=0,
    )


def test_one_token_completions(demo_model: Any, demo_tokenizer: Any) -> None:
    # T = 1: only the prompt pass's last position is read; no completion pass.
    settings = RolloutSettings(samples_per_prompt=3, max_new_tokens=1, seed=2)
    tensors = pad_rollouts(sample_rollouts(demo_model, demo_tokenizer, PROMPTS, settings), demo_tokenizer.pad_token_id)
    assert tensors.mask.shape == (9, 1)
    torch.testing.assert_close(rollout_logps(demo_model, tensors), tensors.sampling_logps, atol=2e-5, rtol=0)
    torch.testing.assert_close(
        rollout_logps(demo_model, tensors), rollout_logps(demo_model, tensors, share_prefix=False), atol=1e-5, rtol=0
    )


def test_gradient_checkpointing_falls_back(demo_tokenizer: Any, tensors: Any) -> None:
    model = build_tiny_model(demo_tokenizer, seed=0)
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()
    model.train()
    row_prompts = [(1, 2, 3)] * tensors.num_completions
    kwargs = {"temperature": 1.0, "fused": True, "backend": "torch"}
    assert shared_prefix_logps(model, row_prompts, tensors.completion_ids, tensors.mask, **kwargs) is None


@pytest.mark.parametrize(("temperature", "top_p", "seed"), [(1.0, 1.0, 0), (1.0, 1.0, 5), (0.7, 0.8, 1), (0.0, 1.0, 2)])
def test_cached_backend_samples_as_generate(
    demo_model: Any, demo_tokenizer: Any, temperature: float, top_p: float, seed: int
) -> None:
    # Two prompts per batch: unequal prompt lengths, and a second batch drawing from the same RNG.
    settings = RolloutSettings(samples_per_prompt=3, max_new_tokens=10, temperature=temperature, top_p=top_p, seed=seed)
    expected = sample_rollouts(demo_model, demo_tokenizer, PROMPTS, settings, backend=TransformersBackend(2))
    state = torch.random.get_rng_state()
    got = sample_rollouts(demo_model, demo_tokenizer, PROMPTS, settings, backend=PrefixCacheBackend(2))
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG untouched
    assert got.completion_ids == expected.completion_ids
    assert got.truncated == expected.truncated and got.texts == expected.texts
    for ours, theirs in zip(got.sampling_logps, expected.sampling_logps, strict=True):
        torch.testing.assert_close(torch.tensor(ours), torch.tensor(theirs), atol=1e-5, rtol=0)
    # And the recorded log-probs are the training path's.
    tensors = pad_rollouts(got, demo_tokenizer.pad_token_id)
    torch.testing.assert_close(rollout_logps(demo_model, tensors), tensors.sampling_logps, atol=2e-5, rtol=0)


def test_cached_backend_stops_all_rows(demo_model: Any, demo_tokenizer: Any) -> None:
    # Every id is a stop: each row ends after one token, and the loop stops with them.
    everything = tuple(range(demo_model.config.vocab_size))
    samples = PrefixCacheBackend().sample(
        demo_model,
        [(5, 6), (7,)],
        samples_per_prompt=2,
        max_new_tokens=6,
        temperature=1.0,
        top_p=1.0,
        stop_ids=everything,
        pad_token_id=0,
        seed=0,
    )
    assert [len(sample.token_ids) for sample in samples] == [1, 1, 1, 1]


def test_top_p_filter_is_transformers_warper() -> None:
    scores = torch.randn(6, 40, generator=torch.Generator().manual_seed(0)) * 3
    for top_p in (0.05, 0.5, 0.9, 0.999):
        expected = TopPLogitsWarper(top_p)(torch.zeros(6, 1, dtype=torch.long), scores.clone())
        assert torch.equal(top_p_filter(scores, top_p), expected)

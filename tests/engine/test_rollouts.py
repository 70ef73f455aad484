"""The rollout engine: sampling log-probs match the training path, seeding, groups, stops, backends.

The parity tests are the contract the online objectives rely on: with the same weights
and no dropout, the log-prob the sampler recorded for each token equals the one training
recomputes through ``completion_token_logps`` (fused LM head or logits path), so the first
importance ratio of an update is 1 up to float error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import torch

from prefcore.data.records import Message
from prefcore.demo.model import build_tiny_model
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.engine.chat import stop_token_ids
from prefcore.engine.rollout import GenerationBackend
from prefcore.engine.rollout import RolloutSettings
from prefcore.engine.rollout import Sample
from prefcore.engine.rollout import TransformersBackend
from prefcore.engine.rollout import completion_logps
from prefcore.engine.rollout import cut_at_stop
from prefcore.engine.rollout import pad_rollouts
from prefcore.engine.rollout import rollout_logps
from prefcore.engine.rollout import sample_rollouts
from prefcore.engine.sequences import prompt_token_ids
from prefcore.errors import ConfigError
from prefcore.rollout import Rollouts

# Prompts of 3, 7 and 11 words: generation left-pads them, training right-pads prompt + completion.
PROMPTS = ("hello there", "what is two plus three and four", "say the colour of the sky and the sea please now")
ATOL = 2e-5


@pytest.fixture(scope="module")
def demo_tokenizer() -> Any:
    return build_tokenizer()


@pytest.fixture(scope="module")
def demo_model(demo_tokenizer: Any) -> Any:
    return build_tiny_model(demo_tokenizer, seed=0)


def _recomputed(model: Any, rollouts: Rollouts, pad_token_id: int, **kwargs: Any) -> tuple[torch.Tensor, Any]:
    tensors = pad_rollouts(rollouts, pad_token_id)
    return rollout_logps(model, tensors, **kwargs), tensors


# ------------------------------------------------------------------------------------------------
# Sampling log-probs equal the training-time recomputed ones
# ------------------------------------------------------------------------------------------------

# (temperature, top_p): T = 1; T = 0.7 with nucleus sampling (log-probs of the full tempered
# distribution); greedy (log-probs of the untempered distribution).
SAMPLING = [(1.0, 1.0), (0.7, 1.0), (0.7, 0.8), (0.0, 1.0)]


@pytest.mark.parametrize(("temperature", "top_p"), SAMPLING)
@pytest.mark.parametrize("fused", [True, False], ids=["fused_head", "logits"])
def test_sampling_logps_equal_recomputed(
    demo_model: Any, demo_tokenizer: Any, temperature: float, top_p: float, fused: bool
) -> None:
    settings = RolloutSettings(samples_per_prompt=3, max_new_tokens=10, temperature=temperature, top_p=top_p, seed=1)
    # Two prompts per generate call: batches of unequal prompt lengths, and a second RNG-sharing batch.
    rollouts = sample_rollouts(demo_model, demo_tokenizer, PROMPTS, settings, backend=TransformersBackend(2))
    recomputed, tensors = _recomputed(demo_model, rollouts, demo_tokenizer.pad_token_id, fused=fused, batch_size=4)
    assert recomputed.shape == tensors.mask.shape == (9, max(len(ids) for ids in rollouts.completion_ids))
    assert tensors.mask.sum() == sum(len(ids) for ids in rollouts.completion_ids)
    torch.testing.assert_close(recomputed, tensors.sampling_logps, atol=ATOL, rtol=0)
    assert rollouts.temperature == (temperature if temperature > 0 else 1.0)


def test_policy_logps_have_gradient_and_match(demo_model: Any, demo_tokenizer: Any) -> None:
    settings = RolloutSettings(samples_per_prompt=2, max_new_tokens=8, temperature=0.7, seed=4)
    rollouts = sample_rollouts(demo_model, demo_tokenizer, PROMPTS, settings)
    tensors = pad_rollouts(rollouts, demo_tokenizer.pad_token_id)
    rows = [5, 0, 3]
    policy = completion_logps(demo_model, tensors, rows)
    assert policy.requires_grad and policy.shape == (3, tensors.mask.shape[1])
    torch.testing.assert_close(policy.detach(), tensors.sampling_logps[rows], atol=ATOL, rtol=0)
    micro = tensors.select(rows)  # re-padded to the rows' own longest completion
    assert micro.mask.shape[1] == int(tensors.mask[rows].sum(dim=1).max())
    torch.testing.assert_close(completion_logps(demo_model, micro).detach(), micro.sampling_logps, atol=ATOL, rtol=0)
    (policy * torch.randn_like(policy)).sum().backward()
    assert demo_model.lm_head.weight.grad is not None
    demo_model.zero_grad(set_to_none=True)


def test_no_dropout_while_sampling_and_mode_restored(demo_tokenizer: Any) -> None:
    model = build_tiny_model(demo_tokenizer, seed=2, attention_dropout=0.5)
    model.train()
    settings = RolloutSettings(samples_per_prompt=2, max_new_tokens=6, temperature=1.0, seed=0)
    rollouts = sample_rollouts(model, demo_tokenizer, PROMPTS, settings)
    assert model.training
    recomputed, tensors = _recomputed(model, rollouts, demo_tokenizer.pad_token_id)
    assert model.training
    torch.testing.assert_close(recomputed, tensors.sampling_logps, atol=ATOL, rtol=0)


def test_recompute_does_not_depend_on_micro_batch(demo_model: Any, demo_tokenizer: Any) -> None:
    settings = RolloutSettings(samples_per_prompt=2, max_new_tokens=7, seed=5)
    rollouts = sample_rollouts(demo_model, demo_tokenizer, PROMPTS, settings)
    tensors = pad_rollouts(rollouts, demo_tokenizer.pad_token_id)
    whole = rollout_logps(demo_model, tensors, batch_size=64)
    torch.testing.assert_close(rollout_logps(demo_model, tensors, batch_size=1), whole, atol=ATOL, rtol=0)
    # A different temperature is a different distribution (the reference at the policy's T, say).
    hotter = rollout_logps(demo_model, tensors, temperature=2.0)
    assert not torch.allclose(hotter, whole)


# ------------------------------------------------------------------------------------------------
# Seeding, groups, truncation
# ------------------------------------------------------------------------------------------------


def test_seeded_and_caller_rng_untouched(demo_model: Any, demo_tokenizer: Any) -> None:
    settings = RolloutSettings(samples_per_prompt=4, max_new_tokens=8, temperature=1.0, seed=11)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = sample_rollouts(demo_model, demo_tokenizer, PROMPTS, settings)
    assert torch.equal(torch.get_rng_state(), before)
    second = sample_rollouts(demo_model, demo_tokenizer, PROMPTS, settings)
    assert first == second
    other = sample_rollouts(demo_model, demo_tokenizer, PROMPTS, settings, seed=12)
    assert other.completion_ids != first.completion_ids
    assert sample_rollouts(demo_model, demo_tokenizer, PROMPTS, settings, seed=11) == first


def test_groups_are_prompt_major(demo_model: Any, demo_tokenizer: Any) -> None:
    settings = RolloutSettings(samples_per_prompt=4, max_new_tokens=5, seed=0)
    rollouts = sample_rollouts(demo_model, demo_tokenizer, PROMPTS, settings)
    assert rollouts.num_completions == 12
    assert rollouts.group_ids == (0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2)
    assert rollouts.prompts == PROMPTS
    for index in range(12):
        prompt = rollouts.prompt_of(index)
        assert prompt == PROMPTS[rollouts.group_ids[index]]
        assert rollouts.prompt_ids[index] == tuple(prompt_token_ids(demo_tokenizer, prompt))
    # Sampled, not copied: a group's completions differ.
    assert len(set(rollouts.completion_ids[:4])) > 1
    tensors = pad_rollouts(rollouts, demo_tokenizer.pad_token_id)
    assert tensors.group_ids.tolist() == list(rollouts.group_ids)


def test_truncated_when_max_new_tokens_runs_out(demo_model: Any, demo_tokenizer: Any) -> None:
    # The untrained demo model almost never emits <eos>: its completions run out of tokens.
    settings = RolloutSettings(samples_per_prompt=2, max_new_tokens=3, seed=0)
    rollouts = sample_rollouts(demo_model, demo_tokenizer, PROMPTS, settings)
    stops = set(stop_token_ids(demo_tokenizer, demo_model))
    for ids, truncated in zip(rollouts.completion_ids, rollouts.truncated, strict=True):
        assert truncated == (not stops & set(ids))
        assert len(ids) == 3 if truncated else ids[-1] in stops
    assert any(rollouts.truncated)
    assert pad_rollouts(rollouts, 0).truncated.tolist() == list(rollouts.truncated)


def test_greedy_fills_the_group_with_one_decoding(demo_model: Any, demo_tokenizer: Any) -> None:
    settings = RolloutSettings(samples_per_prompt=3, max_new_tokens=6, temperature=0.0)
    rollouts = sample_rollouts(demo_model, demo_tokenizer, PROMPTS, settings)
    for group in range(3):
        assert len(set(rollouts.completion_ids[3 * group : 3 * group + 3])) == 1
    assert rollouts.temperature == 1.0


# ------------------------------------------------------------------------------------------------
# ChatML: stop at the template's end of turn
# ------------------------------------------------------------------------------------------------


def _ending_model(tokenizer: Any, end_of_turn: int) -> Any:
    """A tiny model whose LM head favours ``end_of_turn`` and never picks the eos (also a stop id)."""
    model = build_tiny_model(tokenizer, seed=3)
    old = model.lm_head
    head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(old.weight)
        head.bias.zero_()
        head.bias[end_of_turn] = 2.5
        head.bias[tokenizer.eos_token_id] = -30.0
    model.lm_head = head
    return model


@pytest.mark.parametrize("fused", [True, False], ids=["fused_head", "logits"])
def test_chatml_stops_at_end_of_turn(chatml_tokenizer: Any, fused: bool) -> None:
    end_of_turn = chatml_tokenizer.convert_tokens_to_ids("<|im_end|>")
    model = _ending_model(chatml_tokenizer, end_of_turn)
    assert {end_of_turn, chatml_tokenizer.eos_token_id} <= set(stop_token_ids(chatml_tokenizer, model))
    prompts = (
        (Message("user", "Say hi."),),
        (Message("system", "user assistant"), Message("user", "What is the capital of France?")),
    )
    settings = RolloutSettings(samples_per_prompt=8, max_new_tokens=6, temperature=1.0, seed=0)
    rollouts = sample_rollouts(model, chatml_tokenizer, prompts, settings)
    ended = [ids for ids, truncated in zip(rollouts.completion_ids, rollouts.truncated, strict=True) if not truncated]
    assert ended and any(rollouts.truncated)  # both cases occur
    for ids, truncated, text in zip(rollouts.completion_ids, rollouts.truncated, rollouts.texts, strict=True):
        assert end_of_turn not in ids[:-1]  # nothing after the first stop
        assert (ids[-1] == end_of_turn) != truncated
        assert len(ids) <= 6 and (len(ids) == 6 or not truncated)
        assert "<|im_end|>" not in text and text == chatml_tokenizer.decode(list(ids), skip_special_tokens=True)
    assert rollouts.prompt_ids[0][-2:] == tuple(chatml_tokenizer("<|im_start|>assistant\n")["input_ids"])[-2:]
    recomputed, tensors = _recomputed(model, rollouts, chatml_tokenizer.pad_token_id, fused=fused)
    torch.testing.assert_close(recomputed, tensors.sampling_logps, atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------------------------
# A backend plugged in through the interface
# ------------------------------------------------------------------------------------------------


class ScriptedBackend:
    """Returns fixed continuations (with junk after the stop) and records what it was asked."""

    def __init__(self, continuations: Sequence[Sequence[int]]) -> None:
        self.continuations = [tuple(ids) for ids in continuations]
        self.calls: list[dict[str, Any]] = []

    def sample(self, model: Any, prompt_ids: Sequence[tuple[int, ...]], **kwargs: Any) -> list[Sample]:
        self.calls.append({"prompt_ids": list(prompt_ids), "training": model.training, **kwargs})
        self.calls[-1]["grad"] = torch.is_grad_enabled()
        rows = len(prompt_ids) * kwargs["samples_per_prompt"]
        chosen = [self.continuations[row % len(self.continuations)] for row in range(rows)]
        return [Sample(ids, tuple(-0.5 - 0.1 * index for index in range(len(ids)))) for ids in chosen]


class NoGenerate(torch.nn.Module):
    """A model with no ``generate``: only the backend touches it."""

    def __init__(self) -> None:
        super().__init__()
        self.dropout = torch.nn.Dropout(0.1)


def test_fake_backend_is_used_and_cut_at_the_first_stop(demo_tokenizer: Any) -> None:
    eos = demo_tokenizer.eos_token_id
    word = demo_tokenizer.convert_tokens_to_ids("dark")
    backend = ScriptedBackend([(word, eos, word, word), (word, word, word, word)])
    assert isinstance(backend, GenerationBackend)
    model = NoGenerate().train()
    settings = RolloutSettings(samples_per_prompt=2, max_new_tokens=4, temperature=0.9, top_p=0.5, seed=7)
    rollouts = sample_rollouts(model, demo_tokenizer, ["hello", "say hi"], settings, backend=backend, prefix="x ")
    (call,) = backend.calls
    assert not call["training"] and not call["grad"] and model.training
    assert call["prompt_ids"] == [tuple(prompt_token_ids(demo_tokenizer, p, prefix="x ")) for p in ("hello", "say hi")]
    assert call["samples_per_prompt"] == 2 and call["max_new_tokens"] == 4 and call["seed"] == 7
    assert call["temperature"] == 0.9 and call["top_p"] == 0.5 and eos in call["stop_ids"]
    assert rollouts.completion_ids == ((word, eos), (word,) * 4) * 2
    assert rollouts.sampling_logps == ((-0.5, -0.6), (-0.5, -0.6, -0.7, -0.8)) * 2
    assert rollouts.truncated == (False, True, False, True)
    assert rollouts.texts == ("dark", "dark dark dark dark") * 2
    assert rollouts.group_ids == (0, 0, 1, 1)


@pytest.mark.parametrize(
    ("answer", "match"),
    [
        ([Sample((1,), (0.0,))], "returned 1 samples; expected 2"),
        ([Sample((1,), (0.0,)), Sample((1, 2), (0.0,))], "2 tokens but 1 log-probs"),
        ([Sample((1,), (0.0,)), Sample((5,) * 4, (0.0,) * 4)], "more than max_new_tokens = 3"),
    ],
)
def test_a_backend_breaking_the_contract_is_named(demo_tokenizer: Any, answer: list[Sample], match: str) -> None:
    class Broken:
        def sample(self, model: Any, prompt_ids: Any, **kwargs: Any) -> list[Sample]:
            return answer

    settings = RolloutSettings(samples_per_prompt=2, max_new_tokens=3)
    with pytest.raises(ValueError, match=f"backend Broken.*{match}"):
        sample_rollouts(NoGenerate(), demo_tokenizer, ["hello"], settings, backend=Broken())


def test_cut_at_stop() -> None:
    assert cut_at_stop(Sample((4, 9, 3, 9), (-1.0, -2.0, -3.0, -4.0)), [9]) == ((4, 9), (-1.0, -2.0), False)
    assert cut_at_stop(Sample((4, 5), (-1.0, -2.0)), [9, 3]) == ((4, 5), (-1.0, -2.0), True)


# ------------------------------------------------------------------------------------------------
# Settings
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"samples_per_prompt": 0}, "samples_per_prompt"),
        ({"samples_per_prompt": True}, "samples_per_prompt"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"seed": -1}, "seed"),
    ],
)
def test_settings_refuse_out_of_range(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        RolloutSettings(**changes)
    assert excinfo.value.field == field


def test_settings_fields_are_documented() -> None:
    import dataclasses

    for item in dataclasses.fields(RolloutSettings):
        assert item.metadata["doc"], item.name
    assert RolloutSettings(temperature=0).logprob_temperature == 1.0
    assert RolloutSettings(temperature=0.5).logprob_temperature == 0.5

"""Generation: exact prompt ids, left padding, EOS handling, seeding without side effects."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch
from transformers import GenerationConfig
from transformers import LlamaForCausalLM
from transformers import PreTrainedTokenizerFast

from prefcore.data.records import Message
from prefcore.demo.model import build_tiny_model
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.engine.generation import generate
from prefcore.engine.generation import generate_completions
from prefcore.engine.generation import greedy
from prefcore.engine.sequences import prompt_token_ids
from prefcore.evaluation import GenerationSettings

WORDS = ["good", "bad", "fine", "what", "is", "the", "colour", "of", "sky", "sea", "grass", "sun", "please", "thanks"]
PROMPTS = (
    "what is the colour of the sky please",
    "sun",
    "what is the colour of grass",
    "sea please",
    "good thanks",
)  # different lengths, so batches need padding
SAMPLING = GenerationSettings(max_new_tokens=6, temperature=1.0, seed=3)


@pytest.fixture
def tokenizer() -> PreTrainedTokenizerFast:
    return build_tokenizer(WORDS)


@pytest.fixture
def model(tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    return build_tiny_model(tokenizer, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)


class ScriptedLM(torch.nn.Module):
    """Appends the same new tokens to every row and records what ``generate`` was given."""

    def __init__(self, new_tokens: list[int]) -> None:
        super().__init__()
        self.new_tokens = new_tokens
        self.calls: list[tuple[torch.Tensor, torch.Tensor, GenerationConfig]] = []

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, generation_config: Any) -> torch.Tensor:
        self.calls.append((input_ids, attention_mask, generation_config))
        rows = input_ids.repeat_interleave(generation_config.num_return_sequences, dim=0)
        new = torch.tensor(self.new_tokens).expand(rows.shape[0], -1)
        return torch.cat([rows, new], dim=1)


def test_decodes_only_new_tokens_up_to_eos(tokenizer: PreTrainedTokenizerFast) -> None:
    ids = tokenizer.convert_tokens_to_ids
    scripted = ScriptedLM([ids("good"), ids("bad"), tokenizer.eos_token_id, ids("sky"), tokenizer.pad_token_id])
    generated = generate(scripted, tokenizer, PROMPTS[:2], SAMPLING)
    assert generated.texts == ("good bad", "good bad")
    assert generated.completion_ids[0] == (ids("good"), ids("bad"), tokenizer.eos_token_id)


def test_left_pads_prompts_to_exact_training_ids(tokenizer: PreTrainedTokenizerFast) -> None:
    scripted = ScriptedLM([tokenizer.eos_token_id])
    chat = (Message("user", "what is the colour of the sea"),)
    prompts = [PROMPTS[0], PROMPTS[1], chat]
    generate(scripted, tokenizer, prompts, SAMPLING, prefix="good ", batch_size=8)
    ((input_ids, attention_mask, _),) = scripted.calls
    for row, prompt in enumerate(prompts):
        expected = prompt_token_ids(tokenizer, prompt, prefix="good ")
        width = len(expected)
        assert input_ids[row, -width:].tolist() == expected
        assert attention_mask[row].tolist() == [0] * (input_ids.shape[1] - width) + [1] * width
        assert set(input_ids[row, :-width].tolist()) <= {tokenizer.pad_token_id}


def test_sampling_and_greedy_configs(tokenizer: PreTrainedTokenizerFast) -> None:
    scripted = ScriptedLM([tokenizer.eos_token_id])
    generate(scripted, tokenizer, PROMPTS, replace(SAMPLING, temperature=0.7, top_p=0.9), batch_size=2)
    generate(scripted, tokenizer, PROMPTS, greedy(SAMPLING), batch_size=5)
    sampled = scripted.calls[0][2]
    assert (sampled.do_sample, sampled.temperature, sampled.top_p, sampled.max_new_tokens) == (True, 0.7, 0.9, 6)
    assert [call[0].shape[0] for call in scripted.calls] == [2, 2, 1, 5]
    assert scripted.calls[-1][2].do_sample is False


def test_same_settings_same_completions_and_global_rng_untouched(
    model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast
) -> None:
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = generate_completions(model, tokenizer, PROMPTS, SAMPLING, batch_size=2)
    assert torch.equal(torch.get_rng_state(), state)
    second = generate_completions(model, tokenizer, PROMPTS, SAMPLING, batch_size=2)
    other_seed = generate_completions(model, tokenizer, PROMPTS, replace(SAMPLING, seed=4), batch_size=2)
    assert first == second
    assert first != other_seed


def test_greedy_is_independent_of_batching(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast) -> None:
    one_by_one = generate(model, tokenizer, PROMPTS, greedy(SAMPLING), batch_size=1)
    batched = generate(model, tokenizer, PROMPTS, greedy(SAMPLING), batch_size=len(PROMPTS))
    assert one_by_one.completion_ids == batched.completion_ids


def test_samples_are_prompt_major_and_stop_at_eos(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast) -> None:
    settings = replace(SAMPLING, num_samples=3)
    generated = generate(model, tokenizer, PROMPTS, settings, batch_size=2)
    assert len(generated.texts) == 3 * len(PROMPTS)
    assert generated.for_prompt(1) == generated.texts[3:6]
    assert generated.prompt_ids[3] == tuple(prompt_token_ids(tokenizer, PROMPTS[1]))
    for completion in generated.completion_ids:
        assert 1 <= len(completion) <= settings.max_new_tokens
        assert tokenizer.eos_token_id not in completion[:-1]


@pytest.mark.parametrize("training", [True, False])
def test_restores_train_mode(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, training: bool) -> None:
    model.train(training)
    generate(model, tokenizer, PROMPTS[:1], SAMPLING)
    assert model.training is training

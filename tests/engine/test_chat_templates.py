"""Conversations train on the template's own assistant turn, and generation stops where the template does.

Regression: labels used to end with the tokenizer's eos whatever the template said, so a
base tokenizer carrying ChatML trained "...Paris.<|endoftext|>" with no ``<|im_end|>`` and
the model unlearned how to stop.
"""

from __future__ import annotations

import pytest
import torch

from prefcore.data import Message
from prefcore.demo.model import build_tiny_model
from prefcore.engine.batching import build_items
from prefcore.engine.chat import end_of_turn_id
from prefcore.engine.chat import resolve_chat_template
from prefcore.engine.chat import stop_token_ids
from prefcore.engine.generation import generate
from prefcore.engine.sequences import prompt_token_ids
from prefcore.engine.sequences import tokenize_sequence
from prefcore.engine.trainer import TrainConfig
from prefcore.engine.trainer import Trainer
from prefcore.engine.trainer import WeightedObjective
from prefcore.errors import ConfigError
from prefcore.errors import DataError
from prefcore.evaluation import GenerationSettings
from prefcore.registry import Registry

PROMPT = (Message("user", "What is the capital of France?"),)
REPLY = (Message("assistant", "The capital of France is Paris."),)


def _template_ids(tokenizer, messages, *, add_generation_prompt: bool) -> list[int]:
    chat = [{"role": m.role, "content": m.content} for m in messages]
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=add_generation_prompt)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize(
    ("fixture", "turn_end", "tail"),
    [
        ("chatml_tokenizer", "<|im_end|>", ["<|im_end|>", "\n"]),
        ("llama3_tokenizer", "<|eot_id|>", ["<|eot_id|>"]),
    ],
)
def test_completion_is_the_templates_assistant_turn(request, fixture, turn_end, tail):
    tokenizer = request.getfixturevalue(fixture)
    sequence = tokenize_sequence(tokenizer, PROMPT, REPLY, max_length=256)
    pieces = [tokenizer.decode([token]) for token in sequence.completion_ids]
    assert pieces[-len(tail) :] == tail
    assert tokenizer.eos_token_id not in sequence.completion_ids  # eos is not this template's stop
    assert tokenizer.decode(list(sequence.completion_ids)) == "The capital of France is Paris." + "".join(tail)
    # prompt = the rendering up to the generation prompt; prompt + completion = the whole rendering
    assert list(sequence.prompt_ids) == _template_ids(tokenizer, PROMPT, add_generation_prompt=True)
    assert list(sequence.prompt_ids + sequence.completion_ids) == _template_ids(
        tokenizer, PROMPT + REPLY, add_generation_prompt=False
    )
    assert end_of_turn_id(tokenizer) == tokenizer.convert_tokens_to_ids(turn_end)


def test_text_completion_of_a_conversation_is_rendered_as_an_assistant_turn(chatml_tokenizer):
    as_text = tokenize_sequence(chatml_tokenizer, PROMPT, "The capital of France is Paris.", max_length=256)
    as_messages = tokenize_sequence(chatml_tokenizer, PROMPT, REPLY, max_length=256)
    assert as_text == as_messages


def test_plain_text_still_ends_with_eos(chatml_tokenizer):
    sequence = tokenize_sequence(chatml_tokenizer, "Capital of France:", " Paris.", max_length=64)
    assert sequence.completion_ids[-1] == chatml_tokenizer.eos_token_id


def test_stop_ids_cover_eos_generation_config_and_template(chatml_tokenizer):
    model = build_tiny_model(chatml_tokenizer)
    model.generation_config.eos_token_id = [chatml_tokenizer.eos_token_id, 7]
    stops = stop_token_ids(chatml_tokenizer, model)
    assert set(stops) == {chatml_tokenizer.eos_token_id, 7, chatml_tokenizer.convert_tokens_to_ids("<|im_end|>")}


def test_conversation_without_template_is_a_clear_error(untemplated_tokenizer):
    with pytest.raises(ConfigError, match="chat_template"):
        tokenize_sequence(untemplated_tokenizer, PROMPT, REPLY, max_length=64, where="pairs.jsonl line 3")
    with pytest.raises(ConfigError, match=r"pairs\.jsonl line 3"):
        prompt_token_ids(untemplated_tokenizer, PROMPT, where="pairs.jsonl line 3")


def test_chat_template_option_resolves_builtin_file_and_text(untemplated_tokenizer, tmp_path):
    assert "<|im_end|>" in resolve_chat_template("chatml", untemplated_tokenizer)
    path = tmp_path / "template.jinja"
    path.write_text("{{ messages[0]['content'] }}", encoding="utf-8")
    assert resolve_chat_template(str(path), untemplated_tokenizer) == "{{ messages[0]['content'] }}"
    assert resolve_chat_template("{{ x }}", untemplated_tokenizer) == "{{ x }}"
    with pytest.raises(ConfigError, match="neither a built-in"):
        resolve_chat_template("chatmll", untemplated_tokenizer)


def test_zero_token_prompt_is_an_error_not_an_all_masked_row(chatml_tokenizer):
    # This tokenizer adds no BOS: an empty text prompt has no token to predict the reply from.
    with pytest.raises(DataError, match="prompt is empty"):
        tokenize_sequence(chatml_tokenizer, "", "Paris.", max_length=64, where="pairs.jsonl line 9")


def test_a_model_trained_a_few_steps_on_chatml_still_stops_at_its_end_of_turn(chatml_tokenizer, tmp_path):
    from prefcore.data import PairwiseComparison

    torch.manual_seed(0)
    tokenizer = chatml_tokenizer
    model = build_tiny_model(tokenizer, seed=0, max_position_embeddings=128)
    records = [PairwiseComparison(prompt=PROMPT, chosen=REPLY, rejected=(Message("assistant", "Rome."),))] * 8
    items = build_items(records, "sft", tokenizer, max_length=128)
    sft = Registry.from_environment(third_party=False).create("usage", "sft", {})
    config = TrainConfig(steps=40, batch_size=8, lr=3e-3, schedule="constant", fused_lm_head=False, progress=False)
    Trainer(
        model,
        [WeightedObjective(sft)],
        items,
        config,
        pad_token_id=tokenizer.pad_token_id,
        run_dir=tmp_path,
        device=torch.device("cpu"),
    ).fit()
    settings = GenerationSettings(max_new_tokens=24, temperature=0.0, num_samples=1, seed=0)
    generated = generate(model, tokenizer, [PROMPT], settings)
    ids = generated.completion_ids[0]
    assert ids[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.decode(list(ids))
    assert generated.texts[0] == "The capital of France is Paris."

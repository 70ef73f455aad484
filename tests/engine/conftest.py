"""Fixtures: byte-level BPE tokenizers with real chat templates, built offline in milliseconds.

``chatml_base`` is the case that damaged models: a base model's tokenizer whose eos is
``<|endoftext|>`` while its ChatML template closes an assistant turn with ``<|im_end|>``.
``llama3`` closes turns with ``<|eot_id|>`` and ends sequences with ``<|end_of_text|>``.
"""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer
from tokenizers import decoders
from tokenizers import models
from tokenizers import pre_tokenizers
from tokenizers import trainers
from transformers import PreTrainedTokenizerFast

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{{ message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
CORPUS = (
    "What is the capital of France? The capital of France is Paris.",
    "What is the capital of Italy? The capital of Italy is Rome.",
    "user assistant system. Say hi. Hi there!",
)


def _build(special: list[str], *, eos: str, template: str | None, bos: str | None = None) -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(list(CORPUS) * 4, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token=eos, bos_token=bos, pad_token=eos, chat_template=template
    )


def chatml_base(template: str | None = CHATML) -> PreTrainedTokenizerFast:
    """eos ``<|endoftext|>`` (id 0); the template ends assistant turns with ``<|im_end|>`` and a newline."""
    return _build(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], eos="<|endoftext|>", template=template)


def llama3() -> PreTrainedTokenizerFast:
    """eos ``<|end_of_text|>``; the template ends assistant turns with ``<|eot_id|>``."""
    return _build(
        ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        eos="<|end_of_text|>",
        bos="<|begin_of_text|>",
        template=LLAMA3,
    )


@pytest.fixture(scope="session")
def chatml_tokenizer() -> PreTrainedTokenizerFast:
    return chatml_base()


@pytest.fixture(scope="session")
def llama3_tokenizer() -> PreTrainedTokenizerFast:
    return llama3()


@pytest.fixture(scope="session")
def untemplated_tokenizer() -> PreTrainedTokenizerFast:
    return chatml_base(template=None)

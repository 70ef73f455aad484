"""A word-level tokenizer for the demo language, built offline from its vocabulary.

One sequence reads ``<bos> request words <sep> reply words <eos>``. The framing lives in
the tokenizer itself, so every way of tokenising a prompt gives the same ids:

* ``tokenizer(prompt)`` (special tokens on, as the engine does for text prompts) adds
  ``<bos>`` before and ``<sep>`` after the prompt;
* ``tokenizer(format_prompt(prompt), add_special_tokens=False)`` spells the same framing;
* ``tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
  add_generation_prompt=True)`` renders the same text for chat-style prompts.

A reply is tokenised without special tokens and closed with ``<eos>``; generation starts
right after ``<sep>``. Words outside the vocabulary become ``<unk>``.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer
from tokenizers import normalizers
from tokenizers import pre_tokenizers
from tokenizers import processors
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

from prefcore.demo.world import vocabulary

PAD = "<pad>"
UNK = "<unk>"
BOS = "<bos>"
EOS = "<eos>"
SEP = "<sep>"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS, SEP)
"""Ids 0 to 4, in this order: padding is id 0."""

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %} {{ message['content'] }} <sep>"
    "{% elif message['role'] == 'assistant' %} {{ message['content'] }} {{ eos_token }}"
    "{% endif %}"
    "{% endfor %}"
)
"""One user turn then the reply; system turns are dropped (the demo model never saw any)."""


def format_prompt(prompt: str) -> str:
    """The prompt as the model reads it, ending where the reply begins (tokenise without special tokens)."""
    return f"{BOS} {prompt} {SEP}"


def format_completion(reply: str) -> str:
    """The reply as the model learns it: the reply words, then the end of sequence."""
    return f"{reply} {EOS}"


def format_example(prompt: str, reply: str) -> str:
    """A whole training sequence: ``format_prompt`` then ``format_completion``."""
    return f"{format_prompt(prompt)} {format_completion(reply)}"


def build_tokenizer(words: Iterable[str] | None = None) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over ``words`` (default: the demo vocabulary), with the special tokens.

    Text is lower-cased and split on whitespace and punctuation, as the task writes it,
    so ``decode`` returns the task's text unchanged.
    """
    words = vocabulary() if words is None else tuple(dict.fromkeys(words))
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    for word in words:
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(WordLevel(vocab, unk_token=UNK))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {SEP}",
        pair=f"{BOS} $A {SEP} $B:1 {EOS}:1",
        special_tokens=[(token, vocab[token]) for token in (BOS, SEP, EOS)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        sep_token=SEP,
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        padding_side="right",
        model_max_length=64,
    )

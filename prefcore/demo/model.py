"""A tiny Llama for the demo task, built from a config (no download, no weights file).

The defaults (hidden 64, 2 layers, 4 heads, MLP 128, about 0.1 M parameters) learn the
demo language in seconds on two CPU cores. The LM head is untied from the input
embeddings: the fused LM-head log-prob path reads the head weight as its own matrix, and
an untied head also lets the output distribution move without dragging the input
embeddings with it. 64 positions leave room above the demo's longest sequence (32 tokens).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import LlamaConfig
from transformers import LlamaForCausalLM
from transformers import PreTrainedTokenizerBase


def tiny_llama_config(
    vocab_size: int,
    *,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    intermediate_size: int = 128,
    max_position_embeddings: int = 64,
    tie_word_embeddings: bool = False,
    pad_token_id: int | None = 0,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
    **overrides: Any,
) -> LlamaConfig:
    """A ``LlamaConfig`` sized for the demo; ``overrides`` go to ``LlamaConfig`` unchanged."""
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        pad_token_id=pad_token_id,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        **overrides,
    )


def build_tiny_model(tokenizer: PreTrainedTokenizerBase, seed: int = 0, **config: Any) -> LlamaForCausalLM:
    """A freshly initialised tiny Llama whose vocabulary and special ids match ``tokenizer``.

    The initialisation draws from a private generator state seeded with ``seed``, so the
    same seed gives the same weights and the caller's random state is left untouched.
    """
    llama_config = tiny_llama_config(
        len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **config,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(llama_config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model

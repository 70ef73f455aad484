"""Stage 2, the policy: the tokenizer and the trainable model, loaded from the run file or given in memory.

From a run file, ``[model]`` names a local folder, a GGUF file or the demo model. From Python
(``prefcore.train(model=..., tokenizer=...)``) the caller's transformers model and tokenizer
are used as they are and trained in place; ``[model]`` then sets only the device, the chat
template and LoRA.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import replace
from typing import Any

import torch

from prefcore.engine.chat import resolve_chat_template
from prefcore.engine.models import apply_lora
from prefcore.engine.models import load_policy
from prefcore.engine.models import load_tokenizer
from prefcore.engine.models import usable_max_length
from prefcore.settings import ModelConfig
from prefcore.settings import TrainConfig

__all__ = ["Policy", "start_policy"]


@dataclass(frozen=True)
class Policy:
    """The policy to train, its tokenizer, and ``[train]`` with ``max_length`` capped to the model."""

    model: torch.nn.Module
    tokenizer: Any
    train_config: TrainConfig


def start_policy(
    model_config: ModelConfig,
    train_config: TrainConfig,
    *,
    device: torch.device,
    seed: int,
    model: torch.nn.Module | None = None,
    tokenizer: Any = None,
) -> Policy:
    """The policy on ``device`` (with LoRA adapters when ``lora_rank`` > 0) and its tokenizer."""
    if model is None:
        tokenizer = load_tokenizer(model_config)
        policy = load_policy(model_config, tokenizer, seed=seed)
    else:
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token  # padding is masked out; any id works
        if model_config.chat_template is not None:
            tokenizer.chat_template = resolve_chat_template(model_config.chat_template, tokenizer)
        policy = model.to(device)
        if model_config.lora_rank > 0:
            policy = apply_lora(policy, model_config)
    # Sequences past the model's position embeddings would be accepted, then garbled.
    capped = replace(train_config, max_length=usable_max_length(train_config.max_length, policy))
    return Policy(policy, tokenizer, capped)

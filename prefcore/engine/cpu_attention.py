"""Attention for training in bf16/fp16 on CPU: fp32 flash attention over short key lengths.

PyTorch's CPU flash-attention backward is several times slower in bf16 than in fp32 at the key
lengths of preference pairs (forward + backward at 16 × 4 heads × 97 tokens × 64, one thread:
21.5 ms in bf16, 7.3 ms in fp32; the two meet near 256 keys, and bf16 wins beyond). So while the
policy trains on CPU in low precision, a transformers model that uses ``sdpa`` computes attention
in fp32 up to ``FP32_MAX_KEYS`` keys and returns it in the precision it would have had. Only
the attention maths changes precision, upward: every other op is as before. Forwards outside the
block (generation, evaluation), GPUs, fp32 runs, longer sequences and models with another attention
implementation are left untouched.
The trainer runs the reference model's forward through it as well, so that policy and reference
compute the same function of the same weights (the implicit rewards start at exactly 0).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["FP32_MAX_KEYS", "IMPLEMENTATION", "cpu_training_attention"]

IMPLEMENTATION = "prefcore_cpu_sdpa"
FP32_MAX_KEYS = 256
"""Key lengths up to which fp32 attention beats bf16 on CPU (measured crossover, one thread)."""

_LOW_PRECISION = (torch.bfloat16, torch.float16)


def _low_precision_dtype(query: torch.Tensor) -> torch.dtype | None:
    """The dtype attention would compute in, when it is a half precision; None for fp32 maths."""
    if torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") in _LOW_PRECISION:
        return torch.get_autocast_dtype("cpu")
    return query.dtype if query.dtype in _LOW_PRECISION else None


def _attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, Any]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    dtype = _low_precision_dtype(query) if query.device.type == "cpu" else None
    if dtype is None or key.shape[-2] > FP32_MAX_KEYS:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    if attention_mask is not None and attention_mask.is_floating_point():
        attention_mask = attention_mask.float()
    with torch.autocast("cpu", enabled=False):
        output, weights = sdpa_attention_forward(
            module, query.float(), key.float(), value.float(), attention_mask, **kwargs
        )
    return output.to(dtype), weights


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    if IMPLEMENTATION not in AttentionInterface._global_mapping:
        AttentionInterface.register(IMPLEMENTATION, _attention)
        AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)


@contextlib.contextmanager
def cpu_training_attention(model: torch.nn.Module) -> Iterator[None]:
    """Within the block, ``model`` (a transformers model using ``sdpa``) attends through ``_attention``.

    The switch is the model's own ``config._attn_implementation``, restored on leaving, so nothing
    outside the block (generation, saving, other models) sees it.
    """
    get_base_model = getattr(model, "get_base_model", None)
    base = get_base_model() if callable(get_base_model) else model
    config = getattr(base, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa":
        yield
        return
    _register()
    config._attn_implementation = IMPLEMENTATION
    try:
        yield
    finally:
        config._attn_implementation = "sdpa"

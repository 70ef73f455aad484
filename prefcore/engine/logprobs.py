"""Per-token completion log-probs of a causal LM, always through ``prefcore.kernels``.

The fused path runs the decoder to its last hidden states and hands them with the LM-head
weight to ``fused_linear_logprobs``: the ``[S, L, V]`` logits never exist, and prompt and
padding tokens are dropped before the LM-head matmul. Models whose logits are more than a
linear head (soft-capping, logit scaling) take the logits path through
``selective_log_softmax`` instead, so both paths compute the same maths. On CPU in bf16 the
decoder attends through ``cpu_training_attention`` (fp32 attention over short keys), for the
policy and the reference alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import torch

from prefcore.engine.cpu_attention import cpu_training_attention
from prefcore.engine.sequences import PaddedSequences
from prefcore.kernels.fused_linear_logprobs import fused_linear_logprobs
from prefcore.kernels.logprobs import selective_log_softmax

IGNORE_INDEX = -100


def _base_model(model: Any) -> Any:
    """The transformers model under a PEFT wrapper, if any."""
    get_base_model = getattr(model, "get_base_model", None)
    return get_base_model() if callable(get_base_model) else model


def lm_head_weight_and_bias(model: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The effective LM-head weight ``[V, H]`` and bias, differentiable.

    With LoRA on the LM head (PEFT ``lora.Linear``) the effective weight is
    ``W + scale · B·A``, formed here so the fused path trains the adapter too.
    """
    head = _base_model(model).get_output_embeddings()
    base_layer = getattr(head, "base_layer", None)
    if base_layer is None:
        return head.weight, head.bias
    weight = base_layer.weight
    for adapter in getattr(head, "active_adapters", []):
        if adapter not in head.lora_A:
            continue
        lora_a = head.lora_A[adapter].weight  # [r, H]
        lora_b = head.lora_B[adapter].weight  # [V, r]
        weight = weight + (lora_b @ lora_a) * head.scaling[adapter]
    return weight, base_layer.bias


def supports_fused_head(model: Any) -> bool:
    """False for heads that post-process logits, which the fused kernel would skip."""
    config = getattr(_base_model(model), "config", None)
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        return False
    head = _base_model(model).get_output_embeddings()
    return head is not None and (hasattr(head, "weight") or hasattr(head, "base_layer"))


def completion_token_logps(
    model: Any,
    sequences: PaddedSequences,
    *,
    fused: bool = True,
    backend: str = "auto",
    chunk_size: int | None = None,
    temperature: float = 1.0,
    target_rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """Log-probs of completion tokens, ``[S, L - 1]`` float32, 0 on prompt and padding.

    Arguments:
        model: a transformers causal LM (optionally PEFT-wrapped).
        sequences: padded ids with their completion mask.
        fused: use the fused LM-head kernel when the model allows it.
        backend: kernel backend (``auto``, ``triton``, ``torch``).
        chunk_size: tokens per LM-head tile of the fused kernel.
        temperature: logits are divided by it before the softmax (online objectives train at
            the sampling temperature, so the importance ratio compares like with like).
        target_rows: ``completion_mask.reshape(-1).nonzero()[:, 0]`` on the model's device, when the
            caller computed it on the host (``completion_rows``): the fused path then needs no
            host sync to count the completion tokens. Without it, rows registered for this very
            mask by ``known_completion_rows`` are used.
    """
    if target_rows is None:
        target_rows = _rows_of(sequences.completion_mask)
    targets = sequences.input_ids[:, 1:].masked_fill(~sequences.completion_mask, IGNORE_INDEX)
    if fused and supports_fused_head(model):
        decoder = _base_model(model).get_decoder()
        with cpu_training_attention(model):
            hidden = decoder(input_ids=sequences.input_ids, attention_mask=sequences.attention_mask).last_hidden_state
        weight, bias = lm_head_weight_and_bias(model)
        return fused_linear_logprobs(
            hidden[:, :-1],
            weight.to(hidden.dtype),
            targets,
            None if bias is None else bias.to(hidden.dtype),
            temperature=temperature,
            ignore_index=IGNORE_INDEX,
            chunk_size=chunk_size,
            backend=backend,
            valid_rows=target_rows,
        )
    with cpu_training_attention(model):
        logits = model(input_ids=sequences.input_ids, attention_mask=sequences.attention_mask).logits
    return selective_log_softmax(
        logits[:, :-1], targets, temperature=temperature, ignore_index=IGNORE_INDEX, backend=backend
    )


_KNOWN_ROWS: ContextVar[tuple[torch.Tensor, torch.Tensor] | None] = ContextVar("prefcore_known_rows", default=None)


@contextlib.contextmanager
def known_completion_rows(completion_mask: torch.Tensor, rows: torch.Tensor) -> Iterator[None]:
    """Within the block, forwards of ``completion_mask`` (this tensor object) take ``rows`` as its target rows.

    The trainer counts a micro-batch's completion tokens on the host and registers them here, so
    the policy's and the reference model's forwards (``ModelReference`` among them) skip the host
    sync of counting them on the device.
    """
    token = _KNOWN_ROWS.set((completion_mask, rows))
    try:
        yield
    finally:
        _KNOWN_ROWS.reset(token)


def _rows_of(completion_mask: torch.Tensor) -> torch.Tensor | None:
    known = _KNOWN_ROWS.get()
    return known[1] if known is not None and known[0] is completion_mask else None


def completion_rows(completion_mask: torch.Tensor) -> torch.Tensor:
    """The flattened indices of the completion targets, ascending: call it on the host (CPU) mask.

    On the host the count is free; on a GPU it is a host sync, which is what passing these rows to
    ``completion_token_logps`` saves.
    """
    return completion_mask.reshape(-1).nonzero().squeeze(1)


@torch.no_grad()
def sequence_logps(
    model: Any, sequences: PaddedSequences, *, fused: bool = True, backend: str = "auto"
) -> torch.Tensor:
    """Summed completion log-probs ``[S]`` without gradients (reference model, scoring)."""
    return completion_token_logps(model, sequences, fused=fused, backend=backend).sum(dim=-1)

"""CPU training attention: fp32 maths for short keys in bf16 training, untouched everywhere else."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from prefcore.demo.model import build_tiny_model
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.engine import cpu_attention
from prefcore.engine.cpu_attention import FP32_MAX_KEYS
from prefcore.engine.cpu_attention import IMPLEMENTATION
from prefcore.engine.cpu_attention import cpu_training_attention


class _Heads(torch.nn.Module):
    is_causal = True


def _qkv(length: int, dtype: torch.dtype) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(2, 2, length, 16, generator=generator).to(dtype) for _ in range(3)]


def _sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Plain causal SDPA, laid out as transformers returns it: ``[batch, tokens, heads, dim]``."""
    return F.scaled_dot_product_attention(query, key, value, is_causal=True).transpose(1, 2)


def test_short_keys_in_bf16_training_attend_in_fp32() -> None:
    query, key, value = _qkv(12, torch.bfloat16)
    output, _ = cpu_attention._attention(_Heads(), query, key, value, None)
    expected = _sdpa(query.float(), key.float(), value.float())
    assert output.dtype == torch.bfloat16
    torch.testing.assert_close(output, expected.to(torch.bfloat16), rtol=0, atol=0)


def test_long_keys_keep_bf16_attention() -> None:
    query, key, value = _qkv(FP32_MAX_KEYS + 1, torch.bfloat16)
    output, _ = cpu_attention._attention(_Heads(), query, key, value, None)
    torch.testing.assert_close(output, _sdpa(query, key, value), rtol=0, atol=0)


def test_autocast_attention_is_computed_in_fp32_and_returned_in_bf16() -> None:
    query, key, value = _qkv(12, torch.float32)  # autocast would cast these to bf16 inside sdpa
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output, _ = cpu_attention._attention(_Heads(), query, key, value, None)
    expected = _sdpa(query, key, value)
    assert output.dtype == torch.bfloat16
    torch.testing.assert_close(output, expected.to(torch.bfloat16), rtol=0, atol=0)


def test_fp32_training_is_unchanged() -> None:
    query, key, value = _qkv(12, torch.float32)
    output, _ = cpu_attention._attention(_Heads(), query, key, value, None)
    torch.testing.assert_close(output, _sdpa(query, key, value), rtol=0, atol=0)


def _model_logps_and_grads(
    model: torch.nn.Module, ids: torch.Tensor, scoped: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        if scoped:
            with cpu_training_attention(model):
                assert model.config._attn_implementation == IMPLEMENTATION
                logits = model(input_ids=ids).logits
        else:
            logits = model(input_ids=ids).logits
    logps = torch.log_softmax(logits.float(), dim=-1)[:, :-1].gather(-1, ids[:, 1:, None]).sum()
    logps.backward()
    grad = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
    return logps.detach(), grad


def test_a_model_trains_through_it_close_to_fp32_and_the_setting_is_restored() -> None:
    tokenizer = build_tokenizer()
    model = build_tiny_model(tokenizer, seed=0)
    assert model.config._attn_implementation == "sdpa"
    ids = torch.randint(4, len(tokenizer), (4, 20), generator=torch.Generator().manual_seed(1))
    scoped_logps, scoped_grad = _model_logps_and_grads(model, ids, scoped=True)
    assert model.config._attn_implementation == "sdpa"
    model.zero_grad(set_to_none=True)
    fp32_logps = torch.log_softmax(model(input_ids=ids).logits, dim=-1)[:, :-1].gather(-1, ids[:, 1:, None]).sum()
    fp32_logps.backward()
    fp32_grad = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
    torch.testing.assert_close(scoped_logps, fp32_logps.detach(), rtol=1e-2, atol=0)
    assert F.cosine_similarity(scoped_grad, fp32_grad, dim=0) > 0.999


def test_the_setting_is_restored_after_an_error_and_other_implementations_are_left_alone() -> None:
    tokenizer = build_tokenizer()
    model = build_tiny_model(tokenizer, seed=0)
    with pytest.raises(RuntimeError, match="boom"), cpu_training_attention(model):
        raise RuntimeError("boom")
    assert model.config._attn_implementation == "sdpa"
    model.config._attn_implementation = "eager"
    with cpu_training_attention(model):
        assert model.config._attn_implementation == "eager"

"""``compute_weights``: a model runs on bf16 copies of its weights; the fp32 parameters stay the master copy."""

from __future__ import annotations

import pytest
import torch

from prefcore.engine.compute_weights import compute_weights


class _Tied(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(11, 8)
        self.head = torch.nn.Linear(8, 11, bias=False)
        self.head.weight = self.embed.weight  # tied, as many LM heads are

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids))


def test_forward_in_bf16_and_gradients_reach_the_fp32_parameters() -> None:
    torch.manual_seed(0)
    model = _Tied()
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    with compute_weights(model, torch.bfloat16):
        assert model.head.weight.dtype == torch.bfloat16 and model.head.weight is model.embed.weight
        logits = model(ids)
    assert logits.dtype == torch.bfloat16
    logits.float().logsumexp(-1).sum().backward()
    weight = model.embed.weight
    assert (
        isinstance(weight, torch.nn.Parameter) and weight.dtype == torch.float32 and weight.grad.dtype == torch.float32
    )
    # the independent reference: the same maths with the bf16 weight as a leaf of its own
    leaf = weight.detach().to(torch.bfloat16).requires_grad_(True)
    (leaf[ids] @ leaf.T).float().logsumexp(-1).sum().backward()
    torch.testing.assert_close(weight.grad, leaf.grad.float(), rtol=0, atol=0)
    assert [name for name, _ in model.named_parameters()] == ["embed.weight"]


def test_parameters_are_restored_after_an_error() -> None:
    model = _Tied()
    parameter = model.embed.weight
    with pytest.raises(RuntimeError, match="boom"), compute_weights(model, torch.bfloat16):
        raise RuntimeError("boom")
    assert model.embed.weight is parameter and model.head.weight is parameter


def test_frozen_weights_are_cast_once_and_again_after_they_change() -> None:
    model = _Tied().requires_grad_(False)
    with compute_weights(model, torch.bfloat16):
        first = model.embed.weight
    with compute_weights(model, torch.bfloat16):
        assert model.embed.weight is first  # cached
    with torch.no_grad():
        model.embed.weight.add_(1.0)
    with compute_weights(model, torch.bfloat16):
        assert model.embed.weight is not first
        torch.testing.assert_close(model.embed.weight, first + 1.0, rtol=1e-2, atol=1e-2)

"""Run a model on low-precision copies of its weights, with the fp32 weights as the master copy.

``[train] precision = "bf16-params"`` is FSDP2's ``param_dtype`` recipe (and Megatron's bf16) in one
process: for each forward, every floating-point weight is cast once to bf16 and the model runs
entirely in bf16 (activations included), while autograd carries each weight's gradient back
through the cast into the fp32 parameter, so gradients accumulate, clip and step in fp32. Against
autocast it saves the per-op casts of activations (every linear layer casts its fp32 input again),
which on CPU cost as much as the matmuls of a small model. The residual stream is then bf16, as in
FSDP2 and Megatron training.

Frozen weights (a reference model) are cast once and reused until they change.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.utils.weak import WeakIdKeyDictionary

__all__ = ["compute_weights"]

_FROZEN_CASTS = WeakIdKeyDictionary()
"""Frozen parameter → (its version when cast, dtype, the cast), dropped with the parameter."""


def _cast(parameter: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``parameter`` in ``dtype``: differentiable when it trains, cached while it stays frozen."""
    if parameter.requires_grad:
        return parameter.to(dtype)
    cached = _FROZEN_CASTS.get(parameter)
    if cached is not None and cached[0] == parameter._version and cached[1] == dtype:
        return cached[2]
    cast = parameter.detach().to(dtype)
    _FROZEN_CASTS[parameter] = (parameter._version, dtype, cast)
    return cast


@contextlib.contextmanager
def compute_weights(model: torch.nn.Module, dtype: torch.dtype) -> Iterator[None]:
    """Within the block, ``model``'s floating-point parameters are ``dtype`` copies of themselves.

    Tied parameters (an LM head sharing the embedding) stay tied: each is cast once. The real
    parameters are back in place on leaving, also after an error; the graph built inside still
    sends their gradients to them, in fp32.
    """
    swapped: list[tuple[torch.nn.Module, str, torch.nn.Parameter]] = []
    casts: dict[int, torch.Tensor] = {}
    try:
        for module in model.modules():
            for name, parameter in list(module._parameters.items()):
                if parameter is None or not parameter.is_floating_point() or parameter.dtype == dtype:
                    continue
                cast = casts.get(id(parameter))
                if cast is None:
                    cast = casts[id(parameter)] = _cast(parameter, dtype)
                del module._parameters[name]
                swapped.append((module, name, parameter))
                setattr(module, name, cast)
        yield
    finally:
        for module, name, parameter in reversed(swapped):
            delattr(module, name)
            module._parameters[name] = parameter

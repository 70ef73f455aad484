"""Choose between the Triton kernels and their plain-torch references.

CUDA tensors take the Triton path, CPU tensors the reference (the fast path on laptops
and in CI). ``backend="triton"`` or ``backend="torch"`` (or the ``PREFCORE_KERNEL_BACKEND``
environment variable) forces one path, which is how the CPU test-suite runs the Triton
kernels under ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import os
from typing import Literal

import torch

Backend = Literal["auto", "triton", "torch"]
BACKENDS: tuple[str, ...] = ("auto", "triton", "torch")
BACKEND_ENV = "PREFCORE_KERNEL_BACKEND"

try:  # triton is a Linux-only dependency; everything else keeps working without it.
    import triton  # noqa: F401

    HAS_TRITON = True
except ImportError:  # pragma: no cover - exercised only on machines without triton
    HAS_TRITON = False


def interpreter_enabled() -> bool:
    """True when Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def use_triton(tensor: torch.Tensor, backend: str = "auto") -> bool:
    """Decide whether an op on ``tensor`` runs its Triton kernel.

    Arguments:
        tensor: the op's main input; its device decides the ``auto`` choice.
        backend: ``auto``, ``triton`` or ``torch``; ``auto`` defers to ``PREFCORE_KERNEL_BACKEND``.
    Returns:
        True for the Triton kernel, False for the plain-torch reference.
    """
    if backend == "auto":
        backend = os.environ.get(BACKEND_ENV, "auto") or "auto"
    if backend not in BACKENDS:
        raise ValueError(f"kernel backend must be one of {', '.join(BACKENDS)}. Got {backend!r}.")
    if backend == "torch":
        return False
    if backend == "triton":
        if not HAS_TRITON:
            raise RuntimeError("backend='triton' was requested but triton is not installed.")
        if tensor.device.type != "cuda" and not interpreter_enabled():
            raise RuntimeError(
                "backend='triton' on a CPU tensor needs TRITON_INTERPRET=1 (the Triton CPU interpreter)."
            )
        return True
    return HAS_TRITON and tensor.device.type == "cuda"

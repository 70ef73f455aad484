"""Precision helper for kernel tests: low-precision error measured against plain torch in the same dtype."""

from __future__ import annotations

import torch

__all__ = ["assert_lowprec_close"]


def assert_lowprec_close(
    kernel_out: torch.Tensor,
    lowprec_ref: torch.Tensor,
    fp32_ref: torch.Tensor,
    *,
    atol: float,
    factor: float = 2.0,
    name: str = "output",
) -> None:
    """Kernel error vs fp32 must be ≤ ``factor`` × plain torch's own error in the same dtype, + atol.

    Why: in bf16/fp16 the question is not "equal to a reference" but "no worse than what
    torch itself achieves in that precision", measured against an fp32 ground truth.
    """
    truth = fp32_ref.double()
    kernel_err = (kernel_out.double() - truth).abs().max().item()
    torch_err = (lowprec_ref.double() - truth).abs().max().item()
    assert kernel_err <= factor * torch_err + atol, (
        f"{name}: kernel error {kernel_err:.3e} > {factor} x torch error {torch_err:.3e} + atol {atol:.1e}"
    )

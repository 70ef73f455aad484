# Masked per-sequence log-likelihoods: sums (or means) of per-token log-probs over a loss mask.
#
# Inputs: per-token log-probs [S, T] (fp32 typical; bf16/fp16 accepted) and a mask [S, T] (bool or
# 0/1). Outputs: fp32 sums [S] and exact int64 token counts [S]; optionally the sums of a second
# [S, T] tensor (a reference model's log-probs) under the same mask, read in the same pass.
#
# Two kernels; every sequence-level preference loss (pairwise_losses.py, unpaired_losses.py) reuses
# both, with its own loss kernel in between:
#   _sequence_logps_fwd_kernel: one program per sequence, blocked over T, fp32 accumulation;
#   _sequence_logps_bwd_kernel: grad[s, t] = mask[s, t] · scale · grad_sum[s], in the dtype of the
#       log-probs; nothing larger than the [S, T] gradient itself is allocated.
# Requires Triton >= 3.0 for the kernels; without Triton the reference below is the only path.

from __future__ import annotations

import contextlib

import torch
from torch.autograd.function import once_differentiable

from prefcore.kernels._checks import defer
from prefcore.kernels._checks import deferring
from prefcore.kernels._dispatch import HAS_TRITON
from prefcore.kernels._dispatch import use_triton

if HAS_TRITON:
    import triton
    import triton.language as tl

__all__ = [
    "sequence_logps",
    "sequence_logps_ref",
]

KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_MAX_BLOCK_T = 1024


def device_ctx(tensor: torch.Tensor) -> contextlib.AbstractContextManager:
    """The device to launch on: Triton uses the current CUDA device, so a tensor on cuda:1 needs it current."""
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()


def kernel_mask(mask: torch.Tensor) -> torch.Tensor:
    """The mask as the kernels read it: bool pointers do not load reliably across Triton versions; uint8
    is the same bytes."""
    if mask.stride(-1) != 1:
        mask = mask.contiguous()
    return mask.view(torch.uint8) if mask.dtype == torch.bool else mask


# ---------------------------------------------------------------------------------------------
# Triton kernels
# ---------------------------------------------------------------------------------------------

if HAS_TRITON:

    @triton.jit
    def _sequence_logps_fwd_kernel(
        # data ptrs
        logps_ptr,  # [S, T] log-probs
        ref_logps_ptr,  # [S, T] reference log-probs; read only if HAS_REF
        mask_ptr,  # [S, T] nonzero = in the loss
        sums_ptr,  # [S] fp32 out
        ref_sums_ptr,  # [S] fp32 out; written only if HAS_REF
        counts_ptr,  # [S] int64 out
        # shapes
        T,
        # strides
        stride_logps_row,
        stride_ref_row,
        stride_mask_row,
        # meta
        HAS_REF: tl.constexpr,
        BLOCK_T: tl.constexpr,
    ):
        row = tl.program_id(0).to(tl.int64)
        logps_row = logps_ptr + row * stride_logps_row
        ref_row = ref_logps_ptr + row * stride_ref_row
        mask_row = mask_ptr + row * stride_mask_row
        total = 0.0
        ref_total = 0.0
        count = 0
        for start in range(0, T, BLOCK_T):
            cols = start + tl.arange(0, BLOCK_T)
            in_row = cols < T
            keep = in_row & (tl.load(mask_row + cols, mask=in_row, other=0) != 0)
            # Padding is never loaded, so garbage (nan, -inf) there cannot reach the sums.
            total += tl.sum(tl.load(logps_row + cols, mask=keep, other=0.0).to(tl.float32), axis=0)
            count += tl.sum(keep.to(tl.int32), axis=0)
            if HAS_REF:
                ref_total += tl.sum(tl.load(ref_row + cols, mask=keep, other=0.0).to(tl.float32), axis=0)
        tl.store(sums_ptr + row, total)
        tl.store(counts_ptr + row, count.to(tl.int64))
        if HAS_REF:
            tl.store(ref_sums_ptr + row, ref_total)

    @triton.jit
    def _sequence_logps_bwd_kernel(
        # data ptrs
        grad_sums_ptr,  # [S] fp32 d loss / d sum[s]
        scale_ptr,  # [1] upstream gradient of a scalar loss; read only if HAS_SCALE
        mask_ptr,  # [S, T]
        grad_ptr,  # [S, T] out, dtype of the log-probs
        # shapes
        T,
        # strides
        stride_mask_row,
        stride_grad_row,
        # meta
        HAS_SCALE: tl.constexpr,
        BLOCK_T: tl.constexpr,
    ):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)
        in_row = cols < T
        grad_sum = tl.load(grad_sums_ptr + row)
        if HAS_SCALE:
            # The upstream gradient stays on the device: reading it here avoids a host sync.
            grad_sum = grad_sum * tl.load(scale_ptr).to(tl.float32)
        keep = tl.load(mask_ptr + row * stride_mask_row + cols, mask=in_row, other=0) != 0
        grad = tl.where(keep, grad_sum, 0.0)
        tl.store(grad_ptr + row * stride_grad_row + cols, grad.to(grad_ptr.dtype.element_ty), mask=in_row)


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------


def sequence_logps_fwd(
    logps: torch.Tensor, mask: torch.Tensor, ref_logps: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Masked per-sequence sums (fp32), counts (int64) and, given ``ref_logps``, its sums too."""
    assert logps.dim() == 2 and logps.stride(-1) == 1, "launcher expects [S, T] with unit column stride"
    assert mask.shape == logps.shape and mask.stride(-1) == 1, "launcher expects a matching mask"
    assert ref_logps is None or (ref_logps.shape == logps.shape and ref_logps.stride(-1) == 1)
    n_seqs, seq_len = logps.shape
    sums = torch.empty(n_seqs, dtype=torch.float32, device=logps.device)
    counts = torch.empty(n_seqs, dtype=torch.int64, device=logps.device)
    ref_sums = torch.empty(n_seqs, dtype=torch.float32, device=logps.device) if ref_logps is not None else None
    if n_seqs == 0:
        return sums, counts, ref_sums
    block_t = min(_MAX_BLOCK_T, triton.next_power_of_2(max(seq_len, 1)))
    with device_ctx(logps):
        _sequence_logps_fwd_kernel[(n_seqs,)](
            logps,  # data ptrs
            ref_logps if ref_logps is not None else logps,
            mask,
            sums,
            ref_sums if ref_sums is not None else sums,
            counts,
            seq_len,  # shapes
            logps.stride(0),  # strides
            ref_logps.stride(0) if ref_logps is not None else 0,
            mask.stride(0),
            HAS_REF=ref_logps is not None,  # meta
            BLOCK_T=block_t,
            num_warps=4,
        )
    return sums, counts, ref_sums


def sequence_logps_bwd(
    grad_sums: torch.Tensor, scale: torch.Tensor | None, mask: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """grad[s, t] = mask[s, t] · scale · grad_sums[s], written in ``dtype``."""
    assert grad_sums.dtype == torch.float32 and grad_sums.shape == mask.shape[:1], "launcher expects fp32 [S]"
    n_seqs, seq_len = mask.shape
    grad = torch.empty(n_seqs, seq_len, dtype=dtype, device=mask.device)
    if grad.numel() == 0:
        return grad
    block_t = min(_MAX_BLOCK_T, triton.next_power_of_2(seq_len))
    grid = (n_seqs, triton.cdiv(seq_len, block_t))
    with device_ctx(mask):
        _sequence_logps_bwd_kernel[grid](
            grad_sums,  # data ptrs
            scale if scale is not None else grad_sums,
            mask,
            grad,
            seq_len,  # shapes
            mask.stride(0),  # strides
            grad.stride(0),
            HAS_SCALE=scale is not None,  # meta
            BLOCK_T=block_t,
            num_warps=4,
        )
    return grad


# ---------------------------------------------------------------------------------------------
# Autograd function
# ---------------------------------------------------------------------------------------------


def _no_average_error(empty: torch.Tensor) -> ValueError:
    return ValueError(
        f"sequence_logps: sequence {int(empty[0])} has no tokens in the mask, so it has no "
        f"average log-prob. Use average=False or fix the mask."
    )


def _check_counts(counts: torch.Tensor) -> None:
    """Refuse an average over no tokens: at once, or once per training step (``deferred_checks``)."""
    if deferring():
        defer((counts == 0).any(), lambda: str(_no_average_error((counts == 0).nonzero())))
        return
    empty = (counts == 0).nonzero()
    if empty.numel():
        raise _no_average_error(empty)


class SequenceLogpsFunction(torch.autograd.Function):
    """Masked per-sequence sums or means with a broadcast backward."""

    @staticmethod
    def forward(ctx, token_logps: torch.Tensor, mask: torch.Tensor, average: bool):
        logps = token_logps if token_logps.stride(-1) == 1 else token_logps.contiguous()
        mask = kernel_mask(mask)
        sums, counts, _ = sequence_logps_fwd(logps, mask)
        if average:
            _check_counts(counts)
            values = sums / counts
        else:
            values = sums
        ctx.save_for_backward(mask, counts)
        ctx.average = average
        ctx.grad_dtype = token_logps.dtype
        ctx.mark_non_differentiable(counts)
        return values, counts

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_values, grad_counts):
        mask, counts = ctx.saved_tensors
        grad_logps = None
        if ctx.needs_input_grad[0]:
            grad_sums = grad_values.float()
            if ctx.average:
                grad_sums = grad_sums / counts
            grad_logps = sequence_logps_bwd(grad_sums.contiguous(), None, mask, ctx.grad_dtype)
        return (
            grad_logps,
            None,  # mask
            None,  # average
        )


# ---------------------------------------------------------------------------------------------
# Public function
# ---------------------------------------------------------------------------------------------


def sequence_logps(
    token_logps: torch.Tensor,
    mask: torch.Tensor,
    *,
    average: bool = False,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked per-sequence log-likelihoods, differentiable, for losses not listed here.

    Arguments:
        token_logps: [S, T] per-token log-probs (fp32 typical).
        mask: [S, T] bool or 0/1.
        average: divide by the token count (a sequence with no tokens then raises ValueError).
        backend: "auto" (CUDA → Triton, CPU → reference), "triton" or "torch".
    Returns:
        values: [S] fp32 sums (or means); counts: [S] int64 tokens in the mask.
    """
    if token_logps.dim() != 2 or not token_logps.is_floating_point() or mask.shape != token_logps.shape:
        raise ValueError(
            f"sequence_logps: token_logps must be a floating [S, T] tensor and mask the same shape. "
            f"Got {tuple(token_logps.shape)} ({token_logps.dtype}) and {tuple(mask.shape)}."
        )
    if not use_triton(token_logps, backend):
        return sequence_logps_ref(token_logps, mask, average=average)
    if token_logps.dtype not in KERNEL_DTYPES:
        raise ValueError(f"sequence_logps: the Triton kernel takes fp32/bf16/fp16. Got {token_logps.dtype}.")
    return SequenceLogpsFunction.apply(token_logps, mask, average)


# ---------------------------------------------------------------------------------------------
# Reference: plain torch, the spec, the CPU path and the benchmark baseline
# ---------------------------------------------------------------------------------------------


def sequence_logps_ref(
    token_logps: torch.Tensor, mask: torch.Tensor, *, average: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ_t mask·logp (or that over Σ_t mask) per row; masked values are never read."""
    keep = mask != 0
    dtype = torch.promote_types(token_logps.dtype, torch.float32)
    zero = torch.zeros((), dtype=dtype, device=token_logps.device)
    sums = torch.where(keep, token_logps.to(dtype), zero).sum(-1)
    counts = keep.sum(-1)
    if average:
        _check_counts(counts)
        return sums / counts, counts
    return sums, counts

# KL penalties between a policy and a reference model, two families in one file:
#
#   per_token_kl       k1/k2/k3 estimators on per-token log-probs [...] (any float dtype in,
#                      fp32 math, fp32 out); forward and backward are one elementwise kernel each.
#   distribution_kl    full-distribution reverse KL, forward KL and generalised JSD between two
#                      logit tensors [N, V] (fp32/bf16/fp16 in, fp32 accumulation, fp32 [N] out).
#                      Blocked over V with online log-sum-exps (one read of each input for the KLs,
#                      two for JSD, whose log m needs both normalisers); the backward is one pass per row
#                      from saved per-row statistics and writes gradients in the logits' dtype,
#                      so no fp32 N x V buffer exists on the Triton path.
#
# Requires Triton >= 3.0 for the kernels; without Triton the references below are the only path.

from __future__ import annotations

import contextlib
import math

import torch

from prefcore.kernels._dispatch import HAS_TRITON
from prefcore.kernels._dispatch import use_triton

if HAS_TRITON:
    import triton

    from prefcore.kernels._kl_triton import _distribution_kl_bwd_kernel
    from prefcore.kernels._kl_triton import _distribution_kl_fwd_kernel
    from prefcore.kernels._kl_triton import _per_token_kl_bwd_kernel
    from prefcore.kernels._kl_triton import _per_token_kl_fwd_kernel

__all__ = [
    "distribution_kl",
    "distribution_kl_ref",
    "per_token_kl",
    "per_token_kl_ref",
]

_ESTIMATORS: dict[str, int] = {"k1": 1, "k2": 2, "k3": 3}
_MODES: dict[str, int] = {"reverse": 0, "forward": 1, "jsd": 2}
_KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _device_ctx(tensor: torch.Tensor) -> contextlib.AbstractContextManager:
    # Triton launches on the current CUDA device; a tensor on cuda:1 needs that device current.
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------

_ELEMENTWISE_BLOCK = 1024
# 2048 fp32 columns x 2 inputs per program keeps the row state in registers at 8 warps; the
# online LSE makes any V work, this only sets how many columns one loop step covers.
_MAX_BLOCK_V = 2048


def _mask_for_kernel(mask: torch.Tensor) -> torch.Tensor:
    # Triton has no bool pointers that load reliably across versions; uint8 is the same bytes.
    mask = mask.reshape(-1).contiguous()
    return mask.view(torch.uint8) if mask.dtype == torch.bool else mask


def per_token_kl_fwd(
    logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor | None, estimator_id: int
) -> torch.Tensor:
    """Launch the per-token forward on flattened contiguous inputs; returns fp32 [n]."""
    assert logps.is_contiguous() and ref_logps.is_contiguous(), "launcher expects contiguous inputs"
    n_elements = logps.numel()
    kl = torch.empty(n_elements, dtype=torch.float32, device=logps.device)
    if n_elements == 0:
        return kl
    grid = (triton.cdiv(n_elements, _ELEMENTWISE_BLOCK),)
    mask_arg = mask if mask is not None else logps
    with _device_ctx(logps):
        _per_token_kl_fwd_kernel[grid](
            logps,  # data ptrs
            ref_logps,
            mask_arg,
            kl,
            n_elements,  # shapes
            ESTIMATOR=estimator_id,  # meta
            HAS_MASK=mask is not None,
            BLOCK=_ELEMENTWISE_BLOCK,
            num_warps=4,
        )
    return kl


def per_token_kl_bwd(
    grad_kl: torch.Tensor,
    logps: torch.Tensor,
    ref_logps: torch.Tensor,
    mask: torch.Tensor | None,
    estimator_id: int,
    needs_policy_grad: bool,
    needs_ref_grad: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Launch the per-token backward; returns (grad_logps, grad_ref_logps), flattened."""
    n_elements = logps.numel()
    grad_kl = grad_kl.reshape(-1).contiguous()
    grad_logps = torch.empty_like(logps) if needs_policy_grad else None
    grad_ref = torch.empty_like(ref_logps) if needs_ref_grad else None
    if n_elements == 0:
        return grad_logps, grad_ref
    grid = (triton.cdiv(n_elements, _ELEMENTWISE_BLOCK),)
    with _device_ctx(logps):
        _per_token_kl_bwd_kernel[grid](
            grad_kl,  # data ptrs
            logps,
            ref_logps,
            mask if mask is not None else logps,
            grad_logps if grad_logps is not None else logps,
            grad_ref if grad_ref is not None else ref_logps,
            n_elements,  # shapes
            ESTIMATOR=estimator_id,  # meta
            HAS_MASK=mask is not None,
            NEEDS_POLICY_GRAD=needs_policy_grad,
            NEEDS_REF_GRAD=needs_ref_grad,
            BLOCK=_ELEMENTWISE_BLOCK,
            num_warps=4,
        )
    return grad_logps, grad_ref


def _block_v(vocab: int) -> tuple[int, int]:
    block_v = min(_MAX_BLOCK_V, triton.next_power_of_2(vocab))
    num_warps = 8 if block_v >= 2048 else 4
    return block_v, num_warps


def distribution_kl_fwd(
    logits: torch.Tensor,
    ref_logits: torch.Tensor,
    row_mask: torch.Tensor | None,
    mode_id: int,
    beta: float,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward on [N, V] logits; returns (divergence [N], row statistics [6, N]), fp32."""
    assert logits.dim() == 2 and logits.shape == ref_logits.shape, "launcher expects two [N, V] tensors"
    assert logits.stride(-1) == 1 and ref_logits.stride(-1) == 1, "launcher expects unit column stride"
    n_rows, vocab = logits.shape
    divergence = torch.empty(n_rows, dtype=torch.float32, device=logits.device)
    stats = torch.empty(6, n_rows, dtype=torch.float32, device=logits.device)
    if n_rows == 0:
        return divergence, stats
    block_v, num_warps = _block_v(vocab)
    with _device_ctx(logits):
        _distribution_kl_fwd_kernel[(n_rows,)](
            logits,  # data ptrs
            ref_logits,
            row_mask if row_mask is not None else logits,
            divergence,
            stats,
            vocab,  # shapes
            logits.stride(0),  # strides
            ref_logits.stride(0),
            stats.stride(0),
            1.0 / temperature,  # meta
            beta,
            MODE=mode_id,
            HAS_MASK=row_mask is not None,
            BLOCK_V=block_v,
            num_warps=num_warps,
        )
    return divergence, stats


def distribution_kl_bwd(
    grad_div: torch.Tensor,
    logits: torch.Tensor,
    ref_logits: torch.Tensor,
    row_mask: torch.Tensor | None,
    divergence: torch.Tensor,
    stats: torch.Tensor,
    mode_id: int,
    beta: float,
    temperature: float,
    needs_policy_grad: bool,
    needs_ref_grad: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Launch the one-pass backward; returns gradients in the dtypes of the two logit tensors."""
    n_rows, vocab = logits.shape
    grad_div = grad_div.reshape(-1).contiguous()
    contiguous = torch.contiguous_format
    grad_logits = torch.empty_like(logits, memory_format=contiguous) if needs_policy_grad else None
    grad_ref = torch.empty_like(ref_logits, memory_format=contiguous) if needs_ref_grad else None
    if n_rows == 0:
        return grad_logits, grad_ref
    grad_logits_arg = grad_logits if grad_logits is not None else logits
    grad_ref_arg = grad_ref if grad_ref is not None else ref_logits
    block_v, num_warps = _block_v(vocab)
    with _device_ctx(logits):
        _distribution_kl_bwd_kernel[(n_rows,)](
            grad_div,  # data ptrs
            logits,
            ref_logits,
            row_mask if row_mask is not None else logits,
            divergence,
            stats,
            grad_logits_arg,
            grad_ref_arg,
            vocab,  # shapes
            logits.stride(0),  # strides
            ref_logits.stride(0),
            grad_logits_arg.stride(0),
            grad_ref_arg.stride(0),
            stats.stride(0),
            1.0 / temperature,  # meta
            beta,
            MODE=mode_id,
            HAS_MASK=row_mask is not None,
            NEEDS_POLICY_GRAD=needs_policy_grad,
            NEEDS_REF_GRAD=needs_ref_grad,
            BLOCK_V=block_v,
            num_warps=num_warps,
        )
    return grad_logits, grad_ref


# ---------------------------------------------------------------------------------------------
# Autograd functions
# ---------------------------------------------------------------------------------------------


class PerTokenKLFunction(torch.autograd.Function):
    """Elementwise k1/k2/k3 with a fused elementwise backward for both inputs."""

    @staticmethod
    def forward(
        ctx,
        logps: torch.Tensor,
        ref_logps: torch.Tensor,
        mask: torch.Tensor | None,
        estimator_id: int,
    ) -> torch.Tensor:
        shape = logps.shape
        flat_logps = logps.reshape(-1).contiguous()
        flat_ref = ref_logps.reshape(-1).contiguous()
        flat_mask = _mask_for_kernel(mask) if mask is not None else None
        kl = per_token_kl_fwd(flat_logps, flat_ref, flat_mask, estimator_id)
        ctx.save_for_backward(flat_logps, flat_ref, flat_mask)
        ctx.estimator_id = estimator_id
        ctx.shape = shape
        return kl.view(shape)

    @staticmethod
    def backward(ctx, grad_kl: torch.Tensor):
        flat_logps, flat_ref, flat_mask = ctx.saved_tensors
        grad_logps, grad_ref = per_token_kl_bwd(
            grad_kl,
            flat_logps,
            flat_ref,
            flat_mask,
            ctx.estimator_id,
            ctx.needs_input_grad[0],
            ctx.needs_input_grad[1],
        )
        return (
            grad_logps.view(ctx.shape) if grad_logps is not None else None,
            grad_ref.view(ctx.shape) if grad_ref is not None else None,
            None,  # mask
            None,  # estimator_id
        )


class DistributionKLFunction(torch.autograd.Function):
    """Row-wise divergence between two logit tensors; the backward recomputes p and r per block."""

    @staticmethod
    def forward(
        ctx,
        logits: torch.Tensor,
        ref_logits: torch.Tensor,
        row_mask: torch.Tensor | None,
        mode_id: int,
        beta: float,
        temperature: float,
    ) -> torch.Tensor:
        divergence, stats = distribution_kl_fwd(logits, ref_logits, row_mask, mode_id, beta, temperature)
        ctx.save_for_backward(logits, ref_logits, row_mask, divergence, stats)
        ctx.mode_id = mode_id
        ctx.beta = beta
        ctx.temperature = temperature
        return divergence

    @staticmethod
    def backward(ctx, grad_div: torch.Tensor):
        logits, ref_logits, row_mask, divergence, stats = ctx.saved_tensors
        grad_logits, grad_ref = distribution_kl_bwd(
            grad_div,
            logits,
            ref_logits,
            row_mask,
            divergence,
            stats,
            ctx.mode_id,
            ctx.beta,
            ctx.temperature,
            ctx.needs_input_grad[0],
            ctx.needs_input_grad[1],
        )
        return (
            grad_logits,
            grad_ref,
            None,  # row_mask
            None,  # mode_id
            None,  # beta
            None,  # temperature
        )


# ---------------------------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------------------------


def _check_estimator(estimator: str) -> int:
    if estimator not in _ESTIMATORS:
        raise ValueError(f"per_token_kl: estimator must be one of {', '.join(_ESTIMATORS)}. Got {estimator!r}.")
    return _ESTIMATORS[estimator]


def _check_per_token_inputs(logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor | None) -> None:
    if logps.shape != ref_logps.shape:
        raise ValueError(
            f"per_token_kl: logps and ref_logps must have the same shape. "
            f"Got {tuple(logps.shape)} and {tuple(ref_logps.shape)}."
        )
    if not (logps.is_floating_point() and ref_logps.is_floating_point()):
        raise ValueError(f"per_token_kl: log-probs must be floating point. Got {logps.dtype} and {ref_logps.dtype}.")
    if mask is not None and mask.shape != logps.shape:
        raise ValueError(
            f"per_token_kl: mask must have the shape of logps {tuple(logps.shape)}. Got {tuple(mask.shape)}."
        )
    for name, tensor in (("ref_logps", ref_logps), ("mask", mask)):
        if tensor is not None and tensor.device != logps.device:
            raise ValueError(f"per_token_kl: {name} is on {tensor.device} but logps is on {logps.device}.")


def per_token_kl(
    logps: torch.Tensor,
    ref_logps: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    estimator: str = "k3",
    backend: str = "auto",
) -> torch.Tensor:
    """Per-token KL(π_θ‖π_ref) estimate from the sampled tokens' log-probs (Schulman's k1/k2/k3).

    With d = logps - ref_logps (log π_θ(y_t) - log π_ref(y_t), y_t sampled from π_θ):
    k1 = d (unbiased, high variance, can be negative), k2 = d²/2 (biased, low variance),
    k3 = exp(-d) + d - 1 (unbiased and ≥ 0; the GRPO penalty). See
    http://joschu.net/blog/kl-approx.html. No clamping: k3 overflows to inf when ref ≫ logps,
    as the formula does; clamp the inputs first where a bounded penalty is wanted.

    Arguments:
        logps: [...] policy log-probs of the chosen tokens, any float dtype (fp32 typical).
        ref_logps: [...] reference log-probs, same shape.
        mask: optional [...] bool or 0/1; masked positions return 0 and get zero gradient,
            and their values are never read (padding may hold nan/inf).
        estimator: "k1", "k2" or "k3".
        backend: "auto" (CUDA → Triton, CPU → reference), "triton" or "torch".
    Returns:
        kl: [...] fp32 (float64 if an input is float64 on the torch path); differentiable
        w.r.t. both logps and ref_logps.
    """
    estimator_id = _check_estimator(estimator)
    _check_per_token_inputs(logps, ref_logps, mask)
    if use_triton(logps, backend):
        for name, tensor in (("logps", logps), ("ref_logps", ref_logps)):
            if tensor.dtype not in _KERNEL_DTYPES:
                raise ValueError(
                    f"per_token_kl: the Triton kernel takes fp32/bf16/fp16 {name}. Got {tensor.dtype}; "
                    f"use backend='torch' for it."
                )
        return PerTokenKLFunction.apply(logps, ref_logps, mask, estimator_id)
    return per_token_kl_ref(logps, ref_logps, mask, estimator=estimator)


def per_token_kl_ref(
    logps: torch.Tensor,
    ref_logps: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    estimator: str = "k3",
) -> torch.Tensor:
    """Plain-torch per-token KL estimators: the spec, the CPU path and the benchmark baseline."""
    _check_estimator(estimator)
    _check_per_token_inputs(logps, ref_logps, mask)
    dtype = torch.promote_types(torch.promote_types(logps.dtype, ref_logps.dtype), torch.float32)
    logps = logps.to(dtype)
    ref_logps = ref_logps.to(dtype)
    if mask is not None:
        # Select before computing: padding may hold nan/inf, and 0 · nan in the backward of an
        # output-side mask would leak it into the gradient.
        keep = mask.bool()
        zero = torch.zeros((), dtype=dtype, device=logps.device)
        logps = torch.where(keep, logps, zero)
        ref_logps = torch.where(keep, ref_logps, zero)
    delta = logps - ref_logps
    if estimator == "k1":
        return delta
    if estimator == "k2":
        return 0.5 * delta.square()
    return torch.expm1(-delta) + delta


def _resolve_mode(mode: str, beta: float) -> int:
    if mode not in _MODES:
        raise ValueError(f"distribution_kl: mode must be one of {', '.join(_MODES)}. Got {mode!r}.")
    if mode == "jsd":
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"distribution_kl: beta must lie in [0, 1] for mode='jsd'. Got {beta}.")
        # Liger's LigerJSD (and TRL's GKD) define the end points as the two KLs rather than the
        # mixture formula's limit of 0, and so does this function.
        if beta == 0.0:
            return _MODES["forward"]
        if beta == 1.0:
            return _MODES["reverse"]
    return _MODES[mode]


def _check_distribution_inputs(
    logits: torch.Tensor, ref_logits: torch.Tensor, temperature: float, mask: torch.Tensor | None
) -> None:
    if logits.shape != ref_logits.shape:
        raise ValueError(
            f"distribution_kl: logits and ref_logits must have the same shape. "
            f"Got {tuple(logits.shape)} and {tuple(ref_logits.shape)}."
        )
    if logits.dim() < 1 or logits.shape[-1] < 1:
        raise ValueError(f"distribution_kl: logits need a non-empty last (vocabulary) dim. Got {tuple(logits.shape)}.")
    if not (logits.is_floating_point() and ref_logits.is_floating_point()):
        raise ValueError(f"distribution_kl: logits must be floating point. Got {logits.dtype}, {ref_logits.dtype}.")
    if not temperature > 0.0:
        raise ValueError(f"distribution_kl: temperature must be > 0. Got {temperature}.")
    if mask is not None and mask.shape != logits.shape[:-1]:
        raise ValueError(
            f"distribution_kl: mask must have the row shape {tuple(logits.shape[:-1])}. Got {tuple(mask.shape)}."
        )
    for name, tensor in (("ref_logits", ref_logits), ("mask", mask)):
        if tensor is not None and tensor.device != logits.device:
            raise ValueError(f"distribution_kl: {name} is on {tensor.device} but logits is on {logits.device}.")


def distribution_kl(
    logits: torch.Tensor,
    ref_logits: torch.Tensor,
    *,
    mode: str = "reverse",
    beta: float = 0.5,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Full-distribution divergence per row between policy and reference logits.

    With p = softmax(logits / T) (policy π_θ) and r = softmax(ref_logits / T) (reference π_ref):

    - ``"reverse"``: KL(p‖r) = Σ_v p_v (log p_v - log r_v), the RLHF KL penalty;
    - ``"forward"``: KL(r‖p) = Σ_v r_v (log r_v - log p_v), mass-covering (distillation);
    - ``"jsd"``: generalised Jensen-Shannon with Liger's ``LigerJSD`` convention, where the
      policy is Liger's input Q and the reference its target P:
      JSD_β = β·KL(r‖m) + (1-β)·KL(p‖m), m = β·r + (1-β)·p. β = 0 and β = 1 are defined
      as KL(r‖p) and KL(p‖r) (Liger's and TRL's GKD special cases), not the mixture's limit 0.

    The Triton forward reads each logit tensor once for the KL modes; for JSD with 0 < β < 1 it
    reads them twice, because log m needs both final normalisers. The backward is one pass.

    Arguments:
        logits: [..., V] policy logits, fp32/bf16/fp16.
        ref_logits: [..., V] reference logits, same shape; gets a gradient only if it requires one.
        mode: "reverse", "forward" or "jsd".
        beta: JSD weight in [0, 1]; ignored by the KL modes.
        temperature: T > 0, applied to both logit tensors before the softmax.
        mask: optional [...] bool or 0/1 per row (e.g. ``labels != ignore_index``); masked rows
            return 0, get zero gradient and are not read by the Triton forward.
        backend: "auto" (CUDA → Triton, CPU → reference), "triton" or "torch".
    Returns:
        divergence: [...] fp32 per row (float64 for float64 inputs on the torch path).
    """
    mode_id = _resolve_mode(mode, beta)
    _check_distribution_inputs(logits, ref_logits, temperature, mask)
    if not use_triton(logits, backend):
        return distribution_kl_ref(logits, ref_logits, mode=mode, beta=beta, temperature=temperature, mask=mask)
    for name, tensor in (("logits", logits), ("ref_logits", ref_logits)):
        if tensor.dtype not in _KERNEL_DTYPES:
            raise ValueError(
                f"distribution_kl: the Triton kernel takes fp32/bf16/fp16 {name}. Got {tensor.dtype}; "
                f"use backend='torch' for it."
            )
    row_shape = logits.shape[:-1]
    vocab = logits.shape[-1]
    flat_logits = logits.reshape(-1, vocab)
    flat_ref = ref_logits.reshape(-1, vocab)
    if flat_logits.stride(-1) != 1:
        flat_logits = flat_logits.contiguous()
    if flat_ref.stride(-1) != 1:
        flat_ref = flat_ref.contiguous()
    row_mask = _mask_for_kernel(mask) if mask is not None else None
    divergence = DistributionKLFunction.apply(flat_logits, flat_ref, row_mask, mode_id, float(beta), float(temperature))
    return divergence.view(row_shape)


def distribution_kl_ref(
    logits: torch.Tensor,
    ref_logits: torch.Tensor,
    *,
    mode: str = "reverse",
    beta: float = 0.5,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
    upcast: bool = True,
) -> torch.Tensor:
    """Plain-torch divergences: the spec, the CPU path and the benchmark baseline.

    ``upcast=False`` computes in the input dtype, which is what plain torch achieves in bf16/fp16
    (the yardstick for the kernel's low-precision error); the result is still returned as fp32.
    """
    mode_id = _resolve_mode(mode, beta)
    _check_distribution_inputs(logits, ref_logits, temperature, mask)
    if upcast:
        dtype = torch.promote_types(torch.promote_types(logits.dtype, ref_logits.dtype), torch.float32)
    else:
        dtype = torch.promote_types(logits.dtype, ref_logits.dtype)
    logits = logits.to(dtype)
    ref_logits = ref_logits.to(dtype)
    if mask is not None:
        # Masked rows are replaced before use, so nan/inf there never reaches values or gradients.
        keep = mask.bool().unsqueeze(-1)
        logits = torch.where(keep, logits, 0.0)
        ref_logits = torch.where(keep, ref_logits, 0.0)
    log_p = torch.log_softmax(logits / temperature, dim=-1)
    log_r = torch.log_softmax(ref_logits / temperature, dim=-1)

    zero = torch.zeros((), dtype=dtype, device=logits.device)

    def kl(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
        # 0 · log 0 = 0: zero-probability entries (-inf logits) contribute nothing. Selecting
        # before the product keeps -inf - -inf = nan out of the backward as well.
        prob_a = log_a.exp()
        return (prob_a * torch.where(prob_a > 0, log_a - log_b, zero)).sum(-1)

    if mode_id == _MODES["reverse"]:
        divergence = kl(log_p, log_r)
    elif mode_id == _MODES["forward"]:
        divergence = kl(log_r, log_p)
    else:
        # Where both models give probability 0, m = 0 too; a finite stand-in there keeps the
        # backward of logaddexp(-inf, -inf) from producing nan (those terms are 0 either way).
        either = (log_p > float("-inf")) | (log_r > float("-inf"))
        log_m = torch.logaddexp(
            torch.where(either, log_p + math.log(1.0 - beta), zero),
            torch.where(either, log_r + math.log(beta), zero),
        )
        divergence = beta * kl(log_r, log_m) + (1.0 - beta) * kl(log_p, log_m)
    if mask is not None:
        divergence = torch.where(mask.bool(), divergence, zero)
    return divergence if divergence.dtype == torch.float64 else divergence.float()

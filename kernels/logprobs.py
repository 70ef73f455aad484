# Selective log-softmax: per-token log p(target) (and optionally the entropy) from logits [..., V].
#
#   z        = logits / temperature
#   logp_i   = z[i, t_i] - logsumexp_j z[i, j]                  (0 where t_i == ignore_index)
#   H_i      = -sum_j p_ij log p_ij,   p_ij = softmax(z_i)_j     (0 where t_i == ignore_index)
#
# Inputs: logits fp32 / bf16 / fp16 (fp64 on the torch path only), any vocabulary size (V up to
# 256k and beyond, no power-of-two requirement); targets int32 / int64. Every reduction runs in
# fp32 with an online max / sum-exp over vocabulary blocks, so one read of the logits gives the
# log-prob and the entropy. Outputs are fp32 (fp64 for fp64 logits).
#
# Backward reads the logits once and writes the gradient once, in the logits' dtype, into a
# fresh buffer (or in place, for callers that own the logits: the fused LM head):
#   dz_ij = g_i (onehot(t_i)_j - p_ij)  -  h_i p_ij (log p_ij + H_i),   dlogits = dz / temperature
# p is rebuilt from two saved fp32 numbers per row (row max and log of the shifted sum), never
# stored: no fp32 copy of the logits or of the softmax exists at any point.
# Triton >= 3.0; without triton the module imports and runs its torch path.
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from prefcore.kernels._checks import defer
from prefcore.kernels._checks import deferring
from prefcore.kernels._dispatch import HAS_TRITON
from prefcore.kernels._dispatch import use_triton

__all__ = [
    "SelectiveLogSoftmaxFunction",
    "selective_log_softmax",
    "selective_log_softmax_bwd",
    "selective_log_softmax_fwd",
    "selective_log_softmax_ref",
]

# Largest vocabulary block one program holds in registers: 4096 fp32 values over 8 warps is
# 16 per thread, enough bytes in flight per SM to stream HBM near its peak on Hopper.
_MAX_BLOCK_V = 4096
# Start of the running max. A finite value instead of -inf keeps `exp(old_max - new_max)` and
# `(old_max - new_max) * sum` free of inf - inf and 0 * inf while a row has only seen -inf logits
# (vocabulary masked with -inf), so such blocks cost nothing and produce no NaN.
_MAX_INIT = -3.0e38
# Elements of one row block on the torch path: bounds its fp32 temporaries (~64 MiB each)
# whatever N is, so the CPU path keeps the kernel's memory behaviour.
_TORCH_BLOCK_ELEMENTS = 1 << 24

_LOWPREC_DTYPES = (torch.float16, torch.bfloat16)
_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_TORCH_DTYPES = (*_KERNEL_DTYPES, torch.float64)
_TARGET_DTYPES = (torch.int64, torch.int32)


# ----------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------
if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _selective_log_softmax_fwd_kernel(
        # data ptrs
        logits_ptr,  # [N, V] fp32/bf16/fp16, unit column stride
        targets_ptr,  # [N] int32/int64
        logps_ptr,  # [N] fp32 out
        row_max_ptr,  # [N] fp32 out: max_j z_ij
        log_norm_ptr,  # [N] fp32 out: log sum_j exp(z_ij - row_max_i)
        entropy_ptr,  # [N] fp32 out, written only when RETURN_ENTROPY
        # shapes
        n_cols,  # V
        # strides
        stride_logits_row,
        # meta
        temperature,
        ignore_index,
        RETURN_ENTROPY: tl.constexpr,
        BLOCK_V: tl.constexpr,
    ):
        # One program per row; int64 so row * stride cannot overflow past 2^31 elements.
        row = tl.program_id(0).to(tl.int64)
        target = tl.load(targets_ptr + row).to(tl.int64)
        if target == ignore_index:
            # Ignored tokens skip their row entirely: no bytes read for prompt / padding tokens.
            tl.store(logps_ptr + row, 0.0)
            tl.store(row_max_ptr + row, 0.0)
            tl.store(log_norm_ptr + row, 0.0)
            if RETURN_ENTROPY:
                tl.store(entropy_ptr + row, 0.0)
            return
        row_ptr = logits_ptr + row * stride_logits_row
        cols = tl.arange(0, BLOCK_V)
        row_max = -3.0e38  # _MAX_INIT
        sum_exp = 0.0
        # sum_j exp(z_j - m) (z_j - m): the entropy term kept relative to the running max, so
        # logits of magnitude 1e4 do not cancel catastrophically in lse - E[z].
        sum_exp_shifted = 0.0
        for start in range(0, n_cols, BLOCK_V):
            offsets = start + cols
            mask = offsets < n_cols
            z = tl.load(row_ptr + offsets, mask=mask, other=-float("inf")).to(tl.float32) / temperature
            new_max = tl.maximum(row_max, tl.max(z, axis=0))
            shift = row_max - new_max
            rescale = tl.exp(shift)
            e = tl.exp(z - new_max)
            if RETURN_ENTROPY:
                # e == 0 covers -inf logits, whose e * (z - m) would be 0 * -inf.
                block_shifted = tl.sum(e * tl.where(e > 0.0, z - new_max, 0.0), axis=0)
                sum_exp_shifted = rescale * (sum_exp_shifted + shift * sum_exp) + block_shifted
            sum_exp = rescale * sum_exp + tl.sum(e, axis=0)
            row_max = new_max
        log_norm = tl.log(sum_exp)
        # Launchers validate targets; the mask keeps a bad id that slipped past them from reading
        # outside the row, and its log-prob comes out NaN instead of another token's value.
        in_vocab = (target >= 0) & (target < n_cols)
        target_logit = tl.load(row_ptr + target, mask=in_vocab, other=float("nan")).to(tl.float32) / temperature
        # (z_t - m) first: exact for nearby values, so large logits keep full fp32 precision.
        tl.store(logps_ptr + row, (target_logit - row_max) - log_norm)
        tl.store(row_max_ptr + row, row_max)
        tl.store(log_norm_ptr + row, log_norm)
        if RETURN_ENTROPY:
            tl.store(entropy_ptr + row, log_norm - sum_exp_shifted / sum_exp)

    @triton.jit
    def _selective_log_softmax_bwd_kernel(
        # data ptrs
        grad_logits_ptr,  # [N, V] out, logits dtype; may be logits_ptr itself (in place)
        logits_ptr,  # [N, V] fp32/bf16/fp16, unit column stride
        targets_ptr,  # [N] int32/int64
        row_max_ptr,  # [N] fp32, from the forward
        log_norm_ptr,  # [N] fp32, from the forward
        entropy_ptr,  # [N] fp32, read only when HAS_GRAD_ENTROPY
        grad_logps_ptr,  # [N] fp32, read only when HAS_GRAD_LOGPS
        grad_entropy_ptr,  # [N] fp32, read only when HAS_GRAD_ENTROPY
        # shapes
        n_cols,  # V
        # strides
        stride_logits_row,
        stride_grad_row,
        # meta
        temperature,
        ignore_index,
        HAS_GRAD_LOGPS: tl.constexpr,
        HAS_GRAD_ENTROPY: tl.constexpr,
        BLOCK_V: tl.constexpr,
    ):
        # A (row, vocabulary block) grid: every program reads its block before writing the same
        # block, which is what makes the in-place variant safe, and small N still fills the GPU.
        row = tl.program_id(0).to(tl.int64)
        offsets = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
        mask = offsets < n_cols
        grad_row_ptr = grad_logits_ptr + row * stride_grad_row
        target = tl.load(targets_ptr + row).to(tl.int64)
        if target == ignore_index:
            tl.store(grad_row_ptr + offsets, tl.zeros([BLOCK_V], grad_logits_ptr.dtype.element_ty), mask=mask)
            return
        z = tl.load(logits_ptr + row * stride_logits_row + offsets, mask=mask, other=0.0).to(tl.float32)
        z = z / temperature
        log_p = (z - tl.load(row_max_ptr + row)) - tl.load(log_norm_ptr + row)
        p = tl.exp(log_p)
        grad = tl.zeros([BLOCK_V], tl.float32)
        if HAS_GRAD_LOGPS:
            # g (1 - p_t) at the target is formed in fp32 before the single rounding to the
            # logits dtype; rounding p_t first would lose it when p_t is close to 1.
            g = tl.load(grad_logps_ptr + row)
            grad += g * (tl.where(offsets == target, 1.0, 0.0) - p)
        if HAS_GRAD_ENTROPY:
            g_entropy = tl.load(grad_entropy_ptr + row)
            entropy = tl.load(entropy_ptr + row)
            # p == 0 covers -inf logits, whose p * log p would be 0 * -inf.
            grad -= g_entropy * p * tl.where(p > 0.0, log_p + entropy, 0.0)
        grad = grad / temperature
        tl.store(grad_row_ptr + offsets, grad.to(grad_logits_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------------------
# Launchers (Triton) and their torch twins, selected by `use_kernel=`
# ----------------------------------------------------------------------------------------------
def _block_v(n_cols: int) -> tuple[int, int]:
    block = min(_MAX_BLOCK_V, triton.next_power_of_2(n_cols))
    return block, (8 if block >= 2048 else 4)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def selective_log_softmax_fwd(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float,
    ignore_index: int,
    return_entropy: bool,
    use_kernel: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Forward on 2-D logits ``[N, V]``; the only caller of the forward kernel.

    Returns ``(logps, row_max, log_norm, entropy)``, all ``[N]`` fp32 (fp64 for fp64 logits);
    ``row_max``/``log_norm`` are what the backward needs to rebuild the softmax.
    Inputs are assumed validated (``selective_log_softmax`` does it once for the whole call).
    """
    if logits.ndim != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(
            f"selective_log_softmax_fwd expects logits [N, V] and targets [N]; "
            f"got {tuple(logits.shape)} and {tuple(targets.shape)}."
        )
    if not use_kernel:
        return _fwd_torch(logits, targets, temperature, ignore_index, return_entropy)
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    targets = targets.contiguous()
    n_rows, n_cols = logits.shape
    logps = torch.empty(n_rows, device=logits.device, dtype=torch.float32)
    row_max = torch.empty_like(logps)
    log_norm = torch.empty_like(logps)
    entropy = torch.empty_like(logps) if return_entropy else None
    if n_rows == 0:
        return logps, row_max, log_norm, entropy
    block_v, num_warps = _block_v(n_cols)
    with _device_guard(logits):
        _selective_log_softmax_fwd_kernel[(n_rows,)](
            logits,  # data ptrs
            targets,
            logps,
            row_max,
            log_norm,
            entropy if entropy is not None else logps,
            n_cols,  # shapes
            logits.stride(0),  # strides
            float(temperature),  # meta
            int(ignore_index),
            RETURN_ENTROPY=return_entropy,
            BLOCK_V=block_v,
            num_warps=num_warps,
        )
    return logps, row_max, log_norm, entropy


def selective_log_softmax_bwd(
    logits: torch.Tensor,
    targets: torch.Tensor,
    row_max: torch.Tensor,
    log_norm: torch.Tensor,
    entropy: torch.Tensor | None,
    grad_logps: torch.Tensor | None,
    grad_entropy: torch.Tensor | None,
    *,
    temperature: float,
    ignore_index: int,
    use_kernel: bool,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Backward on 2-D logits ``[N, V]``; the only caller of the backward kernel.

    Writes ``d(sum g·logp + h·H)/dlogits`` in the logits' dtype into ``out`` (a fresh buffer when
    None). ``out=logits`` overwrites the logits with their gradient: the fused LM head does this
    with its own chunk buffer so the backward needs no second ``[chunk, V]`` tensor.
    """
    if grad_entropy is not None and entropy is None:
        raise ValueError("selective_log_softmax_bwd: grad_entropy was given without the forward entropy.")
    if out is None:
        out = torch.empty(logits.shape, device=logits.device, dtype=logits.dtype)
    elif out.shape != logits.shape or out.dtype != logits.dtype:
        raise ValueError(
            f"selective_log_softmax_bwd: out must be {tuple(logits.shape)} {logits.dtype}; "
            f"got {tuple(out.shape)} {out.dtype}."
        )
    if not use_kernel:
        _bwd_torch(
            logits,
            targets,
            row_max,
            log_norm,
            entropy,
            grad_logps,
            grad_entropy,
            temperature,
            ignore_index,
            out,
        )
        return out
    n_rows, n_cols = logits.shape
    if n_rows == 0:
        return out
    if out.stride(-1) != 1:
        raise ValueError("selective_log_softmax_bwd: out needs a unit stride along the vocabulary.")
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    block_v, num_warps = _block_v(n_cols)
    with _device_guard(logits):
        _selective_log_softmax_bwd_kernel[(n_rows, triton.cdiv(n_cols, block_v))](
            out,  # data ptrs
            logits,
            targets.contiguous(),
            row_max,
            log_norm,
            _f32_or(entropy, row_max),
            _f32_or(grad_logps, row_max),
            _f32_or(grad_entropy, row_max),
            n_cols,  # shapes
            logits.stride(0),  # strides
            out.stride(0),
            float(temperature),  # meta
            int(ignore_index),
            HAS_GRAD_LOGPS=grad_logps is not None,
            HAS_GRAD_ENTROPY=grad_entropy is not None,
            BLOCK_V=block_v,
            num_warps=num_warps,
        )
    return out


def _f32_or(tensor: torch.Tensor | None, placeholder: torch.Tensor) -> torch.Tensor:
    # Absent optional inputs still need a valid pointer; the constexpr flags keep it unread.
    return placeholder if tensor is None else tensor.to(torch.float32).contiguous()


def _device_guard(tensor: torch.Tensor) -> object:
    # Without it Triton launches on the current device, not the tensor's, on multi-GPU hosts.
    return torch.cuda.device(tensor.device) if tensor.device.type == "cuda" else contextlib.nullcontext()


def _rows_per_block(n_cols: int) -> int:
    return max(1, _TORCH_BLOCK_ELEMENTS // n_cols)


def _scaled_block(logits: torch.Tensor, start: int, end: int, dtype: torch.dtype, temperature: float) -> torch.Tensor:
    # May return a view of the logits (fp32, temperature 1): callers never modify it in place.
    block = logits[start:end].to(dtype)
    return block / temperature if temperature != 1.0 else block


def _fwd_torch(
    logits: torch.Tensor, targets: torch.Tensor, temperature: float, ignore_index: int, return_entropy: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    # The kernel's maths in torch, a block of rows at a time (a whole row is in memory here, so the
    # max is exact and needs no online rescaling); in-place ops keep one fp32 temporary per block.
    n_rows, n_cols = logits.shape
    dtype = _compute_dtype(logits.dtype)
    logps = torch.zeros(n_rows, device=logits.device, dtype=dtype)
    row_max = torch.zeros_like(logps)
    log_norm = torch.zeros_like(logps)
    entropy = torch.zeros_like(logps) if return_entropy else None
    step = _rows_per_block(n_cols)
    for start in range(0, n_rows, step):
        end = min(start + step, n_rows)
        target = targets[start:end].long()
        valid = target != ignore_index
        z = _scaled_block(logits, start, end, dtype, temperature)
        block_max = z.amax(dim=-1).clamp_min(_MAX_INIT)
        shifted = z - block_max.unsqueeze(-1)
        target_shifted = shifted.gather(-1, target.clamp(0, n_cols - 1).unsqueeze(-1)).squeeze(-1)
        if entropy is None:
            block_log_norm = shifted.exp_().sum(dim=-1).log()
        else:
            # Finite floor for -inf logits: exp gives 0 and 0 * floor stays 0 instead of NaN.
            shifted.clamp_min_(_MAX_INIT)
            e = shifted.exp()
            sum_exp = e.sum(dim=-1)
            block_log_norm = sum_exp.log()
            shifted_mean = torch.linalg.vecdot(e, shifted) / sum_exp
            entropy[start:end] = torch.where(valid, block_log_norm - shifted_mean, 0.0)
        logps[start:end] = torch.where(valid, target_shifted - block_log_norm, 0.0)
        row_max[start:end] = torch.where(valid, block_max, 0.0)
        log_norm[start:end] = torch.where(valid, block_log_norm, 0.0)
    return logps, row_max, log_norm, entropy


def _bwd_torch(
    logits: torch.Tensor,
    targets: torch.Tensor,
    row_max: torch.Tensor,
    log_norm: torch.Tensor,
    entropy: torch.Tensor | None,
    grad_logps: torch.Tensor | None,
    grad_entropy: torch.Tensor | None,
    temperature: float,
    ignore_index: int,
    out: torch.Tensor,
) -> None:
    n_rows, n_cols = logits.shape
    dtype = _compute_dtype(logits.dtype)
    step = _rows_per_block(n_cols)
    for start in range(0, n_rows, step):
        end = min(start + step, n_rows)
        target = targets[start:end].long()
        valid = target != ignore_index
        z = _scaled_block(logits, start, end, dtype, temperature)
        # (z - m) - log_norm, not z - lse: the same rounding as the kernel for large logits.
        log_p = z - row_max[start:end].to(dtype).unsqueeze(-1)
        log_p.sub_(log_norm[start:end].to(dtype).unsqueeze(-1))
        grad = log_p.exp()  # p; becomes the gradient in place
        entropy_term = None
        if grad_entropy is not None and entropy is not None:
            # p (log p + H); the floor turns the 0 * -inf of -inf logits into 0.
            entropy_term = log_p.clamp_min_(_MAX_INIT).add_(entropy[start:end].to(dtype).unsqueeze(-1))
            entropy_term.mul_(grad).mul_(grad_entropy[start:end].to(dtype).unsqueeze(-1))
        if grad_logps is not None:
            g = torch.where(valid, grad_logps[start:end].to(dtype), 0.0)
            grad.mul_(-g.unsqueeze(-1))
            rows = torch.arange(end - start, device=logits.device)
            grad.index_put_((rows, target.clamp(0, n_cols - 1)), g, accumulate=True)
        else:
            grad.zero_()
        if entropy_term is not None:
            grad.sub_(entropy_term)
        if temperature != 1.0:
            grad.div_(temperature)
        grad.masked_fill_(~valid.unsqueeze(-1), 0.0)
        out[start:end].copy_(grad)


# ----------------------------------------------------------------------------------------------
# Autograd
# ----------------------------------------------------------------------------------------------
class SelectiveLogSoftmaxFunction(torch.autograd.Function):
    """``(logits, targets, ...) -> logps`` or ``(logps, entropy)``; saves logits plus 2 floats a row."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        logits: torch.Tensor,
        targets: torch.Tensor,
        temperature: float,
        ignore_index: int,
        return_entropy: bool,
        use_kernel: bool,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        vocab = logits.shape[-1]
        logps, row_max, log_norm, entropy = selective_log_softmax_fwd(
            logits.reshape(-1, vocab),
            targets.reshape(-1),
            temperature=temperature,
            ignore_index=ignore_index,
            return_entropy=return_entropy,
            use_kernel=use_kernel,
        )
        # An entropy that is only logged gets no gradient: skip its term instead of adding zeros.
        ctx.set_materialize_grads(False)
        # The input itself, not its 2-D reshape: a reshape that had to copy would double memory.
        ctx.save_for_backward(logits, targets, row_max, log_norm, entropy)
        ctx.temperature = temperature
        ctx.ignore_index = ignore_index
        ctx.use_kernel = use_kernel
        logps = logps.view(targets.shape)
        if return_entropy:
            return logps, entropy.view(targets.shape)
        return logps

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx,
        grad_logps: torch.Tensor | None,
        grad_entropy: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, None, None, None, None, None]:
        logits, targets, row_max, log_norm, entropy = ctx.saved_tensors
        grad_logits = None
        if ctx.needs_input_grad[0] and (grad_logps is not None or grad_entropy is not None):
            vocab = logits.shape[-1]
            grad_logits = selective_log_softmax_bwd(
                logits.reshape(-1, vocab),
                targets.reshape(-1),
                row_max,
                log_norm,
                entropy,
                grad_logps.reshape(-1) if grad_logps is not None else None,
                grad_entropy.reshape(-1) if grad_entropy is not None else None,
                temperature=ctx.temperature,
                ignore_index=ctx.ignore_index,
                use_kernel=ctx.use_kernel,
            ).view(logits.shape)
        return (
            grad_logits,
            None,  # targets
            None,  # temperature
            None,  # ignore_index
            None,  # return_entropy
            None,  # use_kernel
        )


# ----------------------------------------------------------------------------------------------
# Public function
# ----------------------------------------------------------------------------------------------
def _validate(logits: torch.Tensor, targets: torch.Tensor, temperature: float, ignore_index: int, fn: str) -> None:
    if not isinstance(logits, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise ValueError(f"{fn}: logits and targets must be tensors.")
    if logits.dtype not in _TORCH_DTYPES:
        raise ValueError(f"{fn}: logits must be float32, bfloat16, float16 or float64; got {logits.dtype}.")
    if targets.dtype not in _TARGET_DTYPES:
        raise ValueError(f"{fn}: targets must be int64 or int32 token ids; got {targets.dtype}.")
    if logits.ndim < 1 or logits.shape[-1] < 1:
        raise ValueError(f"{fn}: logits must have a non-empty last (vocabulary) dimension; got {tuple(logits.shape)}.")
    if targets.shape != logits.shape[:-1]:
        raise ValueError(
            f"{fn}: targets must have shape logits.shape[:-1] = {tuple(logits.shape[:-1])}; got {tuple(targets.shape)}."
        )
    if targets.device != logits.device:
        raise ValueError(f"{fn}: targets are on {targets.device} but logits on {logits.device}.")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"{fn}: temperature must be a finite number > 0; got {temperature!r}.")
    check_targets(targets, logits.shape[-1], ignore_index, fn)


def check_targets(targets: torch.Tensor, vocab: int, ignore_index: int, fn: str) -> None:
    """Raise ValueError if a non-ignored target is outside ``[0, vocab)``.

    On CUDA this costs one host synchronisation; it is what turns an out-of-range id into a clear
    error instead of an out-of-bounds read. Inside a training step (``deferred_checks``) the flag
    is read with the step's metrics instead, once per step.
    """
    bad = (targets != ignore_index) & ((targets < 0) | (targets >= vocab))
    if deferring():  # a training step: one read per step (prefcore.kernels._checks)
        defer(bad.any(), lambda: _target_error(targets, bad, vocab, ignore_index, fn))
        return
    if bool(bad.any()):
        raise ValueError(_target_error(targets, bad, vocab, ignore_index, fn))


def _target_error(targets: torch.Tensor, bad: torch.Tensor, vocab: int, ignore_index: int, fn: str) -> str:
    value = int(targets[bad][0])
    return f"{fn}: target id {value} is outside the vocabulary [0, {vocab}) and is not ignore_index={ignore_index}."


def selective_log_softmax(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float = 1.0,
    ignore_index: int = -100,
    return_entropy: bool = False,
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probability of the target token (and entropy), without an fp32 logits copy.

    Arguments:
        logits: ``[..., V]`` fp32/bf16/fp16 (fp64 with the torch backend); any V.
        targets: ``[...]`` int64/int32 token ids in ``[0, V)`` or ``ignore_index``.
        temperature: logits are divided by it before the softmax; > 0.
        ignore_index: target id whose token gives log-prob 0, entropy 0 and zero gradient.
        return_entropy: also return the per-token entropy of ``softmax(logits / temperature)``.
        backend: ``auto`` (Triton on CUDA, torch on CPU), ``triton`` or ``torch``.
    Returns:
        logps: ``[...]`` fp32 (fp64 for fp64 logits), ``log softmax(logits / T)[target]``;
        or ``(logps, entropy)`` when ``return_entropy``. Both are differentiable w.r.t. logits,
        and the logits' gradient comes back in the logits' dtype.
    """
    _validate(logits, targets, temperature, ignore_index, "selective_log_softmax")
    run_triton = use_triton(logits, backend)
    if run_triton and logits.dtype not in _KERNEL_DTYPES:
        raise ValueError(
            f"selective_log_softmax: the Triton kernel takes float32/bfloat16/float16 logits; got "
            f"{logits.dtype}. Use backend='torch' for it."
        )
    return SelectiveLogSoftmaxFunction.apply(
        logits, targets, float(temperature), int(ignore_index), bool(return_entropy), run_triton
    )


# ----------------------------------------------------------------------------------------------
# Reference
# ----------------------------------------------------------------------------------------------
def selective_log_softmax_ref(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float = 1.0,
    ignore_index: int = -100,
    return_entropy: bool = False,
    upcast: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Textbook ``log_softmax(logits / T).gather(target)``: the spec the kernels are tested against.

    ``upcast=False`` computes in the logits' dtype (what plain torch achieves in bf16/fp16, the
    yardstick of the low-precision tests); ``upcast=True`` computes in fp32 (fp64 stays fp64).
    It materialises the full log-softmax; it is a spec and a baseline, not a memory-lean path.
    Outputs are cast to fp32 (fp64 for fp64 logits) like the kernel's.
    """
    _validate(logits, targets, temperature, ignore_index, "selective_log_softmax_ref")
    out_dtype = _compute_dtype(logits.dtype)
    x = logits.to(out_dtype) if upcast and logits.dtype in _LOWPREC_DTYPES else logits
    log_probs = F.log_softmax(x / temperature, dim=-1)
    valid = targets != ignore_index
    safe_targets = targets.long().masked_fill(~valid, 0)
    logps = log_probs.gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)
    logps = logps.to(out_dtype).masked_fill(~valid, 0.0)
    if not return_entropy:
        return logps
    probs = log_probs.exp()
    entropy = -torch.where(probs > 0, probs * log_probs, 0.0).sum(dim=-1)
    return logps, entropy.to(out_dtype).masked_fill(~valid, 0.0)

# Fused LM head + selective log-softmax: per-token log p(target) from hidden states, never
# materialising the [N, V] logits.
#
#   logits = (hidden @ weight^T + bias) / temperature,   logp_i = log softmax(logits_i)[t_i]
#
# Inputs: hidden [..., H], weight [V, H], bias [V] (optional), all one dtype: fp32 / bf16 / fp16
# (fp64 on the torch path). Output: fp32 log-probs of targets.shape (0 at ignore_index).
#
# Tokens are processed in chunks of `chunk_size` rows. For each chunk a cuBLAS GEMM writes the
# [chunk, V] logits tile (in the inputs' dtype, as an unfused LM head would) into one reused
# buffer, and the Triton kernels of `logprobs.py` reduce it with an fp32 online log-sum-exp. The
# backward recomputes each tile (8NHV FLOPs instead of 6NHV, but O(N) saved state), turns it into
# dlogits in place with the Triton backward kernel, then
#   dH[chunk]  = dlogits @ W         (one GEMM per chunk: fp32 accumulation inside cuBLAS)
#   dW        += dlogits^T @ h_chunk (fp32 accumulator across chunks, see below)
#   db        += dlogits.sum(0)      (fp32 accumulator, V floats)
# Ignored tokens are dropped before the GEMMs (torchtune's trick): for preference data with long
# prompts this removes their FLOPs in both passes and their rows from every buffer.
#
# dW precision: with more than one chunk, dW is summed across chunks in an fp32 [V, H] buffer and
# cast to the weight's dtype once at the end (Liger's FLCE does the same). Adding each chunk into
# a bf16 running sum instead rounds the sum once per chunk, so its error grows with the chunk
# count (measured: 4.9e-3 with 1 chunk, 4.1e-2 with 256 chunks); with the fp32 buffer the error
# is that of one GEMM whatever the chunking. On CUDA the chunk GEMM writes fp32 directly
# (`out_dtype`, torch >= 2.8); elsewhere the chunk's operands are upcast first. The buffer costs
# 4·V·H bytes (2.1 GB at V=128256, H=4096) on top of the weight-dtype gradient, as any fp32
# gradient accumulation does; when all tokens fit in one chunk, dW is a single GEMM with a single
# rounding and needs no buffer. fp32/fp64 weights accumulate in their own dtype. dH needs no
# accumulator: each chunk writes its own rows, and each row is one GEMM over V (fp32 inside).
#
# Memory beyond inputs and outputs: one [chunk, V] tile in the inputs' dtype, one [chunk, H] hidden
# tile (only when tokens are ignored), one [chunk, H] dH tile, and 8 bytes per valid token saved
# for the backward. The default chunk keeps the logits tile at or under 256 MiB.
from __future__ import annotations

import torch
import torch.nn.functional as F

from prefcore.kernels._checks import debug_checks
from prefcore.kernels._dispatch import use_triton
from prefcore.kernels.logprobs import check_targets
from prefcore.kernels.logprobs import selective_log_softmax_bwd
from prefcore.kernels.logprobs import selective_log_softmax_fwd
from prefcore.kernels.logprobs import selective_log_softmax_ref

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "FusedLinearLogprobsFunction",
    "default_chunk_size",
    "fused_linear_logprobs",
    "fused_linear_logprobs_ref",
]

# Upper bound on one chunk's logits tile. 256 MiB is ~1k tokens at V=128256 in bf16: big enough
# that every GEMM streams W once per >= ~1k rows (above the ~300 rows where a pass over W turns
# HBM-bound on H100), small enough next to the weight gradient itself (V·H·2 B = 1 GiB there).
DEFAULT_CHUNK_BYTES = 256 * 1024 * 1024
# Chunks are rounded down to a multiple of this for GEMM tile alignment, when large enough.
_CHUNK_ALIGN = 128

_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_TORCH_DTYPES = (*_KERNEL_DTYPES, torch.float64)


def default_chunk_size(vocab: int, dtype: torch.dtype, budget_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Largest token chunk whose ``[chunk, vocab]`` logits tile fits in ``budget_bytes``."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    rows = budget_bytes // (vocab * itemsize)
    if rows >= _CHUNK_ALIGN:
        rows -= rows % _CHUNK_ALIGN
    return max(1, rows)


# ----------------------------------------------------------------------------------------------
# Chunk loop (shared by forward, backward and the no-grad path)
# ----------------------------------------------------------------------------------------------
def _chunks(n_valid: int, chunk_size: int) -> range:
    return range(0, n_valid, chunk_size)


def _chunk_rows(
    hidden: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor | None, start: int, end: int
) -> tuple[torch.Tensor, torch.Tensor]:
    # With nothing ignored a chunk is a slice (no copy); otherwise gather only the valid rows.
    if rows is None:
        return hidden[start:end], targets[start:end]
    index = rows[start:end]
    return hidden.index_select(0, index), targets.index_select(0, index)


def _project(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor) -> None:
    if bias is None:
        torch.mm(h, weight.t(), out=out)
    else:
        torch.addmm(bias, h, weight.t(), out=out)


def _forward(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    temperature: float,
    ignore_index: int,
    chunk_size: int,
    use_kernel: bool,
    valid_rows: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Log-probs ``[N]`` plus what a backward needs: valid-row index (None = all) and row stats."""
    n_tokens, vocab = hidden.shape[0], weight.shape[0]
    out_dtype = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    logps = torch.zeros(n_tokens, device=hidden.device, dtype=out_dtype)
    if valid_rows is not None:  # the caller knows them on the host: no sync
        n_valid = valid_rows.shape[0]
        rows = None if n_valid == n_tokens else valid_rows
    else:
        valid = targets != ignore_index
        # One host sync: the number of valid tokens sizes every chunk and buffer below.
        n_valid = int(valid.sum())
        rows = None if n_valid == n_tokens else valid.nonzero().squeeze(1)
    row_max = torch.empty(n_valid, device=hidden.device, dtype=out_dtype)
    log_norm = torch.empty_like(row_max)
    tile = torch.empty((min(chunk_size, n_valid), vocab), device=hidden.device, dtype=hidden.dtype)
    for start in _chunks(n_valid, chunk_size):
        end = min(start + chunk_size, n_valid)
        h, t = _chunk_rows(hidden, targets, rows, start, end)
        logits = tile[: end - start]
        _project(h, weight, bias, logits)
        chunk_logps, chunk_max, chunk_norm, _ = selective_log_softmax_fwd(
            logits,
            t,
            temperature=temperature,
            ignore_index=ignore_index,
            return_entropy=False,
            use_kernel=use_kernel,
        )
        if rows is None:
            logps[start:end] = chunk_logps
        else:
            logps.index_copy_(0, rows[start:end], chunk_logps)
        row_max[start:end] = chunk_max
        log_norm[start:end] = chunk_norm
    return logps, rows, row_max, log_norm


def _accumulator_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for half-precision weights (their running sum must not round per chunk), else the dtype."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _mm_out_dtype_works(device: torch.device) -> bool:
    """Whether ``torch.addmm(..., out_dtype=float32)`` runs half-precision GEMMs on ``device``.

    It exists on CUDA from torch 2.8 and lets cuBLAS add its fp32 product straight into the
    fp32 accumulator; CPU builds lack it. Probed once per device with a 1x1 GEMM that must
    add into its output in place (1 + 1·1 = 2), the exact call the backward makes.
    """
    key = (device.type, device.index)
    if key not in _OUT_DTYPE_SUPPORT:
        try:
            probe = torch.ones(1, 1, device=device, dtype=torch.bfloat16)
            accumulator = torch.ones(1, 1, device=device, dtype=torch.float32)
            torch.addmm(accumulator, probe, probe, out_dtype=torch.float32, out=accumulator)
            _OUT_DTYPE_SUPPORT[key] = accumulator.item() == 2.0
        except (RuntimeError, TypeError, NotImplementedError):
            _OUT_DTYPE_SUPPORT[key] = False
    return _OUT_DTYPE_SUPPORT[key]


_OUT_DTYPE_SUPPORT: dict[tuple[str, int | None], bool] = {}


def _add_weight_grad(accumulator: torch.Tensor, dlogits: torch.Tensor, h: torch.Tensor) -> None:
    """``accumulator += dlogits^T @ h`` with the product summed in the accumulator's precision."""
    if accumulator.dtype == dlogits.dtype:
        accumulator.addmm_(dlogits.t(), h)
    elif accumulator.is_cuda and _mm_out_dtype_works(accumulator.device):
        torch.addmm(accumulator, dlogits.t(), h, out_dtype=accumulator.dtype, out=accumulator)
    else:
        accumulator.addmm_(dlogits.t().to(accumulator.dtype), h.to(accumulator.dtype))


class FusedLinearLogprobsFunction(torch.autograd.Function):
    """``(hidden [N, H], weight [V, H], bias, targets [N], ...) -> logps [N]`` with chunked recompute."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        temperature: float,
        ignore_index: int,
        chunk_size: int,
        use_kernel: bool,
        valid_rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        logps, rows, row_max, log_norm = _forward(
            hidden, weight, bias, targets, temperature, ignore_index, chunk_size, use_kernel, valid_rows
        )
        ctx.save_for_backward(hidden, weight, bias, targets, rows, row_max, log_norm)
        ctx.temperature = temperature
        ctx.ignore_index = ignore_index
        ctx.chunk_size = chunk_size
        ctx.use_kernel = use_kernel
        return logps

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_logps: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, None, None, None, None, None, None]:
        hidden, weight, bias, targets, rows, row_max, log_norm = ctx.saved_tensors
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        chunk_size = ctx.chunk_size
        vocab = weight.shape[0]
        n_valid = row_max.shape[0]
        grad_valid = grad_logps.to(row_max.dtype)
        if rows is not None:
            grad_valid = grad_valid.index_select(0, rows)

        grad_hidden = None
        if need_hidden:
            # Ignored rows get exactly zero; with none ignored every row is written below.
            make = torch.empty if rows is None else torch.zeros
            grad_hidden = make(hidden.shape, device=hidden.device, dtype=hidden.dtype)
        grad_weight = None
        if need_weight and n_valid == 0:
            grad_weight = torch.zeros_like(weight)
        elif need_weight and n_valid > chunk_size:
            grad_weight = torch.zeros(weight.shape, device=weight.device, dtype=_accumulator_dtype(weight.dtype))
        grad_bias = torch.zeros(vocab, device=bias.device, dtype=torch.float32) if need_bias else None

        tile = torch.empty((min(chunk_size, n_valid), vocab), device=hidden.device, dtype=hidden.dtype)
        for start in _chunks(n_valid, chunk_size):
            end = min(start + chunk_size, n_valid)
            h, t = _chunk_rows(hidden, targets, rows, start, end)
            logits = tile[: end - start]
            _project(h, weight, bias, logits)
            dlogits = selective_log_softmax_bwd(
                logits,
                t,
                row_max[start:end],
                log_norm[start:end],
                None,
                grad_valid[start:end],
                None,
                temperature=ctx.temperature,
                ignore_index=ctx.ignore_index,
                use_kernel=ctx.use_kernel,
                out=logits,
            )
            if grad_hidden is not None:
                if rows is None:
                    torch.mm(dlogits, weight, out=grad_hidden[start:end])
                else:
                    grad_hidden.index_copy_(0, rows[start:end], dlogits @ weight)
            if need_weight:
                if grad_weight is None:  # the only chunk: one GEMM, one rounding
                    grad_weight = dlogits.t() @ h
                else:
                    _add_weight_grad(grad_weight, dlogits, h)
            if grad_bias is not None:
                grad_bias += dlogits.sum(dim=0, dtype=torch.float32)
        return (
            grad_hidden,
            grad_weight.to(weight.dtype) if grad_weight is not None else None,
            grad_bias.to(bias.dtype) if grad_bias is not None else None,
            None,  # targets
            None,  # temperature
            None,  # ignore_index
            None,  # chunk_size
            None,  # use_kernel
            None,  # valid_rows
        )


# ----------------------------------------------------------------------------------------------
# Public function
# ----------------------------------------------------------------------------------------------
def _validate(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None,
    temperature: float,
    ignore_index: int,
    chunk_size: int | None,
    fn: str,
) -> None:
    for name, tensor in (("hidden", hidden), ("weight", weight), ("targets", targets)):
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{fn}: {name} must be a tensor; got {type(tensor).__name__}.")
    if hidden.dtype not in _TORCH_DTYPES:
        raise ValueError(f"{fn}: hidden must be float32, bfloat16, float16 or float64; got {hidden.dtype}.")
    if weight.dtype != hidden.dtype or (bias is not None and bias.dtype != hidden.dtype):
        raise ValueError(
            f"{fn}: hidden, weight and bias must share one dtype; got hidden {hidden.dtype}, "
            f"weight {weight.dtype}, bias {None if bias is None else bias.dtype}."
        )
    if targets.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{fn}: targets must be int64 or int32 token ids; got {targets.dtype}.")
    if hidden.ndim < 1 or weight.ndim != 2 or weight.shape[1] != hidden.shape[-1] or weight.shape[0] < 1:
        raise ValueError(
            f"{fn}: weight must be [V, H] with H = hidden.shape[-1] and V >= 1; got hidden "
            f"{tuple(hidden.shape)} and weight {tuple(weight.shape)}."
        )
    if targets.shape != hidden.shape[:-1]:
        raise ValueError(
            f"{fn}: targets must have shape hidden.shape[:-1] = {tuple(hidden.shape[:-1])}; got {tuple(targets.shape)}."
        )
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"{fn}: bias must be [V] = [{weight.shape[0]}]; got {tuple(bias.shape)}.")
    devices = {hidden.device, weight.device, targets.device} | ({bias.device} if bias is not None else set())
    if len(devices) != 1:
        raise ValueError(f"{fn}: hidden, weight, bias and targets must be on one device; got {devices}.")
    if not (isinstance(temperature, (int, float)) and temperature > 0 and temperature != float("inf")):
        raise ValueError(f"{fn}: temperature must be a finite number > 0; got {temperature!r}.")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"{fn}: chunk_size must be a positive int or None; got {chunk_size!r}.")
    check_targets(targets, weight.shape[0], ignore_index, fn)


def _check_valid_rows(valid_rows: torch.Tensor, targets: torch.Tensor, ignore_index: int, fn: str) -> None:
    """Shape, dtype and device always; that they are the non-ignored rows under PREFCORE_DEBUG_CHECKS=1 (a sync)."""
    if valid_rows.dim() != 1 or valid_rows.dtype != torch.int64 or valid_rows.device != targets.device:
        raise ValueError(
            f"{fn}: valid_rows must be a 1-D int64 tensor on the targets' device; got shape "
            f"{tuple(valid_rows.shape)}, {valid_rows.dtype} on {valid_rows.device}."
        )
    if debug_checks():
        expected = (targets != ignore_index).nonzero().squeeze(1)
        if not torch.equal(expected, valid_rows):
            raise ValueError(f"{fn}: valid_rows are not the rows whose target is not ignore_index.")


def fused_linear_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    temperature: float = 1.0,
    ignore_index: int = -100,
    chunk_size: int | None = None,
    backend: str = "auto",
    valid_rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token log p(target) of an LM head, chunked over tokens so N×V logits never exist.

    Arguments:
        hidden: ``[..., H]`` last hidden states, fp32/bf16/fp16 (fp64 with the torch backend).
        weight: ``[V, H]`` LM-head weight, same dtype as ``hidden``.
        targets: ``[...]`` int64/int32 next-token ids in ``[0, V)`` or ``ignore_index``.
        bias: optional ``[V]`` LM-head bias, same dtype.
        temperature: logits are divided by it before the softmax; > 0.
        ignore_index: target id whose token gets log-prob 0 and no gradient; such tokens are
            dropped before the matmul, so they cost no FLOPs.
        chunk_size: tokens per logits tile; default keeps one ``[chunk, V]`` tile <= 256 MiB.
        backend: ``auto`` (Triton on CUDA, torch on CPU), ``triton`` or ``torch``; the matmuls
            are cuBLAS / torch either way, the backend picks the log-softmax kernels.
        valid_rows: optional ``[n]`` int64 indices, ascending, of the flattened tokens whose target is
            not ``ignore_index``, on ``hidden``'s device: a caller that knows them on the host (the
            trainer, from its collated masks) saves the one host sync that counting them costs.
            ``PREFCORE_DEBUG_CHECKS=1`` checks them against the targets.
    Returns:
        logps: ``[...]`` fp32 (fp64 for fp64 inputs). Differentiable w.r.t. hidden, weight and
        bias; under ``torch.no_grad`` (or with no input requiring grad) nothing is saved.
    """
    fn = "fused_linear_logprobs"
    _validate(hidden, weight, targets, bias, temperature, ignore_index, chunk_size, fn)
    run_triton = use_triton(hidden, backend)
    if run_triton and hidden.dtype not in _KERNEL_DTYPES:
        raise ValueError(
            f"{fn}: the Triton kernels take float32/bfloat16/float16; got {hidden.dtype}. Use backend='torch' for it."
        )
    vocab, width = weight.shape
    if chunk_size is None:
        chunk_size = default_chunk_size(vocab, hidden.dtype)
    hidden_2d = hidden.reshape(-1, width)
    targets_1d = targets.reshape(-1)
    if valid_rows is not None:
        _check_valid_rows(valid_rows, targets_1d, ignore_index, fn)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (hidden, weight, bias))
    if needs_grad:
        logps = FusedLinearLogprobsFunction.apply(
            hidden_2d,
            weight,
            bias,
            targets_1d,
            float(temperature),
            int(ignore_index),
            chunk_size,
            run_triton,
            valid_rows,
        )
    else:
        # Reference-model path: no autograd node, so neither inputs nor row statistics are kept.
        logps = _forward(
            hidden_2d,
            weight,
            bias,
            targets_1d,
            float(temperature),
            int(ignore_index),
            chunk_size,
            run_triton,
            valid_rows,
        )[0]
    return logps.view(targets.shape)


# ----------------------------------------------------------------------------------------------
# Reference
# ----------------------------------------------------------------------------------------------
def fused_linear_logprobs_ref(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    temperature: float = 1.0,
    ignore_index: int = -100,
    upcast: bool = False,
) -> torch.Tensor:
    """Unchunked spec: ``F.linear`` then ``selective_log_softmax_ref``; materialises N×V logits.

    For tests and as the naive baseline only; the memory-lean CPU path is
    ``fused_linear_logprobs(..., backend="torch")``. ``upcast=True`` runs the matmul and the
    softmax in fp32 (fp64 stays fp64), ``upcast=False`` in the inputs' dtype.
    """
    _validate(hidden, weight, targets, bias, temperature, ignore_index, None, "fused_linear_logprobs_ref")
    if upcast and hidden.dtype in (torch.float16, torch.bfloat16):
        hidden, weight = hidden.float(), weight.float()
        bias = bias.float() if bias is not None else None
    logits = F.linear(hidden, weight, bias)
    return selective_log_softmax_ref(logits, targets, temperature=temperature, ignore_index=ignore_index, upcast=upcast)

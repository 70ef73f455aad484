# Loss-aware fused LM head for pairwise preference losses: the loss and the gradients of the LM
# head's inputs in one pass over the logits, which therefore exist once per token.
#
#   logits = hidden @ weight^T + bias,   logp_i = log softmax(logits_i)[t_i]    (fp32 log-sum-exp)
#   sum_s  = Σ_{i in s} logp_i                                                  (completion tokens)
#   loss   = Σ_p w_p · term(x_chosen(p), x_rejected(p)) / N                     (a row of the table)
#
# Why it can be done in the forward: the loss reads the logits only through the sequence sums,
# so d loss / d logits_i = g_s · (onehot(t_i) − softmax(logits_i)) with g_s = d loss / d sum_s of
# token i's sequence s, and every g_s is known once the sums of a pair are. Pairs are independent
# (DPO, IPO, hinge and SimPO are functions of one pair's two sequences), so a chunk of pairs is
# closed: its logits tile → log-probs → sums → per-pair loss and g → dlogits written in place
# over the tile → grad_hidden rows (one GEMM) and grad_weight (one GEMM into an fp32 buffer).
# The autograd backward only scales the stored gradients by the upstream scalar gradient. Work:
# 6·N·H·V FLOPs instead of the recompute path's 8·N·H·V (kernels/fused_linear_logprobs.py);
# Liger's LigerFusedLinearPreferenceBase does the same, through torch.func.grad_and_value.
#
# Chunks are made of whole pairs (both sequences of a pair in one chunk), so one chunk's tile
# holds all completion tokens of its pairs: chunks are filled pair by pair up to a byte budget
# for the [tokens, V] tile (default 256 MiB), and a chunk holds at least one pair, so one pair
# longer than the budget gets a tile of its own size. The chunk plan is built on the host
# (plan_pair_chunks in _pair_chunks.py, from the CPU targets): no host sync to size the buffers.
#
# Kernels: the per-token log-softmax and its gradient are the Triton kernels of logprobs.py
# (backend "triton", or "auto" on CUDA); the per-pair term and its derivative are the table's
# pair kernel (pairwise_losses.py). The matmuls are torch. backend "torch" runs the same maths
# in torch, the per-pair derivative by autograd through the table's torch term (term_ref); there an
# fp32/fp64 tile is turned into exp(z − max) in place, so the gradient is one scale and a scatter.
#
# Precision: logits in hidden's dtype (the compute dtype, as an unfused head), log-probs, sums,
# losses and g in fp32; dlogits in the compute dtype; grad_weight summed across chunks in fp32
# (half-precision compute) and grad_bias in fp32. Mixed precision: the weight (and bias) may be the
# fp32 master copy while hidden is bf16/fp16; each use is then cast to the compute dtype inside
# (the whole weight once per call, or ``cast_block_rows`` vocab rows at a time at each use), the
# matmuls are the same half-precision GEMMs, and the fp32 accumulation buffer is the returned weight
# gradient: no half-precision weight gradient, no cast of it, and no cast back through autograd.
# (On CUDA the weight GEMM writes fp32 from bf16 inputs; on CPU, which lacks that GEMM, several chunks
# upcast dlogits by vocab blocks for an fp32 GEMM, and a single chunk adds the bf16 GEMM rounded once,
# the gradient a bf16 weight gets.) A half-precision weight gets the buffer (multi-chunk) cast once.
# Memory beyond inputs and outputs: one tile, the chunk's gathered hidden rows, the fp32
# weight-gradient buffer (4·V·H bytes: the output itself for an fp32 master weight; a half-precision
# weight needs it with several chunks, plus its 2·V·H cast), the compute-dtype weight (2·V·H bytes,
# a master weight cast once per call; one block with ``cast_block_rows``) and the stored gradients
# until the backward.
# Covered rows: dpo, ipo, hinge, simpo. ORPO and NLL average over every chosen token of the batch,
# which a chunk does not see; they stay on fused_linear_logprobs + orpo_loss / nll_loss.
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from prefcore.kernels._checks import defer
from prefcore.kernels._checks import deferring
from prefcore.kernels._dispatch import HAS_TRITON
from prefcore.kernels._dispatch import use_triton
from prefcore.kernels._pair_chunks import PairChunk
from prefcore.kernels._pair_chunks import PairChunkPlan
from prefcore.kernels._pair_chunks import plan_pair_chunks
from prefcore.kernels._sequence_loss import PreferenceLossOutput
from prefcore.kernels._sequence_loss import check_beta
from prefcore.kernels._sequence_loss import check_label_smoothing
from prefcore.kernels.fused_linear_logprobs import DEFAULT_CHUNK_BYTES
from prefcore.kernels.fused_linear_logprobs import _accumulator_dtype
from prefcore.kernels.fused_linear_logprobs import _add_weight_grad
from prefcore.kernels.fused_linear_logprobs import _mm_out_dtype_works
from prefcore.kernels.fused_linear_logprobs import _project
from prefcore.kernels.fused_linear_logprobs import _validate
from prefcore.kernels.fused_linear_logprobs import fused_linear_logprobs_ref
from prefcore.kernels.logprobs import selective_log_softmax_bwd
from prefcore.kernels.logprobs import selective_log_softmax_fwd
from prefcore.kernels.pairwise_losses import _DPO
from prefcore.kernels.pairwise_losses import _HINGE
from prefcore.kernels.pairwise_losses import _IPO
from prefcore.kernels.pairwise_losses import _SIMPO
from prefcore.kernels.pairwise_losses import PairwiseLoss
from prefcore.kernels.pairwise_losses import dpo_loss_ref
from prefcore.kernels.pairwise_losses import hinge_loss_ref
from prefcore.kernels.pairwise_losses import ipo_loss_ref
from prefcore.kernels.pairwise_losses import simpo_loss_ref

if HAS_TRITON:
    from prefcore.kernels.pairwise_losses import pairwise_loss_fwd

__all__ = [
    "LOSSES",
    "FusedPairwiseOutput",
    "PairChunk",
    "PairChunkPlan",
    "fused_linear_pairwise_loss",
    "fused_linear_pairwise_loss_ref",
    "plan_pair_chunks",
]

# The rows of the pairwise table this path covers, with the options each one's term reads.
_ROWS: dict[str, tuple[PairwiseLoss, tuple[str, ...]]] = {
    "dpo": (_DPO, ("beta", "label_smoothing")),
    "ipo": (_IPO, ("beta",)),
    "hinge": (_HINGE, ("beta",)),
    "simpo": (_SIMPO, ("beta", "gamma", "label_smoothing")),
}
LOSSES: tuple[str, ...] = tuple(_ROWS)
_REFS = {"dpo": dpo_loss_ref, "ipo": ipo_loss_ref, "hinge": hinge_loss_ref, "simpo": simpo_loss_ref}
_FN = "fused_linear_pairwise_loss"


@dataclass(frozen=True)
class FusedPairwiseOutput:
    """What the loss-aware head returns: the loss (differentiable) and detached per-pair values.

    ``loss`` = Σ_p w_p · losses[p] / normalizer. ``chosen_logps``/``rejected_logps`` are the
    policy's summed completion log-probs of each pair (TRL's ``logps/*`` metrics); the rewards are
    those of the table's row (β · log-ratio sums; SimPO: β · mean token log-prob).
    """

    loss: torch.Tensor
    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    chosen_logps: torch.Tensor
    rejected_logps: torch.Tensor


# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _PairTerms:
    losses: torch.Tensor  # [p]
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    seq_grad: torch.Tensor  # [s] Σ_p w_p · d losses[p] / d sum[s]
    errors: torch.Tensor | None  # the pair kernel's error counters (Triton path)


def _pair_terms_torch(
    row: PairwiseLoss,
    sums: torch.Tensor,
    counts: torch.Tensor,
    ref_sums: torch.Tensor | None,
    chunk: PairChunk,
    weights: torch.Tensor | None,
    params: dict[str, float],
) -> _PairTerms:
    """The row's torch term (the table's spec) and its derivative by autograd on ``[s]`` leaves."""
    with torch.enable_grad():
        leaf = sums.detach().requires_grad_()
        chosen, rejected = leaf[chunk.chosen], leaf[chunk.rejected]
        if ref_sums is not None:
            chosen = chosen - ref_sums[chunk.chosen]
            rejected = rejected - ref_sums[chunk.rejected]
        chosen_x, rejected_x = chosen, rejected
        if row.per_token:
            lengths = counts.to(leaf.dtype)
            chosen_x = chosen / lengths[chunk.chosen]
            rejected_x = rejected / lengths[chunk.rejected]
        losses = row.term_ref(chosen_x, rejected_x, **params)
        seq_grad = torch.autograd.grad(
            losses, leaf, grad_outputs=weights if weights is not None else torch.ones_like(losses)
        )[0]
    beta = params["beta"]
    chosen_reward, rejected_reward = (chosen_x, rejected_x) if row.mean_rewards else (chosen, rejected)
    return _PairTerms(
        losses.detach(), (beta * chosen_reward).detach(), (beta * rejected_reward).detach(), seq_grad, None
    )


def _pair_terms_triton(
    row: PairwiseLoss,
    sums: torch.Tensor,
    counts: torch.Tensor,
    ref_sums: torch.Tensor | None,
    chunk: PairChunk,
    weights: torch.Tensor | None,
    params: dict[str, float],
) -> _PairTerms:
    """The table's pair kernel on the chunk's sums: losses, rewards and each pair's d loss / d sum."""
    out = pairwise_loss_fwd(row, sums.float().contiguous(), counts, ref_sums, chunk.chosen, chunk.rejected, params)
    dchosen, drejected = out.dchosen, out.drejected
    if weights is not None:
        dchosen, drejected = dchosen * weights, drejected * weights
    seq_grad = torch.zeros_like(sums, dtype=torch.float32)
    seq_grad.index_add_(0, chunk.chosen, dchosen).index_add_(0, chunk.rejected, drejected)
    return _PairTerms(out.losses, out.chosen_rewards, out.rejected_rewards, seq_grad, out.errors)


# ----------------------------------------------------------------------------------------------
# fp32/fp64 tiles on the torch path: the softmax in place over the tile
# ----------------------------------------------------------------------------------------------
# The logits are not needed once the log-probs are known, so the tile can hold exp(z − max) instead:
# the gradient is then one in-place scale and a scatter, with no second exp and no fp32 temporaries
# (the logprobs.py torch path rebuilds p from the logits in blocks: two more passes and a copy).
# Half-precision tiles keep the logprobs.py path: storing exp(z − max) in bf16 would round p twice.
def _softmax_in_place(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs ``[n]`` and Σ exp(z − max) ``[n]``; ``logits`` becomes exp(z − max). Every target is valid."""
    logits.sub_(logits.amax(dim=-1, keepdim=True))
    target_shifted = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    sum_exp = logits.exp_().sum(dim=-1)
    return target_shifted - sum_exp.log(), sum_exp


def _dlogits_in_place(exp_tile: torch.Tensor, targets: torch.Tensor, sum_exp: torch.Tensor, grad: torch.Tensor) -> None:
    """d/dz of Σ g·logp over the tile: g·(onehot − p) = g·onehot − (g / Σexp)·exp(z − max), in place."""
    exp_tile.mul_((-grad / sum_exp).to(exp_tile.dtype).unsqueeze(-1))
    rows = torch.arange(exp_tile.shape[0], device=exp_tile.device)
    exp_tile.index_put_((rows, targets), grad.to(exp_tile.dtype), accumulate=True)


# ----------------------------------------------------------------------------------------------
# The chunk loop: loss, metrics and (when asked) the gradients, in one pass
# ----------------------------------------------------------------------------------------------
class _ComputeHead:
    """The LM head in the compute dtype: the weight as given, cast once per call, or cast per vocab block.

    An fp32 master weight with half-precision hidden states is cast to the compute dtype here, so
    the GEMMs are the half-precision GEMMs of a half-precision weight. ``block_rows`` casts
    ``block_rows`` vocab rows at a time at each use (the projection and ``dlogits @ W``: twice per
    chunk) instead of holding a 2·V·H-byte copy for the call; the bias is small and cast once.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype, block_rows: int | None):
        self.master, self.dtype = weight, dtype
        by_blocks = weight.dtype != dtype and block_rows is not None and block_rows < weight.shape[0]
        self.block_rows = block_rows if by_blocks else None
        self.weight = weight.to(dtype) if self.block_rows is None else None
        self.bias = bias.to(dtype) if bias is not None else None

    def _blocks(self) -> range:
        return range(0, self.master.shape[0], self.block_rows)

    def project(self, h: torch.Tensor, out: torch.Tensor) -> None:
        """``out = h @ W^T + b`` in the compute dtype."""
        if self.weight is not None:
            _project(h, self.weight, self.bias, out)
            return
        for start in self._blocks():
            stop = start + self.block_rows
            block = self.master[start:stop].to(self.dtype)
            _project(h, block, None if self.bias is None else self.bias[start:stop], out[:, start:stop])

    def input_grad(self, dlogits: torch.Tensor) -> torch.Tensor:
        """``dlogits @ W`` in the compute dtype; by blocks, the partial products are summed in fp32."""
        if self.weight is not None:
            return dlogits @ self.weight
        total = torch.zeros((dlogits.shape[0], self.master.shape[1]), device=dlogits.device, dtype=torch.float32)
        for start in self._blocks():
            stop = start + self.block_rows
            total += dlogits[:, start:stop] @ self.master[start:stop].to(self.dtype)
        return total.to(self.dtype)


@dataclass
class _Pass:
    loss: torch.Tensor
    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    sums: torch.Tensor  # [S] policy sums
    grad_hidden: torch.Tensor | None
    grad_weight: torch.Tensor | None
    grad_bias: torch.Tensor | None


@dataclass(frozen=True)
class _Call:
    """Everything of one call besides the differentiable inputs: the plan, the table row and its options."""

    plan: PairChunkPlan
    row: PairwiseLoss
    params: dict[str, float]
    ref_sums: torch.Tensor | None
    weights: torch.Tensor | None
    normalizer: float
    ignore_index: int
    use_kernel: bool
    cast_block_rows: int | None


def _run(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    call: _Call,
    need: tuple[bool, bool, bool],
) -> _Pass:
    """``hidden`` ``[S·T, H]``, ``targets`` ``[S·T]``; ``need``: gradients of hidden, weight, bias."""
    plan, row, params, ref_sums, weights = call.plan, call.row, call.params, call.ref_sums, call.weights
    normalizer, ignore_index, use_kernel, cast_block_rows = (
        call.normalizer,
        call.ignore_index,
        call.use_kernel,
        call.cast_block_rows,
    )
    device, vocab = hidden.device, weight.shape[0]
    acc_dtype = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    head = _ComputeHead(weight, bias, hidden.dtype, cast_block_rows)
    need_hidden, need_weight, need_bias = need
    any_grad = any(need)
    sums = torch.zeros(plan.n_seqs, device=device, dtype=acc_dtype)
    losses = torch.empty(plan.n_pairs, device=device, dtype=acc_dtype)
    chosen_rewards = torch.empty_like(losses)
    rejected_rewards = torch.empty_like(losses)
    grad_hidden = torch.zeros_like(hidden) if need_hidden else None
    grad_weight = None
    # Several chunks, or an fp32 master weight (the buffer is then the gradient it gets back): an
    # accumulation buffer, made at its first use, after the first tile's softmax temporaries are gone.
    weight_buffer = need_weight and (len(plan.chunks) > 1 or weight.dtype != hidden.dtype)
    grad_bias = torch.zeros(vocab, device=device, dtype=acc_dtype) if need_bias else None
    terms_of = _pair_terms_triton if use_kernel else _pair_terms_torch
    in_place = not use_kernel and hidden.dtype in (torch.float32, torch.float64)
    errors = []
    tile = torch.empty((plan.max_rows, vocab), device=device, dtype=hidden.dtype)
    for chunk in plan.chunks:
        h = hidden.index_select(0, chunk.rows)
        t = targets.index_select(0, chunk.rows)
        logits = tile[: chunk.rows.shape[0]]
        head.project(h, logits)
        if in_place:
            logps, sum_exp = _softmax_in_place(logits, t)
        else:
            logps, row_max, log_norm, _ = selective_log_softmax_fwd(
                logits, t, temperature=1.0, ignore_index=ignore_index, return_entropy=False, use_kernel=use_kernel
            )
        # Sums over the padded [s, T] rows (zeros off the completion), the reduction of sequence_logps_ref.
        dense = torch.zeros((chunk.sequences.shape[0], plan.seq_len), device=device, dtype=acc_dtype)
        dense.index_put_((chunk.segments, chunk.columns), logps.to(acc_dtype))
        chunk_sums = dense.sum(dim=-1)
        sums.index_copy_(0, chunk.sequences, chunk_sums)
        chunk_ref = ref_sums.index_select(0, chunk.sequences) if ref_sums is not None else None
        chunk_weights = weights.index_select(0, chunk.pairs) if weights is not None else None
        terms = terms_of(row, chunk_sums, chunk.counts, chunk_ref, chunk, chunk_weights, params)
        losses.index_copy_(0, chunk.pairs, terms.losses.to(acc_dtype))
        chosen_rewards.index_copy_(0, chunk.pairs, terms.chosen_rewards.to(acc_dtype))
        rejected_rewards.index_copy_(0, chunk.pairs, terms.rejected_rewards.to(acc_dtype))
        if terms.errors is not None:
            errors.append(terms.errors)
        if not any_grad:
            continue
        # d loss / d logp of each token: its sequence's g over the normaliser; then dlogits over the tile.
        token_grad = (terms.seq_grad.to(acc_dtype) / normalizer).index_select(0, chunk.segments)
        if in_place:
            _dlogits_in_place(logits, t, sum_exp, token_grad)
            dlogits = logits
        else:
            dlogits = selective_log_softmax_bwd(
                logits,
                t,
                row_max,
                log_norm,
                None,
                token_grad,
                None,
                temperature=1.0,
                ignore_index=ignore_index,
                use_kernel=use_kernel,
                out=logits,
            )
        if grad_hidden is not None:
            grad_hidden.index_add_(0, chunk.rows, head.input_grad(dlogits))
        if need_weight:
            if not weight_buffer:  # the only chunk of a weight in the compute dtype: one GEMM, one rounding
                grad_weight = dlogits.t() @ h
            else:
                if grad_weight is None:
                    grad_weight = torch.zeros(weight.shape, device=device, dtype=_accumulator_dtype(hidden.dtype))
                _accumulate_weight_grad(grad_weight, dlogits, h, round_product=len(plan.chunks) == 1)
        if grad_bias is not None:
            grad_bias += dlogits.sum(dim=0, dtype=acc_dtype)
    _check_finite(sums, ref_sums, errors)
    weighted = losses if weights is None else losses * weights.to(losses.dtype)
    loss = weighted.sum() / normalizer
    return _Pass(
        loss,
        losses,
        chosen_rewards,
        rejected_rewards,
        sums,
        grad_hidden,
        _weight_grad_out(grad_weight, weight.dtype),
        grad_bias.to(bias.dtype) if grad_bias is not None else None,
    )


_CAST_BYTES = 16 * 1024 * 1024
"""Most bytes of the fp32 copy of dlogits columns that a CPU weight-gradient GEMM makes at a time."""


def _accumulate_weight_grad(
    accumulator: torch.Tensor, dlogits: torch.Tensor, h: torch.Tensor, *, round_product: bool = False
) -> None:
    """``accumulator += dlogits^T @ h``, the fp32 accumulator of half-precision products.

    Where the GEMM writes fp32 from half-precision inputs (CUDA), one call. Elsewhere (CPU) by vocab
    blocks of at most ``_CAST_BYTES``: with ``round_product`` (the only chunk of an fp32 master
    weight) the half-precision GEMM rounded once, which is the gradient a half-precision weight gets
    and autograd would cast to fp32, at the half-precision GEMM's speed; otherwise (several chunks,
    whose sum must not round per chunk) the product of upcast inputs, an fp32 GEMM.
    """
    if accumulator.dtype == dlogits.dtype or (accumulator.is_cuda and _mm_out_dtype_works(accumulator.device)):
        _add_weight_grad(accumulator, dlogits, h)
        return
    h_up = h if round_product else h.to(accumulator.dtype)
    step = max(1, _CAST_BYTES // (max(1, dlogits.shape[0]) * accumulator.element_size()))
    for start in range(0, dlogits.shape[1], step):
        columns = dlogits[:, start : start + step]
        if round_product:
            accumulator[start : start + step].add_(columns.t() @ h_up)
        else:
            accumulator[start : start + step].addmm_(columns.t().to(accumulator.dtype), h_up)


def _weight_grad_out(grad_weight: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """The weight gradient in the weight's dtype: the fp32 buffer itself for an fp32 (master) weight, else cast once."""
    return grad_weight.to(dtype) if grad_weight is not None else None


def _check_finite(sums: torch.Tensor, ref_sums: torch.Tensor | None, errors: list[torch.Tensor]) -> None:
    """A non-finite sequence sum (policy or reference) or a flagged pair kernel: one read, or deferred."""
    bad = ~torch.isfinite(sums).all()
    if ref_sums is not None:
        bad = bad | ~torch.isfinite(ref_sums).all()
    for counters in errors:
        bad = bad | (counters != 0).any()

    def explain() -> str:
        where = "the reference sums" if ref_sums is not None and not bool(torch.isfinite(ref_sums).all()) else None
        where = where or "the policy's log-probs"
        return f"{_FN}: {where} are not finite for a sequence of the batch (nan or inf in the inputs)."

    if deferring():  # a training step: read with the step's metrics
        defer(bad, explain)
    elif bool(bad):
        raise ValueError(explain())


class FusedLinearPairwiseFunction(torch.autograd.Function):
    """Loss and gradients in the forward; the backward scales the stored gradients by grad_output."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, call):
        out = _run(hidden, weight, bias, targets, call, tuple(bool(n) for n in ctx.needs_input_grad[:3]))
        ctx.grads = [out.grad_hidden, out.grad_weight, out.grad_bias]
        ctx.mark_non_differentiable(out.losses, out.chosen_rewards, out.rejected_rewards, out.sums)
        return out.loss, out.losses, out.chosen_rewards, out.rejected_rewards, out.sums

    @staticmethod
    def backward(ctx, grad_loss, *unused):
        if ctx.grads is None:
            raise RuntimeError(f"{_FN}: the stored gradients were already used; backward runs once per forward.")
        grads, ctx.grads = ctx.grads, None
        scaled = []
        for grad in grads:
            if grad is None or grad_loss is None:
                scaled.append(None)
            else:
                # In place: the stored gradient is this call's to hand out (no second V×H buffer).
                scaled.append(grad.mul_(grad_loss.to(grad.dtype)))
        return (*scaled, None, None)


# ----------------------------------------------------------------------------------------------
# Public function
# ----------------------------------------------------------------------------------------------
def _check_inputs(hidden, targets, chosen_index, rejected_index, row, ref_sequence_logps, pair_weights) -> None:
    if hidden.dim() != 3 or targets.shape != hidden.shape[:2]:
        raise ValueError(
            f"{_FN}: hidden must be [S, T, H] and targets [S, T]; got {tuple(hidden.shape)} and {tuple(targets.shape)}."
        )
    n_seqs = hidden.shape[0]
    for name, index in (("chosen_index", chosen_index), ("rejected_index", rejected_index)):
        if index.dim() != 1 or index.is_floating_point() or index.dtype == torch.bool:
            raise ValueError(f"{_FN}: {name} must be a 1-D integer tensor; got {tuple(index.shape)} {index.dtype}.")
    if chosen_index.shape != rejected_index.shape or chosen_index.shape[0] == 0:
        raise ValueError(
            f"{_FN}: chosen_index and rejected_index need one entry per pair and at least one pair; "
            f"got {chosen_index.shape[0]} and {rejected_index.shape[0]}."
        )
    if row.needs_ref and ref_sequence_logps is None:
        raise ValueError(
            f"{_FN}: {row.method} needs the reference's summed completion log-probs (ref_sequence_logps [S])."
        )
    if not row.needs_ref and ref_sequence_logps is not None:
        raise ValueError(f"{_FN}: {row.method} is reference-free; do not pass ref_sequence_logps.")
    if ref_sequence_logps is not None and (
        ref_sequence_logps.shape != (n_seqs,) or not ref_sequence_logps.is_floating_point()
    ):
        raise ValueError(
            f"{_FN}: ref_sequence_logps must be a floating [S] = [{n_seqs}] tensor; "
            f"got {tuple(ref_sequence_logps.shape)}."
        )
    if pair_weights is not None and pair_weights.shape != chosen_index.shape:
        raise ValueError(
            f"{_FN}: pair_weights must be [P] = [{chosen_index.shape[0]}]; got {tuple(pair_weights.shape)}."
        )


def _check_master_weight(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, cast_block_rows: int | None
) -> None:
    """Mixed precision: an fp32 weight (and bias) with bf16/fp16 hidden states; anything else shares one dtype."""
    if cast_block_rows is not None and (not isinstance(cast_block_rows, int) or cast_block_rows < 1):
        raise ValueError(f"{_FN}: cast_block_rows must be a positive int or None; got {cast_block_rows!r}.")
    if not isinstance(hidden, torch.Tensor) or not isinstance(weight, torch.Tensor) or weight.dtype == hidden.dtype:
        return  # the shared checks name what is wrong
    master = weight.dtype == torch.float32 and hidden.dtype in (torch.bfloat16, torch.float16)
    if not master or (bias is not None and bias.dtype != weight.dtype):
        raise ValueError(
            f"{_FN}: weight and bias must be in hidden's dtype, or float32 master copies with bf16/fp16 hidden; "
            f"got hidden {hidden.dtype}, weight {weight.dtype}, bias {None if bias is None else bias.dtype}."
        )


def _stand_in(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A ``dtype`` tensor of ``tensor``'s shape and device with one element of storage (for shape checks)."""
    return torch.zeros((), device=tensor.device, dtype=dtype).expand(tensor.shape)


def _row_params(loss: str, beta: float, gamma: float, label_smoothing: float) -> tuple[PairwiseLoss, dict[str, float]]:
    if loss not in _ROWS:
        raise ValueError(f"{_FN}: loss must be one of {', '.join(LOSSES)}; got {loss!r}.")
    row, names = _ROWS[loss]
    check_beta(row.method, beta)
    if "label_smoothing" in names:
        check_label_smoothing(row.method, label_smoothing)
    elif label_smoothing:
        raise ValueError(f"{_FN}: {loss} has no label smoothing; got label_smoothing={label_smoothing}.")
    if "gamma" in names and not math.isfinite(gamma):
        raise ValueError(f"{_FN}: gamma must be finite; got {gamma}.")
    values = {"beta": float(beta), "gamma": float(gamma), "label_smoothing": float(label_smoothing)}
    return row, {name: values[name] for name in names}


def fused_linear_pairwise_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    chosen_index: torch.Tensor,
    rejected_index: torch.Tensor,
    *,
    loss: str = "dpo",
    beta: float = 0.1,
    gamma: float = 1.0,
    label_smoothing: float = 0.0,
    ref_sequence_logps: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    pair_weights: torch.Tensor | None = None,
    normalizer: float | None = None,
    pairs_per_chunk: int | None = None,
    budget_bytes: int = DEFAULT_CHUNK_BYTES,
    ignore_index: int = -100,
    backend: str = "auto",
    plan: PairChunkPlan | None = None,
    cast_block_rows: int | None = None,
) -> FusedPairwiseOutput:
    """A pairwise preference loss straight from the LM head's input, logits computed once per token.

    Arguments:
        hidden: ``[S, T, H]`` last hidden states of S sequences (fp32/bf16/fp16; fp64 on torch).
        weight: ``[V, H]`` LM-head weight; ``bias`` optional ``[V]``; both in hidden's dtype, or
            both float32 with bf16/fp16 hidden (the fp32 master weight under mixed precision):
            then each use is cast to hidden's dtype inside, the GEMMs run in that dtype, and the
            weight's gradient is the fp32 accumulation buffer itself.
        targets: ``[S, T]`` next-token ids; ``ignore_index`` outside the completion.
        chosen_index, rejected_index: ``[P]`` the sequences of each pair.
        loss: ``dpo`` (with ``label_smoothing``: cDPO), ``ipo``, ``hinge`` or ``simpo`` (with
            ``gamma``, ``label_smoothing``): the rows of ``prefcore.kernels.pairwise_losses``.
        ref_sequence_logps: ``[S]`` reference sums over the same tokens; required by dpo, ipo and
            hinge, refused by simpo.
        pair_weights: optional ``[P]`` per-pair weights; ``normalizer``: the loss is
            Σ w_p·loss_p / normalizer (default P, the mean; the trainer passes the step's pairs).
        pairs_per_chunk, budget_bytes: chunking (pairs per chunk; byte budget of the logits tile).
        backend: ``auto`` (Triton on CUDA), ``triton`` or ``torch``: the log-softmax and pair kernels.
        plan: a ``plan_pair_chunks`` result built from host tensors (saves its host read on a GPU).
        cast_block_rows: with an fp32 master weight, cast this many vocab rows at a time at each
            use (two passes over the weight per chunk) instead of one 2·V·H-byte copy per call.
    Returns:
        FusedPairwiseOutput; ``loss`` is differentiable w.r.t. hidden, weight and bias, with the
        gradients formed here, so no logits are computed again in the backward.
    """
    _check_master_weight(hidden, weight, bias, cast_block_rows)
    if weight.dtype != hidden.dtype:  # the shared checks expect one dtype: check shapes on storage-free stand-ins
        weight_like = _stand_in(weight, hidden.dtype)
        bias_like = None if bias is None else _stand_in(bias, hidden.dtype)
        _validate(hidden, weight_like, targets, bias_like, 1.0, ignore_index, None, _FN)
    else:
        _validate(hidden, weight, targets, bias, 1.0, ignore_index, None, _FN)
    row, params = _row_params(loss, beta, gamma, label_smoothing)
    _check_inputs(hidden, targets, chosen_index, rejected_index, row, ref_sequence_logps, pair_weights)
    run_triton = use_triton(hidden, backend)
    if run_triton and hidden.dtype == torch.float64:
        raise ValueError(f"{_FN}: the Triton kernels take float32/bfloat16/float16; use backend='torch' for float64.")
    n_seqs, seq_len, width = hidden.shape
    if plan is None:  # one host read of the mask and the pairs (free on CPU)
        plan = plan_pair_chunks(
            targets != ignore_index,
            chosen_index,
            rejected_index,
            vocab=weight.shape[0],
            dtype=hidden.dtype,
            budget_bytes=budget_bytes,
            pairs_per_chunk=pairs_per_chunk,
        ).to(hidden.device)
    elif (plan.n_seqs, plan.seq_len, plan.n_pairs) != (n_seqs, seq_len, chosen_index.shape[0]):
        raise ValueError(f"{_FN}: the plan was built for another batch shape.")
    acc_dtype = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    ref_sums = ref_sequence_logps.detach().to(acc_dtype) if ref_sequence_logps is not None else None
    weights = pair_weights.detach().to(acc_dtype) if pair_weights is not None else None
    normalizer = float(normalizer) if normalizer is not None else float(chosen_index.shape[0])
    call = _Call(
        plan, row, params, ref_sums, weights, max(normalizer, 1.0), int(ignore_index), run_triton, cast_block_rows
    )
    inputs = (hidden.reshape(-1, width), weight, bias, targets.reshape(-1))
    with torch.autocast(hidden.device.type, enabled=False):  # the inputs' dtype is the compute dtype
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (hidden, weight, bias)):
            value, losses, chosen_rewards, rejected_rewards, sums = FusedLinearPairwiseFunction.apply(*inputs, call)
        else:
            out = _run(*inputs, call, need=(False, False, False))
            value, losses, chosen_rewards, rejected_rewards, sums = (
                out.loss,
                out.losses,
                out.chosen_rewards,
                out.rejected_rewards,
                out.sums,
            )
    return FusedPairwiseOutput(
        value, losses, chosen_rewards, rejected_rewards, sums[chosen_index], sums[rejected_index]
    )


# ----------------------------------------------------------------------------------------------
# Reference
# ----------------------------------------------------------------------------------------------
def fused_linear_pairwise_loss_ref(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    chosen_index: torch.Tensor,
    rejected_index: torch.Tensor,
    *,
    loss: str = "dpo",
    beta: float = 0.1,
    gamma: float = 1.0,
    label_smoothing: float = 0.0,
    ref_sequence_logps: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    ignore_index: int = -100,
) -> PreferenceLossOutput:
    """Unchunked spec: full ``[S, T, V]`` logits (``fused_linear_logprobs_ref``), then the row's ``*_loss_ref``.

    The mean over pairs (no weights); differentiable by plain autograd. For tests and as the
    naive baseline.
    """
    _, params = _row_params(loss, beta, gamma, label_smoothing)
    logps = fused_linear_logprobs_ref(hidden, weight, targets, bias, ignore_index=ignore_index, upcast=True)
    mask = targets != ignore_index
    reference = {"ref_sequence_logps": ref_sequence_logps} if ref_sequence_logps is not None else {}
    return _REFS[loss](logps, mask, chosen_index, rejected_index, **reference, **params)

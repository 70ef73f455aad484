# Sequence-level preference losses over per-token log-probs: DPO (with cDPO label smoothing),
# IPO, hinge (SLiC-HF), SimPO, ORPO, KTO and the NLL term of RPO-style mixes.
#
# Inputs: policy log-probs [S, T] (fp32 typical; bf16/fp16 accepted), a loss mask [S, T] (bool or
# 0/1), and either pairs (chosen_index, rejected_index) [P] into S or, for KTO, labels [S].
# Reference log-probs come per token ([S, T], reduced with the same mask) or as cached
# per-sequence sums [S]. All arithmetic is fp32; counts are exact integers.
#
# Three kernels, two launches per forward and one per backward:
#   (a) _sequence_sums_kernel: one program per sequence, blocked over T: masked sums of the policy
#       (and per-token reference) log-probs and token counts;
#   (b) _pair_loss_kernel: one program for all pairs (P is small, and one program makes the mean
#       a deterministic sum): per-pair loss, implicit rewards, d loss / d sequence sum, input checks;
#   (c) _token_grad_kernel: the backward, grad[s, t] = mask[s, t] * upstream * d loss / d sum[s];
#       nothing larger than the [S, T] gradient itself is allocated.
# Requires Triton >= 3.0 for the kernels; without Triton the references below are the only path.

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from prefcore.kernels._dispatch import HAS_TRITON
from prefcore.kernels._dispatch import use_triton

if HAS_TRITON:
    import triton
    import triton.language as tl

__all__ = [
    "PreferenceLossOutput",
    "dpo_loss",
    "dpo_loss_ref",
    "hinge_loss",
    "hinge_loss_ref",
    "ipo_loss",
    "ipo_loss_ref",
    "kto_loss",
    "kto_loss_ref",
    "nll_loss",
    "nll_loss_ref",
    "orpo_loss",
    "orpo_loss_ref",
    "sequence_logps",
    "sequence_logps_ref",
    "simpo_loss",
    "simpo_loss_ref",
]

# Loss ids, the pair kernel's constexpr switch (its branches are labelled with these names).
_DPO = 0
_IPO = 1
_HINGE = 2
_SIMPO = 3
_ORPO = 4
_NLL = 5
_KTO = 6
# Losses that average log-probs per token (a sequence with no tokens in the mask is an error there)
# and losses that need a reference model.
_NEEDS_MEAN = frozenset({_IPO, _SIMPO, _ORPO})
_NEEDS_REF = frozenset({_DPO, _IPO, _HINGE, _KTO})

# The pair kernel counts seven kinds of bad input; the host reads the counters once and, only if
# one is nonzero, works out which sequence is to blame.
_N_ERRORS = 7

_KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class PreferenceLossOutput:
    """What every preference loss returns.

    ``loss`` is the scalar to optimise and always equals ``losses.mean()``. ``losses`` holds each
    pair's share ([P]; for KTO one entry per sequence, [S]) and is differentiable too, so
    per-pair weights can be applied to it. Rewards and the extra ORPO fields are detached
    logging values.
    """

    loss: torch.Tensor
    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    nll_loss: torch.Tensor | None = None
    odds_ratio_loss: torch.Tensor | None = None
    log_odds: torch.Tensor | None = None


def _device_ctx(tensor: torch.Tensor) -> contextlib.AbstractContextManager:
    # Triton launches on the current CUDA device; a tensor on cuda:1 needs that device current.
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------
# Triton kernels
# ---------------------------------------------------------------------------------------------

if HAS_TRITON:

    @triton.jit
    def _sequence_sums_kernel(
        # data ptrs
        logps_ptr,  # [S, T] policy log-probs
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
    def _log_sigmoid(z):
        # min(z, 0) - log(1 + exp(-|z|)) never overflows; for |z| > 17 the log term is below
        # fp32 resolution of the result anyway.
        return tl.minimum(z, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(z)))

    @triton.jit
    def _sigmoid(z):
        e = tl.exp(-tl.abs(z))
        return tl.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))

    @triton.jit
    def _expm1(x):
        # Kahan's expm1: exact-to-a-few-ulps without libdevice (which the interpreter lacks).
        u = tl.exp(x)
        log_u = tl.log(u)
        safe_log_u = tl.where(log_u == 0.0, 1.0, log_u)
        return tl.where(u == 1.0, x, tl.where(u == 0.0, -1.0, (u - 1.0) * x / safe_log_u))

    @triton.jit
    def _log1mexp(a):
        # log(1 - exp(a)) for a < 0, branching at -ln 2 as in Mächler's note, with Kahan's log1p.
        minus_e = -tl.exp(a)
        one_plus = 1.0 + minus_e
        safe_den = tl.where(one_plus == 1.0, 1.0, one_plus - 1.0)
        log1p_minus_e = tl.where(one_plus == 1.0, minus_e, tl.log(one_plus) * minus_e / safe_den)
        return tl.where(a < -0.6931471805599453, log1p_minus_e, tl.log(-_expm1(a)))

    @triton.jit
    def _nonfinite(x):
        return (x != x) | (tl.abs(x) == float("inf"))

    @triton.jit
    def _pair_loss_kernel(
        # data ptrs
        sums_ptr,  # [S] fp32 policy sequence sums
        counts_ptr,  # [S] int64 token counts
        ref_sums_ptr,  # [S] fp32 reference sequence sums; read only if HAS_REF
        chosen_index_ptr,  # [P] int; unused by KTO
        rejected_index_ptr,  # [P] int; unused by KTO
        labels_ptr,  # [S] uint8 desirable flags; KTO only
        reference_point_ptr,  # [1] fp32 KTO reference point z0; KTO only
        loss_ptr,  # [1] fp32 out: mean of losses
        losses_ptr,  # [P] fp32 out (KTO: [S])
        chosen_rewards_ptr,  # [P] fp32 out (KTO: rewards of every sequence, [S])
        rejected_rewards_ptr,  # [P] fp32 out; unused by KTO
        dchosen_ptr,  # [P] fp32 out: d losses[p] / d chosen sum (KTO: / d sum of sequence p)
        drejected_ptr,  # [P] fp32 out: d losses[p] / d rejected sum
        seq_grad_ptr,  # [S] fp32 out: d loss / d sum[s]
        log_odds_ptr,  # [P] fp32 out; ORPO only
        terms_ptr,  # [2] fp32 out: ORPO's NLL and odds-ratio terms
        errors_ptr,  # [7] int32 out: bad indices, non-finite policy / reference sums, empty sequences
        #              where a mean is needed, ORPO means >= 0, no chosen tokens, bad reference point
        # shapes
        n_seqs,
        n_items,
        # meta
        beta,
        label_smoothing,
        gamma,
        desirable_weight,
        undesirable_weight,
        LOSS: tl.constexpr,  # _DPO, _IPO, _HINGE, _SIMPO, _ORPO, _NLL or _KTO
        HAS_REF: tl.constexpr,
        UNPAIRED: tl.constexpr,  # KTO: item p is sequence p, no rejected side
        NEEDS_MEAN: tl.constexpr,  # IPO, SimPO, ORPO divide by token counts
        HAS_NLL: tl.constexpr,  # ORPO, NLL: a token average over all chosen tokens
        BLOCK_P: tl.constexpr,
    ):
        # `* 1.0` rather than .to(): Triton turns an int argument equal to 1 into a constexpr.
        items = n_items * 1.0
        inv_items = 1.0 / items
        n_bad_index = 0
        n_policy_nonfinite = 0
        n_ref_nonfinite = 0
        n_empty = 0
        n_orpo_bad = 0

        # NLL terms (ORPO, NLL) average over every chosen token of the batch, so that total has
        # to exist before the first pair's share can be written.
        chosen_tokens = 0.0
        if HAS_NLL:
            for start in range(0, n_items, BLOCK_P):
                offs = start + tl.arange(0, BLOCK_P)
                valid = offs < n_items
                ci = tl.load(chosen_index_ptr + offs, mask=valid, other=0).to(tl.int64)
                ok = valid & (ci >= 0) & (ci < n_seqs)
                chosen_tokens += tl.sum(tl.load(counts_ptr + ci, mask=ok, other=0).to(tl.float32), axis=0)
        safe_chosen_tokens = tl.maximum(chosen_tokens, 1.0)
        if UNPAIRED:
            reference_point = tl.load(reference_point_ptr).to(tl.float32)

        # seq_grad is zeroed here instead of by a memset launch; the barrier orders these stores
        # before the atomics below, which any thread of this program may issue.
        for start in range(0, n_seqs, BLOCK_P):
            offs = start + tl.arange(0, BLOCK_P)
            tl.store(seq_grad_ptr + offs, tl.zeros([BLOCK_P], dtype=tl.float32), mask=offs < n_seqs)
        tl.debug_barrier()

        loss_total = 0.0
        nll_total = 0.0
        odds_ratio_total = 0.0
        for start in range(0, n_items, BLOCK_P):
            offs = start + tl.arange(0, BLOCK_P)
            valid = offs < n_items
            if UNPAIRED:
                ci = offs.to(tl.int64)
                ok = valid
            else:
                ci = tl.load(chosen_index_ptr + offs, mask=valid, other=0).to(tl.int64)
                ri = tl.load(rejected_index_ptr + offs, mask=valid, other=0).to(tl.int64)
                index_ok = (ci >= 0) & (ci < n_seqs) & (ri >= 0) & (ri < n_seqs)
                n_bad_index += tl.sum((valid & ~index_ok).to(tl.int32), axis=0)
                ok = valid & index_ok
            chosen = tl.load(sums_ptr + ci, mask=ok, other=0.0)
            n_chosen = tl.load(counts_ptr + ci, mask=ok, other=1).to(tl.float32)
            n_policy_nonfinite += tl.sum((ok & _nonfinite(chosen)).to(tl.int32), axis=0)
            if HAS_REF:
                ref_chosen = tl.load(ref_sums_ptr + ci, mask=ok, other=0.0).to(tl.float32)
                n_ref_nonfinite += tl.sum((ok & _nonfinite(ref_chosen)).to(tl.int32), axis=0)
            else:
                ref_chosen = tl.zeros_like(chosen)
            if not UNPAIRED:
                rejected = tl.load(sums_ptr + ri, mask=ok, other=0.0)
                n_rejected = tl.load(counts_ptr + ri, mask=ok, other=1).to(tl.float32)
                n_policy_nonfinite += tl.sum((ok & _nonfinite(rejected)).to(tl.int32), axis=0)
                if HAS_REF:
                    ref_rejected = tl.load(ref_sums_ptr + ri, mask=ok, other=0.0).to(tl.float32)
                    n_ref_nonfinite += tl.sum((ok & _nonfinite(ref_rejected)).to(tl.int32), axis=0)
                else:
                    ref_rejected = tl.zeros_like(rejected)
            if NEEDS_MEAN:
                n_empty += tl.sum((ok & ((n_chosen == 0.0) | (n_rejected == 0.0))).to(tl.int32), axis=0)
                # Division by a zero count only happens on inputs the host rejects afterwards.
                n_chosen = tl.maximum(n_chosen, 1.0)
                n_rejected = tl.maximum(n_rejected, 1.0)

            if LOSS == 0:  # _DPO
                # DPO with cDPO label smoothing ε.
                chosen_ratio = chosen - ref_chosen
                rejected_ratio = rejected - ref_rejected
                z = beta * (chosen_ratio - rejected_ratio)
                loss = -(1.0 - label_smoothing) * _log_sigmoid(z) - label_smoothing * _log_sigmoid(-z)
                dloss_dz = -(1.0 - label_smoothing) * _sigmoid(-z) + label_smoothing * _sigmoid(z)
                dchosen = beta * dloss_dz
                drejected = -dchosen
                chosen_reward = beta * chosen_ratio
                rejected_reward = beta * rejected_ratio
            elif LOSS == 1:  # _IPO
                # IPO on per-token average log-ratios, as TRL does.
                chosen_ratio = chosen - ref_chosen
                rejected_ratio = rejected - ref_rejected
                margin = chosen_ratio / n_chosen - rejected_ratio / n_rejected - 0.5 / beta
                loss = margin * margin
                dchosen = 2.0 * margin / n_chosen
                drejected = -2.0 * margin / n_rejected
                chosen_reward = beta * chosen_ratio
                rejected_reward = beta * rejected_ratio
            elif LOSS == 2:  # _HINGE
                # Hinge / SLiC-HF; the kink gets gradient 0 like torch.relu.
                chosen_ratio = chosen - ref_chosen
                rejected_ratio = rejected - ref_rejected
                slack = 1.0 - beta * (chosen_ratio - rejected_ratio)
                loss = tl.maximum(slack, 0.0)
                dchosen = tl.where(slack > 0.0, -beta, 0.0)
                drejected = -dchosen
                chosen_reward = beta * chosen_ratio
                rejected_reward = beta * rejected_ratio
            elif LOSS == 3:  # _SIMPO
                # SimPO: reference-free, length-normalised, margin γ, label smoothing as in TRL's CPO.
                chosen_mean = chosen / n_chosen
                rejected_mean = rejected / n_rejected
                z = beta * (chosen_mean - rejected_mean) - gamma
                loss = -(1.0 - label_smoothing) * _log_sigmoid(z) - label_smoothing * _log_sigmoid(-z)
                dloss_dz = -(1.0 - label_smoothing) * _sigmoid(-z) + label_smoothing * _sigmoid(z)
                dchosen = beta * dloss_dz / n_chosen
                drejected = -beta * dloss_dz / n_rejected
                chosen_reward = beta * chosen_mean
                rejected_reward = beta * rejected_mean
            elif LOSS == 4:  # _ORPO
                # ORPO: NLL of the chosen tokens + β · -log σ(log odds ratio of the mean log-probs).
                chosen_mean = chosen / n_chosen
                rejected_mean = rejected / n_rejected
                n_orpo_bad += tl.sum((ok & ((chosen_mean >= 0.0) | (rejected_mean >= 0.0))).to(tl.int32), axis=0)
                # Lanes past P (and rejected inputs) get a harmless stand-in so no log(0) is evaluated.
                chosen_mean = tl.where(ok, tl.minimum(chosen_mean, -1e-30), -1.0)
                rejected_mean = tl.where(ok, tl.minimum(rejected_mean, -1e-30), -1.0)
                log_odds = (chosen_mean - rejected_mean) - (_log1mexp(chosen_mean) - _log1mexp(rejected_mean))
                odds_ratio = -beta * _log_sigmoid(log_odds)
                dodds_ratio = -beta * _sigmoid(-log_odds)
                # d log_odds / d mean = 1 / (1 - exp(mean)) = -1 / expm1(mean), for either sign.
                nll_share = -chosen * items / safe_chosen_tokens
                loss = nll_share + odds_ratio
                dchosen = -items / safe_chosen_tokens - dodds_ratio / (_expm1(chosen_mean) * n_chosen)
                drejected = dodds_ratio / (_expm1(rejected_mean) * n_rejected)
                chosen_reward = beta * chosen_mean
                rejected_reward = beta * rejected_mean
                tl.store(log_odds_ptr + offs, log_odds, mask=valid)
                nll_total += tl.sum(tl.where(ok, -chosen, 0.0), axis=0)
                odds_ratio_total += tl.sum(tl.where(ok, odds_ratio, 0.0), axis=0)
            elif LOSS == 5:  # _NLL
                # NLL of the chosen tokens, averaged over all of them; rewards are the plain sums.
                loss = -chosen * items / safe_chosen_tokens
                dchosen = tl.zeros_like(chosen) - items / safe_chosen_tokens
                drejected = tl.zeros_like(chosen)
                chosen_reward = chosen
                rejected_reward = rejected
            else:  # _KTO
                # KTO: 1 - σ(β(z - z0)) for desirable, 1 - σ(β(z0 - z)) for undesirable sequences.
                desirable = tl.load(labels_ptr + ci, mask=ok, other=0) != 0
                ratio = chosen - ref_chosen
                sign = tl.where(desirable, 1.0, -1.0)
                weight = tl.where(desirable, desirable_weight, undesirable_weight)
                x = beta * sign * (ratio - reference_point)
                sig = _sigmoid(x)
                loss = weight * (1.0 - sig)
                dchosen = -weight * beta * sign * sig * _sigmoid(-x)
                chosen_reward = beta * ratio

            loss = tl.where(ok, loss, 0.0)
            dchosen = tl.where(ok, dchosen, 0.0)
            tl.store(losses_ptr + offs, loss, mask=valid)
            tl.store(chosen_rewards_ptr + offs, chosen_reward, mask=valid)
            tl.store(dchosen_ptr + offs, dchosen, mask=valid)
            # Atomics because a sequence may appear in several pairs (one chosen vs many rejected).
            tl.atomic_add(seq_grad_ptr + ci, dchosen * inv_items, mask=ok)
            if not UNPAIRED:
                drejected = tl.where(ok, drejected, 0.0)
                tl.store(rejected_rewards_ptr + offs, rejected_reward, mask=valid)
                tl.store(drejected_ptr + offs, drejected, mask=valid)
                tl.atomic_add(seq_grad_ptr + ri, drejected * inv_items, mask=ok)
            loss_total += tl.sum(loss, axis=0)

        tl.store(loss_ptr, loss_total * inv_items)
        if LOSS == 4:  # _ORPO
            tl.store(terms_ptr, nll_total / safe_chosen_tokens)
            tl.store(terms_ptr + 1, odds_ratio_total * inv_items)
        tl.store(errors_ptr + 0, n_bad_index)
        tl.store(errors_ptr + 1, n_policy_nonfinite)
        tl.store(errors_ptr + 2, n_ref_nonfinite)
        tl.store(errors_ptr + 3, n_empty)
        tl.store(errors_ptr + 4, n_orpo_bad)
        if HAS_NLL:
            tl.store(errors_ptr + 5, (chosen_tokens == 0.0).to(tl.int32))
        else:
            tl.store(errors_ptr + 5, 0)
        if UNPAIRED:
            tl.store(errors_ptr + 6, _nonfinite(reference_point).to(tl.int32))
        else:
            tl.store(errors_ptr + 6, 0)

    @triton.jit
    def _token_grad_kernel(
        # data ptrs
        seq_grad_ptr,  # [S] fp32 d loss / d sum[s]
        scale_ptr,  # [1] upstream gradient of the scalar loss; read only if HAS_SCALE
        mask_ptr,  # [S, T]
        grad_ptr,  # [S, T] out, dtype of the policy log-probs
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
        seq_grad = tl.load(seq_grad_ptr + row)
        if HAS_SCALE:
            # The upstream gradient stays on the device: reading it here avoids a host sync.
            seq_grad = seq_grad * tl.load(scale_ptr).to(tl.float32)
        keep = tl.load(mask_ptr + row * stride_mask_row + cols, mask=in_row, other=0) != 0
        grad = tl.where(keep, seq_grad, 0.0)
        tl.store(grad_ptr + row * stride_grad_row + cols, grad.to(grad_ptr.dtype.element_ty), mask=in_row)


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------

_MAX_BLOCK_T = 1024
_MAX_BLOCK_P = 1024


def _kernel_mask(mask: torch.Tensor) -> torch.Tensor:
    # Bool pointers do not load reliably across Triton versions; uint8 is the same bytes.
    if mask.stride(-1) != 1:
        mask = mask.contiguous()
    return mask.view(torch.uint8) if mask.dtype == torch.bool else mask


def sequence_sums_fwd(
    logps: torch.Tensor, mask: torch.Tensor, ref_logps: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Kernel (a): masked per-sequence sums (fp32), counts (int64) and optional reference sums."""
    assert logps.dim() == 2 and logps.stride(-1) == 1, "launcher expects [S, T] with unit column stride"
    assert mask.shape == logps.shape and mask.stride(-1) == 1, "launcher expects a matching mask"
    n_seqs, seq_len = logps.shape
    sums = torch.empty(n_seqs, dtype=torch.float32, device=logps.device)
    counts = torch.empty(n_seqs, dtype=torch.int64, device=logps.device)
    ref_sums = torch.empty(n_seqs, dtype=torch.float32, device=logps.device) if ref_logps is not None else None
    if n_seqs == 0:
        return sums, counts, ref_sums
    block_t = min(_MAX_BLOCK_T, triton.next_power_of_2(max(seq_len, 1)))
    with _device_ctx(logps):
        _sequence_sums_kernel[(n_seqs,)](
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


class _PairOutputs(NamedTuple):
    loss: torch.Tensor
    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    dchosen: torch.Tensor
    drejected: torch.Tensor
    seq_grad: torch.Tensor
    log_odds: torch.Tensor
    terms: torch.Tensor
    errors: torch.Tensor


def pair_loss_fwd(
    loss_id: int,
    sums: torch.Tensor,
    counts: torch.Tensor,
    ref_sums: torch.Tensor | None,
    chosen_index: torch.Tensor | None,
    rejected_index: torch.Tensor | None,
    labels: torch.Tensor | None,
    reference_point: torch.Tensor | None,
    params: dict[str, float],
) -> _PairOutputs:
    """Kernel (b): one program over every pair (or every sequence for KTO)."""
    n_seqs = sums.shape[0]
    n_items = n_seqs if loss_id == _KTO else chosen_index.shape[0]
    device = sums.device
    # Every buffer is written by the kernel, so none needs a memset launch. Separate buffers:
    # outputs handed to autograd must not share storage with saved tensors. log_odds and terms
    # are only written (and only read) for ORPO.
    loss = torch.empty((), dtype=torch.float32, device=device)
    losses = torch.empty(n_items, dtype=torch.float32, device=device)
    chosen_rewards = torch.empty(n_items, dtype=torch.float32, device=device)
    rejected_rewards = torch.empty(n_items, dtype=torch.float32, device=device)
    log_odds = torch.empty(n_items, dtype=torch.float32, device=device)
    terms = torch.empty(2, dtype=torch.float32, device=device)
    dchosen, drejected = torch.empty(2, n_items, dtype=torch.float32, device=device).unbind(0)
    seq_grad = torch.empty(n_seqs, dtype=torch.float32, device=device)
    errors = torch.empty(_N_ERRORS, dtype=torch.int32, device=device)
    block_p = min(_MAX_BLOCK_P, triton.next_power_of_2(n_items))
    with _device_ctx(sums):
        _pair_loss_kernel[(1,)](
            sums,  # data ptrs
            counts,
            ref_sums if ref_sums is not None else sums,
            chosen_index if chosen_index is not None else counts,
            rejected_index if rejected_index is not None else counts,
            labels if labels is not None else counts,
            reference_point if reference_point is not None else sums,
            loss,
            losses,
            chosen_rewards,
            rejected_rewards,
            dchosen,
            drejected,
            seq_grad,
            log_odds,
            terms,
            errors,
            n_seqs,  # shapes
            n_items,
            params.get("beta", 1.0),  # meta
            params.get("label_smoothing", 0.0),
            params.get("gamma", 0.0),
            params.get("desirable_weight", 1.0),
            params.get("undesirable_weight", 1.0),
            LOSS=loss_id,
            HAS_REF=ref_sums is not None,
            UNPAIRED=loss_id == _KTO,
            NEEDS_MEAN=loss_id in _NEEDS_MEAN,
            HAS_NLL=loss_id in (_ORPO, _NLL),
            BLOCK_P=block_p,
            num_warps=4,
        )
    return _PairOutputs(
        loss, losses, chosen_rewards, rejected_rewards, dchosen, drejected, seq_grad, log_odds, terms, errors
    )


def token_grad_bwd(
    seq_grad: torch.Tensor, scale: torch.Tensor | None, mask: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """Kernel (c): grad[s, t] = mask[s, t] · scale · seq_grad[s], written in ``dtype``."""
    n_seqs, seq_len = mask.shape
    grad = torch.empty(n_seqs, seq_len, dtype=dtype, device=mask.device)
    if grad.numel() == 0:
        return grad
    block_t = min(_MAX_BLOCK_T, triton.next_power_of_2(seq_len))
    grid = (n_seqs, triton.cdiv(seq_len, block_t))
    with _device_ctx(mask):
        _token_grad_kernel[grid](
            seq_grad,  # data ptrs
            scale if scale is not None else seq_grad,
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
# Input checks shared by the kernel path and the references
# ---------------------------------------------------------------------------------------------


def _check_tensors(
    method: str,
    loss_id: int,
    policy_logps: torch.Tensor,
    mask: torch.Tensor,
    chosen_index: torch.Tensor | None,
    rejected_index: torch.Tensor | None,
    labels: torch.Tensor | None,
    ref_logps: torch.Tensor | None,
    ref_sequence_logps: torch.Tensor | None,
) -> None:
    """Every check that needs no device sync: ranks, shapes, dtypes and which inputs are given."""
    if policy_logps.dim() != 2 or not policy_logps.is_floating_point():
        raise ValueError(
            f"{method}: policy_logps must be a floating [S, T] tensor (S sequences padded to T tokens). "
            f"Got shape {tuple(policy_logps.shape)}, dtype {policy_logps.dtype}."
        )
    n_seqs = policy_logps.shape[0]
    if mask.shape != policy_logps.shape:
        raise ValueError(
            f"{method}: mask must have the shape of policy_logps {tuple(policy_logps.shape)}. Got {tuple(mask.shape)}."
        )
    if mask.is_complex():
        raise ValueError(f"{method}: mask must be bool or 0/1 numbers. Got {mask.dtype}.")
    if loss_id == _KTO:
        if labels is None or labels.shape != (n_seqs,):
            got = None if labels is None else tuple(labels.shape)
            raise ValueError(f"{method}: labels must be a [S] = [{n_seqs}] tensor (True = desirable). Got {got}.")
    else:
        for name, index in (("chosen_index", chosen_index), ("rejected_index", rejected_index)):
            if index.dim() != 1 or index.is_floating_point() or index.dtype == torch.bool:
                raise ValueError(
                    f"{method}: {name} must be a 1-D integer tensor of sequence indices. "
                    f"Got shape {tuple(index.shape)}, dtype {index.dtype}."
                )
        if chosen_index.shape != rejected_index.shape:
            raise ValueError(
                f"{method}: chosen_index and rejected_index must have the same length (one entry per pair). "
                f"Got {chosen_index.shape[0]} and {rejected_index.shape[0]}."
            )
        if chosen_index.shape[0] == 0:
            raise ValueError(f"{method}: there are no pairs; chosen_index and rejected_index are empty.")
    if n_seqs == 0:
        raise ValueError(f"{method}: policy_logps holds no sequences.")
    others = {
        "mask": mask,
        "chosen_index": chosen_index,
        "rejected_index": rejected_index,
        "labels": labels,
        "ref_logps": ref_logps,
        "ref_sequence_logps": ref_sequence_logps,
    }
    for name, tensor in others.items():
        if tensor is not None and tensor.device != policy_logps.device:
            raise ValueError(
                f"{method}: {name} is on {tensor.device} but policy_logps is on {policy_logps.device}; "
                f"move every input to one device."
            )
    if ref_logps is not None and ref_sequence_logps is not None:
        raise ValueError(
            f"{method}: pass the reference either per token (ref_logps) or per sequence (ref_sequence_logps), not both."
        )
    needs_ref = loss_id in _NEEDS_REF
    has_ref = ref_logps is not None or ref_sequence_logps is not None
    if needs_ref and not has_ref:
        raise ValueError(
            f"{method}: this loss needs reference log-probs. Pass ref_logps [S, T] or the cached "
            f"per-sequence sums ref_sequence_logps [S]."
        )
    if not needs_ref and has_ref:
        raise ValueError(f"{method}: this loss is reference-free; do not pass ref_logps or ref_sequence_logps.")
    if ref_logps is not None and ref_logps.shape != policy_logps.shape:
        raise ValueError(
            f"{method}: ref_logps must have the shape of policy_logps {tuple(policy_logps.shape)}. "
            f"Got {tuple(ref_logps.shape)}."
        )
    if ref_logps is not None and not ref_logps.is_floating_point():
        raise ValueError(f"{method}: ref_logps must be floating point. Got {ref_logps.dtype}.")
    if ref_sequence_logps is not None and (
        ref_sequence_logps.shape != (n_seqs,) or not ref_sequence_logps.is_floating_point()
    ):
        raise ValueError(
            f"{method}: ref_sequence_logps must be a floating [S] = [{n_seqs}] tensor of masked sums. "
            f"Got shape {tuple(ref_sequence_logps.shape)}, dtype {ref_sequence_logps.dtype}."
        )


def _check_beta(method: str, beta: float) -> None:
    if not (math.isfinite(beta) and beta > 0.0):
        raise ValueError(f"{method}: beta must be a finite number > 0. Got {beta}.")


def _check_label_smoothing(method: str, label_smoothing: float) -> None:
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(
            f"{method}: label_smoothing is the assumed fraction of flipped labels and must lie in [0, 0.5). "
            f"Got {label_smoothing}."
        )


def _diagnose(
    method: str,
    loss_id: int,
    policy_logps: torch.Tensor,
    sums: torch.Tensor,
    counts: torch.Tensor,
    ref_sums: torch.Tensor | None,
    ref_name: str,
    chosen_index: torch.Tensor | None,
    rejected_index: torch.Tensor | None,
    reference_point: torch.Tensor | None,
) -> str | None:
    """Name the first problem in the data, or return None. Costs host syncs: error path and refs only."""
    n_seqs = sums.shape[0]
    if loss_id == _KTO:
        roles = [("sequence", torch.arange(n_seqs, device=sums.device))]
    else:
        roles = [("chosen", chosen_index), ("rejected", rejected_index)]
        for role, index in roles:
            bad = ((index < 0) | (index >= n_seqs)).nonzero()
            if bad.numel():
                pair = int(bad[0])
                return (
                    f"{method}: {role}_index[{pair}] = {int(index[pair])} is out of range for "
                    f"{n_seqs} sequences (policy_logps has shape {tuple(policy_logps.shape)})."
                )

    def where(role: str, pair: int, seq: int) -> str:
        return f"sequence {seq}" if loss_id == _KTO else f"sequence {seq} ({role} in pair {pair})"

    for role, index in roles:
        bad = (~torch.isfinite(sums[index])).nonzero()
        if bad.numel():
            pair = int(bad[0])
            seq = int(index[pair])
            return (
                f"{method}: policy_logps has a nan or inf among the masked-in tokens of {where(role, pair, seq)}. "
                f"Mask out padding and check the log-prob computation."
            )
    if ref_sums is not None:
        for role, index in roles:
            bad = (~torch.isfinite(ref_sums[index])).nonzero()
            if bad.numel():
                pair = int(bad[0])
                seq = int(index[pair])
                detail = "has a nan or inf among its masked-in tokens" if ref_name == "ref_logps" else "is not finite"
                return f"{method}: {ref_name} of {where(role, pair, seq)} {detail}."
    if loss_id in _NEEDS_MEAN:
        for role, index in roles:
            bad = (counts[index] == 0).nonzero()
            if bad.numel():
                pair = int(bad[0])
                seq = int(index[pair])
                return (
                    f"{method}: {where(role, pair, seq)} has no tokens in the loss mask, but this loss "
                    f"averages log-probs per token. Drop the pair or fix its mask."
                )
    if loss_id == _ORPO:
        for role, index in roles:
            means = sums[index] / counts[index]
            bad = (means >= 0).nonzero()
            if bad.numel():
                pair = int(bad[0])
                seq = int(index[pair])
                return (
                    f"{method}: {where(role, pair, seq)} has a mean log-prob of {float(means[pair]):.3g}; "
                    f"ORPO's odds p / (1 - p) need log-probs < 0."
                )
    if loss_id in (_ORPO, _NLL) and int(counts[chosen_index].sum()) == 0:
        return f"{method}: the chosen sequences have no tokens in the loss mask; the NLL term averages over them."
    if reference_point is not None and not bool(torch.isfinite(reference_point).all()):
        return f"{method}: kl_reference_point is not finite ({float(reference_point.reshape(-1)[0])})."
    return None


# ---------------------------------------------------------------------------------------------
# Autograd functions
# ---------------------------------------------------------------------------------------------


class SequenceLossFunction(torch.autograd.Function):
    """Kernels (a) + (b) forward, kernel (c) backward; the loss's gradient is formed in the forward."""

    @staticmethod
    def forward(
        ctx,
        policy_logps: torch.Tensor,
        mask: torch.Tensor,
        ref_logps: torch.Tensor | None,
        ref_sequence_logps: torch.Tensor | None,
        chosen_index: torch.Tensor | None,
        rejected_index: torch.Tensor | None,
        labels: torch.Tensor | None,
        reference_point: torch.Tensor | None,
        loss_id: int,
        params: dict[str, float],
        method: str,
    ):
        logps = policy_logps if policy_logps.stride(-1) == 1 else policy_logps.contiguous()
        kernel_mask = _kernel_mask(mask)
        if ref_logps is not None and ref_logps.stride(-1) != 1:
            ref_logps = ref_logps.contiguous()
        sums, counts, ref_sums = sequence_sums_fwd(logps, kernel_mask, ref_logps)
        ref_name = "ref_logps"
        if ref_sequence_logps is not None:
            ref_sums = ref_sequence_logps.detach().to(torch.float32).contiguous()
            ref_name = "ref_sequence_logps"
        out = pair_loss_fwd(
            loss_id, sums, counts, ref_sums, chosen_index, rejected_index, labels, reference_point, params
        )
        # The single host sync of the call: seven error counters.
        if any(out.errors.tolist()):
            message = _diagnose(
                method,
                loss_id,
                policy_logps,
                sums,
                counts,
                ref_sums,
                ref_name,
                chosen_index,
                rejected_index,
                reference_point,
            )
            raise ValueError(message or f"{method}: invalid inputs (error counters {out.errors.tolist()}).")
        ctx.save_for_backward(kernel_mask, out.seq_grad, out.dchosen, out.drejected, chosen_index, rejected_index)
        ctx.loss_id = loss_id
        ctx.grad_dtype = policy_logps.dtype
        ctx.set_materialize_grads(False)
        ctx.mark_non_differentiable(out.chosen_rewards, out.rejected_rewards, out.log_odds, out.terms)
        return out.loss, out.losses, out.chosen_rewards, out.rejected_rewards, out.log_odds, out.terms

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss, grad_losses, *unused_grads):
        kernel_mask, seq_grad, dchosen, drejected, chosen_index, rejected_index = ctx.saved_tensors
        grad_policy = None
        if ctx.needs_input_grad[0] and (grad_loss is not None or grad_losses is not None):
            scale = grad_loss
            if grad_losses is not None:
                # Per-pair upstream gradients (weighted pairs) need a scatter onto sequences; the
                # common scalar-loss case skips it and scales inside the kernel instead.
                seq_grad = seq_grad * grad_loss if grad_loss is not None else torch.zeros_like(seq_grad)
                if ctx.loss_id == _KTO:
                    seq_grad = seq_grad + grad_losses * dchosen
                else:
                    seq_grad = seq_grad.index_add(0, chosen_index, grad_losses * dchosen)
                    seq_grad = seq_grad.index_add(0, rejected_index, grad_losses * drejected)
                scale = None
            grad_policy = token_grad_bwd(seq_grad, scale, kernel_mask, ctx.grad_dtype)
        return (
            grad_policy,
            None,  # mask
            None,  # ref_logps: reference log-probs are constants of the loss
            None,  # ref_sequence_logps
            None,  # chosen_index
            None,  # rejected_index
            None,  # labels
            None,  # reference_point
            None,  # loss_id
            None,  # params
            None,  # method
        )


class SequenceLogpsFunction(torch.autograd.Function):
    """Masked per-sequence sums or means with a broadcast backward."""

    @staticmethod
    def forward(ctx, token_logps: torch.Tensor, mask: torch.Tensor, average: bool):
        logps = token_logps if token_logps.stride(-1) == 1 else token_logps.contiguous()
        kernel_mask = _kernel_mask(mask)
        sums, counts, _ = sequence_sums_fwd(logps, kernel_mask, None)
        if average:
            empty = (counts == 0).nonzero()
            if empty.numel():
                raise ValueError(
                    f"sequence_logps: sequence {int(empty[0])} has no tokens in the mask, so it has no "
                    f"average log-prob. Use average=False or fix the mask."
                )
            values = sums / counts
        else:
            values = sums
        ctx.save_for_backward(kernel_mask, counts)
        ctx.average = average
        ctx.grad_dtype = token_logps.dtype
        ctx.mark_non_differentiable(counts)
        return values, counts

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_values, grad_counts):
        kernel_mask, counts = ctx.saved_tensors
        grad_logps = None
        if ctx.needs_input_grad[0]:
            seq_grad = grad_values.float()
            if ctx.average:
                seq_grad = seq_grad / counts
            grad_logps = token_grad_bwd(seq_grad.contiguous(), None, kernel_mask, ctx.grad_dtype)
        return (
            grad_logps,
            None,  # mask
            None,  # average
        )


# ---------------------------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------------------------


def _reference_point_tensor(kl_reference_point: float | torch.Tensor, device: torch.device) -> torch.Tensor:
    if isinstance(kl_reference_point, torch.Tensor):
        if kl_reference_point.numel() != 1:
            raise ValueError(
                f"kto_loss: kl_reference_point must be a float or a 0-d tensor. "
                f"Got shape {tuple(kl_reference_point.shape)}."
            )
        return kl_reference_point.detach().to(device=device, dtype=torch.float32).reshape(1)
    if not math.isfinite(kl_reference_point):
        raise ValueError(f"kto_loss: kl_reference_point is not finite ({kl_reference_point}).")
    return torch.full((1,), float(kl_reference_point), dtype=torch.float32, device=device)


def _run_kernels(
    method: str,
    loss_id: int,
    policy_logps: torch.Tensor,
    mask: torch.Tensor,
    chosen_index: torch.Tensor | None,
    rejected_index: torch.Tensor | None,
    labels: torch.Tensor | None,
    ref_logps: torch.Tensor | None,
    ref_sequence_logps: torch.Tensor | None,
    reference_point: torch.Tensor | None,
    params: dict[str, float],
) -> PreferenceLossOutput:
    for name, tensor in (("policy_logps", policy_logps), ("ref_logps", ref_logps)):
        if tensor is not None and tensor.dtype not in _KERNEL_DTYPES:
            raise ValueError(
                f"{method}: the Triton kernels take fp32/bf16/fp16 {name}. Got {tensor.dtype}; "
                f"use backend='torch' for it."
            )
    if labels is not None:
        labels = labels.contiguous()
        labels = labels.view(torch.uint8) if labels.dtype == torch.bool else labels
    loss, losses, chosen_rewards, rejected_rewards, log_odds, terms = SequenceLossFunction.apply(
        policy_logps,
        mask,
        ref_logps.detach() if ref_logps is not None else None,
        ref_sequence_logps,
        chosen_index.contiguous() if chosen_index is not None else None,
        rejected_index.contiguous() if rejected_index is not None else None,
        labels,
        reference_point,
        loss_id,
        params,
        method,
    )
    if loss_id == _KTO:
        desirable = labels != 0
        return PreferenceLossOutput(loss, losses, chosen_rewards[desirable], chosen_rewards[~desirable])
    if loss_id == _ORPO:
        return PreferenceLossOutput(
            loss,
            losses,
            chosen_rewards,
            rejected_rewards,
            nll_loss=terms[0],
            odds_ratio_loss=terms[1],
            log_odds=log_odds,
        )
    return PreferenceLossOutput(loss, losses, chosen_rewards, rejected_rewards)


_SHARED_ARGS = """
        policy_logps: [S, T] per-token policy log-probs of S sequences padded to T (fp32).
        mask: [S, T] bool or 0/1; the tokens that belong to the loss (completion tokens).
        chosen_index: [P] long, the preferred sequence of each pair (rows of policy_logps).
        rejected_index: [P] long, the dispreferred sequence of each pair.
        ref_logps: [S, T] reference log-probs, reduced with the same mask; or
        ref_sequence_logps: [S] cached reference sums over the same mask (give one of the two).
        backend: "auto" (CUDA → Triton, CPU → reference), "triton" or "torch"."""


def _pairwise_loss(
    method: str,
    loss_id: int,
    reference_fn: Callable[..., PreferenceLossOutput],
    policy_logps: torch.Tensor,
    mask: torch.Tensor,
    chosen_index: torch.Tensor,
    rejected_index: torch.Tensor,
    ref_logps: torch.Tensor | None,
    ref_sequence_logps: torch.Tensor | None,
    backend: str,
    params: dict[str, float],
) -> PreferenceLossOutput:
    """Checked inputs → the torch reference (CPU) or the Triton kernels (CUDA): one maths, tested equal."""
    _check_tensors(
        method, loss_id, policy_logps, mask, chosen_index, rejected_index, None, ref_logps, ref_sequence_logps
    )
    if not use_triton(policy_logps, backend):
        return reference_fn(
            policy_logps,
            mask,
            chosen_index,
            rejected_index,
            ref_logps=ref_logps,
            ref_sequence_logps=ref_sequence_logps,
            **params,
        )
    return _run_kernels(
        method,
        loss_id,
        policy_logps,
        mask,
        chosen_index,
        rejected_index,
        None,
        ref_logps,
        ref_sequence_logps,
        None,
        params,
    )


def dpo_loss(
    policy_logps: torch.Tensor,
    mask: torch.Tensor,
    chosen_index: torch.Tensor,
    rejected_index: torch.Tensor,
    *,
    ref_logps: torch.Tensor | None = None,
    ref_sequence_logps: torch.Tensor | None = None,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    backend: str = "auto",
) -> PreferenceLossOutput:
    """DPO sigmoid loss with optional cDPO label smoothing; formula in :func:`dpo_loss_ref`.

    Arguments:{shared}
        beta: β, the strength of the implicit KL constraint (TRL default 0.1).
        label_smoothing: ε in [0, 0.5), the assumed fraction of flipped preference labels.
    Returns:
        PreferenceLossOutput; rewards are β·(log π_θ - log π_ref) summed over each sequence.
    """
    method = "dpo_loss"
    _check_beta(method, beta)
    _check_label_smoothing(method, label_smoothing)
    return _pairwise_loss(
        method,
        _DPO,
        dpo_loss_ref,
        policy_logps,
        mask,
        chosen_index,
        rejected_index,
        ref_logps,
        ref_sequence_logps,
        backend,
        {"beta": beta, "label_smoothing": label_smoothing},
    )


def ipo_loss(
    policy_logps: torch.Tensor,
    mask: torch.Tensor,
    chosen_index: torch.Tensor,
    rejected_index: torch.Tensor,
    *,
    ref_logps: torch.Tensor | None = None,
    ref_sequence_logps: torch.Tensor | None = None,
    beta: float = 0.1,
    backend: str = "auto",
) -> PreferenceLossOutput:
    """IPO squared loss on per-token average log-ratios; formula in :func:`ipo_loss_ref`.

    Arguments:{shared}
        beta: τ of the IPO paper; the target margin is 1 / (2τ).
    Returns:
        PreferenceLossOutput; rewards are β·(log π_θ - log π_ref) summed over each sequence (as TRL logs).
    """
    method = "ipo_loss"
    _check_beta(method, beta)
    return _pairwise_loss(
        method,
        _IPO,
        ipo_loss_ref,
        policy_logps,
        mask,
        chosen_index,
        rejected_index,
        ref_logps,
        ref_sequence_logps,
        backend,
        {"beta": beta},
    )


def hinge_loss(
    policy_logps: torch.Tensor,
    mask: torch.Tensor,
    chosen_index: torch.Tensor,
    rejected_index: torch.Tensor,
    *,
    ref_logps: torch.Tensor | None = None,
    ref_sequence_logps: torch.Tensor | None = None,
    beta: float = 0.1,
    backend: str = "auto",
) -> PreferenceLossOutput:
    """Hinge (SLiC-HF calibration) loss on the DPO log-ratio margin; formula in :func:`hinge_loss_ref`.

    Arguments:{shared}
        beta: β; the hinge asks for a log-ratio margin of at least 1/β.
    Returns:
        PreferenceLossOutput; rewards are β·(log π_θ - log π_ref) summed over each sequence.
    """
    method = "hinge_loss"
    _check_beta(method, beta)
    return _pairwise_loss(
        method,
        _HINGE,
        hinge_loss_ref,
        policy_logps,
        mask,
        chosen_index,
        rejected_index,
        ref_logps,
        ref_sequence_logps,
        backend,
        {"beta": beta},
    )


def simpo_loss(
    policy_logps: torch.Tensor,
    mask: torch.Tensor,
    chosen_index: torch.Tensor,
    rejected_index: torch.Tensor,
    *,
    ref_logps: torch.Tensor | None = None,
    ref_sequence_logps: torch.Tensor | None = None,
    beta: float = 2.0,
    gamma: float = 1.0,
    label_smoothing: float = 0.0,
    backend: str = "auto",
) -> PreferenceLossOutput:
    """SimPO: reference-free, length-normalised, with a target margin; formula in :func:`simpo_loss_ref`.

    Arguments:{shared}
        The reference arguments exist for a uniform signature and must stay None.
        beta: β, scale of the average log-prob reward (the paper tunes 2.0-2.5).
        gamma: γ, the target reward margin (the paper's γ/β ≈ 0.5; TRL's ``simpo_gamma``).
        label_smoothing: ε in [0, 0.5), as in TRL's CPO trainer.
    Returns:
        PreferenceLossOutput; rewards are β · mean token log-prob of each sequence.
    """
    method = "simpo_loss"
    _check_beta(method, beta)
    _check_label_smoothing(method, label_smoothing)
    if not math.isfinite(gamma):
        raise ValueError(f"{method}: gamma must be finite. Got {gamma}.")
    return _pairwise_loss(
        method,
        _SIMPO,
        simpo_loss_ref,
        policy_logps,
        mask,
        chosen_index,
        rejected_index,
        ref_logps,
        ref_sequence_logps,
        backend,
        {"beta": beta, "gamma": gamma, "label_smoothing": label_smoothing},
    )


def orpo_loss(
    policy_logps: torch.Tensor,
    mask: torch.Tensor,
    chosen_index: torch.Tensor,
    rejected_index: torch.Tensor,
    *,
    ref_logps: torch.Tensor | None = None,
    ref_sequence_logps: torch.Tensor | None = None,
    beta: float = 0.1,
    backend: str = "auto",
) -> PreferenceLossOutput:
    """ORPO: chosen NLL plus a weighted odds-ratio term; formula in :func:`orpo_loss_ref`.

    Arguments:{shared}
        The reference arguments exist for a uniform signature and must stay None.
        beta: λ of the ORPO paper (TRL calls it beta), the weight of the odds-ratio term.
    Returns:
        PreferenceLossOutput with ``nll_loss`` and ``odds_ratio_loss`` (the two detached terms of
        ``loss``) and the per-pair ``log_odds``; rewards are β · mean token log-prob.
    """
    method = "orpo_loss"
    _check_beta(method, beta)
    return _pairwise_loss(
        method,
        _ORPO,
        orpo_loss_ref,
        policy_logps,
        mask,
        chosen_index,
        rejected_index,
        ref_logps,
        ref_sequence_logps,
        backend,
        {"beta": beta},
    )


def nll_loss(
    policy_logps: torch.Tensor,
    mask: torch.Tensor,
    chosen_index: torch.Tensor,
    rejected_index: torch.Tensor,
    *,
    ref_logps: torch.Tensor | None = None,
    ref_sequence_logps: torch.Tensor | None = None,
    backend: str = "auto",
) -> PreferenceLossOutput:
    """Token-averaged NLL of the chosen sequences (the RPO / TRL ``sft`` term); see :func:`nll_loss_ref`.

    Arguments:{shared}
        The reference arguments exist for a uniform signature and must stay None; rejected_index
        is checked but does not enter the loss.
    Returns:
        PreferenceLossOutput; ``losses[p]`` is pair p's share of the token average and the rewards
        are the plain sequence log-likelihoods (NLL has no implicit reward).
    """
    method = "nll_loss"
    return _pairwise_loss(
        method,
        _NLL,
        nll_loss_ref,
        policy_logps,
        mask,
        chosen_index,
        rejected_index,
        ref_logps,
        ref_sequence_logps,
        backend,
        {},
    )


def kto_loss(
    policy_logps: torch.Tensor,
    mask: torch.Tensor,
    labels: torch.Tensor,
    *,
    ref_logps: torch.Tensor | None = None,
    ref_sequence_logps: torch.Tensor | None = None,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    kl_reference_point: float | torch.Tensor = 0.0,
    backend: str = "auto",
) -> PreferenceLossOutput:
    """KTO on unpaired sequences; formula in :func:`kto_loss_ref`.

    Arguments:
        policy_logps: [S, T] per-token policy log-probs of S sequences padded to T (fp32).
        mask: [S, T] bool or 0/1; the tokens that belong to the loss.
        labels: [S] bool, True for a desirable sequence, False for an undesirable one.
        ref_logps / ref_sequence_logps: the reference, per token [S, T] or as cached sums [S].
        beta: β (TRL default 0.1).
        desirable_weight, undesirable_weight: λ_D and λ_U of the paper.
        kl_reference_point: z0, float or 0-d tensor computed by the caller and used detached;
            TRL uses mean(log π_θ - log π_ref) over mismatched (prompt, completion) pairs,
            clamped at 0.
        backend: "auto" (CUDA → Triton, CPU → reference), "triton" or "torch".
    Returns:
        PreferenceLossOutput with ``losses`` [S] in sequence order; chosen/rejected rewards are
        β·(log π_θ - log π_ref) of the desirable / undesirable sequences, in sequence order.
    """
    method = "kto_loss"
    _check_tensors(method, _KTO, policy_logps, mask, None, None, labels, ref_logps, ref_sequence_logps)
    _check_beta(method, beta)
    for name, weight in (("desirable_weight", desirable_weight), ("undesirable_weight", undesirable_weight)):
        if not (math.isfinite(weight) and weight >= 0.0):
            raise ValueError(f"{method}: {name} must be a finite number ≥ 0. Got {weight}.")
    reference_point = _reference_point_tensor(kl_reference_point, policy_logps.device)
    if not use_triton(policy_logps, backend):
        return kto_loss_ref(
            policy_logps,
            mask,
            labels,
            ref_logps=ref_logps,
            ref_sequence_logps=ref_sequence_logps,
            beta=beta,
            desirable_weight=desirable_weight,
            undesirable_weight=undesirable_weight,
            kl_reference_point=reference_point,
        )
    params = {"beta": beta, "desirable_weight": desirable_weight, "undesirable_weight": undesirable_weight}
    return _run_kernels(
        method, _KTO, policy_logps, mask, None, None, labels, ref_logps, ref_sequence_logps, reference_point, params
    )


for _fn in (dpo_loss, ipo_loss, hinge_loss, simpo_loss, orpo_loss, nll_loss):
    if _fn.__doc__:  # None under python -OO
        _fn.__doc__ = _fn.__doc__.replace("{shared}", _SHARED_ARGS)


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
    if token_logps.dtype not in _KERNEL_DTYPES:
        raise ValueError(f"sequence_logps: the Triton kernel takes fp32/bf16/fp16. Got {token_logps.dtype}.")
    return SequenceLogpsFunction.apply(token_logps, mask, average)


# ---------------------------------------------------------------------------------------------
# References: plain torch, the spec, the CPU path and the benchmark baseline
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
        empty = (counts == 0).nonzero()
        if empty.numel():
            raise ValueError(
                f"sequence_logps: sequence {int(empty[0])} has no tokens in the mask, so it has no "
                f"average log-prob. Use average=False or fix the mask."
            )
        return sums / counts, counts
    return sums, counts


class _Sequences(NamedTuple):
    """Per-pair views of the sequence sums: [P] each (for KTO, [S] in the chosen_* fields)."""

    chosen: torch.Tensor
    rejected: torch.Tensor | None
    ref_chosen: torch.Tensor | None
    ref_rejected: torch.Tensor | None
    chosen_count: torch.Tensor
    rejected_count: torch.Tensor | None


def _sequences_ref(
    method: str,
    loss_id: int,
    policy_logps: torch.Tensor,
    mask: torch.Tensor,
    chosen_index: torch.Tensor | None,
    rejected_index: torch.Tensor | None,
    ref_logps: torch.Tensor | None,
    ref_sequence_logps: torch.Tensor | None,
    reference_point: torch.Tensor | None = None,
) -> _Sequences:
    sums, counts = sequence_logps_ref(policy_logps, mask)
    ref_sums = None
    ref_name = "ref_logps"
    if ref_logps is not None:
        # The reference is a constant of every loss here.
        ref_sums = sequence_logps_ref(ref_logps.detach(), mask)[0]
    elif ref_sequence_logps is not None:
        ref_sums = ref_sequence_logps.detach().to(sums.dtype)
        ref_name = "ref_sequence_logps"
    message = _diagnose(
        method,
        loss_id,
        policy_logps,
        sums.detach(),
        counts,
        ref_sums,
        ref_name,
        chosen_index,
        rejected_index,
        reference_point,
    )
    if message is not None:
        raise ValueError(message)
    if loss_id == _KTO:
        return _Sequences(sums, None, ref_sums, None, counts.to(sums.dtype), None)
    return _Sequences(
        sums[chosen_index],
        sums[rejected_index],
        ref_sums[chosen_index] if ref_sums is not None else None,
        ref_sums[rejected_index] if ref_sums is not None else None,
        counts[chosen_index].to(sums.dtype),
        counts[rejected_index].to(sums.dtype),
    )


def dpo_loss_ref(
    policy_logps: torch.Tensor,
    mask: torch.Tensor,
    chosen_index: torch.Tensor,
    rejected_index: torch.Tensor,
    *,
    ref_logps: torch.Tensor | None = None,
    ref_sequence_logps: torch.Tensor | None = None,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> PreferenceLossOutput:
    """DPO (Rafailov et al. 2023, https://arxiv.org/abs/2305.18290) with cDPO smoothing.

    h = [log π_θ(y_w) - log π_ref(y_w)] - [log π_θ(y_l) - log π_ref(y_l)]
    loss = -(1 - ε) · log σ(β h) - ε · log σ(-β h)

    log π(y) is the masked sum of the sequence's token log-probs; y_w is the chosen and y_l the
    rejected sequence; β scales the implicit reward r = β (log π_θ - log π_ref); ε is the assumed
    label-flip rate of conservative DPO (Mitchell 2023,
    https://ericmitchell.ai/cdpo.pdf), TRL's ``sigmoid`` loss with ``label_smoothing``.
    """
    method = "dpo_loss"
    _check_tensors(method, _DPO, policy_logps, mask, chosen_index, rejected_index, None, ref_logps, ref_sequence_logps)
    _check_beta(method, beta)
    _check_label_smoothing(method, label_smoothing)
    seqs = _sequences_ref(method, _DPO, policy_logps, mask, chosen_index, rejected_index, ref_logps, ref_sequence_logps)
    chosen_ratio = seqs.chosen - seqs.ref_chosen
    rejected_ratio = seqs.rejected - seqs.ref_rejected
    z = beta * (chosen_ratio - rejected_ratio)
    losses = -(1.0 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)
    return PreferenceLossOutput(losses.mean(), losses, (beta * chosen_ratio).detach(), (beta * rejected_ratio).detach())


def ipo_loss_ref(
    policy_logps: torch.Tensor,
    mask: torch.Tensor,
    chosen_index: torch.Tensor,
    rejected_index: torch.Tensor,
    *,
    ref_logps: torch.Tensor | None = None,
    ref_sequence_logps: torch.Tensor | None = None,
    beta: float = 0.1,
) -> PreferenceLossOutput:
    """IPO (Azar et al. 2023, https://arxiv.org/abs/2310.12036, Eq. 17).

    h = [log π_θ(y_w) - log π_ref(y_w)] / |y_w| - [log π_θ(y_l) - log π_ref(y_l)] / |y_l|
    loss = (h - 1 / (2β))²

    |y| is the number of tokens in the mask: TRL divides each sequence's log-ratio by it,
    which is the normalisation the IPO authors used; β is the paper's τ. A pair with an empty
    sequence has no average and raises ValueError.
    """
    method = "ipo_loss"
    _check_tensors(method, _IPO, policy_logps, mask, chosen_index, rejected_index, None, ref_logps, ref_sequence_logps)
    _check_beta(method, beta)
    seqs = _sequences_ref(method, _IPO, policy_logps, mask, chosen_index, rejected_index, ref_logps, ref_sequence_logps)
    chosen_ratio = seqs.chosen - seqs.ref_chosen
    rejected_ratio = seqs.rejected - seqs.ref_rejected
    h = chosen_ratio / seqs.chosen_count - rejected_ratio / seqs.rejected_count
    losses = (h - 1.0 / (2.0 * beta)) ** 2
    return PreferenceLossOutput(losses.mean(), losses, (beta * chosen_ratio).detach(), (beta * rejected_ratio).detach())


def hinge_loss_ref(
    policy_logps: torch.Tensor,
    mask: torch.Tensor,
    chosen_index: torch.Tensor,
    rejected_index: torch.Tensor,
    *,
    ref_logps: torch.Tensor | None = None,
    ref_sequence_logps: torch.Tensor | None = None,
    beta: float = 0.1,
) -> PreferenceLossOutput:
    """Hinge loss of SLiC-HF (Zhao et al. 2023, https://arxiv.org/abs/2305.10425) on DPO's margin.

    h = [log π_θ(y_w) - log π_ref(y_w)] - [log π_θ(y_l) - log π_ref(y_l)]
    loss = max(0, 1 - β h)

    Sequence log-probs are masked sums; β = 1/δ sets the required margin δ (TRL's ``hinge``).
    """
    method = "hinge_loss"
    _check_tensors(
        method, _HINGE, policy_logps, mask, chosen_index, rejected_index, None, ref_logps, ref_sequence_logps
    )
    _check_beta(method, beta)
    seqs = _sequences_ref(
        method, _HINGE, policy_logps, mask, chosen_index, rejected_index, ref_logps, ref_sequence_logps
    )
    chosen_ratio = seqs.chosen - seqs.ref_chosen
    rejected_ratio = seqs.rejected - seqs.ref_rejected
    losses = torch.relu(1.0 - beta * (chosen_ratio - rejected_ratio))
    return PreferenceLossOutput(losses.mean(), losses, (beta * chosen_ratio).detach(), (beta * rejected_ratio).detach())


def simpo_loss_ref(
    policy_logps: torch.Tensor,
    mask: torch.Tensor,
    chosen_index: torch.Tensor,
    rejected_index: torch.Tensor,
    *,
    ref_logps: torch.Tensor | None = None,
    ref_sequence_logps: torch.Tensor | None = None,
    beta: float = 2.0,
    gamma: float = 1.0,
    label_smoothing: float = 0.0,
) -> PreferenceLossOutput:
    """SimPO (Meng et al. 2024, https://arxiv.org/abs/2405.14734, Eq. 6).

    z = β · (log π_θ(y_w) / |y_w| - log π_θ(y_l) / |y_l|) - γ
    loss = -(1 - ε) · log σ(z) - ε · log σ(-z)

    No reference model: the reward is β times the mean token log-prob over the |y| tokens in
    the mask; γ is the target reward margin; ε is label smoothing as in TRL's CPO trainer
    (``loss_type="simpo"``, where γ is ``simpo_gamma``).
    """
    method = "simpo_loss"
    _check_tensors(
        method, _SIMPO, policy_logps, mask, chosen_index, rejected_index, None, ref_logps, ref_sequence_logps
    )
    _check_beta(method, beta)
    _check_label_smoothing(method, label_smoothing)
    seqs = _sequences_ref(method, _SIMPO, policy_logps, mask, chosen_index, rejected_index, None, None)
    chosen_mean = seqs.chosen / seqs.chosen_count
    rejected_mean = seqs.rejected / seqs.rejected_count
    z = beta * (chosen_mean - rejected_mean) - gamma
    losses = -(1.0 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)
    return PreferenceLossOutput(losses.mean(), losses, (beta * chosen_mean).detach(), (beta * rejected_mean).detach())


def _log1mexp_ref(a: torch.Tensor) -> torch.Tensor:
    # log(1 - exp(a)) for a < 0 without cancellation (Mächler 2012, branch at -ln 2).
    return torch.where(a < -math.log(2.0), torch.log1p(-torch.exp(a)), torch.log(-torch.expm1(a)))


def orpo_loss_ref(
    policy_logps: torch.Tensor,
    mask: torch.Tensor,
    chosen_index: torch.Tensor,
    rejected_index: torch.Tensor,
    *,
    ref_logps: torch.Tensor | None = None,
    ref_sequence_logps: torch.Tensor | None = None,
    beta: float = 0.1,
) -> PreferenceLossOutput:
    """ORPO (Hong et al. 2024, https://arxiv.org/abs/2403.07691, Eqs. 4-7).

    a(y) = log π_θ(y) / |y|                          (mean token log-prob, so P(y) = exp a < 1)
    log_odds = [a(y_w) - a(y_l)] - [log(1 - e^a(y_w)) - log(1 - e^a(y_l))]
    L_SFT = -Σ_pairs log π_θ(y_w) / Σ_pairs |y_w|    (NLL averaged over every chosen token)
    loss = L_SFT + λ · mean_pairs[-log σ(log_odds)]

    λ is ``beta`` (TRL's name). TRL's ORPOTrainer takes the NLL over prompt + completion of the
    chosen sequences; here it covers the tokens of ``mask``, so pass a mask that includes the
    prompt to match it exactly. ``losses[p]`` is pair p's share so that loss = losses.mean().
    """
    method = "orpo_loss"
    _check_tensors(method, _ORPO, policy_logps, mask, chosen_index, rejected_index, None, ref_logps, ref_sequence_logps)
    _check_beta(method, beta)
    seqs = _sequences_ref(method, _ORPO, policy_logps, mask, chosen_index, rejected_index, None, None)
    n_pairs = chosen_index.shape[0]
    chosen_mean = seqs.chosen / seqs.chosen_count
    rejected_mean = seqs.rejected / seqs.rejected_count
    log_odds = (chosen_mean - rejected_mean) - (_log1mexp_ref(chosen_mean) - _log1mexp_ref(rejected_mean))
    odds_ratio = -beta * F.logsigmoid(log_odds)
    chosen_tokens = seqs.chosen_count.sum()
    nll_shares = -seqs.chosen * n_pairs / chosen_tokens
    losses = nll_shares + odds_ratio
    return PreferenceLossOutput(
        losses.mean(),
        losses,
        (beta * chosen_mean).detach(),
        (beta * rejected_mean).detach(),
        nll_loss=(-seqs.chosen.sum() / chosen_tokens).detach(),
        odds_ratio_loss=odds_ratio.mean().detach(),
        log_odds=log_odds.detach(),
    )


def nll_loss_ref(
    policy_logps: torch.Tensor,
    mask: torch.Tensor,
    chosen_index: torch.Tensor,
    rejected_index: torch.Tensor,
    *,
    ref_logps: torch.Tensor | None = None,
    ref_sequence_logps: torch.Tensor | None = None,
) -> PreferenceLossOutput:
    """NLL of the chosen sequences averaged over all their tokens (RPO, Pang et al. 2024,
    https://arxiv.org/abs/2404.19733; TRL's DPO ``sft`` loss type).

    loss = -Σ_pairs log π_θ(y_w) / Σ_pairs |y_w|

    A token average over the whole batch, not a mean of per-sequence means; ``losses[p]`` =
    -log π_θ(y_w,p) · P / Σ|y_w| is pair p's share so that loss = losses.mean().
    """
    method = "nll_loss"
    _check_tensors(method, _NLL, policy_logps, mask, chosen_index, rejected_index, None, ref_logps, ref_sequence_logps)
    seqs = _sequences_ref(method, _NLL, policy_logps, mask, chosen_index, rejected_index, None, None)
    n_pairs = chosen_index.shape[0]
    losses = -seqs.chosen * n_pairs / seqs.chosen_count.sum()
    return PreferenceLossOutput(losses.mean(), losses, seqs.chosen.detach(), seqs.rejected.detach())


def kto_loss_ref(
    policy_logps: torch.Tensor,
    mask: torch.Tensor,
    labels: torch.Tensor,
    *,
    ref_logps: torch.Tensor | None = None,
    ref_sequence_logps: torch.Tensor | None = None,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    kl_reference_point: float | torch.Tensor = 0.0,
) -> PreferenceLossOutput:
    """KTO (Ethayarajh et al. 2024, https://arxiv.org/abs/2402.01306, Eq. 7-8).

    z(y) = log π_θ(y) - log π_ref(y)                 (masked sums)
    loss(y) = λ_D · (1 - σ(β (z(y) - z0)))   if y is desirable
              λ_U · (1 - σ(β (z0 - z(y))))   if y is undesirable
    loss = mean over all S sequences

    z0 is the reference point, an estimate of KL(π_θ‖π_ref) that the caller computes and that
    is used detached (TRL: mean log-ratio over mismatched pairs, clamped at 0); λ_D and λ_U are
    ``desirable_weight`` and ``undesirable_weight``; rewards are β z(y).
    """
    method = "kto_loss"
    _check_tensors(method, _KTO, policy_logps, mask, None, None, labels, ref_logps, ref_sequence_logps)
    _check_beta(method, beta)
    reference_point = _reference_point_tensor(kl_reference_point, policy_logps.device)
    seqs = _sequences_ref(method, _KTO, policy_logps, mask, None, None, ref_logps, ref_sequence_logps, reference_point)
    z0 = reference_point.to(seqs.chosen.dtype)[0]
    ratio = seqs.chosen - seqs.ref_chosen
    desirable = labels.bool()
    losses = torch.where(
        desirable,
        desirable_weight * (1.0 - torch.sigmoid(beta * (ratio - z0))),
        undesirable_weight * (1.0 - torch.sigmoid(beta * (z0 - ratio))),
    )
    rewards = (beta * ratio).detach()
    return PreferenceLossOutput(losses.mean(), losses, rewards[desirable], rewards[~desirable])

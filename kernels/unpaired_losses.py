# Unpaired sequence-level preference losses over per-token log-probs: KTO.
#
# Inputs: policy log-probs [S, T] (fp32 typical; bf16/fp16 accepted), a loss mask [S, T] (bool or
# 0/1), labels [S] (True = desirable) and the reference, per token [S, T] or as cached sums [S].
# Each sequence is one item: its loss is a function of its own log-ratio, so the loss kernel writes
# d loss / d sum[s] directly, without the pair kernel's atomics. All arithmetic is fp32.
#
# Kernels: sequence_logps_fwd (sequence_logps.py) for the sums; _unpaired_loss_fwd_kernel, one
# program over all sequences (a deterministic mean); sequence_logps_bwd for the backward. The
# autograd Function, input checks and error diagnosis are shared and live in _sequence_loss.py.
# Requires Triton >= 3.0 for the kernels; without Triton the reference below is the only path.

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from prefcore.kernels._dispatch import HAS_TRITON
from prefcore.kernels._dispatch import use_triton
from prefcore.kernels._sequence_loss import LossKernelOutputs
from prefcore.kernels._sequence_loss import PreferenceLossOutput
from prefcore.kernels._sequence_loss import SequenceLoss
from prefcore.kernels._sequence_loss import check_beta
from prefcore.kernels._sequence_loss import check_tensors
from prefcore.kernels._sequence_loss import run_kernels
from prefcore.kernels._sequence_loss import sequences_ref
from prefcore.kernels.sequence_logps import device_ctx

if HAS_TRITON:
    import triton
    import triton.language as tl

    from prefcore.kernels._sequence_loss import nonfinite
    from prefcore.kernels._sequence_loss import sigmoid

__all__ = [
    "kto_loss",
    "kto_loss_ref",
]

_N_ERRORS = 3
_MAX_BLOCK_S = 1024


@dataclass(frozen=True)
class UnpairedLoss(SequenceLoss):
    """A row of the unpaired table: one labelled item per sequence."""

    unpaired: bool = True

    def launch(self, sums, counts, ref_sums, chosen_index, rejected_index, labels, reference_point, params):
        return unpaired_loss_fwd(sums, ref_sums, labels, reference_point, params)


_KTO = UnpairedLoss("kto_loss", needs_ref=True)


# ---------------------------------------------------------------------------------------------
# Triton kernel
# ---------------------------------------------------------------------------------------------

if HAS_TRITON:

    @triton.jit
    def _kto_term(ratio, desirable, reference_point, beta, desirable_weight, undesirable_weight):
        # 1 - σ(β(z - z0)) for desirable, 1 - σ(β(z0 - z)) for undesirable sequences, and d / d z.
        sign = tl.where(desirable, 1.0, -1.0)
        weight = tl.where(desirable, desirable_weight, undesirable_weight)
        x = beta * sign * (ratio - reference_point)
        sig = sigmoid(x)
        return weight * (1.0 - sig), -weight * beta * sign * sig * sigmoid(-x)

    @triton.jit
    def _unpaired_loss_fwd_kernel(
        # data ptrs
        sums_ptr,  # [S] fp32 policy sequence sums
        ref_sums_ptr,  # [S] fp32 reference sequence sums
        labels_ptr,  # [S] nonzero = desirable
        reference_point_ptr,  # [1] fp32 KTO reference point z0
        loss_ptr,  # [1] fp32 out: mean of losses
        losses_ptr,  # [S] fp32 out
        rewards_ptr,  # [S] fp32 out
        dsums_ptr,  # [S] fp32 out: d losses[s] / d sum[s]
        seq_grad_ptr,  # [S] fp32 out: d loss / d sum[s]
        errors_ptr,  # [3] int32 out: non-finite policy / reference sums, non-finite reference point
        # shapes
        n_seqs,
        # meta
        beta,
        desirable_weight,
        undesirable_weight,
        BLOCK_S: tl.constexpr,
    ):
        # `* 1.0` rather than .to(): Triton turns an int argument equal to 1 into a constexpr.
        inv_seqs = 1.0 / (n_seqs * 1.0)
        reference_point = tl.load(reference_point_ptr).to(tl.float32)
        n_policy_nonfinite = 0
        n_ref_nonfinite = 0
        loss_total = 0.0
        for start in range(0, n_seqs, BLOCK_S):
            offs = start + tl.arange(0, BLOCK_S)
            valid = offs < n_seqs
            policy = tl.load(sums_ptr + offs, mask=valid, other=0.0)
            ref = tl.load(ref_sums_ptr + offs, mask=valid, other=0.0).to(tl.float32)
            n_policy_nonfinite += tl.sum((valid & nonfinite(policy)).to(tl.int32), axis=0)
            n_ref_nonfinite += tl.sum((valid & nonfinite(ref)).to(tl.int32), axis=0)
            desirable = tl.load(labels_ptr + offs, mask=valid, other=0) != 0
            ratio = policy - ref
            loss, dratio = _kto_term(ratio, desirable, reference_point, beta, desirable_weight, undesirable_weight)
            loss = tl.where(valid, loss, 0.0)
            dratio = tl.where(valid, dratio, 0.0)
            tl.store(losses_ptr + offs, loss, mask=valid)
            tl.store(rewards_ptr + offs, beta * ratio, mask=valid)
            tl.store(dsums_ptr + offs, dratio, mask=valid)
            tl.store(seq_grad_ptr + offs, dratio * inv_seqs, mask=valid)
            loss_total += tl.sum(loss, axis=0)
        tl.store(loss_ptr, loss_total * inv_seqs)
        tl.store(errors_ptr + 0, n_policy_nonfinite)
        tl.store(errors_ptr + 1, n_ref_nonfinite)
        tl.store(errors_ptr + 2, nonfinite(reference_point).to(tl.int32))


# ---------------------------------------------------------------------------------------------
# Launcher
# ---------------------------------------------------------------------------------------------


def unpaired_loss_fwd(
    sums: torch.Tensor,
    ref_sums: torch.Tensor,
    labels: torch.Tensor,
    reference_point: torch.Tensor,
    params: dict[str, float],
) -> LossKernelOutputs:
    """One program over every sequence: losses, rewards and d loss / d sequence sum, from the sums."""
    assert ref_sums is not None and ref_sums.shape == sums.shape, "launcher expects reference sums [S]"
    assert labels.shape == sums.shape and labels.is_contiguous(), "launcher expects contiguous labels [S]"
    n_seqs = sums.shape[0]
    device = sums.device
    # Pair-only outputs are empty; each its own tensor, as autograd outputs must not alias.
    empty = [torch.empty(0, dtype=torch.float32, device=device) for _ in range(4)]
    out = LossKernelOutputs(
        loss=torch.empty((), dtype=torch.float32, device=device),
        losses=torch.empty(n_seqs, dtype=torch.float32, device=device),
        chosen_rewards=torch.empty(n_seqs, dtype=torch.float32, device=device),
        rejected_rewards=empty[0],
        dchosen=torch.empty(n_seqs, dtype=torch.float32, device=device),
        drejected=empty[1],
        seq_grad=torch.empty(n_seqs, dtype=torch.float32, device=device),
        log_odds=empty[2],
        terms=empty[3],
        errors=torch.empty(_N_ERRORS, dtype=torch.int32, device=device),
    )
    block_s = min(_MAX_BLOCK_S, triton.next_power_of_2(n_seqs))
    with device_ctx(sums):
        _unpaired_loss_fwd_kernel[(1,)](
            sums,  # data ptrs
            ref_sums,
            labels,
            reference_point,
            out.loss,
            out.losses,
            out.chosen_rewards,
            out.dchosen,
            out.seq_grad,
            out.errors,
            n_seqs,  # shapes
            params["beta"],  # meta
            params["desirable_weight"],
            params["undesirable_weight"],
            BLOCK_S=block_s,
            num_warps=4,
        )
    return out


# ---------------------------------------------------------------------------------------------
# Public function
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
    method = _KTO.method
    check_tensors(_KTO, policy_logps, mask, None, None, labels, ref_logps, ref_sequence_logps)
    check_beta(method, beta)
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
    return run_kernels(
        _KTO, policy_logps, mask, None, None, labels, ref_logps, ref_sequence_logps, reference_point, params
    )


# ---------------------------------------------------------------------------------------------
# Reference: plain torch, the spec, the CPU path and the benchmark baseline
# ---------------------------------------------------------------------------------------------


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
    check_tensors(_KTO, policy_logps, mask, None, None, labels, ref_logps, ref_sequence_logps)
    check_beta(_KTO.method, beta)
    reference_point = _reference_point_tensor(kl_reference_point, policy_logps.device)
    seqs = sequences_ref(_KTO, policy_logps, mask, None, None, ref_logps, ref_sequence_logps, reference_point)
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

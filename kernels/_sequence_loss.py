# What every sequence-level preference loss shares, whatever its formula: the output record, the
# row type of the loss tables, the input checks and error diagnosis, the Triton scalar helpers, and
# the autograd Function that runs a loss as three kernels:
#
#   (a) sequence_logps_fwd (sequence_logps.py): masked sums of the policy (and per-token reference)
#       log-probs and token counts, one program per sequence;
#   (b) the row's loss kernel (pairwise_losses.py, unpaired_losses.py): one program for all items,
#       so the mean is a deterministic sum; per-item loss, rewards, d loss / d sequence sum, and
#       counters of bad input (the host reads them once and only then works out the culprit);
#   (c) sequence_logps_bwd (sequence_logps.py): the backward, a broadcast of d loss / d sum[s]
#       over the mask; the loss's gradient is formed in the forward.
# All arithmetic is fp32; counts are exact integers.

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch.autograd.function import once_differentiable

from prefcore.kernels._checks import defer
from prefcore.kernels._checks import deferring
from prefcore.kernels._dispatch import HAS_TRITON
from prefcore.kernels.sequence_logps import KERNEL_DTYPES
from prefcore.kernels.sequence_logps import kernel_mask
from prefcore.kernels.sequence_logps import sequence_logps_bwd
from prefcore.kernels.sequence_logps import sequence_logps_fwd
from prefcore.kernels.sequence_logps import sequence_logps_ref

if HAS_TRITON:
    import triton
    import triton.language as tl


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


class LossKernelOutputs(NamedTuple):
    """What a loss kernel's launcher returns: [P] per item (for unpaired losses [S], rejected_* empty)."""

    loss: torch.Tensor  # [] fp32 mean of losses
    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    dchosen: torch.Tensor  # d losses[p] / d chosen sum
    drejected: torch.Tensor  # d losses[p] / d rejected sum
    seq_grad: torch.Tensor  # [S] d loss / d sum[s]
    log_odds: torch.Tensor  # [P] ORPO only
    terms: torch.Tensor  # [2]: the NLL term and the mean preference term (ORPO reports both)
    errors: torch.Tensor  # int32 counters of bad input; all zero when the input is fine


@dataclass(frozen=True)
class SequenceLoss(abc.ABC):
    """One row of a loss table: how the shared checks, kernels and references treat a loss.

    A family of losses (pairwise, unpaired) subclasses it with its kernel's fields and ``launch``.
    """

    method: str  # the public function, named in every error message
    needs_ref: bool = False  # log-ratios against a reference model; False: reference-free
    per_token: bool = False  # reads per-token averages, so a sequence with no tokens is an error
    odds: bool = False  # reads exp(mean log-prob) as a probability (ORPO): means must be < 0
    nll: bool = False  # adds the chosen sequences' NLL, a token average over all of them
    unpaired: bool = False  # one labelled item per sequence (KTO) instead of (chosen, rejected) pairs

    @abc.abstractmethod
    def launch(
        self,
        sums: torch.Tensor,
        counts: torch.Tensor,
        ref_sums: torch.Tensor | None,
        chosen_index: torch.Tensor | None,
        rejected_index: torch.Tensor | None,
        labels: torch.Tensor | None,
        reference_point: torch.Tensor | None,
        params: dict[str, float],
    ) -> LossKernelOutputs:
        """Run the family's loss kernel (b) on the sequence sums of kernel (a)."""


# ---------------------------------------------------------------------------------------------
# Triton scalar helpers shared by the loss kernels
# ---------------------------------------------------------------------------------------------

if HAS_TRITON:

    @triton.jit
    def log_sigmoid(z):
        # min(z, 0) - log(1 + exp(-|z|)) never overflows; for |z| > 17 the log term is below
        # fp32 resolution of the result anyway.
        return tl.minimum(z, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(z)))

    @triton.jit
    def sigmoid(z):
        e = tl.exp(-tl.abs(z))
        return tl.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))

    @triton.jit
    def nonfinite(x):
        return (x != x) | (tl.abs(x) == float("inf"))


# ---------------------------------------------------------------------------------------------
# Input checks shared by the kernel path and the references
# ---------------------------------------------------------------------------------------------


def check_tensors(
    loss: SequenceLoss,
    policy_logps: torch.Tensor,
    mask: torch.Tensor,
    chosen_index: torch.Tensor | None,
    rejected_index: torch.Tensor | None,
    labels: torch.Tensor | None,
    ref_logps: torch.Tensor | None,
    ref_sequence_logps: torch.Tensor | None,
) -> None:
    """Every check that needs no device sync: ranks, shapes, dtypes and which inputs are given."""
    method = loss.method
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
    if loss.unpaired:
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
    has_ref = ref_logps is not None or ref_sequence_logps is not None
    if loss.needs_ref and not has_ref:
        raise ValueError(
            f"{method}: this loss needs reference log-probs. Pass ref_logps [S, T] or the cached "
            f"per-sequence sums ref_sequence_logps [S]."
        )
    if not loss.needs_ref and has_ref:
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


def check_beta(method: str, beta: float) -> None:
    if not (math.isfinite(beta) and beta > 0.0):
        raise ValueError(f"{method}: beta must be a finite number > 0. Got {beta}.")


def check_label_smoothing(method: str, label_smoothing: float) -> None:
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(
            f"{method}: label_smoothing is the assumed fraction of flipped labels and must lie in [0, 0.5). "
            f"Got {label_smoothing}."
        )


def diagnose(
    loss: SequenceLoss,
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
    method = loss.method
    n_seqs = sums.shape[0]
    if loss.unpaired:
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
        return f"sequence {seq}" if loss.unpaired else f"sequence {seq} ({role} in pair {pair})"

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
    if loss.per_token:
        for role, index in roles:
            bad = (counts[index] == 0).nonzero()
            if bad.numel():
                pair = int(bad[0])
                seq = int(index[pair])
                return (
                    f"{method}: {where(role, pair, seq)} has no tokens in the loss mask, but this loss "
                    f"averages log-probs per token. Drop the pair or fix its mask."
                )
    if loss.odds:
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
    if loss.nll and int(counts[chosen_index].sum()) == 0:
        return f"{method}: the chosen sequences have no tokens in the loss mask; the NLL term averages over them."
    if reference_point is not None and not bool(torch.isfinite(reference_point).all()):
        return f"{method}: kl_reference_point is not finite ({float(reference_point.reshape(-1)[0])})."
    return None


# ---------------------------------------------------------------------------------------------
# Autograd function: kernels (a) + (b) forward, kernel (c) backward
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
        loss: SequenceLoss,
        params: dict[str, float],
    ):
        logps = policy_logps if policy_logps.stride(-1) == 1 else policy_logps.contiguous()
        mask = kernel_mask(mask)
        if ref_logps is not None and ref_logps.stride(-1) != 1:
            ref_logps = ref_logps.contiguous()
        sums, counts, ref_sums = sequence_logps_fwd(logps, mask, ref_logps)
        ref_name = "ref_logps"
        if ref_sequence_logps is not None:
            ref_sums = ref_sequence_logps.detach().to(torch.float32).contiguous()
            ref_name = "ref_sequence_logps"
        out = loss.launch(sums, counts, ref_sums, chosen_index, rejected_index, labels, reference_point, params)

        def explain() -> str:
            message = diagnose(
                loss, policy_logps, sums, counts, ref_sums, ref_name, chosen_index, rejected_index, reference_point
            )
            return message or f"{loss.method}: invalid inputs (error counters {out.errors.tolist()})."

        if deferring():  # a training step: the error counters are read once per step, with its metrics
            defer(out.errors.any(), explain)
        elif any(out.errors.tolist()):  # the single host sync of a direct call: the error counters
            raise ValueError(explain())
        ctx.save_for_backward(mask, out.seq_grad, out.dchosen, out.drejected, chosen_index, rejected_index)
        ctx.unpaired = loss.unpaired
        ctx.grad_dtype = policy_logps.dtype
        ctx.set_materialize_grads(False)
        ctx.mark_non_differentiable(out.chosen_rewards, out.rejected_rewards, out.log_odds, out.terms)
        return out.loss, out.losses, out.chosen_rewards, out.rejected_rewards, out.log_odds, out.terms

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss, grad_losses, *unused_grads):
        mask, seq_grad, dchosen, drejected, chosen_index, rejected_index = ctx.saved_tensors
        grad_policy = None
        if ctx.needs_input_grad[0] and (grad_loss is not None or grad_losses is not None):
            scale = grad_loss
            if grad_losses is not None:
                # Per-item upstream gradients (weighted pairs) need a scatter onto sequences; the
                # common scalar-loss case skips it and scales inside the kernel instead.
                seq_grad = seq_grad * grad_loss if grad_loss is not None else torch.zeros_like(seq_grad)
                if ctx.unpaired:
                    seq_grad = seq_grad + grad_losses * dchosen
                else:
                    seq_grad = seq_grad.index_add(0, chosen_index, grad_losses * dchosen)
                    seq_grad = seq_grad.index_add(0, rejected_index, grad_losses * drejected)
                scale = None
            grad_policy = sequence_logps_bwd(seq_grad, scale, mask, ctx.grad_dtype)
        return (
            grad_policy,
            None,  # mask
            None,  # ref_logps: reference log-probs are constants of the loss
            None,  # ref_sequence_logps
            None,  # chosen_index
            None,  # rejected_index
            None,  # labels
            None,  # reference_point
            None,  # loss
            None,  # params
        )


def run_kernels(
    loss: SequenceLoss,
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
    """The Triton path of a checked call: kernel-ready inputs in, the public output record out."""
    for name, tensor in (("policy_logps", policy_logps), ("ref_logps", ref_logps)):
        if tensor is not None and tensor.dtype not in KERNEL_DTYPES:
            raise ValueError(
                f"{loss.method}: the Triton kernels take fp32/bf16/fp16 {name}. Got {tensor.dtype}; "
                f"use backend='torch' for it."
            )
    if labels is not None:
        labels = labels.contiguous()
        labels = labels.view(torch.uint8) if labels.dtype == torch.bool else labels
    loss_value, losses, chosen_rewards, rejected_rewards, log_odds, terms = SequenceLossFunction.apply(
        policy_logps,
        mask,
        ref_logps.detach() if ref_logps is not None else None,
        ref_sequence_logps,
        chosen_index.contiguous() if chosen_index is not None else None,
        rejected_index.contiguous() if rejected_index is not None else None,
        labels,
        reference_point,
        loss,
        params,
    )
    if loss.unpaired:
        desirable = labels != 0
        return PreferenceLossOutput(loss_value, losses, chosen_rewards[desirable], chosen_rewards[~desirable])
    if loss.odds:
        return PreferenceLossOutput(
            loss_value,
            losses,
            chosen_rewards,
            rejected_rewards,
            nll_loss=terms[0],
            odds_ratio_loss=terms[1],
            log_odds=log_odds,
        )
    return PreferenceLossOutput(loss_value, losses, chosen_rewards, rejected_rewards)


# ---------------------------------------------------------------------------------------------
# Reference helpers: the per-item sequence sums every *_ref starts from
# ---------------------------------------------------------------------------------------------


class Sequences(NamedTuple):
    """Per-pair views of the sequence sums: [P] each (for unpaired losses, [S] in the chosen_* fields)."""

    chosen: torch.Tensor
    rejected: torch.Tensor | None
    ref_chosen: torch.Tensor | None
    ref_rejected: torch.Tensor | None
    chosen_count: torch.Tensor
    rejected_count: torch.Tensor | None


def sequences_ref(
    loss: SequenceLoss,
    policy_logps: torch.Tensor,
    mask: torch.Tensor,
    chosen_index: torch.Tensor | None,
    rejected_index: torch.Tensor | None,
    ref_logps: torch.Tensor | None,
    ref_sequence_logps: torch.Tensor | None,
    reference_point: torch.Tensor | None = None,
) -> Sequences:
    """Masked sums in plain torch, checked like the kernels check them, gathered per item."""
    sums, counts = sequence_logps_ref(policy_logps, mask)
    ref_sums = None
    ref_name = "ref_logps"
    if ref_logps is not None:
        # The reference is a constant of every loss here.
        ref_sums = sequence_logps_ref(ref_logps.detach(), mask)[0]
    elif ref_sequence_logps is not None:
        ref_sums = ref_sequence_logps.detach().to(sums.dtype)
        ref_name = "ref_sequence_logps"

    def explain() -> str | None:
        return diagnose(
            loss, policy_logps, sums.detach(), counts, ref_sums, ref_name, chosen_index, rejected_index, reference_point
        )

    if deferring():
        # A training step: an index out of range is a device-side flag read with the step's metrics;
        # every other input diagnose names makes the loss non-finite, so it runs only when the step's
        # loss, read once per step, is not finite.
        if not loss.unpaired:
            n_seqs = sums.shape[0]
            outside = [((index < 0) | (index >= n_seqs)).any() for index in (chosen_index, rejected_index)]
            defer(outside[0] | outside[1], explain)
        defer(None, explain)
    else:
        message = explain()
        if message is not None:
            raise ValueError(message)
    if loss.unpaired:
        return Sequences(sums, None, ref_sums, None, counts.to(sums.dtype), None)
    return Sequences(
        sums[chosen_index],
        sums[rejected_index],
        ref_sums[chosen_index] if ref_sums is not None else None,
        ref_sums[rejected_index] if ref_sums is not None else None,
        counts[chosen_index].to(sums.dtype),
        counts[rejected_index].to(sums.dtype),
    )

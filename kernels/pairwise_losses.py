# Pairwise sequence-level preference losses over per-token log-probs: DPO (with cDPO label
# smoothing), IPO, hinge (SLiC-HF), SimPO, ORPO, and the NLL term of RPO-style mixes.
#
# Inputs: policy log-probs [S, T] (fp32 typical; bf16/fp16 accepted), a loss mask [S, T] (bool or
# 0/1) and pairs (chosen_index, rejected_index) [P] into S. Reference log-probs come per token
# ([S, T], reduced with the same mask) or as cached per-sequence sums [S]. All arithmetic is fp32.
#
# Every loss here has one shape. Each sequence gets a value x: its masked log-prob sum, minus the
# reference's if the loss has one, over its token count if the loss is length-normalised. A pair's
# loss is a per-pair term of (x_chosen, x_rejected), plus, for ORPO and NLL, its share of the
# chosen tokens' NLL. DPO, IPO, hinge and SimPO are functions of the margin x_chosen - x_rejected
# alone; ORPO's term is the log odds ratio of the two means. So a loss is one row of the table
# below plus its term written twice: in torch (the spec) and in Triton (value and derivative).
#
# Kernels: sequence_logps_fwd (sequence_logps.py) for the sums; _pairwise_loss_fwd_kernel, one
# program for all pairs (P is small, and one program makes the mean a deterministic sum), with the
# term picked at compile time by LOSS; sequence_logps_bwd for the backward. The autograd Function,
# input checks and error diagnosis are shared with KTO and live in _sequence_loss.py.
# Requires Triton >= 3.0 for the kernels; without Triton the references below are the only path.

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from prefcore.kernels._dispatch import HAS_TRITON
from prefcore.kernels._dispatch import use_triton
from prefcore.kernels._sequence_loss import LossKernelOutputs
from prefcore.kernels._sequence_loss import PreferenceLossOutput
from prefcore.kernels._sequence_loss import SequenceLoss
from prefcore.kernels._sequence_loss import check_beta
from prefcore.kernels._sequence_loss import check_label_smoothing
from prefcore.kernels._sequence_loss import check_tensors
from prefcore.kernels._sequence_loss import run_kernels
from prefcore.kernels._sequence_loss import sequences_ref
from prefcore.kernels.sequence_logps import device_ctx

if HAS_TRITON:
    import triton

    from prefcore.kernels._pairwise_triton import _pairwise_loss_fwd_kernel

__all__ = [
    "dpo_loss",
    "dpo_loss_ref",
    "hinge_loss",
    "hinge_loss_ref",
    "ipo_loss",
    "ipo_loss_ref",
    "nll_loss",
    "nll_loss_ref",
    "orpo_loss",
    "orpo_loss_ref",
    "simpo_loss",
    "simpo_loss_ref",
]

_N_ERRORS = 6
_MAX_BLOCK_P = 1024


# ---------------------------------------------------------------------------------------------
# The losses: each term in torch, then the table
# ---------------------------------------------------------------------------------------------


def _sigmoid_loss_ref(z: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    return -(1.0 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)


def _dpo_term_ref(chosen: torch.Tensor, rejected: torch.Tensor, *, beta: float, label_smoothing: float):
    return _sigmoid_loss_ref(beta * (chosen - rejected), label_smoothing)


def _ipo_term_ref(chosen: torch.Tensor, rejected: torch.Tensor, *, beta: float):
    return (chosen - rejected - 1.0 / (2.0 * beta)) ** 2


def _hinge_term_ref(chosen: torch.Tensor, rejected: torch.Tensor, *, beta: float):
    return torch.relu(1.0 - beta * (chosen - rejected))


def _simpo_term_ref(chosen: torch.Tensor, rejected: torch.Tensor, *, beta: float, gamma: float, label_smoothing: float):
    return _sigmoid_loss_ref(beta * (chosen - rejected) - gamma, label_smoothing)


def _log1mexp_ref(a: torch.Tensor) -> torch.Tensor:
    # log(1 - exp(a)) for a < 0 without cancellation (Mächler 2012, branch at -ln 2).
    return torch.where(a < -math.log(2.0), torch.log1p(-torch.exp(a)), torch.log(-torch.expm1(a)))


def _log_odds_ref(chosen_mean: torch.Tensor, rejected_mean: torch.Tensor) -> torch.Tensor:
    return (chosen_mean - rejected_mean) - (_log1mexp_ref(chosen_mean) - _log1mexp_ref(rejected_mean))


def _orpo_term_ref(chosen: torch.Tensor, rejected: torch.Tensor, *, beta: float):
    return -beta * F.logsigmoid(_log_odds_ref(chosen, rejected))


@dataclass(frozen=True)
class PairwiseLoss(SequenceLoss):
    """A row of the pairwise table: the shared flags plus what the pair kernel and references read."""

    kind: int = -1  # the pair kernel's LOSS constexpr, which selects the Triton twin of term_ref
    term_ref: Callable[..., torch.Tensor] | None = None  # the per-pair term in torch; None: NLL only
    mean_rewards: bool = False  # rewards are β · per-token means instead of β · log-ratio sums

    def launch(self, sums, counts, ref_sums, chosen_index, rejected_index, labels, reference_point, params):
        return pairwise_loss_fwd(self, sums, counts, ref_sums, chosen_index, rejected_index, params)


# fmt: off
# x per sequence: the masked log-prob sum, minus the reference's (needs_ref), over the token count
# (per_token). A pair's loss: term_ref(x_chosen, x_rejected), plus its NLL share (nll).
_DPO   = PairwiseLoss("dpo_loss",   kind=0, term_ref=_dpo_term_ref,   needs_ref=True)
_IPO   = PairwiseLoss("ipo_loss",   kind=1, term_ref=_ipo_term_ref,   needs_ref=True, per_token=True)
_HINGE = PairwiseLoss("hinge_loss", kind=2, term_ref=_hinge_term_ref, needs_ref=True)
_SIMPO = PairwiseLoss("simpo_loss", kind=3, term_ref=_simpo_term_ref, per_token=True, mean_rewards=True)
_ORPO  = PairwiseLoss("orpo_loss",  kind=4, term_ref=_orpo_term_ref,  per_token=True, mean_rewards=True,
                      odds=True, nll=True)
_NLL   = PairwiseLoss("nll_loss",   kind=5, term_ref=None,            nll=True)  # no β: rewards are the plain sums
# fmt: on


# ---------------------------------------------------------------------------------------------
# Launcher
# ---------------------------------------------------------------------------------------------


def pairwise_loss_fwd(
    loss: PairwiseLoss,
    sums: torch.Tensor,
    counts: torch.Tensor,
    ref_sums: torch.Tensor | None,
    chosen_index: torch.Tensor,
    rejected_index: torch.Tensor,
    params: dict[str, float],
) -> LossKernelOutputs:
    """One program over every pair: losses, rewards and d loss / d sequence sum, from the sums."""
    assert chosen_index.shape == rejected_index.shape and chosen_index.dim() == 1, "launcher expects [P] indices"
    assert (ref_sums is not None) == loss.needs_ref, "launcher expects reference sums exactly when the loss has one"
    n_seqs = sums.shape[0]
    n_pairs = chosen_index.shape[0]
    device = sums.device
    # Every buffer is written by the kernel, so none needs a memset launch. Separate buffers:
    # outputs handed to autograd must not share storage with saved tensors.
    out = LossKernelOutputs(
        loss=torch.empty((), dtype=torch.float32, device=device),
        losses=torch.empty(n_pairs, dtype=torch.float32, device=device),
        chosen_rewards=torch.empty(n_pairs, dtype=torch.float32, device=device),
        rejected_rewards=torch.empty(n_pairs, dtype=torch.float32, device=device),
        dchosen=torch.empty(n_pairs, dtype=torch.float32, device=device),
        drejected=torch.empty(n_pairs, dtype=torch.float32, device=device),
        seq_grad=torch.empty(n_seqs, dtype=torch.float32, device=device),
        log_odds=torch.empty(n_pairs if loss.odds else 0, dtype=torch.float32, device=device),
        terms=torch.empty(2, dtype=torch.float32, device=device),
        errors=torch.empty(_N_ERRORS, dtype=torch.int32, device=device),
    )
    block_p = min(_MAX_BLOCK_P, triton.next_power_of_2(n_pairs))
    with device_ctx(sums):
        _pairwise_loss_fwd_kernel[(1,)](
            sums,  # data ptrs
            counts,
            ref_sums if ref_sums is not None else sums,
            chosen_index,
            rejected_index,
            out.loss,
            out.losses,
            out.chosen_rewards,
            out.rejected_rewards,
            out.dchosen,
            out.drejected,
            out.seq_grad,
            out.log_odds if loss.odds else out.losses,
            out.terms,
            out.errors,
            n_seqs,  # shapes
            n_pairs,
            params.get("beta", 1.0),  # meta
            params.get("label_smoothing", 0.0),
            params.get("gamma", 0.0),
            LOSS=loss.kind,
            HAS_REF=ref_sums is not None,
            PER_TOKEN=loss.per_token,
            ODDS=loss.odds,
            HAS_NLL=loss.nll,
            MEAN_REWARDS=loss.mean_rewards,
            BLOCK_P=block_p,
            num_warps=4,
        )
    return out


# ---------------------------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------------------------

_SHARED_ARGS = """
        policy_logps: [S, T] per-token policy log-probs of S sequences padded to T (fp32).
        mask: [S, T] bool or 0/1; the tokens that belong to the loss (completion tokens).
        chosen_index: [P] long, the preferred sequence of each pair (rows of policy_logps).
        rejected_index: [P] long, the dispreferred sequence of each pair.
        ref_logps: [S, T] reference log-probs, reduced with the same mask; or
        ref_sequence_logps: [S] cached reference sums over the same mask (give one of the two).
        backend: "auto" (CUDA → Triton, CPU → reference), "triton" or "torch"."""


def _pairwise_loss(
    loss: PairwiseLoss,
    policy_logps: torch.Tensor,
    mask: torch.Tensor,
    chosen_index: torch.Tensor,
    rejected_index: torch.Tensor,
    ref_logps: torch.Tensor | None,
    ref_sequence_logps: torch.Tensor | None,
    backend: str,
    **params: float,
) -> PreferenceLossOutput:
    """Checked inputs → the torch reference (CPU) or the Triton kernels (CUDA): one row, two paths, tested equal."""
    check_tensors(loss, policy_logps, mask, chosen_index, rejected_index, None, ref_logps, ref_sequence_logps)
    inputs = (policy_logps, mask, chosen_index, rejected_index)
    if not use_triton(policy_logps, backend):
        return _pairwise_ref(loss, *inputs, ref_logps, ref_sequence_logps, **params)
    return run_kernels(loss, *inputs, None, ref_logps, ref_sequence_logps, None, params)


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
    check_beta(_DPO.method, beta)
    check_label_smoothing(_DPO.method, label_smoothing)
    return _pairwise_loss(
        _DPO,
        policy_logps,
        mask,
        chosen_index,
        rejected_index,
        ref_logps,
        ref_sequence_logps,
        backend,
        beta=beta,
        label_smoothing=label_smoothing,
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
    check_beta(_IPO.method, beta)
    return _pairwise_loss(
        _IPO, policy_logps, mask, chosen_index, rejected_index, ref_logps, ref_sequence_logps, backend, beta=beta
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
    check_beta(_HINGE.method, beta)
    return _pairwise_loss(
        _HINGE, policy_logps, mask, chosen_index, rejected_index, ref_logps, ref_sequence_logps, backend, beta=beta
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
    check_beta(_SIMPO.method, beta)
    check_label_smoothing(_SIMPO.method, label_smoothing)
    if not math.isfinite(gamma):
        raise ValueError(f"{_SIMPO.method}: gamma must be finite. Got {gamma}.")
    return _pairwise_loss(
        _SIMPO,
        policy_logps,
        mask,
        chosen_index,
        rejected_index,
        ref_logps,
        ref_sequence_logps,
        backend,
        beta=beta,
        gamma=gamma,
        label_smoothing=label_smoothing,
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
    check_beta(_ORPO.method, beta)
    return _pairwise_loss(
        _ORPO, policy_logps, mask, chosen_index, rejected_index, ref_logps, ref_sequence_logps, backend, beta=beta
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
    return _pairwise_loss(
        _NLL, policy_logps, mask, chosen_index, rejected_index, ref_logps, ref_sequence_logps, backend
    )


for _fn in (dpo_loss, ipo_loss, hinge_loss, simpo_loss, orpo_loss, nll_loss):
    if _fn.__doc__:  # None under python -OO
        _fn.__doc__ = _fn.__doc__.replace("{shared}", _SHARED_ARGS)


# ---------------------------------------------------------------------------------------------
# References: plain torch, the spec, the CPU path and the benchmark baseline
# ---------------------------------------------------------------------------------------------


def _pairwise_ref(
    loss: PairwiseLoss,
    policy_logps: torch.Tensor,
    mask: torch.Tensor,
    chosen_index: torch.Tensor,
    rejected_index: torch.Tensor,
    ref_logps: torch.Tensor | None,
    ref_sequence_logps: torch.Tensor | None,
    **params: float,
) -> PreferenceLossOutput:
    """A row of the table in plain torch: x per sequence, the row's term, the NLL share, the rewards."""
    seqs = sequences_ref(loss, policy_logps, mask, chosen_index, rejected_index, ref_logps, ref_sequence_logps)
    chosen, rejected = seqs.chosen, seqs.rejected
    if loss.needs_ref:
        chosen = chosen - seqs.ref_chosen
        rejected = rejected - seqs.ref_rejected
    chosen_x, rejected_x = chosen, rejected
    if loss.per_token:
        chosen_x = chosen / seqs.chosen_count
        rejected_x = rejected / seqs.rejected_count
    term = losses = loss.term_ref(chosen_x, rejected_x, **params) if loss.term_ref is not None else None
    if loss.nll:
        chosen_tokens = seqs.chosen_count.sum()
        nll_shares = -seqs.chosen * chosen_index.shape[0] / chosen_tokens
        losses = nll_shares if term is None else nll_shares + term
    extras = {}
    if loss.odds:
        with torch.no_grad():
            extras = {
                "nll_loss": -seqs.chosen.sum() / chosen_tokens,
                "odds_ratio_loss": term.mean(),
                "log_odds": _log_odds_ref(chosen_x, rejected_x),
            }
    beta = params.get("beta", 1.0)
    chosen_reward, rejected_reward = (chosen_x, rejected_x) if loss.mean_rewards else (chosen, rejected)
    return PreferenceLossOutput(
        losses.mean(), losses, (beta * chosen_reward).detach(), (beta * rejected_reward).detach(), **extras
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
    check_tensors(_DPO, policy_logps, mask, chosen_index, rejected_index, None, ref_logps, ref_sequence_logps)
    check_beta(_DPO.method, beta)
    check_label_smoothing(_DPO.method, label_smoothing)
    return _pairwise_ref(
        _DPO,
        policy_logps,
        mask,
        chosen_index,
        rejected_index,
        ref_logps,
        ref_sequence_logps,
        beta=beta,
        label_smoothing=label_smoothing,
    )


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
    check_tensors(_IPO, policy_logps, mask, chosen_index, rejected_index, None, ref_logps, ref_sequence_logps)
    check_beta(_IPO.method, beta)
    return _pairwise_ref(
        _IPO, policy_logps, mask, chosen_index, rejected_index, ref_logps, ref_sequence_logps, beta=beta
    )


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
    check_tensors(_HINGE, policy_logps, mask, chosen_index, rejected_index, None, ref_logps, ref_sequence_logps)
    check_beta(_HINGE.method, beta)
    return _pairwise_ref(
        _HINGE, policy_logps, mask, chosen_index, rejected_index, ref_logps, ref_sequence_logps, beta=beta
    )


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
    check_tensors(_SIMPO, policy_logps, mask, chosen_index, rejected_index, None, ref_logps, ref_sequence_logps)
    check_beta(_SIMPO.method, beta)
    check_label_smoothing(_SIMPO.method, label_smoothing)
    return _pairwise_ref(
        _SIMPO,
        policy_logps,
        mask,
        chosen_index,
        rejected_index,
        None,
        None,
        beta=beta,
        gamma=gamma,
        label_smoothing=label_smoothing,
    )


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
    check_tensors(_ORPO, policy_logps, mask, chosen_index, rejected_index, None, ref_logps, ref_sequence_logps)
    check_beta(_ORPO.method, beta)
    return _pairwise_ref(_ORPO, policy_logps, mask, chosen_index, rejected_index, None, None, beta=beta)


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
    check_tensors(_NLL, policy_logps, mask, chosen_index, rejected_index, None, ref_logps, ref_sequence_logps)
    return _pairwise_ref(_NLL, policy_logps, mask, chosen_index, rejected_index, None, None)

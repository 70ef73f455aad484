"""Preference losses: Triton kernels (CPU interpreter) and references vs independent TRL/Liger formulas."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
import torch.nn.functional as F

from prefcore.kernels import pairwise_losses
from prefcore.kernels import preference_losses as pl
from prefcore.kernels._dispatch import HAS_TRITON
from prefcore.kernels._dispatch import interpreter_enabled
from prefcore.kernels._sequence_loss import SequenceLossFunction
from prefcore.testing import assert_lowprec_close

requires_triton = pytest.mark.skipif(
    not (HAS_TRITON and (torch.cuda.is_available() or interpreter_enabled())),
    reason="needs triton and a GPU or TRITON_INTERPRET=1",
)
BACKENDS = ("backend", [pytest.param("triton", marks=requires_triton), "torch"])

# (S, T, pairs): why
_SHAPES = (
    "n_seqs, seq_len, pairs",
    [
        (2, 1, [(0, 1)]),  # one pair of one-token sequences: the smallest batch
        (6, 13, [(0, 1), (2, 3), (4, 5), (0, 5)]),  # sequence 0 chosen twice, 5 rejected twice: atomics
        (5, 1100, [(4, 0), (1, 2), (3, 2)]),  # T above the 1024 block: two blocks per row, two grid columns
    ],
)

# name -> (public function, reference, keyword arguments, needs a reference model)
_LOSSES = {
    "dpo": (pl.dpo_loss, pl.dpo_loss_ref, {"beta": 0.5, "label_smoothing": 0.1}, True),
    "ipo": (pl.ipo_loss, pl.ipo_loss_ref, {"beta": 0.5}, True),
    "hinge": (pl.hinge_loss, pl.hinge_loss_ref, {"beta": 0.5}, True),
    "simpo": (pl.simpo_loss, pl.simpo_loss_ref, {"beta": 2.0, "gamma": 0.5, "label_smoothing": 0.2}, False),
    "orpo": (pl.orpo_loss, pl.orpo_loss_ref, {"beta": 0.3}, False),
    "nll": (pl.nll_loss, pl.nll_loss_ref, {}, False),
}
_KTO_KWARGS = {"beta": 0.5, "desirable_weight": 1.3, "undesirable_weight": 0.7, "kl_reference_point": 0.2}


def _batch(n_seqs: int, seq_len: int, pairs, *, dtype=torch.float32):
    """Log-probs in (-3, 0), a mask with a prompt-like masked prefix, NaN in the padding."""
    policy = -torch.rand(n_seqs, seq_len) * 3.0 - 1e-3
    ref = policy + torch.randn(n_seqs, seq_len) * 0.3
    mask = torch.rand(n_seqs, seq_len) > 0.25
    mask[:, 0] = seq_len == 1
    mask[:, -1] = True
    policy = policy.masked_fill(~mask, float("nan")).to(dtype)
    ref = ref.masked_fill(~mask, float("-inf"))
    chosen_index = torch.tensor([c for c, _ in pairs])
    rejected_index = torch.tensor([r for _, r in pairs])
    return policy, ref, mask, chosen_index, rejected_index


def _call(fn, policy, mask, chosen_index, rejected_index, upstream, *, ref=None, **kwargs):
    """Run a loss, backpropagate loss·0.7 + Σ losses·upstream (per-pair weights), return outputs and grad."""
    x = policy.detach().clone().requires_grad_()
    if ref is not None:
        kwargs["ref_logps"] = ref
    out = fn(x, mask, chosen_index, rejected_index, **kwargs)
    (0.7 * out.loss + (out.losses * upstream.to(out.losses.dtype)).sum()).backward()
    return out, x.grad


def _assert_like_torch_fp32(
    kernel: pl.PreferenceLossOutput, fp32: pl.PreferenceLossOutput, truth: pl.PreferenceLossOutput
):
    """Each field's error vs the fp64 truth is at most 2x plain torch's fp32 error (+ a tiny atol).

    Sums over ~800 tokens carry fp32 rounding of ~1e-4 whoever adds them up, so a fixed tolerance
    would either fail on long sequences or say nothing on short ones.
    """
    for field in ("loss", "losses", "chosen_rewards", "rejected_rewards", "nll_loss", "odds_ratio_loss", "log_odds"):
        got, want = getattr(kernel, field), getattr(truth, field)
        assert (got is None) == (want is None), field
        if got is not None:
            assert not got.requires_grad or field in ("loss", "losses"), f"{field} must be detached"
            assert_lowprec_close(got, getattr(fp32, field), want, atol=1e-6, name=field)


# ---------------------------------------------------------------------------------------------
# Kernel vs reference
# ---------------------------------------------------------------------------------------------


@requires_triton
@pytest.mark.parametrize(*_SHAPES)
@pytest.mark.parametrize("name", list(_LOSSES))
def test_pairwise_kernel_matches_reference(name, n_seqs, seq_len, pairs):
    fn, ref_fn, kwargs, needs_ref = _LOSSES[name]
    policy, ref, mask, chosen_index, rejected_index = _batch(n_seqs, seq_len, pairs)
    upstream = torch.randn(len(pairs))

    def run(f, dtype, **extra):
        reference = ref.to(dtype) if needs_ref else None
        return _call(
            f,
            policy.to(dtype),
            mask,
            chosen_index,
            rejected_index,
            upstream.to(dtype),
            ref=reference,
            **kwargs,
            **extra,
        )

    kernel, kernel_grad = run(fn, torch.float32, backend="triton")
    fp32, fp32_grad = run(ref_fn, torch.float32)
    truth, truth_grad = run(ref_fn, torch.float64)
    assert kernel.loss.shape == () and kernel.losses.shape == (len(pairs),)
    torch.testing.assert_close(kernel.loss, kernel.losses.mean())
    _assert_like_torch_fp32(kernel, fp32, truth)
    assert kernel_grad.dtype == torch.float32
    assert_lowprec_close(kernel_grad, fp32_grad, truth_grad, atol=1e-7, name="grad policy_logps")
    assert (kernel_grad[~mask] == 0).all()


@requires_triton
@pytest.mark.parametrize("n_seqs, seq_len", [(6, 13), (5, 1100)])
def test_kto_kernel_matches_reference(n_seqs, seq_len):
    policy, ref, mask, _, _ = _batch(n_seqs, seq_len, [(0, 1)])
    labels = torch.arange(n_seqs) % 3 != 1
    upstream = torch.randn(n_seqs)

    def run(fn, dtype, **extra):
        x = policy.to(dtype).detach().clone().requires_grad_()
        out = fn(x, mask, labels, ref_logps=ref.to(dtype), **_KTO_KWARGS, **extra)
        (0.7 * out.loss + (out.losses * upstream.to(dtype)).sum()).backward()
        return out, x.grad

    kernel, kernel_grad = run(pl.kto_loss, torch.float32, backend="triton")
    fp32, fp32_grad = run(pl.kto_loss_ref, torch.float32)
    truth, truth_grad = run(pl.kto_loss_ref, torch.float64)
    assert kernel.losses.shape == (n_seqs,)
    assert kernel.chosen_rewards.shape == (int(labels.sum()),)
    _assert_like_torch_fp32(kernel, fp32, truth)
    assert_lowprec_close(kernel_grad, fp32_grad, truth_grad, atol=1e-7, name="grad policy_logps")


@requires_triton
@pytest.mark.parametrize("name", ["dpo", "hinge", "nll"])
def test_kernel_all_masked_sequence_in_a_summed_loss(name):
    # Losses on sums accept an empty sequence (log-prob 0): the kernel must agree with the reference
    # and leave every token of that row without gradient, even though its padding holds NaN.
    fn, ref_fn, kwargs, needs_ref = _LOSSES[name]
    policy, ref, mask, chosen_index, rejected_index = _batch(6, 13, [(0, 1), (2, 3), (4, 5)])
    mask[3] = False
    policy[3] = float("nan")
    upstream = torch.randn(3)
    extra = {"ref": ref} if needs_ref else {}
    kernel, grad = _call(fn, policy, mask, chosen_index, rejected_index, upstream, backend="triton", **extra, **kwargs)
    extra = {"ref": ref.double()} if needs_ref else {}
    truth, truth_grad = _call(
        ref_fn, policy.double(), mask, chosen_index, rejected_index, upstream.double(), **extra, **kwargs
    )
    torch.testing.assert_close(kernel.losses.double(), truth.losses, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad.double(), truth_grad, rtol=1e-5, atol=1e-7)
    assert (grad[3] == 0).all()


@requires_triton
def test_kernel_low_precision_policy_logps():
    # bf16 log-probs are summed in fp32: the loss matches the fp32 reference on the same rounded
    # inputs, and the gradient comes back in bf16, one rounding of an fp32 value away.
    policy, ref, mask, chosen_index, rejected_index = _batch(6, 13, [(0, 1), (2, 3), (4, 5)], dtype=torch.bfloat16)
    upstream = torch.zeros(3)
    kernel, grad = _call(pl.dpo_loss, policy, mask, chosen_index, rejected_index, upstream, ref=ref, backend="triton")
    truth, truth_grad = _call(
        pl.dpo_loss_ref, policy.double(), mask, chosen_index, rejected_index, upstream.double(), ref=ref.double()
    )
    assert grad.dtype == torch.bfloat16
    torch.testing.assert_close(kernel.loss.double(), truth.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad.double(), truth_grad, rtol=2 * torch.finfo(torch.bfloat16).eps, atol=1e-7)


@requires_triton
def test_orpo_kernel_near_certain_sequences():
    # Mean log-probs near 0 (a confident model): log(1 - e^a) loses ~1e-7/|a| of its relative
    # precision when evaluated naively in fp32, 1e-3 at a = -1e-4; the kernel's log1mexp must not.
    policy = torch.full((4, 8), -1e-4)
    policy[1] = -2e-3
    policy[2] = -0.9  # the other side of the -ln 2 branch point
    policy[3] = -5.0
    mask = torch.ones(4, 8, dtype=torch.bool)
    chosen_index, rejected_index = torch.tensor([0, 2, 1]), torch.tensor([1, 3, 3])
    kernel = pl.orpo_loss(policy, mask, chosen_index, rejected_index, backend="triton")
    truth = pl.orpo_loss_ref(policy.double(), mask, chosen_index, rejected_index)
    torch.testing.assert_close(kernel.log_odds.double(), truth.log_odds, rtol=2e-6, atol=0.0)
    torch.testing.assert_close(kernel.loss.double(), truth.loss, rtol=2e-6, atol=0.0)


@requires_triton
def test_sequence_logps_kernel_matches_reference():
    policy, _, mask, _, _ = _batch(5, 1100, [(0, 1)])
    for average in (False, True):
        upstream = torch.randn(5)
        x = policy.clone().requires_grad_()
        values, counts = pl.sequence_logps(x, mask, average=average, backend="triton")
        (values * upstream).sum().backward()
        y = policy.double().requires_grad_()
        truth, truth_counts = pl.sequence_logps_ref(y, mask, average=average)
        (truth * upstream.double()).sum().backward()
        assert values.dtype == torch.float32 and counts.dtype == torch.int64
        assert torch.equal(counts, truth_counts)
        torch.testing.assert_close(values.double(), truth, rtol=1e-6, atol=1e-5)
        torch.testing.assert_close(x.grad.double(), y.grad, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# Independent references: TRL's and Liger's formulas
# ---------------------------------------------------------------------------------------------
# TRL 1.16 (pip `trl`), re-implemented line by line because the losses live inside trainer
# methods that need a model. Batches use TRL's layout: chosen sequences first, then rejected.


def trl_batch_logps(per_token_logps: torch.Tensor, loss_mask: torch.Tensor, average: bool = False) -> torch.Tensor:
    """trl/experimental/cpo/cpo_trainer.py::get_batch_logps (and the DPO trainer's masked sum)."""
    per_token_logps = torch.where(loss_mask, per_token_logps, 0.0)  # TRL zeroes padded labels before the gather
    if average:
        return (per_token_logps * loss_mask).sum(-1) / loss_mask.sum(-1)
    return (per_token_logps * loss_mask).sum(-1)


def trl_dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta, label_smoothing):
    """TRL's `sigmoid` DPO loss with label smoothing (cDPO), as in trl/experimental/cpo/cpo_trainer.py::cpo_loss
    (`sigmoid` branch) and TRL < 1.0 trl/trainer/dpo_trainer.py::dpo_loss, on the DPO log-ratio margin."""
    logits = (chosen - ref_chosen) - (rejected - ref_rejected)
    losses = -F.logsigmoid(beta * logits) * (1 - label_smoothing) - F.logsigmoid(-beta * logits) * label_smoothing
    return losses.mean(), beta * (chosen - ref_chosen).detach(), beta * (rejected - ref_rejected).detach()


def trl_ipo_loss(chosen, rejected, ref_chosen, ref_rejected, chosen_mask, rejected_mask, beta):
    """trl/trainer/dpo_trainer.py::_compute_loss, loss_type == "ipo"."""
    chosen_avg_score = (chosen - ref_chosen) / chosen_mask.sum(dim=1).clamp(min=1.0)
    rejected_avg_score = (rejected - ref_rejected) / rejected_mask.sum(dim=1).clamp(min=1.0)
    ipo_delta = chosen_avg_score - rejected_avg_score
    return ((ipo_delta - 1 / (2 * beta)) ** 2).mean()


def trl_hinge_loss(chosen, rejected, ref_chosen, ref_rejected, beta):
    """trl/trainer/dpo_trainer.py::_compute_loss, loss_type == "hinge"."""
    delta_score = (chosen - ref_chosen) - (rejected - ref_rejected)
    return torch.relu(1 - beta * delta_score).mean()


def trl_simpo_loss(chosen_avg, rejected_avg, beta, simpo_gamma, label_smoothing):
    """trl/experimental/cpo/cpo_trainer.py::cpo_loss, loss_type == "simpo" (alpha = 0), on average logps."""
    logits = chosen_avg - rejected_avg
    gamma_logratios = simpo_gamma / beta
    logits = logits - gamma_logratios
    losses = -F.logsigmoid(beta * logits) * (1 - label_smoothing) - F.logsigmoid(-beta * logits) * label_smoothing
    return losses.mean(), beta * chosen_avg.detach(), beta * rejected_avg.detach()


def trl_log1mexp(x: torch.Tensor) -> torch.Tensor:
    """trl/experimental/orpo/orpo_trainer.py::log1mexp."""
    t = -0.6931471805599453
    return torch.where(x < t, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def trl_orpo_loss(chosen_tokens, chosen_mask, chosen_avg, rejected_avg, beta):
    """trl/experimental/orpo/orpo_trainer.py: odds_ratio_loss plus concatenated_forward's chosen NLL
    (nn.CrossEntropyLoss, a mean over every unmasked chosen token); loss = nll - losses.mean()."""
    log_odds = (chosen_avg - rejected_avg) - (trl_log1mexp(chosen_avg) - trl_log1mexp(rejected_avg))
    ratio = F.logsigmoid(log_odds)
    losses = beta * ratio
    nll_loss = -chosen_tokens[chosen_mask].mean()
    return nll_loss - losses.mean(), nll_loss.detach(), log_odds.detach()


def trl_sft_loss(chosen_tokens, chosen_mask):
    """trl/trainer/dpo_trainer.py::_compute_loss, loss_type == "sft" (RPO's NLL term)."""
    return -chosen_tokens[chosen_mask.bool()].mean()


def trl_kto_loss(logps, ref_logps, labels, beta, kl, desirable_weight, undesirable_weight):
    """trl/trainer/kto_trainer.py::_compute_loss, loss_type == "kto" (kl given, already clamped and detached)."""
    chosen_idx = torch.nonzero(labels, as_tuple=False).view(-1)
    rejected_idx = torch.nonzero(~labels, as_tuple=False).view(-1)
    chosen_logratios = logps.index_select(0, chosen_idx) - ref_logps.index_select(0, chosen_idx)
    rejected_logratios = logps.index_select(0, rejected_idx) - ref_logps.index_select(0, rejected_idx)
    chosen_losses = 1 - F.sigmoid(beta * (chosen_logratios - kl))
    rejected_losses = 1 - F.sigmoid(beta * (kl - rejected_logratios))
    losses = torch.cat((desirable_weight * chosen_losses, undesirable_weight * rejected_losses), 0)
    return losses.nanmean(), beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def _trl_layout(n_pairs: int, seq_len: int, dtype=torch.float64):
    """TRL's batch: rows [0, P) chosen, [P, 2P) rejected; masks cover a random completion span."""
    policy, ref, mask, _, _ = _batch(2 * n_pairs, seq_len, [(0, 1)], dtype=dtype)
    policy = policy.nan_to_num(0.0)
    ref = ref.nan_to_num(0.0, neginf=0.0)
    return policy, ref, mask, torch.arange(n_pairs), torch.arange(n_pairs, 2 * n_pairs)


def _grad(loss: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.autograd.grad(loss, x)[0]


@pytest.mark.parametrize(*BACKENDS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_dpo_matches_trl(backend, label_smoothing):
    policy, ref, mask, chosen_index, rejected_index = _trl_layout(4, 9)
    x = policy.float().requires_grad_()
    ours = pl.dpo_loss(
        x,
        mask,
        chosen_index,
        rejected_index,
        ref_logps=ref.float(),
        beta=0.3,
        label_smoothing=label_smoothing,
        backend=backend,
    )
    y = policy.clone().requires_grad_()
    seq, ref_seq = trl_batch_logps(y, mask), trl_batch_logps(ref, mask)
    loss, chosen_rewards, rejected_rewards = trl_dpo_loss(
        seq[:4], seq[4:], ref_seq[:4], ref_seq[4:], 0.3, label_smoothing
    )
    torch.testing.assert_close(ours.loss.double(), loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.chosen_rewards.double(), chosen_rewards, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.rejected_rewards.double(), rejected_rewards, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(_grad(ours.loss, x).double(), _grad(loss, y), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(*BACKENDS)
def test_ipo_matches_trl(backend):
    policy, ref, mask, chosen_index, rejected_index = _trl_layout(4, 9)
    x = policy.float().requires_grad_()
    ours = pl.ipo_loss(x, mask, chosen_index, rejected_index, ref_logps=ref.float(), beta=0.4, backend=backend)
    y = policy.clone().requires_grad_()
    seq, ref_seq = trl_batch_logps(y, mask), trl_batch_logps(ref, mask)
    loss = trl_ipo_loss(seq[:4], seq[4:], ref_seq[:4], ref_seq[4:], mask[:4].double(), mask[4:].double(), 0.4)
    torch.testing.assert_close(ours.loss.double(), loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(_grad(ours.loss, x).double(), _grad(loss, y), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(*BACKENDS)
def test_hinge_matches_trl(backend):
    policy, ref, mask, chosen_index, rejected_index = _trl_layout(6, 9)
    x = policy.float().requires_grad_()
    ours = pl.hinge_loss(x, mask, chosen_index, rejected_index, ref_logps=ref.float(), beta=0.7, backend=backend)
    y = policy.clone().requires_grad_()
    seq, ref_seq = trl_batch_logps(y, mask), trl_batch_logps(ref, mask)
    loss = trl_hinge_loss(seq[:6], seq[6:], ref_seq[:6], ref_seq[6:], 0.7)
    margins = (seq[:6] - ref_seq[:6]) - (seq[6:] - ref_seq[6:])
    assert ((1 - 0.7 * margins) > 0).any() and ((1 - 0.7 * margins) < 0).any(), "both sides of the hinge"
    torch.testing.assert_close(ours.loss.double(), loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(_grad(ours.loss, x).double(), _grad(loss, y), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(*BACKENDS)
def test_simpo_matches_trl(backend):
    policy, _, mask, chosen_index, rejected_index = _trl_layout(4, 9)
    x = policy.float().requires_grad_()
    ours = pl.simpo_loss(
        x, mask, chosen_index, rejected_index, beta=2.5, gamma=1.2, label_smoothing=0.1, backend=backend
    )
    y = policy.clone().requires_grad_()
    avg = trl_batch_logps(y, mask, average=True)
    loss, chosen_rewards, rejected_rewards = trl_simpo_loss(avg[:4], avg[4:], 2.5, 1.2, 0.1)
    torch.testing.assert_close(ours.loss.double(), loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.chosen_rewards.double(), chosen_rewards, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.rejected_rewards.double(), rejected_rewards, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(_grad(ours.loss, x).double(), _grad(loss, y), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(*BACKENDS)
def test_orpo_matches_trl(backend):
    policy, _, mask, chosen_index, rejected_index = _trl_layout(4, 9)
    x = policy.float().requires_grad_()
    ours = pl.orpo_loss(x, mask, chosen_index, rejected_index, beta=0.25, backend=backend)
    y = policy.clone().requires_grad_()
    avg = trl_batch_logps(y, mask, average=True)
    loss, nll, log_odds = trl_orpo_loss(y[:4], mask[:4], avg[:4], avg[4:], 0.25)
    torch.testing.assert_close(ours.loss.double(), loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.nll_loss.double(), nll, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.log_odds.double(), log_odds, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.nll_loss + ours.odds_ratio_loss, ours.loss, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(_grad(ours.loss, x).double(), _grad(loss, y), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(*BACKENDS)
def test_nll_matches_trl_sft_term(backend):
    policy, _, mask, chosen_index, rejected_index = _trl_layout(4, 9)
    x = policy.float().requires_grad_()
    ours = pl.nll_loss(x, mask, chosen_index, rejected_index, backend=backend)
    y = policy.clone().requires_grad_()
    loss = trl_sft_loss(y[:4], mask[:4])
    torch.testing.assert_close(ours.loss.double(), loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(_grad(ours.loss, x).double(), _grad(loss, y), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(*BACKENDS)
def test_kto_matches_trl(backend):
    policy, ref, mask, _, _ = _trl_layout(4, 9)
    labels = torch.tensor([True, False, False, True, True, False, True, True])
    # TRL's reference point: mean log-ratio of mismatched pairs, detached and clamped at 0.
    kl = torch.tensor(0.15)
    x = policy.float().requires_grad_()
    ours = pl.kto_loss(
        x,
        mask,
        labels,
        ref_logps=ref.float(),
        beta=0.4,
        desirable_weight=1.2,
        undesirable_weight=0.8,
        kl_reference_point=kl,
        backend=backend,
    )
    y = policy.clone().requires_grad_()
    loss, chosen_rewards, rejected_rewards = trl_kto_loss(
        trl_batch_logps(y, mask), trl_batch_logps(ref, mask), labels, 0.4, kl.double(), 1.2, 0.8
    )
    torch.testing.assert_close(ours.loss.double(), loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.chosen_rewards.double(), chosen_rewards, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.rejected_rewards.double(), rejected_rewards, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(_grad(ours.loss, x).double(), _grad(loss, y), rtol=1e-5, atol=1e-7)


def _liger(module: str):
    return importlib.import_module(f"liger_kernel.chunked_loss.{module}")


@pytest.mark.parametrize(*BACKENDS)
def test_liger_preference_loss_functions_agree(backend):
    # Liger's pure-torch `preference_loss_fn`s (liger_kernel/chunked_loss/*_loss.py) on our sequence
    # values; `full_target` only supplies the batch size 2P. Liger's DPO has no label smoothing.
    dpo, simpo, orpo = _liger("dpo_loss"), _liger("simpo_loss"), _liger("orpo_loss")
    policy, ref, mask, chosen_index, rejected_index = _trl_layout(4, 9)
    full_target = torch.zeros(8, 9)
    sums = trl_batch_logps(policy, mask)
    avg = trl_batch_logps(policy, mask, average=True)
    ref_sums = trl_batch_logps(ref, mask)
    x = policy.float()
    for loss_type, fn in (("sigmoid", pl.dpo_loss), ("hinge", pl.hinge_loss)):
        ours = fn(x, mask, chosen_index, rejected_index, ref_sequence_logps=ref_sums.float(), beta=0.3, backend=backend)
        liger_loss, liger_chosen, liger_rejected = dpo.LigerFusedLinearDPOFunction.preference_loss_fn(
            sums[:4], sums[4:], full_target, ref_sums[:4], ref_sums[4:], beta=0.3, loss_type=loss_type
        )
        torch.testing.assert_close(ours.loss.double(), liger_loss, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ours.chosen_rewards.double(), liger_chosen, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ours.rejected_rewards.double(), liger_rejected, rtol=1e-5, atol=1e-6)
    ours = pl.simpo_loss(
        x, mask, chosen_index, rejected_index, beta=2.0, gamma=0.7, label_smoothing=0.1, backend=backend
    )
    liger_loss, _, _ = simpo.LigerFusedLinearSimPOFunction.preference_loss_fn(
        avg[:4], avg[4:], full_target, beta=2.0, gamma=0.7, label_smoothing=0.1
    )
    torch.testing.assert_close(ours.loss.double(), liger_loss, rtol=1e-5, atol=1e-6)
    ours = pl.orpo_loss(x, mask, chosen_index, rejected_index, beta=0.2, backend=backend)
    liger_loss, _, _, _, liger_log_odds_mean = orpo.LigerFusedLinearORPOFunction.preference_loss_fn(
        avg[:4], avg[4:], full_target, beta=0.2
    )
    torch.testing.assert_close(ours.odds_ratio_loss.double(), liger_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.log_odds.mean().double(), liger_log_odds_mean, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(*BACKENDS)
def test_kto_agrees_with_liger(backend):
    kto = _liger("kto_loss")
    policy, ref, mask, _, _ = _trl_layout(4, 9)
    labels = torch.tensor([True, False, False, True, True, False, True, True])
    ours = pl.kto_loss(
        policy.float(), mask, labels, ref_logps=ref.float(), beta=0.4, kl_reference_point=0.1, backend=backend
    )
    liger_loss, liger_chosen_sum, liger_rejected_sum = kto.LigerFusedLinearKTOFunction.preference_loss_fn(
        trl_batch_logps(policy, mask),
        labels,
        torch.zeros(8),
        trl_batch_logps(ref, mask),
        beta=0.4,
        kl=torch.tensor(0.1, dtype=torch.float64),
    )
    torch.testing.assert_close(ours.loss.double(), liger_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.chosen_rewards.sum().double(), liger_chosen_sum, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.rejected_rewards.sum().double(), liger_rejected_sum, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Contracts shared by every loss
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(*BACKENDS)
@pytest.mark.parametrize("name", ["dpo", "ipo", "hinge", "kto"])
def test_cached_reference_sums_equal_per_token_reference(backend, name):
    # The engine caches Σ mask·ref_logp per sequence; that must give bit-identical results to
    # passing ref_logps, because both go through the same masked reduction.
    policy, ref, mask, chosen_index, rejected_index = _batch(6, 13, [(0, 1), (2, 3), (4, 5), (0, 5)])
    cached, _ = pl.sequence_logps(ref, mask, backend=backend)
    results = []
    for reference in ({"ref_logps": ref}, {"ref_sequence_logps": cached}):
        x = policy.clone().requires_grad_()
        if name == "kto":
            out = pl.kto_loss(x, mask, torch.arange(6) % 2 == 0, **reference, **_KTO_KWARGS, backend=backend)
        else:
            fn, _, kwargs, _ = _LOSSES[name]
            out = fn(x, mask, chosen_index, rejected_index, **reference, **kwargs, backend=backend)
        out.loss.backward()
        results.append((out, x.grad))
    (per_token, grad_a), (per_sequence, grad_b) = results
    for field in ("loss", "losses", "chosen_rewards", "rejected_rewards"):
        assert torch.equal(getattr(per_token, field), getattr(per_sequence, field)), field
    assert torch.equal(grad_a, grad_b)


@pytest.mark.parametrize(*BACKENDS)
def test_hand_derived_values(backend):
    # Policy = reference and equal sequences give zero margins h = 0, so:
    #   DPO:   -(1-ε) log σ(0) - ε log σ(0) = log 2, for any β and ε;
    #   IPO:   (0 - 1/(2β))² = 1 for β = 0.5;       hinge: max(0, 1 - 0) = 1;
    #   SimPO: -log σ(-γ) = log(1 + e^γ) = log 2 for γ = 0;
    #   KTO:   λ · (1 - σ(0)) = λ / 2 with z = z0 = 0, so (1.0 · 0.5 + 3.0 · 0.5) / 2 = 1.
    policy = torch.full((2, 3), -1.0)
    mask = torch.ones(2, 3, dtype=torch.bool)
    pair = (torch.tensor([0]), torch.tensor([1]))
    kwargs = {"ref_logps": policy.clone(), "backend": backend}
    assert pl.dpo_loss(policy, mask, *pair, beta=0.3, label_smoothing=0.2, **kwargs).loss.item() == pytest.approx(
        math.log(2.0), rel=1e-6
    )
    assert pl.ipo_loss(policy, mask, *pair, beta=0.5, **kwargs).loss.item() == pytest.approx(1.0, rel=1e-6)
    assert pl.hinge_loss(policy, mask, *pair, beta=0.5, **kwargs).loss.item() == pytest.approx(1.0, rel=1e-6)
    simpo = pl.simpo_loss(policy, mask, *pair, gamma=0.0, backend=backend)
    assert simpo.loss.item() == pytest.approx(math.log(2.0), rel=1e-6)
    kto = pl.kto_loss(policy, mask, torch.tensor([True, False]), undesirable_weight=3.0, **kwargs)
    assert kto.loss.item() == pytest.approx(1.0, rel=1e-6)
    # NLL: 3 tokens of log-prob -1 in the single chosen sequence average to 1.
    assert pl.nll_loss(policy, mask, *pair, backend=backend).loss.item() == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize(*BACKENDS)
def test_reference_inputs_get_no_gradient(backend):
    policy, ref, mask, chosen_index, rejected_index = _batch(4, 7, [(0, 1), (2, 3)])
    ref = ref.nan_to_num(0.0, neginf=0.0).requires_grad_()
    x = policy.clone().requires_grad_()
    pl.dpo_loss(x, mask, chosen_index, rejected_index, ref_logps=ref, backend=backend).loss.backward()
    assert x.grad is not None and ref.grad is None


@pytest.mark.parametrize("name", list(_LOSSES))
def test_reference_gradcheck(name):
    _, ref_fn, kwargs, needs_ref = _LOSSES[name]
    policy, ref, mask, chosen_index, rejected_index = _batch(4, 5, [(0, 1), (2, 3), (0, 3)])
    policy = policy.double().nan_to_num(-1.0).requires_grad_()
    extra = {"ref_logps": ref.double()} if needs_ref else {}
    fn = lambda x: ref_fn(x, mask, chosen_index, rejected_index, **extra, **kwargs).losses
    assert torch.autograd.gradcheck(fn, (policy,), fast_mode=True)  # random Jacobian projections


def test_kto_reference_gradcheck():
    policy, ref, mask, _, _ = _batch(4, 5, [(0, 1)])
    policy = policy.double().nan_to_num(-1.0).requires_grad_()
    fn = lambda x: (
        pl.kto_loss_ref(x, mask, torch.tensor([True, False, True, False]), ref_logps=ref.double(), **_KTO_KWARGS).losses
    )
    assert torch.autograd.gradcheck(fn, (policy,), fast_mode=True)  # random Jacobian projections


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


# The interpreter evaluates the poisoned inputs with numpy, which warns about the nan it is fed.
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:divide by zero encountered:RuntimeWarning")
@pytest.mark.parametrize(*BACKENDS)
def test_errors_name_the_culprit(backend):
    policy, ref, mask, chosen_index, rejected_index = _batch(4, 6, [(0, 1), (2, 3)])
    pairs = (chosen_index, rejected_index)
    with pytest.raises(ValueError, match=r"dpo_loss: rejected_index\[1\] = 7 is out of range for 4 sequences"):
        pl.dpo_loss(policy, mask, chosen_index, torch.tensor([1, 7]), ref_logps=ref, backend=backend)
    with pytest.raises(ValueError, match=r"chosen_index\[0\] = -1 is out of range"):
        pl.simpo_loss(policy, mask, torch.tensor([-1, 2]), rejected_index, backend=backend)
    empty = mask.clone()
    empty[3] = False
    with pytest.raises(ValueError, match=r"ipo_loss: sequence 3 \(rejected in pair 1\) has no tokens in the loss mask"):
        pl.ipo_loss(policy, empty, *pairs, ref_logps=ref, backend=backend)
    # DPO sums, so an empty sequence is fine (its log-prob is 0).
    assert torch.isfinite(pl.dpo_loss(policy, empty, *pairs, ref_logps=ref, backend=backend).loss)
    poisoned = policy.clone()
    poisoned[2, mask[2].nonzero()[0, 0]] = float("nan")
    with pytest.raises(ValueError, match=r"nan or inf among the masked-in tokens of sequence 2 \(chosen in pair 1\)"):
        pl.dpo_loss(poisoned, mask, *pairs, ref_logps=ref, backend=backend)
    cached = torch.tensor([-1.0, float("inf"), -2.0, -3.0])
    with pytest.raises(ValueError, match=r"ref_sequence_logps of sequence 1 \(rejected in pair 0\) is not finite"):
        pl.dpo_loss(policy, mask, *pairs, ref_sequence_logps=cached, backend=backend)
    certain = policy.nan_to_num(0.0).clone()
    certain[1] = 0.0
    with pytest.raises(ValueError, match=r"orpo_loss: sequence 1 \(rejected in pair 0\) has a mean log-prob of 0"):
        pl.orpo_loss(certain, mask, *pairs, backend=backend)
    with pytest.raises(ValueError, match=r"kto_loss: kl_reference_point is not finite"):
        pl.kto_loss(
            policy,
            mask,
            torch.ones(4, dtype=torch.bool),
            ref_logps=ref,
            kl_reference_point=torch.tensor(float("nan")),
            backend=backend,
        )


def test_argument_errors():
    policy, ref, mask, chosen_index, rejected_index = _batch(4, 6, [(0, 1), (2, 3)])
    pairs = (chosen_index, rejected_index)
    with pytest.raises(ValueError, match="dpo_loss: this loss needs reference log-probs"):
        pl.dpo_loss(policy, mask, *pairs)
    with pytest.raises(ValueError, match="simpo_loss: this loss is reference-free"):
        pl.simpo_loss(policy, mask, *pairs, ref_logps=ref)
    with pytest.raises(ValueError, match="not both"):
        pl.dpo_loss(policy, mask, *pairs, ref_logps=ref, ref_sequence_logps=torch.zeros(4))
    with pytest.raises(ValueError, match=r"mask must have the shape of policy_logps \(4, 6\). Got \(4, 5\)"):
        pl.dpo_loss(policy, mask[:, :5], *pairs, ref_logps=ref)
    with pytest.raises(ValueError, match=r"ref_logps must have the shape of policy_logps"):
        pl.dpo_loss(policy, mask, *pairs, ref_logps=ref[:3])
    with pytest.raises(ValueError, match=r"ref_sequence_logps must be a floating \[S\] = \[4\] tensor"):
        pl.dpo_loss(policy, mask, *pairs, ref_sequence_logps=torch.zeros(3))
    with pytest.raises(ValueError, match="same length"):
        pl.nll_loss(policy, mask, chosen_index, rejected_index[:1])
    with pytest.raises(ValueError, match="there are no pairs"):
        pl.nll_loss(policy, mask, chosen_index[:0], rejected_index[:0])
    with pytest.raises(ValueError, match="must be a 1-D integer tensor"):
        pl.nll_loss(policy, mask, chosen_index.float(), rejected_index)
    with pytest.raises(ValueError, match=r"label_smoothing .* must lie in \[0, 0.5\). Got 0.5"):
        pl.dpo_loss(policy, mask, *pairs, ref_logps=ref, label_smoothing=0.5)
    with pytest.raises(ValueError, match=r"beta must be a finite number > 0\. Got 0\.0"):
        pl.ipo_loss(policy, mask, *pairs, ref_logps=ref, beta=0.0)
    with pytest.raises(ValueError, match=r"labels must be a \[S\] = \[4\] tensor"):
        pl.kto_loss(policy, mask, torch.ones(3, dtype=torch.bool), ref_logps=ref)
    with pytest.raises(ValueError, match=r"policy_logps must be a floating \[S, T\] tensor"):
        pl.dpo_loss(policy[0], mask[0], *pairs, ref_logps=ref[0])
    with pytest.raises(ValueError, match="sequence 3 has no tokens in the mask"):
        empty = mask.clone()
        empty[3] = False
        pl.sequence_logps(policy, empty, average=True)


@requires_triton
def test_apply_contract():
    # Positional order of SequenceLossFunction.apply: (policy_logps, mask, ref_logps, ref_sequence_logps,
    # chosen_index, rejected_index, labels, reference_point, loss table row, params); 6 outputs.
    policy = torch.full((2, 3), -1.0, requires_grad=True)
    mask = torch.ones(2, 3, dtype=torch.uint8)
    outputs = SequenceLossFunction.apply(
        policy,
        mask,
        None,
        torch.zeros(2),
        torch.tensor([0]),
        torch.tensor([1]),
        None,
        None,
        pairwise_losses._DPO,
        {"beta": 0.1, "label_smoothing": 0.0},
    )
    assert len(outputs) == 6
    assert outputs[0].item() == pytest.approx(math.log(2.0), rel=1e-6)  # h = 0 → log 2
    outputs[0].backward()
    # d/dh -log σ(βh) at h = 0 is -β/2; chosen tokens get -0.05 each, rejected +0.05.
    torch.testing.assert_close(policy.grad, torch.tensor([[-0.05] * 3, [0.05] * 3]))


def test_output_is_frozen():
    out = pl.nll_loss_ref(
        torch.full((2, 2), -1.0), torch.ones(2, 2, dtype=torch.bool), torch.tensor([0]), torch.tensor([1])
    )
    assert isinstance(out, pl.PreferenceLossOutput)
    with pytest.raises(AttributeError):
        out.loss = torch.zeros(())  # type: ignore[misc]

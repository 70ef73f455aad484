"""KL kernels: per-token k1/k2/k3 and full-distribution KL/JSD, Triton (CPU interpreter) vs references."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
import torch.nn.functional as F

from prefcore.kernels._dispatch import HAS_TRITON
from prefcore.kernels._dispatch import interpreter_enabled
from prefcore.kernels.kl import DistributionKLFunction
from prefcore.kernels.kl import PerTokenKLFunction
from prefcore.kernels.kl import distribution_kl
from prefcore.kernels.kl import distribution_kl_ref
from prefcore.kernels.kl import per_token_kl
from prefcore.kernels.kl import per_token_kl_ref
from prefcore.testing import assert_lowprec_close

requires_triton = pytest.mark.skipif(
    not (HAS_TRITON and (torch.cuda.is_available() or interpreter_enabled())),
    reason="needs triton and a GPU or TRITON_INTERPRET=1",
)

# ---------------------------------------------------------------------------------------------
# Per-token estimators
# ---------------------------------------------------------------------------------------------

# shape: why
_PER_TOKEN_SHAPES = (
    "shape",
    [
        (1,),  # a single token: one program, 1023 masked lanes
        (3, 37),  # 2-D, one ragged block
        (2, 3, 700),  # 3-D, 4200 tokens: five programs of 1024, the last one ragged
    ],
)
_ESTIMATORS = ("estimator", ["k1", "k2", "k3"])


def _per_token_inputs(shape: tuple[int, ...], spread: float = 0.5):
    """fp32 log-probs, their float64 copies, and a mask with NaN padding that must never be read."""
    logps = -torch.rand(shape) * 4.0
    ref_logps = logps + torch.randn(shape) * spread
    mask = torch.rand(shape) > 0.3
    if len(shape) > 1:
        mask[0] = False  # an all-masked row
    logps = logps.masked_fill(~mask, float("nan"))
    ref_logps = ref_logps.masked_fill(~mask, float("-inf"))
    return logps, ref_logps, mask


def _per_token_run(fn, logps, ref_logps, mask, upstream, **kwargs):
    x = logps.detach().clone().requires_grad_()
    y = ref_logps.detach().clone().requires_grad_()
    kl = fn(x, y, mask, **kwargs)
    (kl * upstream).sum().backward()
    return kl.detach(), x.grad, y.grad


@requires_triton
@pytest.mark.parametrize(*_PER_TOKEN_SHAPES)
@pytest.mark.parametrize(*_ESTIMATORS)
@pytest.mark.parametrize("with_mask", [True, False])
def test_per_token_kl_kernel_matches_reference(shape, estimator, with_mask):
    logps, ref_logps, mask = _per_token_inputs(shape)
    if not with_mask:
        logps, ref_logps = logps.nan_to_num(-1.0), ref_logps.nan_to_num(-2.0, neginf=-2.0)
        mask = None
    upstream = torch.randn(shape)
    kernel = _per_token_run(per_token_kl, logps, ref_logps, mask, upstream, estimator=estimator, backend="triton")
    truth = _per_token_run(
        per_token_kl_ref, logps.double(), ref_logps.double(), mask, upstream.double(), estimator=estimator
    )
    assert kernel[0].dtype == torch.float32 and kernel[0].shape == shape
    for got, want, name in zip(kernel, truth, ("kl", "grad logps", "grad ref_logps"), strict=True):
        assert torch.isfinite(got).all(), name
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6, msg=name)
    if mask is not None:
        assert (kernel[0][~mask] == 0).all() and (kernel[1][~mask] == 0).all() and (kernel[2][~mask] == 0).all()


@requires_triton
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_per_token_kl_kernel_low_precision_inputs(dtype):
    # The math is fp32 either way, so the value matches the fp32 reference on the same rounded
    # inputs; gradients come back in the input dtype, one rounding away from the fp32 gradient.
    logps, ref_logps, mask = _per_token_inputs((4, 300))
    logps, ref_logps = logps.to(dtype), ref_logps.to(dtype)
    upstream = torch.randn(4, 300)
    kernel = _per_token_run(per_token_kl, logps, ref_logps, mask, upstream, estimator="k3", backend="triton")
    truth = _per_token_run(per_token_kl_ref, logps.double(), ref_logps.double(), mask, upstream.double())
    torch.testing.assert_close(kernel[0].double(), truth[0], rtol=1e-5, atol=1e-6)
    eps = torch.finfo(dtype).eps
    for got, want in zip(kernel[1:], truth[1:], strict=True):
        assert got.dtype == dtype
        torch.testing.assert_close(got.double(), want, rtol=2 * eps, atol=1e-6)


@requires_triton
def test_k3_keeps_its_digits_for_tiny_log_ratios():
    # k3(d) ≈ d²/2 for small d; exp(-d) + d - 1 evaluated directly in fp32 loses ~1e-7/d of it to
    # cancellation (a 1e-3 relative error at d = 1e-4), the kernel's Taylor branch does not.
    ref_logps = torch.full((64,), -2.0)
    deltas = torch.logspace(-5, -1, 64) * torch.tensor([1.0, -1.0]).repeat(32)
    logps = ref_logps + deltas
    kl = per_token_kl(logps, ref_logps, estimator="k3", backend="triton")
    d = logps.double() - ref_logps.double()  # the exact fp32 inputs' difference
    truth = torch.expm1(-d) + d
    torch.testing.assert_close(kl.double(), truth, rtol=2e-6, atol=0.0)


@pytest.mark.parametrize("backend", [pytest.param("triton", marks=requires_triton), "torch"])
def test_per_token_kl_hand_values(backend):
    # logp = log 1/2, ref = 0 (log 1): d = -ln 2, so k1 = -ln 2, k2 = (ln 2)²/2 and
    # k3 = exp(ln 2) - ln 2 - 1 = 1 - ln 2; d k3/d logp = 1 - exp(ref - logp) = 1 - 2 = -1.
    ln2 = math.log(2.0)
    expected = {"k1": -ln2, "k2": ln2 * ln2 / 2, "k3": 1.0 - ln2}
    expected_grad = {"k1": 1.0, "k2": -ln2, "k3": -1.0}
    for estimator, value in expected.items():
        logps = torch.tensor([-ln2], requires_grad=True)
        kl = per_token_kl(logps, torch.zeros(1), estimator=estimator, backend=backend)
        kl.sum().backward()
        assert kl.item() == pytest.approx(value, rel=1e-6)
        assert logps.grad.item() == pytest.approx(expected_grad[estimator], rel=1e-6)


@pytest.mark.parametrize(*_ESTIMATORS)
def test_per_token_kl_reference_gradcheck(estimator):
    logps = (-torch.rand(3, 5, dtype=torch.float64)).requires_grad_()
    ref_logps = (-torch.rand(3, 5, dtype=torch.float64)).requires_grad_()
    mask = torch.rand(3, 5) > 0.3
    assert torch.autograd.gradcheck(lambda a, b: per_token_kl_ref(a, b, mask, estimator=estimator), (logps, ref_logps))


def test_per_token_kl_rejects_bad_inputs():
    logps = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"estimator must be one of k1, k2, k3\. Got 'k4'"):
        per_token_kl(logps, logps, estimator="k4")
    with pytest.raises(ValueError, match=r"same shape. Got \(2, 3\) and \(3, 2\)"):
        per_token_kl(logps, logps.T)
    with pytest.raises(ValueError, match="mask must have the shape"):
        per_token_kl(logps, logps, torch.ones(3, dtype=torch.bool))


@requires_triton
def test_per_token_kl_apply_contract():
    # Positional order of the autograd Function: (logps, ref_logps, mask, estimator_id).
    logps = torch.tensor([-1.0, -2.0], requires_grad=True)
    kl = PerTokenKLFunction.apply(logps, torch.tensor([-1.5, -2.0]), None, 1)
    torch.testing.assert_close(kl, torch.tensor([0.5, 0.0]))


# ---------------------------------------------------------------------------------------------
# Full-distribution divergences
# ---------------------------------------------------------------------------------------------

# (leading shape, V): why
_DIST_SHAPES = (
    "lead, vocab",
    [
        ((1,), 1),  # V = 1: both distributions are the same point mass, divergence and gradients 0
        ((2, 3), 3),  # 3-D logits, V far below one block: most lanes masked
        ((4,), 3001),  # two blocks of 2048, the second ragged: the online-LSE rescaling runs
    ],
)
_LARGE_VOCAB = 65537  # > 64k, 33 blocks, one row so that the interpreter stays cheap
# (mode, beta): the three modes plus Liger's two JSD end points, which are the plain KLs.
_MODES = ("mode, beta", [("reverse", 0.5), ("forward", 0.5), ("jsd", 0.3), ("jsd", 0.0), ("jsd", 1.0)])
# dtype, atol on values, atol on gradients; low precision is judged against plain torch in the
# same dtype (assert_lowprec_close: error vs an fp64 truth <= 2x torch's + atol). The atol leaves
# room for the interpreter, which rounds fp32 -> bf16 towards zero where a GPU rounds to nearest.
_LOWPREC = ("dtype, atol, grad_atol", [(torch.bfloat16, 1e-4, 4e-3), (torch.float16, 1e-4, 5e-4)])
_TEMPERATURE = 0.7


def _dist_inputs(lead: tuple[int, ...], vocab: int, dtype: torch.dtype = torch.float32, scale: float = 3.0):
    logits = (torch.randn(*lead, vocab) * scale).to(dtype)
    ref_logits = (logits.float() + torch.randn(*lead, vocab) * scale / 2).to(dtype)
    mask = torch.ones(lead, dtype=torch.bool)
    if mask.numel() > 1:
        mask.view(-1)[1] = False
    return logits, ref_logits, mask


def _dist_run(fn, logits, ref_logits, upstream, **kwargs):
    x = logits.detach().clone().requires_grad_()
    y = ref_logits.detach().clone().requires_grad_()
    divergence = fn(x, y, **kwargs)
    (divergence * upstream).sum().backward()
    return divergence.detach(), x.grad, y.grad


def _dist_compare_fp32(lead, vocab, mode, beta):
    logits, ref_logits, mask = _dist_inputs(lead, vocab)
    upstream = torch.randn(lead)
    kwargs = dict(mode=mode, beta=beta, temperature=_TEMPERATURE, mask=mask)
    kernel = _dist_run(distribution_kl, logits, ref_logits, upstream, backend="triton", **kwargs)
    truth = _dist_run(distribution_kl_ref, logits.double(), ref_logits.double(), upstream.double(), **kwargs)
    assert kernel[0].dtype == torch.float32 and kernel[0].shape == lead
    for got, want, name in zip(kernel, truth, ("divergence", "grad logits", "grad ref_logits"), strict=True):
        assert torch.isfinite(got).all(), name
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=2e-6, msg=name)
    assert (kernel[0][~mask] == 0).all() and (kernel[1][~mask] == 0).all() and (kernel[2][~mask] == 0).all()


@requires_triton
@pytest.mark.parametrize(*_DIST_SHAPES)
@pytest.mark.parametrize(*_MODES)
def test_distribution_kl_kernel_matches_reference_fp32(lead, vocab, mode, beta):
    _dist_compare_fp32(lead, vocab, mode, beta)


@requires_triton
@pytest.mark.parametrize("mode, beta", [("reverse", 0.5), ("jsd", 0.5)])
def test_distribution_kl_kernel_large_vocabulary(mode, beta):
    _dist_compare_fp32((1,), _LARGE_VOCAB, mode, beta)


@requires_triton
@pytest.mark.parametrize(*_LOWPREC)
@pytest.mark.parametrize("mode, beta", [("reverse", 0.5), ("forward", 0.5), ("jsd", 0.5)])
@pytest.mark.parametrize("lead, vocab", [((2, 3), 3), ((4,), 3001)])
def test_distribution_kl_kernel_low_precision(lead, vocab, mode, beta, dtype, atol, grad_atol):
    logits, ref_logits, mask = _dist_inputs(lead, vocab, dtype)
    upstream = torch.randn(lead)
    kwargs = dict(mode=mode, beta=beta, temperature=_TEMPERATURE, mask=mask)
    kernel = _dist_run(distribution_kl, logits, ref_logits, upstream, backend="triton", **kwargs)
    lowprec = _dist_run(distribution_kl_ref, logits, ref_logits, upstream.to(dtype), upcast=False, **kwargs)
    truth = _dist_run(distribution_kl_ref, logits.double(), ref_logits.double(), upstream.double(), **kwargs)
    assert kernel[0].dtype == torch.float32
    assert kernel[1].dtype == dtype and kernel[2].dtype == dtype
    assert_lowprec_close(kernel[0], lowprec[0], truth[0], atol=atol, name="divergence")
    assert_lowprec_close(kernel[1], lowprec[1], truth[1], atol=grad_atol, name="grad logits")
    assert_lowprec_close(kernel[2], lowprec[2], truth[2], atol=grad_atol, name="grad ref_logits")


@requires_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("mode, beta", [("reverse", 0.5), ("forward", 0.5), ("jsd", 0.5)])
def test_distribution_kl_kernel_extreme_logits(dtype, mode, beta):
    # ±1e4 logits (representable in fp16) make near one-hot distributions and divergences near
    # 1e4. Values are fp32 either way: within a few fp32 ulps of 1e4 (~1e-3). Gradients are
    # stored in the input dtype: within two of its ulps (the interpreter truncates).
    logits, ref_logits, _ = _dist_inputs((3,), 3001, scale=1.0)
    logits[:, ::7] = 1e4
    ref_logits[:, 3::11] = -1e4
    ref_logits[1, 5] = 1e4
    logits, ref_logits = logits.to(dtype), ref_logits.to(dtype)
    upstream = torch.randn(3)
    kwargs = dict(mode=mode, beta=beta)
    kernel = _dist_run(distribution_kl, logits, ref_logits, upstream, backend="triton", **kwargs)
    truth = _dist_run(distribution_kl_ref, logits.double(), ref_logits.double(), upstream.double(), **kwargs)
    assert truth[0].max() > 100 or mode == "jsd"  # the inputs really are extreme
    torch.testing.assert_close(kernel[0].double(), truth[0], rtol=1e-6, atol=1e-6)
    grad_rtol = 1e-5 if dtype == torch.float32 else 2 * torch.finfo(dtype).eps
    for got, want, name in zip(kernel[1:], truth[1:], ("grad logits", "grad ref_logits"), strict=True):
        assert torch.isfinite(got).all(), name
        torch.testing.assert_close(got.double(), want, rtol=grad_rtol, atol=1e-5, msg=name)


# The interpreter runs on numpy, which warns about the -inf - -inf it evaluates in banned lanes
# before tl.where discards them.
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:divide by zero encountered:RuntimeWarning")
@requires_triton
@pytest.mark.parametrize(*_MODES)
def test_distribution_kl_kernel_banned_vocabulary(mode, beta):
    # -inf logits where both models ban a token, including one whole 2048-column block, so that a
    # block's running max is -inf: 0 · log 0 terms must count as 0, not nan.
    logits, ref_logits, _ = _dist_inputs((2,), 3001)
    banned = torch.zeros(3001, dtype=torch.bool)
    banned[:2048] = True
    banned[2500::3] = True
    logits[:, banned] = float("-inf")
    ref_logits[:, banned] = float("-inf")
    upstream = torch.randn(2)
    kernel = _dist_run(distribution_kl, logits, ref_logits, upstream, mode=mode, beta=beta, backend="triton")
    truth = _dist_run(
        distribution_kl_ref, logits.double(), ref_logits.double(), upstream.double(), mode=mode, beta=beta
    )
    for got, want, name in zip(kernel, truth, ("divergence", "grad logits", "grad ref_logits"), strict=True):
        assert torch.isfinite(got).all(), name
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=2e-6, msg=name)


@requires_triton
@pytest.mark.parametrize("mode, beta", [("reverse", 0.5), ("jsd", 0.5)])
def test_distribution_kl_kernel_masked_rows_are_never_read(mode, beta):
    logits, ref_logits, _ = _dist_inputs((4,), 300)
    mask = torch.tensor([False, True, False, False])  # includes all-but-one masked
    logits[~mask] = float("nan")
    ref_logits[~mask] = float("nan")
    divergence, grad_logits, grad_ref = _dist_run(
        distribution_kl, logits, ref_logits, torch.randn(4), mode=mode, beta=beta, mask=mask, backend="triton"
    )
    assert (divergence[~mask] == 0).all() and (grad_logits[~mask] == 0).all() and (grad_ref[~mask] == 0).all()
    assert torch.isfinite(divergence).all() and torch.isfinite(grad_logits).all()
    fully_masked = distribution_kl(
        logits, ref_logits, mode=mode, beta=beta, mask=torch.zeros(4, dtype=torch.bool), backend="triton"
    )
    assert (fully_masked == 0).all()


@requires_triton
def test_distribution_kl_reference_gradient_only_when_required():
    logits, ref_logits, _ = _dist_inputs((3,), 50)
    x = logits.clone().requires_grad_()
    distribution_kl(x, ref_logits, backend="triton").sum().backward()
    truth = logits.double().requires_grad_()
    distribution_kl_ref(truth, ref_logits.double()).sum().backward()
    torch.testing.assert_close(x.grad.double(), truth.grad, rtol=1e-5, atol=1e-6)
    assert ref_logits.grad is None


@pytest.mark.parametrize("backend", [pytest.param("triton", marks=requires_triton), "torch"])
def test_distribution_kl_hand_values(backend):
    # p = softmax([0, 0]) = (1/2, 1/2) and r = softmax([0, ln 3]) = (1/4, 3/4):
    # KL(p||r) = 1/2 ln 2 + 1/2 ln(2/3) = 1/2 ln(4/3); KL(r||p) = 1/4 ln(1/2) + 3/4 ln(3/2).
    # With T = 2 both logit vectors are halved: r becomes softmax([0, ln √3]) = (1/(1+√3), √3/(1+√3)).
    logits = torch.zeros(1, 2)
    ref_logits = torch.tensor([[0.0, math.log(3.0)]])
    reverse = distribution_kl(logits, ref_logits, mode="reverse", backend=backend)
    forward = distribution_kl(logits, ref_logits, mode="forward", backend=backend)
    # fp32 tolerance: values of order 0.1 computed from terms of order 1.
    assert reverse.item() == pytest.approx(0.5 * math.log(4 / 3), abs=2e-7)
    assert forward.item() == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5), abs=2e-7)
    r0 = 1 / (1 + math.sqrt(3))
    tempered = distribution_kl(logits, ref_logits, mode="reverse", temperature=2.0, backend=backend)
    assert tempered.item() == pytest.approx(0.5 * math.log(0.5 / r0) + 0.5 * math.log(0.5 / (1 - r0)), abs=2e-7)


@pytest.mark.parametrize(*_MODES)
def test_distribution_kl_reference_gradcheck(mode, beta):
    logits = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    ref_logits = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([True, False, True])
    fn = lambda a, b: distribution_kl_ref(a, b, mode=mode, beta=beta, temperature=1.3, mask=mask)
    # fast_mode checks random projections of the Jacobian: the full one costs ~60 reference calls.
    assert torch.autograd.gradcheck(fn, (logits, ref_logits), fast_mode=True)


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 1.0])
def test_jsd_matches_liger_torch_reference(beta):
    # Liger's pure-torch JSD (chunked_loss/jsd_loss.py, the LigerJSD convention): student = policy
    # logits, teacher = reference logits, summed over rows; β = 0 / 1 are forward / reverse KL.
    jsd_loss = importlib.import_module("liger_kernel.chunked_loss.jsd_loss")
    logits, ref_logits, _ = _dist_inputs((5,), 301)
    liger = jsd_loss.LigerFusedLinearJSDFunction.distillation_loss_fn(
        logits.double() / _TEMPERATURE, ref_logits.double() / _TEMPERATURE, beta=beta
    )
    ours = distribution_kl_ref(logits.double(), ref_logits.double(), mode="jsd", beta=beta, temperature=_TEMPERATURE)
    torch.testing.assert_close(ours.sum(), liger, rtol=1e-10, atol=1e-12)
    if HAS_TRITON and (torch.cuda.is_available() or interpreter_enabled()):
        kernel = distribution_kl(logits, ref_logits, mode="jsd", beta=beta, temperature=_TEMPERATURE, backend="triton")
        torch.testing.assert_close(kernel.sum().double(), liger, rtol=1e-5, atol=1e-6)


def test_kl_modes_match_torch_kl_div():
    # Liger's LigerKLDIVLoss is torch.nn.KLDivLoss; F.kl_div(input, target) = Σ e^target (target - input).
    logits, ref_logits, _ = _dist_inputs((4,), 97)
    log_p = F.log_softmax(logits.double(), -1)
    log_r = F.log_softmax(ref_logits.double(), -1)
    reverse = F.kl_div(log_r, log_p, reduction="none", log_target=True).sum(-1)
    forward = F.kl_div(log_p, log_r, reduction="none", log_target=True).sum(-1)
    torch.testing.assert_close(distribution_kl_ref(logits.double(), ref_logits.double(), mode="reverse"), reverse)
    torch.testing.assert_close(distribution_kl_ref(logits.double(), ref_logits.double(), mode="forward"), forward)


def test_distribution_kl_rejects_bad_inputs():
    logits = torch.zeros(2, 5)
    with pytest.raises(ValueError, match=r"mode must be one of reverse, forward, jsd\. Got 'kl'"):
        distribution_kl(logits, logits, mode="kl")
    with pytest.raises(ValueError, match=r"beta must lie in \[0, 1\] for mode='jsd'. Got 1.5"):
        distribution_kl(logits, logits, mode="jsd", beta=1.5)
    with pytest.raises(ValueError, match=r"temperature must be > 0\. Got 0\.0"):
        distribution_kl(logits, logits, temperature=0.0)
    with pytest.raises(ValueError, match=r"same shape. Got \(2, 5\) and \(2, 4\)"):
        distribution_kl(logits, logits[:, :4])
    with pytest.raises(ValueError, match=r"mask must have the row shape \(2,\)"):
        distribution_kl(logits, logits, mask=torch.ones(2, 5, dtype=torch.bool))


@requires_triton
def test_distribution_kl_kernel_rejects_float64():
    logits = torch.zeros(2, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"takes fp32/bf16/fp16 logits\. Got torch\.float64"):
        distribution_kl(logits, logits, backend="triton")


@requires_triton
def test_distribution_kl_apply_contract():
    # Positional order of the autograd Function: (logits, ref_logits, row_mask, mode_id, beta, temperature).
    logits = torch.zeros(1, 2, requires_grad=True)
    ref_logits = torch.tensor([[0.0, math.log(3.0)]])
    divergence = DistributionKLFunction.apply(logits, ref_logits, None, 0, 0.5, 1.0)
    assert divergence.item() == pytest.approx(0.5 * math.log(4 / 3), rel=1e-6)

"""Selective log-softmax: Triton kernels (CPU interpreter) and torch path against the reference."""

from __future__ import annotations

import functools
import importlib.util
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from prefcore.kernels import logprobs as logprobs_module
from prefcore.kernels._dispatch import HAS_TRITON
from prefcore.kernels._dispatch import interpreter_enabled
from prefcore.kernels.logprobs import SelectiveLogSoftmaxFunction
from prefcore.kernels.logprobs import selective_log_softmax
from prefcore.kernels.logprobs import selective_log_softmax_bwd
from prefcore.kernels.logprobs import selective_log_softmax_fwd
from prefcore.kernels.logprobs import selective_log_softmax_ref
from prefcore.testing import assert_lowprec_close

IGNORE = -100

requires_triton = pytest.mark.skipif(
    not (HAS_TRITON and (torch.cuda.is_available() or interpreter_enabled())),
    reason="needs triton and a GPU or TRITON_INTERPRET=1",
)

# Cases run through the Triton interpreter, so every one has few rows.
# (leading shape, V, return_entropy): why. Large vocabularies run once, with entropy on, so that
# both outputs and both gradient terms are exercised.
_KERNEL_CASES = (
    "lead, vocab, return_entropy",
    [
        ((1,), 1, False),  # single token, V = 1: log p is exactly 0 and so is the gradient
        ((1,), 1, True),  # ... and the entropy is 0
        ((2, 3), 3, False),  # 2-D leading dims; V smaller than any block, most lanes masked
        ((2, 3), 3, True),
        ((4,), 4096, True),  # exactly one full block: no ragged tail
        ((3,), 5003, False),  # one block plus a ragged, prime-sized tail
        ((3,), 5003, True),
        ((2,), 50257, True),  # GPT-2 vocabulary: 13 online-LSE blocks, not a power of two
        ((1,), 128256, True),  # Llama-3 vocabulary (> 64k), one row to keep the interpreter cheap
    ],
)
# Cases for the torch path (plain CPU): more rows, vocabularies up to 256k.
_TORCH_CASES = (
    "lead, vocab, return_entropy",
    [
        ((1,), 1, True),  # single token, V = 1
        ((5, 7), 3, False),  # tiny odd vocabulary, 3-D logits
        ((5, 7), 3, True),
        ((1,), 128256, True),  # Llama-3 vocabulary
        ((1,), 256000, True),  # Gemma vocabulary, the largest in common use
    ],
)
# dtype, atol for log-probs/entropy, atol for gradients. Low precision is judged against plain
# torch in the same dtype (assert_lowprec_close: error vs an fp64 truth <= 2x torch's + atol); the
# small atol leaves room for the Triton interpreter, which rounds fp32 -> bf16 towards zero where
# a GPU rounds to nearest.
_DTYPES = (
    "dtype, atol, grad_atol",
    [
        (torch.float32, 1e-5, 1e-6),
        (torch.bfloat16, 1e-4, 4e-3),
        (torch.float16, 1e-4, 5e-4),
    ],
)


@functools.cache
def _load_peer_file(package: str, relative_path: str) -> types.ModuleType:
    """Load one file of an installed peer package on its own, without the package's ``__init__``.

    Importing ``liger_kernel`` or ``trl`` pulls in peft, transformers and torch._dynamo (~10 s on
    two cores); the files compared here import only torch and triton.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(f"{package} is not installed: the dev extras install it (pip install -e '.[dev]')")
    path = Path(next(iter(spec.submodule_search_locations))) / relative_path
    if not path.is_file():
        pytest.fail(f"{package} has no {relative_path} in this version: pin the dev extras' version")
    module_spec = importlib.util.spec_from_file_location(f"_peer_{package}_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def _inputs(lead: tuple[int, ...], vocab: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    logits = (torch.randn(*lead, vocab) * 3).to(dtype)
    targets = torch.randint(0, vocab, lead)
    flat = targets.view(-1)
    if flat.numel() > 1:
        flat[1::3] = IGNORE  # ignored tokens among valid ones, never all of them
    return logits, targets


def _run(
    logits: torch.Tensor,
    targets: torch.Tensor,
    fn,
    grad_logps: torch.Tensor,
    grad_entropy: torch.Tensor | None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    x = logits.detach().clone().requires_grad_()
    out = fn(x, targets, return_entropy=grad_entropy is not None, **kwargs)
    logps, entropy = out if grad_entropy is not None else (out, None)
    loss = (logps * grad_logps).sum()
    if entropy is not None:
        loss = loss + (entropy * grad_entropy).sum()
    loss.backward()
    return logps.detach(), None if entropy is None else entropy.detach(), x.grad


def _compare_to_reference(lead, vocab, dtype, atol, grad_atol, return_entropy, backend, temperature=0.7):
    logits, targets = _inputs(lead, vocab, dtype)
    grad_logps = torch.randn(lead)
    grad_entropy = torch.randn(lead) if return_entropy else None
    kernel = _run(
        logits,
        targets,
        selective_log_softmax,
        grad_logps,
        grad_entropy,
        temperature=temperature,
        backend=backend,
    )
    # Ground truth in fp64 from the same (rounded) inputs: an fp32 torch reference is itself off by
    # ~1e-5 for entropies over 128k terms, more than the kernel.
    grad_entropy_64 = None if grad_entropy is None else grad_entropy.double()
    truth = _run(
        logits.double(),
        targets,
        selective_log_softmax_ref,
        grad_logps.double(),
        grad_entropy_64,
        temperature=temperature,
    )
    lowprec = _run(
        logits,
        targets,
        selective_log_softmax_ref,
        grad_logps,
        grad_entropy,
        temperature=temperature,
        upcast=False,
    )

    assert kernel[0].dtype == torch.float32 and kernel[0].shape == targets.shape
    assert kernel[2].dtype == dtype and kernel[2].shape == logits.shape
    assert torch.isfinite(kernel[0]).all() and torch.isfinite(kernel[2]).all()
    names = ("logps", "entropy", "grad_logits")
    for name, got, spec_truth, spec_lowprec in zip(names, kernel, truth, lowprec, strict=True):
        if got is None:
            continue
        tol = grad_atol if name == "grad_logits" else atol
        if dtype == torch.float32:
            torch.testing.assert_close(got, spec_truth.float(), atol=tol, rtol=1e-5, msg=name)
        else:
            assert_lowprec_close(got, spec_lowprec, spec_truth, atol=tol, name=name)
    ignored = targets == IGNORE
    assert (kernel[0][ignored] == 0).all()
    assert (kernel[2][ignored] == 0).all()


@requires_triton
@pytest.mark.parametrize(*_KERNEL_CASES)
@pytest.mark.parametrize(*_DTYPES)
def test_triton_matches_reference(lead, vocab, return_entropy, dtype, atol, grad_atol):
    _compare_to_reference(lead, vocab, dtype, atol, grad_atol, return_entropy, backend="triton")


@pytest.mark.parametrize(*_TORCH_CASES)
@pytest.mark.parametrize(*_DTYPES)
def test_torch_path_matches_reference(lead, vocab, return_entropy, dtype, atol, grad_atol):
    _compare_to_reference(lead, vocab, dtype, atol, grad_atol, return_entropy, backend="torch")


_BACKENDS = ["torch", pytest.param("triton", marks=requires_triton)]


@pytest.mark.parametrize("backend", _BACKENDS)
@pytest.mark.parametrize("temperature", [0.25, 1.0, 3.0])
def test_temperature_divides_logits(backend, temperature):
    logits, targets = _inputs((3,), 37, torch.float32)
    got, entropy = selective_log_softmax(logits, targets, temperature=temperature, return_entropy=True, backend=backend)
    expected = F.log_softmax(logits / temperature, dim=-1).gather(-1, targets.clamp_min(0)[:, None])[:, 0]
    expected_entropy = torch.distributions.Categorical(logits=logits / temperature).entropy()
    valid = targets != IGNORE
    torch.testing.assert_close(got[valid], expected[valid])
    torch.testing.assert_close(entropy[valid], expected_entropy[valid])


@pytest.mark.parametrize("backend", _BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_all_masked_rows_give_zero_and_zero_gradient(backend, dtype):
    logits = (torch.randn(2, 3, 257) * 5).to(dtype).requires_grad_()
    targets = torch.randint(0, 257, (2, 3))
    targets[0] = IGNORE  # a whole sequence masked
    logps, entropy = selective_log_softmax(logits, targets, return_entropy=True, backend=backend)
    (logps * torch.randn_like(logps) + entropy * torch.randn_like(entropy)).sum().backward()
    assert (logps[0] == 0).all() and (entropy[0] == 0).all()
    assert (logits.grad[0] == 0).all()
    assert (logps[1] < 0).all() and (logits.grad[1] != 0).any()


@pytest.mark.parametrize("backend", _BACKENDS)
def test_every_token_ignored(backend):
    logits = torch.randn(4, 33, requires_grad=True)
    targets = torch.full((4,), IGNORE)
    logps = selective_log_softmax(logits, targets, backend=backend)
    logps.backward(torch.randn_like(logps))
    assert (logps == 0).all() and (logits.grad == 0).all()


@pytest.mark.parametrize("backend", _BACKENDS)
def test_target_at_max_and_min_logit(backend):
    logits = torch.randn(2, 1031) * 4
    targets = torch.stack([logits[0].argmax(), logits[1].argmin()])
    x = logits.clone().requires_grad_()
    logps = selective_log_softmax(x, targets, backend=backend)
    grad = torch.randn(2)
    logps.backward(grad)
    x_ref = logits.double().requires_grad_()
    ref = F.log_softmax(x_ref, dim=-1).gather(-1, targets[:, None])[:, 0]
    ref.backward(grad.double())
    torch.testing.assert_close(logps, ref.float())
    torch.testing.assert_close(x.grad, x_ref.grad.float())
    assert logps[0] > logps[1]
    # At the max the target gradient is g (1 - p_t), at the min it is almost g: both formed in fp32.
    assert x.grad[0, targets[0]] * grad[0] > 0 and x.grad[1, targets[1]] * grad[1] > 0


@pytest.mark.parametrize("backend", _BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_huge_logits_do_not_overflow(backend, dtype):
    # +-1e4 logits: exp would overflow in any dtype without the running max.
    logits = (torch.rand(3, 2053) * 2e4 - 1e4).to(dtype)
    targets = torch.stack([logits[0].float().argmax(), logits[1].float().argmin(), torch.tensor(7)])
    x = logits.clone().requires_grad_()
    logps, entropy = selective_log_softmax(x, targets, return_entropy=True, backend=backend)
    grad = torch.randn(3)
    (logps * grad + entropy).sum().backward()
    x_ref = logits.double().requires_grad_()
    ref, ref_entropy = selective_log_softmax_ref(x_ref, targets, return_entropy=True)
    (ref * grad.double() + ref_entropy).sum().backward()
    assert torch.isfinite(logps).all() and torch.isfinite(entropy).all()
    assert torch.isfinite(x.grad.float()).all()
    # fp32 resolves 1e4 to ~1e-3; the log-probs reach -2e4.
    torch.testing.assert_close(logps, ref.float(), rtol=1e-6, atol=2e-3)
    torch.testing.assert_close(entropy, ref_entropy.float(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(x.grad.float(), x_ref.grad.to(dtype).float(), rtol=0, atol=1e-2)


@pytest.mark.parametrize("backend", _BACKENDS)
def test_minus_inf_logits_are_excluded(backend):
    # Vocabulary masking with -inf (constrained decoding) must not turn the entropy into NaN.
    logits = torch.randn(3, 300)
    logits[:, 100:] = float("-inf")
    targets = torch.tensor([0, 50, 99])
    x = logits.clone().requires_grad_()
    logps, entropy = selective_log_softmax(x, targets, return_entropy=True, backend=backend)
    (logps + entropy).sum().backward()
    ref, ref_entropy = selective_log_softmax_ref(logits[:, :100], targets, return_entropy=True)
    torch.testing.assert_close(logps, ref)
    torch.testing.assert_close(entropy, ref_entropy)
    assert (x.grad[:, 100:] == 0).all() and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("backend", _BACKENDS)
def test_non_contiguous_logits(backend):
    # logits[:, :-1] of a [B, T + 1, V] model output: the usual next-token slice.
    full = torch.randn(2, 6, 129, requires_grad=True)
    targets = torch.randint(0, 129, (2, 5))
    logps = selective_log_softmax(full[:, :-1], targets, backend=backend)
    grad = torch.randn_like(logps)
    logps.backward(grad)
    ref_full = full.detach().clone().requires_grad_()
    ref = selective_log_softmax_ref(ref_full[:, :-1], targets)
    ref.backward(grad)
    torch.testing.assert_close(logps, ref)
    torch.testing.assert_close(full.grad, ref_full.grad)


@pytest.mark.parametrize("backend", _BACKENDS)
def test_int32_targets(backend):
    logits, targets = _inputs((4,), 77, torch.float32)
    torch.testing.assert_close(
        selective_log_softmax(logits, targets.int(), backend=backend),
        selective_log_softmax_ref(logits, targets),
    )


@pytest.mark.parametrize("use_kernel", [False, pytest.param(True, marks=requires_triton)])
def test_in_place_backward_equals_fresh_buffer(use_kernel):
    logits, targets = _inputs((5,), 300, torch.bfloat16)
    kwargs = {"temperature": 1.3, "ignore_index": IGNORE}
    _, row_max, log_norm, entropy = selective_log_softmax_fwd(
        logits, targets, return_entropy=True, use_kernel=use_kernel, **kwargs
    )
    grads = (torch.randn(5), torch.randn(5))
    fresh = selective_log_softmax_bwd(
        logits, targets, row_max, log_norm, entropy, *grads, use_kernel=use_kernel, **kwargs
    )
    buffer = logits.clone()
    in_place = selective_log_softmax_bwd(
        buffer, targets, row_max, log_norm, entropy, *grads, use_kernel=use_kernel, out=buffer, **kwargs
    )
    assert in_place.data_ptr() == buffer.data_ptr()
    torch.testing.assert_close(in_place, fresh, rtol=0, atol=0)


class _AllocationRecorder(TorchDispatchMode):
    """Records (dtype, numel) of every tensor an aten op returns."""

    def __init__(self) -> None:
        super().__init__()
        self.outputs: list[tuple[torch.dtype, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(value, torch.Tensor):
                self.outputs.append((value.dtype, value.numel()))
        return out


@pytest.mark.parametrize("backend", _BACKENDS)
def test_no_fp32_copy_of_bf16_logits(backend, monkeypatch):
    # The torch path works in row blocks; shrink them so the test sees several.
    monkeypatch.setattr(logprobs_module, "_TORCH_BLOCK_ELEMENTS", 4 * 500)
    n_rows, vocab = 12, 500
    logits = torch.randn(n_rows, vocab).bfloat16().requires_grad_()
    targets = torch.randint(0, vocab, (n_rows,))
    recorder = _AllocationRecorder()
    with recorder:
        logps, entropy = selective_log_softmax(logits, targets, return_entropy=True, backend=backend)
        (logps * torch.randn(n_rows) + entropy * torch.randn(n_rows)).sum().backward()
    assert logits.grad.dtype == torch.bfloat16
    wide = [numel for dtype, numel in recorder.outputs if dtype in (torch.float32, torch.float64)]
    assert wide, "the recorder saw no fp32 tensors at all"
    assert max(wide) <= 4 * vocab, f"an fp32 tensor of {max(wide)} elements (logits: {n_rows * vocab})"


def test_gradcheck_reference():
    logits = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([1, IGNORE, 6])
    assert torch.autograd.gradcheck(
        lambda x: selective_log_softmax_ref(x, targets, temperature=0.6, return_entropy=True), (logits,)
    )


def test_gradcheck_torch_path_backward():
    # The hand-written backward (the same formula as the Triton kernel) in float64.
    logits = torch.randn(4, 11, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([1, IGNORE, 10, 0])
    assert torch.autograd.gradcheck(
        lambda x: selective_log_softmax(x, targets, temperature=1.7, return_entropy=True, backend="torch"),
        (logits,),
    )


def test_reference_is_textbook_log_softmax_gather():
    logits = torch.randn(2, 5, 301)
    targets = torch.randint(0, 301, (2, 5))
    textbook = F.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(selective_log_softmax_ref(logits, targets), textbook, rtol=0, atol=0)
    entropy = selective_log_softmax_ref(logits, targets, return_entropy=True)[1]
    torch.testing.assert_close(entropy, torch.distributions.Categorical(logits=logits).entropy())


def test_autograd_function_positional_contract():
    logits, targets = _inputs((6,), 50, torch.float32)
    # (logits, targets, temperature, ignore_index, return_entropy, use_kernel)
    logps = SelectiveLogSoftmaxFunction.apply(logits, targets, 2.0, IGNORE, False, False)
    torch.testing.assert_close(logps, selective_log_softmax_ref(logits, targets, temperature=2.0))


@requires_triton
@pytest.mark.parametrize("temperature", [1.0, 0.8])
def test_agrees_with_trl_kernel(temperature):
    trl_fn = _load_peer_file("trl", "kernels/logprob_entropy.py").selective_log_softmax_and_entropy
    logits = torch.randn(2, 3, 1500) * 2
    targets = torch.randint(0, 1500, (2, 3))
    grads = torch.randn(2, 3), torch.randn(2, 3)
    ours_x, trl_x = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    ours = selective_log_softmax(ours_x, targets, temperature=temperature, return_entropy=True, backend="triton")
    theirs = trl_fn(trl_x, targets, temperature=temperature)
    for out in (ours, theirs):
        (out[0] * grads[0] + out[1] * grads[1]).sum().backward()
    torch.testing.assert_close(ours[0], theirs[0])
    torch.testing.assert_close(ours[1], theirs[1])
    torch.testing.assert_close(ours_x.grad, trl_x.grad)


@requires_triton
def test_agrees_with_liger_selective_log_softmax():
    grpo = _load_peer_file("liger_kernel", "ops/grpo_loss.py")
    # Liger's kernel takes [B, L + 1, V] logits and scores the first L positions.
    logits = torch.randn(2, 5, 700) * 2
    input_ids = torch.randint(0, 700, (2, 4))
    theirs = grpo.fused_selective_log_softmax(logits, input_ids, temperature=0.9)
    ours = selective_log_softmax(logits[:, :-1], input_ids, temperature=0.9, backend="triton")
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"targets": torch.zeros(3, dtype=torch.long)}, "targets must have shape"),
        ({"targets": torch.tensor([[0, 1, 10]])}, "target id 10 is outside the vocabulary"),
        ({"targets": torch.tensor([[0, -1, 2]])}, "target id -1 is outside"),
        ({"targets": torch.zeros(1, 3)}, "targets must be int64 or int32"),
        ({"logits": torch.zeros(1, 3, 10, dtype=torch.long)}, "logits must be float32"),
        ({"temperature": 0.0}, "temperature must be a finite number > 0"),
        ({"temperature": float("nan")}, "temperature must be a finite number > 0"),
    ],
)
def test_invalid_input_raises(kwargs, message):
    args = {"logits": torch.randn(1, 3, 10), "targets": torch.tensor([[0, 1, 2]]), **kwargs}
    with pytest.raises(ValueError, match=message):
        selective_log_softmax(**args, backend="torch")


def test_custom_ignore_index_inside_vocabulary():
    # A pad id used as ignore_index is a valid vocabulary id; it must still be ignored.
    logits = torch.randn(4, 10)
    targets = torch.tensor([0, 3, 9, 3])
    logps = selective_log_softmax(logits, targets, ignore_index=3, backend="torch")
    assert logps[1] == 0 and logps[3] == 0 and (logps[[0, 2]] < 0).all()


@requires_triton
def test_float64_needs_torch_backend():
    with pytest.raises(ValueError, match="backend='torch'"):
        selective_log_softmax(torch.randn(2, 5, dtype=torch.float64), torch.tensor([0, 1]), backend="triton")


@requires_triton
def test_kernel_masks_out_of_range_targets_that_bypass_validation():
    # The public function raises; the launcher alone must still not read outside the row.
    logits = torch.randn(3, 10)
    logps, *_ = selective_log_softmax_fwd(
        logits, torch.tensor([1, 12, -5]), temperature=1.0, ignore_index=IGNORE, return_entropy=False, use_kernel=True
    )
    assert torch.isfinite(logps[0]) and logps[1:].isnan().all()

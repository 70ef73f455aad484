"""Fused LM-head log-probs: chunked Triton / torch paths against the unchunked reference."""

from __future__ import annotations

import functools
import importlib.util
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from prefcore.kernels import fused_linear_logprobs as fused_module
from prefcore.kernels._dispatch import HAS_TRITON
from prefcore.kernels._dispatch import interpreter_enabled
from prefcore.kernels.fused_linear_logprobs import FusedLinearLogprobsFunction
from prefcore.kernels.fused_linear_logprobs import default_chunk_size
from prefcore.kernels.fused_linear_logprobs import fused_linear_logprobs
from prefcore.kernels.fused_linear_logprobs import fused_linear_logprobs_ref
from prefcore.testing import assert_lowprec_close

IGNORE = -100

requires_triton = pytest.mark.skipif(
    not (HAS_TRITON and (torch.cuda.is_available() or interpreter_enabled())),
    reason="needs triton and a GPU or TRITON_INTERPRET=1",
)
_BACKENDS = ["torch", pytest.param("triton", marks=requires_triton)]

# (leading shape, H, V, chunk_size, bias): why. Few tokens: the log-softmax runs in the interpreter.
_SHAPES = (
    "lead, hidden_size, vocab, chunk_size, with_bias",
    [
        ((1,), 1, 1, None, False),  # single token, H = V = 1: log p = 0, all gradients 0
        ((1,), 8, 3, None, True),  # single token, tiny odd vocabulary, default chunk (one chunk)
        ((2, 9), 16, 257, 4, True),  # [B, T] hidden, 12 valid tokens in chunks of 4
        ((2, 9), 16, 257, 5, False),  # the same without bias, ragged last chunk
        ((3,), 4, 5003, 1, True),  # odd vocabulary over two kernel blocks, one token per chunk
    ],
)
# Vocabularies of real models on the torch path only: the interpreter would spend seconds per
# case, and the Triton log-softmax kernels are tested at V = 50257 and 128256 in test_logprobs.py.
_LARGE_VOCAB_SHAPES = (
    "lead, hidden_size, vocab, chunk_size, with_bias",
    [
        ((3,), 4, 50257, 1, True),  # GPT-2 vocabulary (not a power of two), one token per chunk
        ((2,), 4, 128256, None, False),  # Llama-3 vocabulary (> 64k), default chunk
    ],
)
# dtype, atol for log-probs, atol for gradients. Every dtype, fp32 included, is judged against plain
# torch in the same dtype (error vs an fp64 truth <= 2x torch's + atol): dH sums V products, so at
# V = 128256 even fp32 torch is off by ~5e-5 and a fixed fp32 tolerance would measure the GEMM.
_DTYPES = (
    "dtype, atol, grad_atol",
    [
        (torch.float32, 1e-5, 5e-5),  # fp32 GEMMs summing ~1e5 products differ by ~1e-5
        (torch.bfloat16, 1e-3, 1e-2),
        (torch.float16, 1e-3, 1e-3),
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


def _inputs(lead, hidden_size, vocab, dtype, with_bias=True):
    hidden = torch.randn(*lead, hidden_size).to(dtype)
    weight = (torch.randn(vocab, hidden_size) / hidden_size**0.5 * 2).to(dtype)
    bias = (torch.randn(vocab) * 0.5).to(dtype) if with_bias else None
    targets = torch.randint(0, vocab, lead)
    flat = targets.view(-1)
    if flat.numel() > 2:
        flat[::3] = IGNORE  # ignored tokens (prompt / padding) among valid ones
    return hidden, weight, bias, targets


def _run(fn, hidden, weight, bias, targets, grad, **kwargs):
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in (hidden, weight, bias)]
    logps = fn(leaves[0], leaves[1], targets, leaves[2], **kwargs)
    logps.backward(grad.to(logps.dtype))
    return [logps.detach()] + [t.grad if t is not None else None for t in leaves]


@pytest.mark.parametrize(*_SHAPES)
@pytest.mark.parametrize(*_DTYPES)
@pytest.mark.parametrize("backend", _BACKENDS)
def test_matches_reference(lead, hidden_size, vocab, chunk_size, dtype, atol, grad_atol, backend, with_bias):
    _compare_to_reference(lead, hidden_size, vocab, chunk_size, dtype, atol, grad_atol, backend, with_bias)


@pytest.mark.parametrize(*_LARGE_VOCAB_SHAPES)
@pytest.mark.parametrize(*_DTYPES)
def test_large_vocabulary_matches_reference(lead, hidden_size, vocab, chunk_size, dtype, atol, grad_atol, with_bias):
    _compare_to_reference(lead, hidden_size, vocab, chunk_size, dtype, atol, grad_atol, "torch", with_bias)


def _compare_to_reference(lead, hidden_size, vocab, chunk_size, dtype, atol, grad_atol, backend, with_bias):
    hidden, weight, bias, targets = _inputs(lead, hidden_size, vocab, dtype, with_bias)
    grad = torch.randn(lead)
    kwargs = {"temperature": 0.8, "ignore_index": IGNORE}
    got = _run(fused_linear_logprobs, hidden, weight, bias, targets, grad,
               chunk_size=chunk_size, backend=backend, **kwargs)  # fmt: skip
    as64 = [t.double() if t is not None else None for t in (hidden, weight, bias)]
    truth = _run(fused_linear_logprobs_ref, *as64, targets, grad, **kwargs)
    lowprec = _run(fused_linear_logprobs_ref, hidden, weight, bias, targets, grad, **kwargs)

    assert got[0].dtype == torch.float32 and got[0].shape == targets.shape
    for name, got_t, truth_t, lowprec_t, like in zip(
        ("logps", "grad_hidden", "grad_weight", "grad_bias"),
        got,
        truth,
        lowprec,
        (None, hidden, weight, bias),
        strict=True,
    ):
        if got_t is None:
            continue
        if like is not None:
            assert got_t.dtype == like.dtype and got_t.shape == like.shape, name
        tol = atol if name == "logps" else grad_atol
        assert_lowprec_close(got_t, lowprec_t, truth_t, atol=tol, name=name)
    ignored = targets == IGNORE
    assert (got[0][ignored] == 0).all() and (got[1][ignored] == 0).all()


@pytest.mark.parametrize("backend", _BACKENDS)
def test_chunk_size_does_not_change_the_result(backend):
    hidden, weight, bias, targets = _inputs((2, 5), 12, 301, torch.float32)
    grad = torch.randn(2, 5)
    runs = [
        _run(fused_linear_logprobs, hidden, weight, bias, targets, grad, chunk_size=chunk, backend=backend)
        for chunk in (1, 4, None)  # 6 valid tokens: one per chunk, a ragged split, one chunk
    ]
    for other in runs[1:]:
        for a, b in zip(runs[0], other, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# 512 valid tokens, so chunk_size 512 is one chunk and 2 is 256 chunks. Before dW was summed in
# fp32, each chunk was added to a bf16 running sum; its error grew ~5x from 1 to 256 chunks.
_ACCUMULATION_TOKENS = 512


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("backend", _BACKENDS)
def test_half_precision_gradient_error_does_not_grow_with_chunks(backend, dtype):
    torch.manual_seed(0)
    hidden = torch.randn(_ACCUMULATION_TOKENS, 32).to(dtype)
    weight = (torch.randn(256, 32) * 0.1).to(dtype)
    bias = (torch.randn(256) * 0.1).to(dtype)
    targets = torch.randint(0, 256, (_ACCUMULATION_TOKENS,))
    grad = torch.randn(_ACCUMULATION_TOKENS)
    as64 = [t.double() for t in (hidden, weight, bias)]
    truth = _run(fused_linear_logprobs_ref, *as64, targets, grad)

    def errors(chunk_size: int) -> list[float]:
        got = _run(fused_linear_logprobs, hidden, weight, bias, targets, grad, chunk_size=chunk_size, backend=backend)
        assert [t.dtype for t in got[1:]] == [dtype] * 3  # fp32 inside, handed back in the weight's dtype
        return [(g.double() - t).abs().max().item() for g, t in zip(got[1:], truth[1:], strict=True)]

    one_chunk, many_chunks = errors(_ACCUMULATION_TOKENS), errors(2)
    for name, one, many in zip(("grad_hidden", "grad_weight", "grad_bias"), one_chunk, many_chunks, strict=True):
        assert many <= 1.5 * one + 1e-3, f"{name}: error {many:.2e} with 256 chunks vs {one:.2e} with one chunk"


class _OpRecorder(TorchDispatchMode):
    """Records every aten op with its output sizes, so tests can bound what was allocated."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple[str, list[int], list[list[int]]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        inputs = [list(a.shape) for a in args if isinstance(a, torch.Tensor)]
        # Floating outputs only: the Triton interpreter's byte-level storage copies are not tensors
        # the op allocates on a GPU.
        sizes = [t.numel() for t in outs if isinstance(t, torch.Tensor) and t.is_floating_point()]
        self.ops.append((str(func), inputs, sizes))
        return out


@pytest.mark.parametrize("backend", _BACKENDS)
def test_logits_never_exceed_one_chunk(backend):
    n_tokens, hidden_size, vocab, chunk = 40, 4, 61, 8
    hidden, weight, bias, targets = _inputs((n_tokens,), hidden_size, vocab, torch.float32)
    n_valid = int((targets != IGNORE).sum())
    leaves = [t.requires_grad_() for t in (hidden, weight, bias)]
    recorder = _OpRecorder()
    with recorder:
        logps = fused_linear_logprobs(leaves[0], leaves[1], targets, leaves[2], chunk_size=chunk, backend=backend)
        logps.backward(torch.randn(n_tokens))
    largest = max(max(sizes, default=0) for _, _, sizes in recorder.ops)
    # The biggest tensors allowed: one [chunk, V] tile, [V, H] dW, [N, H] dH.
    assert largest <= max(chunk * vocab, vocab * hidden_size, n_tokens * hidden_size), largest
    assert largest < n_valid * vocab
    # Ignored tokens never reach a matmul: forward and backward project exactly the valid rows.
    projected = sum(
        inputs[-2][0] for name, inputs, _ in recorder.ops if name.startswith(("aten.mm", "aten.addmm"))
        and inputs[-1] == [hidden_size, vocab]
    )  # fmt: skip
    assert projected == 2 * n_valid


def test_default_chunk_bounds_the_tile():
    # Llama-3 vocabulary in bf16: ~1k tokens per 256 MiB tile, aligned to 128.
    chunk = default_chunk_size(128256, torch.bfloat16)
    assert chunk == 1024 and chunk * 128256 * 2 <= 256 * 2**20
    assert default_chunk_size(128256, torch.float32) * 128256 * 4 <= 256 * 2**20
    assert default_chunk_size(10**9, torch.float32) == 1  # never zero, even for absurd V


def test_no_grad_path_saves_nothing():
    hidden, weight, bias, targets = _inputs((4, 5), 8, 33, torch.float32)
    weight.requires_grad_()
    packed = []

    def pack(tensor):
        packed.append(tensor.shape)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.no_grad():
            ref_logps = fused_linear_logprobs(hidden, weight, targets, bias, chunk_size=3)
        assert packed == [] and ref_logps.grad_fn is None
        policy_logps = fused_linear_logprobs(hidden, weight, targets, bias, chunk_size=3)
    assert packed, "the grad path must save its inputs, or the hook is not watching"
    assert policy_logps.grad_fn is not None
    torch.testing.assert_close(ref_logps, policy_logps.detach())


@pytest.mark.parametrize("backend", _BACKENDS)
def test_every_token_ignored(backend):
    hidden, weight, bias, targets = _inputs((2, 3), 8, 17, torch.float32)
    targets.fill_(IGNORE)
    got = _run(fused_linear_logprobs, hidden, weight, bias, targets, torch.randn(2, 3), backend=backend)
    for tensor in got:
        assert (tensor == 0).all()


@pytest.mark.parametrize("backend", _BACKENDS)
def test_frozen_weight_and_frozen_hidden(backend):
    hidden, weight, _, targets = _inputs((6,), 8, 40, torch.float32, with_bias=False)
    grad = torch.randn(6)
    full = _run(fused_linear_logprobs_ref, hidden, weight, None, targets, grad)
    h = hidden.clone().requires_grad_()
    fused_linear_logprobs(h, weight, targets, chunk_size=2, backend=backend).backward(grad)
    torch.testing.assert_close(h.grad, full[1])
    w = weight.clone().requires_grad_()
    fused_linear_logprobs(hidden, w, targets, chunk_size=2, backend=backend).backward(grad)
    torch.testing.assert_close(w.grad, full[2])


def test_gradcheck_reference():
    hidden, weight, bias, targets = _inputs((5,), 3, 7, torch.float64)
    leaves = [t.requires_grad_() for t in (hidden, weight, bias)]
    assert torch.autograd.gradcheck(
        lambda h, w, b: fused_linear_logprobs_ref(h, w, targets, b, temperature=0.7), leaves
    )


def test_gradcheck_chunked_torch_path():
    # The hand-written chunked backward, in float64, across chunk boundaries.
    hidden, weight, bias, targets = _inputs((7,), 3, 6, torch.float64)
    leaves = [t.requires_grad_() for t in (hidden, weight, bias)]
    assert torch.autograd.gradcheck(
        lambda h, w, b: fused_linear_logprobs(h, w, targets, b, temperature=1.3, chunk_size=2, backend="torch"),
        leaves,
    )


def test_reference_is_textbook():
    hidden, weight, bias, targets = _inputs((3, 4), 10, 50, torch.float32)
    logits = hidden @ weight.T + bias
    textbook = F.log_softmax(logits, dim=-1).gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    textbook = textbook.masked_fill(targets == IGNORE, 0.0)
    torch.testing.assert_close(fused_linear_logprobs_ref(hidden, weight, targets, bias), textbook)


def test_autograd_function_positional_contract():
    hidden, weight, bias, targets = _inputs((6,), 8, 20, torch.float32)
    # (hidden, weight, bias, targets, temperature, ignore_index, chunk_size, use_kernel)
    logps = FusedLinearLogprobsFunction.apply(hidden, weight, bias, targets, 1.5, IGNORE, 4, False)
    torch.testing.assert_close(logps, fused_linear_logprobs_ref(hidden, weight, targets, bias, temperature=1.5))


@pytest.mark.parametrize("backend", _BACKENDS)
def test_agrees_with_trl_chunked_logprob(backend):
    # Forward only: TRL's backward imports trl.trainer (accelerate, datasets, ...), too heavy for
    # this suite; the gradients are checked against Liger's chunked function below.
    trl_chunked = _load_peer_file("trl", "kernels/chunked_logprob.py")
    hidden, weight, bias, targets = _inputs((9,), 16, 300, torch.float32)
    targets = torch.randint(0, 300, (9,))  # TRL has no ignore_index
    ours = fused_linear_logprobs(hidden, weight, targets, bias, temperature=0.9, chunk_size=4, backend=backend)
    # (hidden, weight, bias, targets, temperature, vocab chunk, softcap, logit_scale, outputs)
    theirs = trl_chunked.ChunkedLogProbFunction.apply(hidden, weight, bias, targets, 0.9, 128, None, 1.0, ())[0]
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", _BACKENDS)
def test_agrees_with_liger_chunked_selective_logprob(backend):
    ppo = _load_peer_file("liger_kernel", "chunked_loss/fused_linear_ppo.py")
    liger_fn = getattr(ppo, "_ChunkedSelectiveLogProbFunction", None)
    if liger_fn is None:
        pytest.fail("this liger-kernel has no chunked selective log-prob: pin the dev extras' version")
    hidden, weight, bias, targets = _inputs((9,), 16, 300, torch.float32)
    targets = torch.randint(0, 300, (9,))  # Liger's helper has no ignore_index
    grad = torch.randn(9)
    ours = _run(fused_linear_logprobs, hidden, weight, bias, targets, grad,
                temperature=0.9, chunk_size=4, backend=backend)  # fmt: skip
    theirs = _run(lambda h, w, t, b: liger_fn.apply(h, w, t, b, 0.9, 128), hidden, weight, bias, targets, grad)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"targets": torch.zeros(4, dtype=torch.long)}, "targets must have shape"),
        ({"targets": torch.tensor([[0, 1, 20, 2]])}, "target id 20 is outside the vocabulary"),
        ({"targets": torch.zeros(1, 4)}, "targets must be int64 or int32"),
        ({"weight": torch.randn(20, 7)}, "weight must be \\[V, H\\]"),
        ({"weight": torch.randn(20, 8, dtype=torch.float64)}, "must share one dtype"),
        ({"bias": torch.randn(19)}, "bias must be \\[V\\]"),
        ({"temperature": -1.0}, "temperature must be a finite number > 0"),
        ({"chunk_size": 0}, "chunk_size must be a positive int"),
        ({"hidden": torch.randn(1, 4, 8).long()}, "hidden must be float32"),
    ],
)
def test_invalid_input_raises(change, message):
    args = {
        "hidden": torch.randn(1, 4, 8),
        "weight": torch.randn(20, 8),
        "targets": torch.tensor([[0, 1, 2, 3]]),
        "bias": torch.randn(20),
        **change,
    }
    kwargs = {k: args.pop(k) for k in ("temperature", "chunk_size") if k in args}
    with pytest.raises(ValueError, match=message):
        fused_linear_logprobs(args["hidden"], args["weight"], args["targets"], args["bias"], **kwargs)


def test_cpu_path_is_chunked_by_default(monkeypatch):
    # backend="torch" must keep the memory property too: count the log-softmax calls.
    calls = []
    real = fused_module.selective_log_softmax_fwd

    def spy(logits, *args, **kwargs):
        calls.append(tuple(logits.shape))
        return real(logits, *args, **kwargs)

    monkeypatch.setattr(fused_module, "selective_log_softmax_fwd", spy)
    monkeypatch.setattr(fused_module, "default_chunk_size", lambda v, d: 64)
    hidden, weight, bias, targets = _inputs((300,), 4, 31, torch.float32)
    fused_linear_logprobs(hidden, weight, targets, bias, backend="torch")
    n_valid = int((targets != IGNORE).sum())
    assert [rows for rows, _ in calls] == [64, 64, 64, n_valid - 192]

"""Loss-aware fused LM head: pairwise losses and their gradients against plain torch autograd.

The reference here is written from the papers, independently of prefcore's loss table: full
``[S, T, V]`` logits, fp64 ``log_softmax``, gather, masked sums, then the DPO / cDPO / IPO /
hinge / SimPO formula, and ``torch.autograd`` for the gradients.
"""

from __future__ import annotations

import weakref

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from prefcore.kernels._dispatch import HAS_TRITON
from prefcore.kernels._dispatch import interpreter_enabled
from prefcore.kernels.fused_linear_logprobs import fused_linear_logprobs
from prefcore.kernels.fused_linear_pairwise import fused_linear_pairwise_loss
from prefcore.kernels.fused_linear_pairwise import fused_linear_pairwise_loss_ref
from prefcore.kernels.fused_linear_pairwise import plan_pair_chunks
from prefcore.kernels.preference_losses import dpo_loss

IGNORE = -100
requires_triton = pytest.mark.skipif(
    not (HAS_TRITON and (torch.cuda.is_available() or interpreter_enabled())),
    reason="needs triton and a GPU or TRITON_INTERPRET=1",
)
BACKENDS = ["torch", pytest.param("triton", marks=requires_triton)]
# loss, its options; reference-free losses get no reference sums.
LOSSES = [
    ("dpo", {"beta": 0.1}),
    ("dpo", {"beta": 0.5, "label_smoothing": 0.2}),  # cDPO
    ("ipo", {"beta": 0.1}),
    ("hinge", {"beta": 0.05}),
    ("simpo", {"beta": 2.0, "gamma": 0.7, "label_smoothing": 0.1}),
]


def _batch(dtype=torch.float32, n_pairs=3, seq_len=9, width=16, vocab=37, bias=True):
    """S = 2P sequences, chosen first; ragged prompts and padding; reference sums near the policy's."""
    n_seqs = 2 * n_pairs
    hidden = torch.randn(n_seqs, seq_len, width, dtype=torch.float64).to(dtype)
    weight = (torch.randn(vocab, width, dtype=torch.float64) / width**0.5).to(dtype)
    bias_ = torch.randn(vocab, dtype=torch.float64).to(dtype) if bias else None
    targets = torch.randint(0, vocab, (n_seqs, seq_len))
    for s in range(n_seqs):  # prompt of 1..3 tokens, padding of 0..2 tokens
        targets[s, : 1 + s % 3] = IGNORE
        targets[s, seq_len - (s % 3) :] = IGNORE
    chosen = torch.arange(n_pairs)
    rejected = torch.arange(n_pairs, n_seqs)
    ref = torch.randn(n_seqs, dtype=torch.float64) - 25.0
    return hidden, weight, bias_, targets, chosen, rejected, ref


def _paper_loss(hidden, weight, bias, targets, chosen, rejected, ref, loss, options, pair_weights=None, norm=None):
    """Plain torch in fp64: full logits → log_softmax → gather → masked sums → the paper's formula."""
    logits = hidden.double() @ weight.double().T
    if bias is not None:
        logits = logits + bias.double()
    mask = targets != IGNORE
    token_logps = logits.log_softmax(-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    sums = (token_logps * mask).sum(-1)
    lengths = mask.sum(-1).double()
    beta, eps = options["beta"], options.get("label_smoothing", 0.0)
    if loss == "simpo":  # Meng et al. 2024, Eq. 6: β · mean log-prob margin − γ
        z = beta * (sums[chosen] / lengths[chosen] - sums[rejected] / lengths[rejected]) - options["gamma"]
        losses = -(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)
    else:
        ratio = sums - ref.double()
        if loss == "dpo":  # Rafailov et al. 2023, Eq. 7 (+ cDPO smoothing)
            z = beta * (ratio[chosen] - ratio[rejected])
            losses = -(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)
        elif loss == "ipo":  # Azar et al. 2023, Eq. 17, per-token averaged log-ratios
            h = ratio[chosen] / lengths[chosen] - ratio[rejected] / lengths[rejected]
            losses = (h - 1 / (2 * beta)) ** 2
        elif loss == "hinge":  # SLiC-HF
            losses = torch.relu(1 - beta * (ratio[chosen] - ratio[rejected]))
    if pair_weights is not None:
        losses = losses * pair_weights.double()
    return losses.sum() / (norm if norm is not None else losses.numel()), sums


def _grads(value, leaves):
    return torch.autograd.grad(value, [leaf for leaf in leaves if leaf is not None])


def _leaves(hidden, weight, bias, dtype=None):
    cast = (lambda t: t.to(dtype)) if dtype is not None else (lambda t: t)
    return [None if t is None else cast(t).detach().requires_grad_() for t in (hidden, weight, bias)]


def _close(actual, expected, rtol):
    """Max error relative to the expected's largest magnitude (gradients span decades)."""
    scale = expected.double().abs().max().clamp(min=1e-12)
    error = float((actual.detach().double() - expected.detach().double()).abs().max() / scale)
    assert error <= rtol, f"relative error {error:.3g} > {rtol:.3g}"


@pytest.mark.parametrize("loss, options", LOSSES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pairs_per_chunk", [1, 2, None])
def test_fp32_matches_paper_formula(loss, options, backend, pairs_per_chunk):
    hidden, weight, bias, targets, chosen, rejected, ref = _batch()
    ref_kw = {} if loss == "simpo" else {"ref_sequence_logps": ref.float()}
    h, w, b = _leaves(hidden, weight, bias)
    out = fused_linear_pairwise_loss(
        h, w, targets, chosen, rejected, loss=loss, bias=b, pairs_per_chunk=pairs_per_chunk, backend=backend,
        **ref_kw, **options,
    )  # fmt: skip
    grads = _grads(out.loss * 1.5, (h, w, b))  # an upstream gradient ≠ 1 scales the stored gradients
    rh, rw, rb = _leaves(hidden, weight, bias, torch.float64)
    expected, sums = _paper_loss(rh, rw, rb, targets, chosen, rejected, ref, loss, options)
    expected_grads = _grads(expected * 1.5, (rh, rw, rb))
    assert out.loss.dtype == torch.float32
    torch.testing.assert_close(out.loss.double(), expected.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.chosen_logps.double(), sums[chosen].detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.rejected_logps.double(), sums[rejected].detach(), rtol=1e-5, atol=1e-5)
    for actual, wanted in zip(grads, expected_grads, strict=True):
        _close(actual, wanted, 2e-5)


@pytest.mark.parametrize("loss, options", LOSSES)
def test_rewards_and_losses_match_the_table(loss, options):
    """Per-pair losses and rewards are the table's (the engine logs these as TRL's metrics)."""
    hidden, weight, bias, targets, chosen, rejected, ref = _batch(torch.float64)
    ref_kw = {} if loss == "simpo" else {"ref_sequence_logps": ref}
    out = fused_linear_pairwise_loss(
        hidden, weight, targets, chosen, rejected, loss=loss, bias=bias, backend="torch", pairs_per_chunk=2,
        **ref_kw, **options,
    )  # fmt: skip
    spec = fused_linear_pairwise_loss_ref(
        hidden, weight, targets, chosen, rejected, loss=loss, bias=bias, **ref_kw, **options
    )
    for name in ("losses", "chosen_rewards", "rejected_rewards"):
        torch.testing.assert_close(getattr(out, name), getattr(spec, name), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.loss, spec.loss, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bf16_within_documented_tolerance(backend):
    """bf16 inputs: loss within 1e-2 relative, gradients within 3e-2 of their largest magnitude (vs fp64).

    The bf16 logits tile and dlogits round at 2^-8; sums, losses and the weight-gradient
    accumulator stay fp32, so the error does not grow with the chunk count.
    """
    hidden, weight, bias, targets, chosen, rejected, ref = _batch(torch.bfloat16, n_pairs=4)
    h, w, b = _leaves(hidden, weight, bias)
    out = fused_linear_pairwise_loss(
        h, w, targets, chosen, rejected, bias=b, ref_sequence_logps=ref.float(), pairs_per_chunk=1, backend=backend
    )
    grads = _grads(out.loss, (h, w, b))
    assert [g.dtype for g in grads] == [torch.bfloat16] * 3
    rh, rw, rb = _leaves(hidden, weight, bias, torch.float64)
    expected, _ = _paper_loss(rh, rw, rb, targets, chosen, rejected, ref, "dpo", {"beta": 0.1})
    _close(out.loss, expected.detach(), 1e-2)
    for actual, wanted in zip(grads, _grads(expected, (rh, rw, rb)), strict=True):
        _close(actual, wanted, 3e-2)


def test_every_chunking_gives_the_same_result():
    """pairs_per_chunk 1..P and byte budgets from one pair to everything: equal to fp32 rounding."""
    hidden, weight, bias, targets, chosen, rejected, ref = _batch(n_pairs=4)
    results = []
    settings = [{"pairs_per_chunk": n} for n in range(1, 5)] + [{"budget_bytes": 1}, {"budget_bytes": 10**9}]
    for setting in settings:
        h, w, b = _leaves(hidden, weight, bias)
        out = fused_linear_pairwise_loss(
            h, w, targets, chosen, rejected, bias=b, ref_sequence_logps=ref.float(), backend="torch", **setting
        )
        results.append((out.loss, *_grads(out.loss, (h, w, b))))
    for result in results[1:]:
        for actual, first in zip(result, results[0], strict=True):
            torch.testing.assert_close(actual, first, rtol=1e-5, atol=1e-6)


def test_plan_fills_chunks_up_to_the_budget():
    _, _, _, targets, chosen, rejected, _ = _batch(n_pairs=4, vocab=100)
    mask = targets != IGNORE
    tokens = [int(mask[c].sum() + mask[r].sum()) for c, r in zip(chosen, rejected, strict=True)]
    row_bytes = 100 * 4
    budget = (tokens[0] + tokens[1]) * row_bytes  # the first two pairs fit exactly, the third does not
    plan = plan_pair_chunks(mask, chosen, rejected, vocab=100, dtype=torch.float32, budget_bytes=budget)
    assert plan.chunks[0].pairs.tolist() == [0, 1]
    assert all(chunk.rows.numel() * row_bytes <= budget for chunk in plan.chunks)
    one = plan_pair_chunks(mask, chosen, rejected, vocab=100, dtype=torch.float32, budget_bytes=1)
    assert [chunk.pairs.tolist() for chunk in one.chunks] == [[0], [1], [2], [3]]  # at least one pair each
    assert one.max_rows == max(tokens)


def test_weights_and_normaliser():
    """loss = Σ w_p·loss_p / N, as the trainer's reduce_losses with num_items = N."""
    hidden, weight, bias, targets, chosen, rejected, ref = _batch()
    pair_weights = torch.tensor([0.5, 2.0, 0.0])
    h, w, b = _leaves(hidden, weight, bias)
    out = fused_linear_pairwise_loss(
        h, w, targets, chosen, rejected, bias=b, ref_sequence_logps=ref.float(), pair_weights=pair_weights,
        normalizer=7, pairs_per_chunk=1, backend="torch",
    )  # fmt: skip
    rh, rw, rb = _leaves(hidden, weight, bias, torch.float64)
    expected, _ = _paper_loss(rh, rw, rb, targets, chosen, rejected, ref, "dpo", {"beta": 0.1}, pair_weights, 7)
    torch.testing.assert_close(out.loss.double(), expected.detach(), rtol=1e-5, atol=1e-7)
    for actual, wanted in zip(_grads(out.loss, (h, w, b)), _grads(expected, (rh, rw, rb)), strict=True):
        _close(actual, wanted, 2e-5)


def test_a_sequence_shared_by_two_pairs():
    """One chosen against two rejected: its gradient is the sum over both pairs, even across chunks."""
    hidden, weight, bias, targets, _, _, ref = _batch(n_pairs=2)
    chosen, rejected = torch.tensor([0, 0, 1]), torch.tensor([2, 3, 3])
    rh, rw, rb = _leaves(hidden, weight, bias, torch.float64)
    expected, _ = _paper_loss(rh, rw, rb, targets, chosen, rejected, ref, "dpo", {"beta": 0.1})
    expected_grads = _grads(expected, (rh, rw, rb))
    for pairs_per_chunk in (1, 3):
        h, w, b = _leaves(hidden, weight, bias)
        out = fused_linear_pairwise_loss(
            h, w, targets, chosen, rejected, bias=b, ref_sequence_logps=ref.float(), pairs_per_chunk=pairs_per_chunk
        )
        torch.testing.assert_close(out.loss.double(), expected.detach(), rtol=1e-5, atol=1e-7)
        for actual, wanted in zip(_grads(out.loss, (h, w, b)), expected_grads, strict=True):
            _close(actual, wanted, 2e-5)


def test_frozen_inputs_and_no_grad():
    hidden, weight, _, targets, chosen, rejected, ref = _batch(bias=False)
    h = hidden.clone().requires_grad_()
    out = fused_linear_pairwise_loss(h, weight, targets, chosen, rejected, ref_sequence_logps=ref.float())
    (grad,) = torch.autograd.grad(out.loss, h)  # frozen LM head: only the hidden states' gradient
    rh, rw, _ = _leaves(hidden, weight, None, torch.float64)
    expected, _ = _paper_loss(rh, rw, None, targets, chosen, rejected, ref, "dpo", {"beta": 0.1})
    _close(grad, torch.autograd.grad(expected, rh)[0], 2e-5)
    with torch.no_grad():
        frozen = fused_linear_pairwise_loss(h, weight, targets, chosen, rejected, ref_sequence_logps=ref.float())
    assert not frozen.loss.requires_grad
    torch.testing.assert_close(frozen.loss, out.loss.detach())


def test_backward_twice_is_refused():
    hidden, weight, _, targets, chosen, rejected, ref = _batch()
    h = hidden.clone().requires_grad_()
    out = fused_linear_pairwise_loss(h, weight, targets, chosen, rejected, ref_sequence_logps=ref.float())
    out.loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="already used"):
        out.loss.backward()


class _LogitGemms(TorchDispatchMode):
    """Counts the rows of every matmul that writes ``[rows, V]`` logits (the LM head's forward GEMM)."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab, self.rows = vocab, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        gemms = (
            torch.ops.aten.mm.default,
            torch.ops.aten.addmm.default,
            torch.ops.aten.mm.out,
            torch.ops.aten.addmm.out,
        )
        if func in gemms and out.dim() == 2 and out.shape[-1] == self.vocab:
            self.rows += out.shape[0]
        return out


def test_logits_are_computed_once_per_token():
    """Forward + backward: the loss-aware path projects each completion token once; the recompute path twice."""
    vocab = 37
    hidden, weight, _, targets, chosen, rejected, ref = _batch(vocab=vocab)
    n_tokens = int((targets != IGNORE).sum())
    h, w, _ = _leaves(hidden, weight, None)
    with _LogitGemms(vocab) as loss_aware:
        out = fused_linear_pairwise_loss(
            h, w, targets, chosen, rejected, ref_sequence_logps=ref.float(), pairs_per_chunk=1
        )
        out.loss.backward()
    with _LogitGemms(vocab) as recompute:
        logps = fused_linear_logprobs(h, w, targets, chunk_size=4)
        dpo_loss(logps, targets != IGNORE, chosen, rejected, ref_sequence_logps=ref.float()).loss.backward()
    assert loss_aware.rows == n_tokens
    assert recompute.rows == 2 * n_tokens


@pytest.mark.parametrize(
    "change, message",
    [
        ({"empty": 1}, "sequence 1 \\(chosen in pair 1\\) has no completion tokens"),
        ({"loss": "orpo"}, "loss must be one of dpo, ipo, hinge, simpo"),
        ({"ref": None}, "needs the reference's summed completion log-probs"),
        ({"loss": "simpo"}, "reference-free; do not pass ref_sequence_logps"),
        ({"chosen": torch.tensor([0, 1, 9])}, "chosen_index\\[2\\] = 9 is out of range"),
        ({"rejected": torch.tensor([3, 4])}, "one entry per pair"),
        ({"beta": 0.0}, "beta must be a finite number > 0"),
        ({"loss": "hinge", "label_smoothing": 0.1}, "hinge has no label smoothing"),
    ],
)
def test_invalid_input_raises(change, message):
    hidden, weight, _, targets, chosen, rejected, ref = _batch()
    if "empty" in change:
        targets[change["empty"]] = IGNORE  # an all-masked completion
    kwargs = {"loss": change.get("loss", "dpo"), "beta": change.get("beta", 0.1)}
    kwargs["label_smoothing"] = change.get("label_smoothing", 0.0)
    reference = change.get("ref", ref.float())
    with pytest.raises(ValueError, match=message):
        fused_linear_pairwise_loss(
            hidden, weight, targets, change.get("chosen", chosen), change.get("rejected", rejected),
            ref_sequence_logps=reference, **kwargs,
        )  # fmt: skip


def test_non_finite_reference_is_named():
    hidden, weight, _, targets, chosen, rejected, ref = _batch()
    ref[4] = float("nan")
    with pytest.raises(ValueError, match="the reference sums are not finite"):
        fused_linear_pairwise_loss(hidden, weight, targets, chosen, rejected, ref_sequence_logps=ref.float())


# ----------------------------------------------------------------------------------------------
# Mixed precision: the fp32 master weight as the op's input
# ----------------------------------------------------------------------------------------------
def _master_call(hidden, weight, bias, targets, chosen, rejected, ref, **kwargs):
    """Loss and the gradients of hidden, weight and bias (leaves in the dtypes given) after one backward."""
    h, w, b = _leaves(hidden, weight, bias)
    out = fused_linear_pairwise_loss(h, w, targets, chosen, rejected, bias=b, ref_sequence_logps=ref.float(), **kwargs)
    return (out.loss, *_grads(out.loss, (h, w, b)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pairs_per_chunk", [1, None])
def test_fp32_master_weight_with_bf16_hidden(monkeypatch, backend, pairs_per_chunk):
    """fp32 weight and bias with bf16 hidden: the bf16-weight call's GEMMs, and its fp32 buffer as the gradient.

    The loss and grad_hidden are bit for bit those of the call with the weight cast to bf16 first;
    the weight gradient is that call's fp32 accumulation buffer before its cast (several chunks; the
    buffer is recorded by wrapping the final cast), or its one bf16 GEMM (one chunk, CPU), and within
    the bf16 tolerance of the fp64 paper formula.
    """
    from prefcore.kernels import fused_linear_pairwise as module

    hidden, weight, bias, targets, chosen, rejected, ref = _batch(n_pairs=4)
    hidden = hidden.bfloat16()
    kwargs = {"pairs_per_chunk": pairs_per_chunk, "backend": backend}
    master = _master_call(hidden, weight, bias, targets, chosen, rejected, ref, **kwargs)
    assert [g.dtype for g in master[1:]] == [torch.bfloat16, torch.float32, torch.float32]
    half = _master_call(hidden, weight.bfloat16(), bias.bfloat16(), targets, chosen, rejected, ref, **kwargs)
    torch.testing.assert_close(master[0], half[0], rtol=0, atol=0)
    torch.testing.assert_close(master[1], half[1], rtol=0, atol=0)  # grad_hidden
    if pairs_per_chunk is None:  # one chunk, on CPU: the bf16 GEMM rounded once, the bf16 call's gradient exactly
        torch.testing.assert_close(master[2], half[2].float(), rtol=0, atol=0)
    else:  # several chunks: the bf16 call sums in an fp32 buffer too; compare before its cast
        torch.testing.assert_close(master[2].bfloat16(), half[2], rtol=0, atol=0)
        buffers = []
        cast = module._weight_grad_out
        monkeypatch.setattr(
            module, "_weight_grad_out", lambda grad, dtype: cast(buffers.append(grad.clone()) or grad, dtype)
        )
        _master_call(hidden, weight.bfloat16(), bias.bfloat16(), targets, chosen, rejected, ref, **kwargs)
        assert buffers[0].dtype == torch.float32
        torch.testing.assert_close(master[2], buffers[0], rtol=0, atol=0)
    torch.testing.assert_close(master[3].bfloat16(), half[3], rtol=0, atol=0)  # the bias: its fp32 sum, not cast
    rh, rw, rb = _leaves(hidden, weight, bias, torch.float64)
    expected, _ = _paper_loss(rh, rw, rb, targets, chosen, rejected, ref, "dpo", {"beta": 0.1})
    _close(master[0], expected.detach(), 1e-2)
    for actual, wanted in zip(master[1:], _grads(expected, (rh, rw, rb)), strict=True):
        _close(actual, wanted, 3e-2)


def test_master_weight_cast_by_vocab_blocks():
    """``cast_block_rows``: the loss is the one-cast call's, the gradients within bf16 rounding of it."""
    hidden, weight, bias, targets, chosen, rejected, ref = _batch(n_pairs=4, vocab=50)
    hidden = hidden.bfloat16()
    once = _master_call(hidden, weight, bias, targets, chosen, rejected, ref, pairs_per_chunk=2, backend="torch")
    for block in (1, 7, 16):
        blocks = _master_call(
            hidden, weight, bias, targets, chosen, rejected, ref, pairs_per_chunk=2, backend="torch",
            cast_block_rows=block,
        )  # fmt: skip
        torch.testing.assert_close(blocks[0], once[0], rtol=1e-6, atol=1e-7)
        # grad_hidden sums its vocab blocks' bf16 products in fp32: within a bf16 rounding of the one GEMM.
        _close(blocks[1], once[1], 2**-7)
        for actual, wanted in zip(blocks[2:], once[2:], strict=True):
            torch.testing.assert_close(actual, wanted, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "weight_dtype, bias_dtype, message",
    [
        (torch.float32, torch.bfloat16, "float32 master copies with bf16/fp16 hidden"),
        (torch.float16, None, "float32 master copies with bf16/fp16 hidden"),
    ],
)
def test_mixed_dtypes_other_than_a_master_weight_are_refused(weight_dtype, bias_dtype, message):
    hidden, weight, bias, targets, chosen, rejected, ref = _batch()
    with pytest.raises(ValueError, match=message):
        fused_linear_pairwise_loss(
            hidden.bfloat16(), weight.to(weight_dtype), targets, chosen, rejected, ref_sequence_logps=ref.float(),
            bias=None if bias_dtype is None else bias.to(bias_dtype),
        )  # fmt: skip
    with pytest.raises(ValueError, match=message):  # fp32 hidden with a bf16 weight
        fused_linear_pairwise_loss(hidden, weight.bfloat16(), targets, chosen, rejected, ref_sequence_logps=ref.float())


class _LiveBytes(TorchDispatchMode):
    """Peak bytes of the storages made inside the block and alive at once, and every ``[V, H]`` tensor made."""

    def __init__(self, shape: tuple[int, int]) -> None:
        super().__init__()
        self.shape, self.made = shape, []
        self.live: dict[int, list[int]] = {}  # storage ptr -> [bytes, live tensors]
        self.current = self.peak = 0

    def _release(self, ptr: int) -> None:
        entry = self.live[ptr]
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.live[ptr]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        before = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for value in out if isinstance(out, (tuple, list)) else (out,):
            if not isinstance(value, torch.Tensor):
                continue
            storage = value.untyped_storage()
            ptr = storage.data_ptr()
            if ptr in before and ptr not in self.live:
                continue  # a view of, or a write into, a tensor made before the block
            entry = self.live.setdefault(ptr, [storage.nbytes(), 0])
            if entry[1] == 0:
                self.current += entry[0]
                self.peak = max(self.peak, self.current)
                if tuple(value.shape) == self.shape:
                    self.made.append(value.dtype)
            entry[1] += 1
            weakref.finalize(value, self._release, ptr)
        return out


@pytest.mark.parametrize("cast_block_rows", [None, 256])
def test_master_weight_drops_the_half_precision_weight_gradient(cast_block_rows):
    """A bf16 step from an fp32 parameter, one pair per chunk: the bf16 weight gradient is never made.

    Before: the caller casts the parameter to bf16 (2·V·H bytes), the op sums into an fp32 buffer
    (4·V·H), casts it to a bf16 gradient (2·V·H) and autograd casts that back to fp32 (4·V·H).
    With the master weight the buffer is the parameter's gradient: the peak drops by about 2·V·H
    bytes, and by 2·V·H more when the weight is cast by vocab blocks instead of once per call.
    """
    vocab, width = 4096, 512
    hidden, weight, _, targets, chosen, rejected, ref = _batch(
        n_pairs=2, seq_len=6, width=width, vocab=vocab, bias=False
    )
    hidden = hidden.bfloat16()
    peaks, made = {}, {}
    for master in (False, True):
        h, w, _ = _leaves(hidden, weight, None)
        with _LiveBytes((vocab, width)) as live:
            out = fused_linear_pairwise_loss(
                h, w if master else w.to(torch.bfloat16), targets, chosen, rejected, ref_sequence_logps=ref.float(),
                pairs_per_chunk=1, backend="torch", cast_block_rows=cast_block_rows if master else None,
            )  # fmt: skip
            out.loss.backward()
        assert w.grad.dtype == torch.float32
        peaks[master], made[master] = live.peak, live.made
    half_weight = vocab * width * 2
    # Before: the input cast, the fp32 buffer, its bf16 cast and autograd's fp32 cast back.
    assert made[False] == [torch.bfloat16, torch.float32, torch.bfloat16, torch.float32]
    if cast_block_rows is None:
        assert made[True] == [torch.bfloat16, torch.float32]  # the compute copy and the buffer (the gradient)
        assert 0.85 * half_weight <= peaks[False] - peaks[True] <= 1.05 * half_weight
    else:
        assert made[True] == [torch.float32]  # the buffer only
        assert 1.8 * half_weight <= peaks[False] - peaks[True] <= 2.05 * half_weight

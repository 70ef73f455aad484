"""Loss-aware fused LM head: pairwise losses and their gradients against plain torch autograd.

The reference here is written from the papers, independently of prefcore's loss table: full
``[S, T, V]`` logits, fp64 ``log_softmax``, gather, masked sums, then the DPO / cDPO / IPO /
hinge / SimPO formula, and ``torch.autograd`` for the gradients.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

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

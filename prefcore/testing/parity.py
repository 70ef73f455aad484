"""The objective parity kit: checks that a usage objective is correct on random batches, without a model.

- ``assert_matches_reference`` compares loss and gradient w.r.t. ``policy_logps`` with an
  independent reference (TRL's implementation, or the paper's formula in plain torch);
- ``assert_pair_loss_matches`` compares a ``PairwiseObjective``'s ``pair_loss`` with a
  reference formula of (chosen log-ratio, rejected log-ratio), pair by pair;
- ``assert_fused_path_matches`` checks that a base-class objective's fused kernel path
  (``fused_pair_loss``, ``fused_unpaired_loss``) gives the losses and rewards of its formula;
- ``assert_gradcheck`` runs ``torch.autograd.gradcheck`` in float64;
- ``assert_low_precision_close`` checks bf16/fp16 inputs lose no more than their rounding;
- ``assert_accumulation_invariant`` checks that micro-batches with ``num_items`` and
  ``num_tokens`` set add up to the whole batch (gradient accumulation gives the same step,
  token-averaged terms included, with completions of any length);
- ``assert_padding_invariant`` checks that padding columns and masked values change nothing;
- ``assert_weights_respected`` checks that ``batch.weights`` scale each comparison's loss;
- ``check_objective`` runs all of them that apply.

Every check raises ``AssertionError`` with a message that names the objective and the check.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import replace

import torch

from prefcore.batch import LogProbBatch
from prefcore.batch import LossOutput
from prefcore.methods import UsageObjective
from prefcore.objectives import PairwiseObjective
from prefcore.objectives import UnpairedObjective
from prefcore.objectives import labelled_mask
from prefcore.testing.batches import batch_to
from prefcore.testing.batches import make_random_batch
from prefcore.testing.batches import num_comparisons
from prefcore.testing.batches import split_batch

__all__ = [
    "PairReferenceFn",
    "ReferenceFn",
    "assert_accumulation_invariant",
    "assert_fused_path_matches",
    "assert_gradcheck",
    "assert_low_precision_close",
    "assert_matches_reference",
    "assert_padding_invariant",
    "assert_pair_loss_matches",
    "assert_valid_output",
    "assert_weights_respected",
    "check_objective",
    "objective_label",
]

ReferenceFn = Callable[[LogProbBatch], torch.Tensor]
"""An independent implementation of an objective's loss: batch → differentiable scalar."""

PairReferenceFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""A pairwise loss formula: ``[P]`` chosen and rejected log-ratios → ``[P]`` per-pair losses."""


def objective_label(objective: UsageObjective) -> str:
    return f"objective {getattr(objective, 'name', type(objective).__name__)!r}"


def _loss_and_grad(
    loss_fn: Callable[[LogProbBatch], torch.Tensor], batch: LogProbBatch, upstream: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    policy_logps = batch.policy_logps.detach().clone().requires_grad_(True)
    loss = loss_fn(batch.with_policy_logps(policy_logps))
    if loss.dim() != 0:
        raise AssertionError(f"the loss must be a scalar (0-d tensor); got shape {tuple(loss.shape)}.")
    (grad,) = torch.autograd.grad(loss * upstream, policy_logps, allow_unused=True)
    if grad is None:
        grad = torch.zeros_like(policy_logps)
    return loss.detach(), grad


def _objective_loss(objective: UsageObjective) -> Callable[[LogProbBatch], torch.Tensor]:
    return lambda batch: objective.loss(batch).loss


def assert_valid_output(objective: UsageObjective, batch: LogProbBatch) -> LossOutput:
    """The output is a ``LossOutput`` with a finite scalar loss, differentiable w.r.t. ``policy_logps``
    (as in training), and finite, detached metrics."""
    label = objective_label(objective)
    output = objective.loss(batch.with_policy_logps(batch.policy_logps.detach().clone().requires_grad_(True)))
    assert isinstance(output, LossOutput), f"{label}: loss() returned {type(output).__name__}, not LossOutput."
    assert output.loss.dim() == 0, f"{label}: the loss has shape {tuple(output.loss.shape)}; it must be a scalar."
    assert torch.isfinite(output.loss).item(), f"{label}: the loss is {output.loss.item()}."
    assert output.loss.requires_grad, f"{label}: the loss does not depend on policy_logps through autograd."
    for name, value in output.metrics.items():
        if isinstance(value, torch.Tensor):
            assert value.dim() == 0, f"{label}: metric {name!r} has shape {tuple(value.shape)}; metrics are scalars."
            assert not value.requires_grad, f"{label}: metric {name!r} is attached to the graph; detach it."
            number = value.item()
        else:
            number = float(value)
        assert math.isfinite(number), f"{label}: metric {name!r} is {number}."
    return output


def assert_matches_reference(
    objective: UsageObjective,
    batch: LogProbBatch,
    reference_fn: ReferenceFn,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    reference_name: str | None = None,
) -> None:
    """Loss and gradient w.r.t. ``policy_logps`` equal those of ``reference_fn`` (random upstream gradient)."""
    label = objective_label(objective)
    source = reference_name or getattr(reference_fn, "__name__", "the reference")
    upstream = 0.5 + torch.rand(()).item()
    loss, grad = _loss_and_grad(_objective_loss(objective), batch, upstream)
    expected_loss, expected_grad = _loss_and_grad(reference_fn, batch, upstream)
    torch.testing.assert_close(
        loss,
        expected_loss.to(loss.dtype),
        rtol=rtol,
        atol=atol,
        msg=lambda m: f"{label}: loss differs from {source}.\n{m}",
    )
    torch.testing.assert_close(
        grad,
        expected_grad.to(grad.dtype),
        rtol=rtol,
        atol=atol,
        msg=lambda m: f"{label}: gradient w.r.t. policy_logps differs from {source}.\n{m}",
    )


def assert_gradcheck(objective: UsageObjective, batch: LogProbBatch, *, atol: float = 1e-5) -> None:
    """Float64 ``torch.autograd.gradcheck`` of the loss w.r.t. the masked-in ``policy_logps``.

    Masked positions are left out (``assert_padding_invariant`` checks that they get no
    gradient), and so are KTO's mismatched sequences: they only feed a detached
    reference point, so the loss depends on them with a gradient that is 0 by definition.
    """
    label = objective_label(objective)
    batch64 = batch_to(batch, torch.float64)
    varied = batch64.mask.clone()
    if batch64.mismatched_index is not None:
        varied[batch64.mismatched_index] = False
    base = batch64.policy_logps.detach()
    values = base[varied].clone().requires_grad_(True)

    def loss_of(varied_values: torch.Tensor) -> torch.Tensor:
        policy_logps = base.masked_scatter(varied, varied_values)
        return objective.loss(batch64.with_policy_logps(policy_logps)).loss

    try:
        torch.autograd.gradcheck(loss_of, (values,), eps=1e-6, atol=atol, rtol=1e-4, raise_exception=True)
    except RuntimeError as error:
        raise AssertionError(f"{label}: float64 gradcheck failed: {error}") from None


def assert_low_precision_close(
    objective: UsageObjective,
    batch: LogProbBatch,
    *,
    dtypes: Sequence[torch.dtype] = (torch.bfloat16, torch.float16),
    factor: float = 2.0,
    atol: float = 1e-4,
) -> None:
    """bf16/fp16 inputs lose no more accuracy than rounding the inputs to that dtype already does.

    Why: log-probs arrive in the model's dtype. An objective that computes in that dtype
    (sums over tokens, exponentials) loses far more than the unavoidable input rounding;
    one that upcasts to fp32 does not. The error of ``loss(low-precision inputs)`` against
    the fp32 loss must be ≤ ``factor`` × the error of ``loss(fp32 copy of the rounded
    inputs)``, + ``atol`` + the output's own rounding; likewise for the gradient.
    """
    label = objective_label(objective)
    loss_fn = _objective_loss(objective)
    batch32 = batch_to(batch, torch.float32)
    loss32, grad32 = _loss_and_grad(loss_fn, batch32)
    for dtype in dtypes:
        low = batch_to(batch32, dtype)
        loss_low, grad_low = _loss_and_grad(loss_fn, low)
        loss_rounded, grad_rounded = _loss_and_grad(loss_fn, batch_to(low, torch.float32))
        assert torch.isfinite(loss_low).item(), f"{label}: loss is {loss_low.item()} for {dtype} inputs."
        eps = torch.finfo(dtype).eps
        for what, got, rounded, truth in (
            ("loss", loss_low, loss_rounded, loss32),
            ("gradient", grad_low, grad_rounded, grad32),
        ):
            err = (got.double() - truth.double()).abs().max().item()
            input_err = (rounded.double() - truth.double()).abs().max().item()
            budget = factor * input_err + atol + eps * truth.double().abs().max().item()
            assert err <= budget, (
                f"{label}: {what} error {err:.3e} for {dtype} inputs exceeds {factor} x the error from "
                f"rounding the inputs ({input_err:.3e}) + atol {atol:.1e} + output rounding; "
                f"compute in float32 inside the objective."
            )


def assert_accumulation_invariant(
    objective: UsageObjective,
    batch: LogProbBatch,
    *,
    num_parts: int = 2,
    rtol: float = 1e-5,
    atol: float = 1e-6,
) -> None:
    """Micro-batches with ``num_items`` and ``num_tokens`` set sum to the whole batch's loss and gradients.

    Why: with gradient accumulation the engine calls the objective once per micro-batch
    and adds the losses; the step must equal one call on the whole batch, whatever the split
    and whatever the completion lengths (a token average must use the step's token count).
    """
    label = objective_label(objective)
    total = num_comparisons(batch)
    if total < 2:
        raise ValueError("the batch needs at least 2 comparisons to split.")
    order = torch.randperm(total).tolist()
    num_parts = min(num_parts, total)
    groups = [order[part::num_parts] for part in range(num_parts)]
    loss_fn = _objective_loss(objective)
    whole_loss, whole_grad = _loss_and_grad(loss_fn, batch)
    summed_loss = torch.zeros((), dtype=torch.float64)
    summed_grad = torch.zeros_like(whole_grad, dtype=torch.float64)
    for part, sequences in split_batch(batch, groups):
        part_loss, part_grad = _loss_and_grad(loss_fn, part)
        summed_loss += part_loss.double()
        summed_grad.index_add_(0, sequences, part_grad.double())
    torch.testing.assert_close(
        summed_loss,
        whole_loss.double(),
        rtol=rtol,
        atol=atol,
        msg=lambda m: f"{label}: micro-batch losses with num_items={total} do not add up to the whole batch.\n{m}",
    )
    torch.testing.assert_close(
        summed_grad,
        whole_grad.double(),
        rtol=rtol,
        atol=atol,
        msg=lambda m: f"{label}: micro-batch gradients do not add up to the whole batch's.\n{m}",
    )


def assert_weights_respected(
    objective: UsageObjective, batch: LogProbBatch, *, rtol: float = 1e-5, atol: float = 1e-6
) -> None:
    """With ``batch.weights`` w, the loss is Σᵢ wᵢ·lossᵢ / N: each comparison's own loss, scaled by its weight.

    lossᵢ is the objective on comparison i alone (unweighted, ``num_items`` = N), so this
    holds for any objective whose comparisons do not interact; gradients are compared too.
    """
    label = objective_label(objective)
    if batch.weights is None:
        raise ValueError("the batch has no weights; build it with make_random_batch(..., with_weights=True).")
    total = num_comparisons(batch)
    loss_fn = _objective_loss(objective)
    weighted_loss, weighted_grad = _loss_and_grad(loss_fn, batch)
    expected_loss = torch.zeros((), dtype=torch.float64)
    expected_grad = torch.zeros_like(weighted_grad, dtype=torch.float64)
    for part, sequences in split_batch(batch, [[index] for index in range(total)]):
        assert part.weights is not None
        weight = float(part.weights[0])  # the comparison's weight (unpaired: its labelled sequence comes first)
        part_loss, part_grad = _loss_and_grad(loss_fn, replace(part, weights=None))
        expected_loss += weight * part_loss.double()
        expected_grad.index_add_(0, sequences, weight * part_grad.double())
    torch.testing.assert_close(
        weighted_loss.double(),
        expected_loss,
        rtol=rtol,
        atol=atol,
        msg=lambda m: f"{label}: the weighted loss is not the weighted sum of per-comparison losses.\n{m}",
    )
    torch.testing.assert_close(
        weighted_grad.double(),
        expected_grad,
        rtol=rtol,
        atol=atol,
        msg=lambda m: f"{label}: the weighted gradient is not the weighted sum of per-comparison gradients.\n{m}",
    )


def assert_padding_invariant(
    objective: UsageObjective, batch: LogProbBatch, *, extra: int = 3, rtol: float = 1e-5, atol: float = 1e-6
) -> None:
    """Masked padding columns (left and right) and garbage in masked positions change nothing.

    Why: the engine pads each micro-batch to its own longest sequence and may pad on
    either side; an objective that reads a masked position depends on the batching.
    """
    label = objective_label(objective)
    generator = torch.Generator().manual_seed(1234)

    def padded(values: torch.Tensor, fill: torch.Tensor | None) -> torch.Tensor:
        rows = values.shape[0]
        left = torch.zeros(rows, 1, dtype=values.dtype)
        right = torch.zeros(rows, extra, dtype=values.dtype)
        out = torch.cat([left, values, right], dim=1)
        if fill is not None:
            out = torch.where(new_mask, out, fill.to(values.dtype))
        return out

    new_mask = padded(batch.mask, None)
    garbage = -10 * torch.rand(new_mask.shape, generator=generator, dtype=torch.float64)
    changes: dict[str, torch.Tensor] = {
        "mask": new_mask,
        "policy_logps": padded(batch.policy_logps, garbage),
    }
    if batch.ref_logps is not None:
        changes["ref_logps"] = padded(batch.ref_logps, garbage - 1)
    padded_batch = replace(batch, **changes)
    loss_fn = _objective_loss(objective)
    loss, grad = _loss_and_grad(loss_fn, batch)
    padded_loss, padded_grad = _loss_and_grad(loss_fn, padded_batch)
    torch.testing.assert_close(
        padded_loss,
        loss,
        rtol=rtol,
        atol=atol,
        msg=lambda m: f"{label}: the loss changes with masked padding or masked values; apply the mask.\n{m}",
    )
    torch.testing.assert_close(
        padded_grad[:, 1 : 1 + grad.shape[1]] * batch.mask,
        grad * batch.mask,
        rtol=rtol,
        atol=atol,
        msg=lambda m: f"{label}: the gradient changes with masked padding.\n{m}",
    )
    leaked = (padded_grad * ~new_mask).abs().max().item()
    assert leaked == 0.0, f"{label}: masked positions receive gradient (max |grad| {leaked:.3e}); apply the mask."


def assert_pair_loss_matches(
    objective: PairwiseObjective,
    reference_fn: PairReferenceFn,
    batch: LogProbBatch | None = None,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    reference_name: str | None = None,
) -> None:
    """``objective.pair_loss`` equals ``reference_fn(chosen_logratios, rejected_logratios)`` pair by pair.

    The log-ratios are the batch's (per-token averages when the objective declares
    ``average_logratios``; policy log-probs when it is reference-free), so the check reads
    like the paper's formula of the two log-ratios. Values and gradients w.r.t. both inputs
    (random upstream gradient) are compared.
    """
    label = objective_label(objective)
    source = reference_name or getattr(reference_fn, "__name__", "the reference")
    if batch is None:
        batch = make_random_batch("pairwise", with_reference=objective.uses_reference())
    chosen, rejected = objective.pair_inputs(batch, average=objective.average_logratios)
    upstream = 0.5 + torch.rand(chosen.shape, dtype=chosen.dtype)

    def losses_and_grads(fn: Callable[..., object], with_batch: bool) -> tuple[torch.Tensor, ...]:
        inputs = (chosen.detach().clone().requires_grad_(True), rejected.detach().clone().requires_grad_(True))
        out = fn(*inputs, batch) if with_batch else fn(*inputs)
        losses = out[0] if isinstance(out, tuple) else out
        assert isinstance(losses, torch.Tensor) and losses.shape == chosen.shape, (
            f"{label}: {'pair_loss' if with_batch else source} must return one loss per pair, shape "
            f"{tuple(chosen.shape)}; got {getattr(losses, 'shape', type(losses).__name__)}."
        )
        grads = torch.autograd.grad((losses * upstream).sum(), inputs, allow_unused=True)
        grads = tuple(torch.zeros_like(chosen) if grad is None else grad for grad in grads)
        return (losses.detach(), *grads)

    got = losses_and_grads(objective.pair_loss, True)
    expected = losses_and_grads(reference_fn, False)
    for what, value, want in zip(("per-pair losses", "d/d chosen", "d/d rejected"), got, expected, strict=True):
        torch.testing.assert_close(
            value,
            want.to(value.dtype),
            rtol=rtol,
            atol=atol,
            msg=lambda m, what=what: f"{label}: pair_loss {what} differ from {source}.\n{m}",
        )


def assert_fused_path_matches(
    objective: UsageObjective, batch: LogProbBatch, *, rtol: float = 1e-5, atol: float = 1e-6
) -> None:
    """A base-class objective's fused kernel path gives the losses, rewards and gradients of its formula.

    For a ``PairwiseObjective``, ``fused_pair_loss`` against ``pair_losses`` (``pair_loss``);
    for an ``UnpairedObjective``, ``fused_unpaired_loss`` against ``unpaired_losses``. Does
    nothing where the objective offers no fused path for this batch (it returns None).
    """
    label = objective_label(objective)
    policy_logps = batch.policy_logps.detach().clone().requires_grad_(True)
    live = batch.with_policy_logps(policy_logps)
    if isinstance(objective, PairwiseObjective):
        fused = objective.fused_pair_loss(live)
        if fused is None:
            return
        formula = objective.pair_losses(live)
        pairs = [
            ("losses", fused.losses, formula.losses),
            ("chosen rewards", fused.chosen_rewards, formula.chosen_rewards),
            ("rejected rewards", fused.rejected_rewards, formula.rejected_rewards),
        ]
    elif isinstance(objective, UnpairedObjective):
        rows = labelled_mask(batch).nonzero().flatten()
        fused_unpaired = objective.fused_unpaired_loss(live, rows)
        if fused_unpaired is None:
            return
        formula_unpaired = objective.unpaired_losses(live, rows)
        pairs = [
            ("losses", fused_unpaired.losses, formula_unpaired.losses),
            ("desirable rewards", fused_unpaired.desirable_rewards, formula_unpaired.desirable_rewards),
            ("undesirable rewards", fused_unpaired.undesirable_rewards, formula_unpaired.undesirable_rewards),
        ]
    else:
        return
    for what, got, want in pairs:
        torch.testing.assert_close(
            got.detach(),
            want.detach().to(got.dtype),
            rtol=rtol,
            atol=atol,
            msg=lambda m, what=what: f"{label}: the fused path's {what} differ from the formula's.\n{m}",
        )
    upstream = 0.5 + torch.rand(pairs[0][1].shape, dtype=torch.float64)
    fused_grad, formula_grad = (
        torch.autograd.grad((losses.double() * upstream).sum(), policy_logps, retain_graph=True, allow_unused=True)[0]
        for losses in (pairs[0][1], pairs[0][2])
    )
    torch.testing.assert_close(
        torch.zeros_like(policy_logps) if fused_grad is None else fused_grad,
        torch.zeros_like(policy_logps) if formula_grad is None else formula_grad,
        rtol=rtol,
        atol=atol,
        msg=lambda m: f"{label}: the fused path's gradient w.r.t. policy_logps differs from the formula's.\n{m}",
    )


def check_objective(
    objective: UsageObjective,
    batch: LogProbBatch | Callable[[], LogProbBatch] | None = None,
    reference_fn: ReferenceFn | None = None,
    *,
    pair_reference: PairReferenceFn | None = None,
    check_gradcheck: bool = True,
    check_low_precision: bool = True,
    check_accumulation: bool | None = None,
    check_padding: bool = True,
    check_weights: bool | None = None,
    check_fused: bool = True,
    rtol: float = 1e-5,
    atol: float = 1e-6,
) -> None:
    """Run the whole parity kit on ``objective``.

    Arguments:
        objective: a configured usage objective.
        batch: a batch, a factory of one, or None for ``make_random_batch`` of each format in
            ``objective.data_formats`` (with reference log-probs when the objective uses them,
            weights unless the objective is batch-coupled, and KTO's mismatched sequences for
            the unpaired format).
        reference_fn: an independent implementation (loss and gradient compared on the batch
            without its weights, which ``assert_weights_respected`` covers), or None.
        pair_reference: for a ``PairwiseObjective``, the paper's formula of (chosen log-ratio,
            rejected log-ratio) → per-pair losses, checked against ``pair_loss``; or None.
        check_*: switch single checks off, with the reason in the calling test. Accumulation
            and weights default to on, except for a ``PairwiseObjective`` that declares
            ``batch_coupled`` (AOT sorts the batch: its pairs interact). The weights check runs
            when the batch has weights; the fused check where the objective has a fused path.
        rtol, atol: tolerances of the float32 comparisons.
    """
    coupled = isinstance(objective, PairwiseObjective) and objective.batch_coupled
    check_accumulation = not coupled if check_accumulation is None else check_accumulation
    check_weights = not coupled if check_weights is None else check_weights
    if batch is None:
        batches = [
            make_random_batch(
                data_format,
                with_reference=objective.uses_reference(),
                with_weights=not coupled,
                with_mismatched=data_format == "unpaired" and objective.uses_reference(),
                with_ties=data_format == "listwise",
            )
            for data_format in objective.data_formats
        ]
    else:
        batches = [batch() if callable(batch) else batch]
    for one in batches:
        assert_valid_output(objective, one)
        if reference_fn is not None:  # unweighted: the weights check relates weighted to unweighted losses
            assert_matches_reference(objective, replace(one, weights=None), reference_fn, rtol=rtol, atol=atol)
        if pair_reference is not None:
            if not isinstance(objective, PairwiseObjective):
                raise TypeError(f"{objective_label(objective)}: pair_reference needs a PairwiseObjective.")
            assert_pair_loss_matches(objective, pair_reference, one, rtol=rtol, atol=atol)
        if check_fused:
            assert_fused_path_matches(objective, one, rtol=rtol, atol=atol)
        if check_gradcheck:
            assert_gradcheck(objective, one)
        if check_low_precision:
            assert_low_precision_close(objective, one)
        if check_accumulation:
            assert_accumulation_invariant(objective, one, rtol=rtol, atol=atol)
        if check_padding:
            assert_padding_invariant(objective, one, rtol=rtol, atol=atol)
        if check_weights and one.weights is not None:
            assert_weights_respected(objective, one, rtol=rtol, atol=atol)

"""Checks that plugin authors run in their own tests: precision helpers and the objective parity kit.

A usage objective is a function of a ``LogProbBatch``, so everything that can go wrong
with it can be tested on random tensors, without a model:

- ``make_random_batch(data_format, ...)`` builds a valid random batch of any format;
- ``assert_matches_reference`` compares loss and gradient w.r.t. ``policy_logps`` with an
  independent reference (TRL's implementation, or the paper's formula in plain torch);
- ``assert_gradcheck`` runs ``torch.autograd.gradcheck`` in float64;
- ``assert_low_precision_close`` checks bf16/fp16 inputs lose no more than their rounding;
- ``assert_accumulation_invariant`` checks that micro-batches with ``num_items`` and
  ``num_tokens`` set add up to the whole batch (gradient accumulation gives the same step,
  token-averaged terms included, with completions of any length);
- ``assert_padding_invariant`` checks that padding columns and masked values change nothing;
- ``assert_weights_respected`` checks that ``batch.weights`` scale each comparison's loss;
- ``check_objective`` runs all of them.

Every check raises ``AssertionError`` with a message that names the objective and the check.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import replace
from types import ModuleType

import torch

from prefcore.batch import DATA_FORMATS
from prefcore.batch import LogProbBatch
from prefcore.batch import LossOutput
from prefcore.methods import UsageObjective
from prefcore.registry import PrefcorePluginManager
from prefcore.registry import Provenance
from prefcore.registry import Registry

__all__ = [
    "ReferenceFn",
    "assert_accumulation_invariant",
    "assert_gradcheck",
    "assert_low_precision_close",
    "assert_lowprec_close",
    "assert_matches_reference",
    "assert_padding_invariant",
    "assert_valid_output",
    "assert_weights_respected",
    "batch_to",
    "check_objective",
    "make_random_batch",
    "num_comparisons",
    "objective_label",
    "split_batch",
]

ReferenceFn = Callable[[LogProbBatch], torch.Tensor]
"""An independent implementation of an objective's loss: batch → differentiable scalar."""

_FLOAT_FIELDS = ("policy_logps", "ref_logps", "ref_sequence_logps", "margins", "probabilities", "weights", "scores")


def assert_lowprec_close(
    kernel_out: torch.Tensor,
    lowprec_ref: torch.Tensor,
    fp32_ref: torch.Tensor,
    *,
    atol: float,
    factor: float = 2.0,
    name: str = "output",
) -> None:
    """Kernel error vs fp32 must be ≤ ``factor`` × plain torch's own error in the same dtype, + atol.

    Why: in bf16/fp16 the question is not "equal to a reference" but "no worse than what
    torch itself achieves in that precision", measured against an fp32 ground truth.
    """
    truth = fp32_ref.double()
    kernel_err = (kernel_out.double() - truth).abs().max().item()
    torch_err = (lowprec_ref.double() - truth).abs().max().item()
    assert kernel_err <= factor * torch_err + atol, (
        f"{name}: kernel error {kernel_err:.3e} > {factor} x torch error {torch_err:.3e} + atol {atol:.1e}"
    )


# ----------------------------------------------------------------------------------------------
# Random batches
# ----------------------------------------------------------------------------------------------


def make_random_batch(
    data_format: str,
    *,
    num_items: int = 4,
    max_tokens: int = 7,
    list_size: int = 4,
    with_reference: bool = True,
    reference_per_sequence: bool = False,
    with_weights: bool = False,
    with_margins: bool = False,
    with_scores: bool = False,
    with_mismatched: bool = False,
    with_ties: bool = False,
    equal_lengths: bool = False,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> LogProbBatch:
    """A valid random ``LogProbBatch`` of ``data_format`` (``pairwise``, ``unpaired``, ``listwise``, ``sft``).

    Sequences are shuffled so that an objective cannot rely on a layout (chosen at even
    rows, lists contiguous); each completion is a contiguous run of 1..``max_tokens``
    tokens after a random prompt offset, the rest masked with log-prob 0.

    Arguments:
        num_items: comparisons in the batch: pairs, labelled sequences, lists or SFT sequences.
        max_tokens: longest completion; ``T`` is ``max_tokens + 2`` (room for prompt offsets).
        list_size: the longest list (listwise); some lists are shorter and padded with -1.
        with_reference: add ``ref_logps`` (or ``ref_sequence_logps`` with ``reference_per_sequence``).
        with_weights, with_margins, with_scores: add those optional fields.
        with_mismatched: add KTO's mismatched sequences (unpaired format).
        with_ties: give some listwise items equal ranks.
        equal_lengths: every completion has ``max_tokens`` tokens (for references that
            normalise over the whole batch's tokens, as TRL's NLL does).
        dtype: floating dtype of every float field.
        seed: the batch is a pure function of its arguments and this seed.
    """
    if data_format not in DATA_FORMATS:
        raise ValueError(f"data_format must be one of {', '.join(DATA_FORMATS)}. Got {data_format!r}.")
    if num_items < 1:
        raise ValueError(f"num_items must be >= 1. Got {num_items}.")
    generator = torch.Generator().manual_seed(seed)
    fields_: dict[str, torch.Tensor | int | None] = {}
    if data_format == "pairwise":
        num_sequences = 2 * num_items
        order = torch.randperm(num_sequences, generator=generator)
        fields_["chosen_index"] = order[:num_items]
        fields_["rejected_index"] = order[num_items:]
        if with_margins:
            fields_["margins"] = torch.rand(num_items, generator=generator, dtype=dtype) * 2
        fields_["probabilities"] = None
    elif data_format == "unpaired":
        num_labelled = max(num_items, 2)
        num_mismatched = num_labelled if with_mismatched else 0
        num_sequences = num_labelled + num_mismatched
        labels = torch.rand(num_labelled, generator=generator) < 0.5
        labels[0], labels[1] = True, False  # both kinds are present
        order = torch.randperm(num_sequences, generator=generator)
        all_labels = torch.zeros(num_sequences, dtype=torch.bool)
        all_labels[order[:num_labelled]] = labels
        fields_["labels"] = all_labels
        if with_mismatched:
            fields_["mismatched_index"] = order[num_labelled:].sort().values
        num_items = num_labelled
    elif data_format == "listwise":
        if list_size < 2:
            raise ValueError(f"list_size must be >= 2. Got {list_size}.")
        sizes = torch.randint(2, list_size + 1, (num_items,), generator=generator)
        sizes[0] = list_size  # at least one full list
        num_sequences = int(sizes.sum())
        order = torch.randperm(num_sequences, generator=generator)
        list_index = torch.full((num_items, list_size), -1, dtype=torch.long)
        list_ranks = torch.full((num_items, list_size), float("inf"), dtype=dtype)
        offset = 0
        for row, size in enumerate(sizes.tolist()):
            list_index[row, :size] = order[offset : offset + size]
            ranks = torch.arange(1, size + 1, dtype=dtype)
            if with_ties and size >= 3 and row % 2 == 0:
                ranks[1] = ranks[2] = 2  # a tie below the best
            list_ranks[row, :size] = ranks
            offset += size
        fields_["list_index"] = list_index
        fields_["list_ranks"] = list_ranks
    else:
        num_sequences = num_items

    width = max_tokens + 2
    if equal_lengths:
        lengths = torch.full((num_sequences,), max_tokens)
    else:
        lengths = torch.randint(1, max_tokens + 1, (num_sequences,), generator=generator)
    starts = torch.stack([torch.randint(0, width - int(n) + 1, (1,), generator=generator)[0] for n in lengths])
    positions = torch.arange(width)
    mask = (positions >= starts[:, None]) & (positions < (starts + lengths)[:, None])
    # log-probs of tokens with probability in (0.02, 0.98): finite, away from 0 and 1
    probabilities = 0.02 + 0.96 * torch.rand(num_sequences, width, generator=generator, dtype=torch.float64)
    policy_logps = probabilities.log().to(dtype) * mask
    if with_reference:
        noise = 0.5 * torch.randn(num_sequences, width, generator=generator, dtype=torch.float64)
        ref_logps = (policy_logps.double() + noise).clamp(max=-0.01).to(dtype) * mask
        if reference_per_sequence:
            fields_["ref_sequence_logps"] = ref_logps.sum(-1)
        else:
            fields_["ref_logps"] = ref_logps
    if with_weights:
        count = num_items if data_format != "unpaired" else num_sequences
        fields_["weights"] = 0.25 + torch.rand(count, generator=generator, dtype=dtype)
    if with_scores:
        fields_["scores"] = torch.randn(num_sequences, generator=generator, dtype=dtype)
    return LogProbBatch(policy_logps=policy_logps, mask=mask, **fields_)


def num_comparisons(batch: LogProbBatch) -> int:
    """How many comparisons the batch holds: pairs, labelled sequences, lists or sequences."""
    if batch.chosen_index is not None:
        return int(batch.chosen_index.numel())
    if batch.list_index is not None:
        return int(batch.list_index.shape[0])
    if batch.labels is not None:
        excluded = 0 if batch.mismatched_index is None else int(batch.mismatched_index.numel())
        return batch.num_sequences - excluded
    return batch.num_sequences


def batch_to(batch: LogProbBatch, dtype: torch.dtype) -> LogProbBatch:
    """The same batch with every float field cast to ``dtype``."""
    changes = {
        name: getattr(batch, name).to(dtype)
        for name in _FLOAT_FIELDS
        if getattr(batch, name) is not None and getattr(batch, name).is_floating_point()
    }
    return replace(batch, **changes)


def split_batch(batch: LogProbBatch, groups: Sequence[Sequence[int]]) -> list[tuple[LogProbBatch, torch.Tensor]]:
    """Micro-batches holding the comparisons of each group, with ``num_items`` = the whole batch's.

    ``num_tokens`` is the whole batch's ``target_token_count()``, by the rule the engine uses
    for a step, so token-averaged terms are checked across splits as training runs them.
    Sequences are re-indexed from 0 in each part. KTO's mismatched sequences (a
    batch-level reference point, detached) go into every part unchanged.

    Returns:
        ``(part, sequences)`` per group: ``sequences[i]`` is the row of ``batch`` that row
        ``i`` of ``part`` came from (to map gradients back).
    """
    total = num_comparisons(batch)
    total_tokens = batch.target_token_count()
    parts = []
    for group in groups:
        items = torch.as_tensor(list(group), dtype=torch.long)
        changes: dict[str, torch.Tensor | int | None] = {"num_items": total, "num_tokens": total_tokens}
        if batch.chosen_index is not None and batch.rejected_index is not None:
            chosen, rejected = batch.chosen_index[items], batch.rejected_index[items]
            sequences = torch.cat([chosen, rejected])
            local = torch.arange(len(sequences))
            changes["chosen_index"], changes["rejected_index"] = local[: len(items)], local[len(items) :]
            for name in ("margins", "probabilities", "weights"):
                if getattr(batch, name) is not None:
                    changes[name] = getattr(batch, name)[items]
        elif batch.list_index is not None and batch.list_ranks is not None:
            rows = batch.list_index[items]
            sequences = rows[rows >= 0]
            local_rows = torch.full_like(rows, -1)
            local_rows[rows >= 0] = torch.arange(len(sequences))
            changes["list_index"], changes["list_ranks"] = local_rows, batch.list_ranks[items]
            if batch.weights is not None:
                changes["weights"] = batch.weights[items]
        elif batch.labels is not None:
            labelled = _labelled_sequences(batch)
            own = labelled[items]
            mismatched = batch.mismatched_index if batch.mismatched_index is not None else own[:0]
            sequences = torch.cat([own, mismatched])
            changes["labels"] = batch.labels[sequences]
            if batch.mismatched_index is not None:
                changes["mismatched_index"] = torch.arange(len(own), len(sequences))
            if batch.weights is not None:
                changes["weights"] = _unpaired_weights_for(batch, sequences)
        else:
            sequences = items
            if batch.weights is not None:
                changes["weights"] = batch.weights[items]
        for name in ("policy_logps", "mask", "ref_logps", "ref_sequence_logps", "scores"):
            if getattr(batch, name) is not None:
                changes[name] = getattr(batch, name)[sequences]
        parts.append((replace(batch, **changes), sequences))
    return parts


def _labelled_sequences(batch: LogProbBatch) -> torch.Tensor:
    keep = torch.ones(batch.num_sequences, dtype=torch.bool)
    if batch.mismatched_index is not None:
        keep[batch.mismatched_index] = False
    return keep.nonzero().flatten()


def _unpaired_weights_for(batch: LogProbBatch, sequences: torch.Tensor) -> torch.Tensor:
    assert batch.weights is not None
    if batch.weights.numel() == batch.num_sequences:
        return batch.weights[sequences]
    # one weight per labelled sequence, in sequence order: rebuild a per-sequence view
    per_sequence = torch.ones(batch.num_sequences, dtype=batch.weights.dtype)
    per_sequence[_labelled_sequences(batch)] = batch.weights
    return per_sequence[sequences]


# ----------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------


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


def check_objective(
    objective: UsageObjective,
    batch: LogProbBatch | Callable[[], LogProbBatch] | None = None,
    reference_fn: ReferenceFn | None = None,
    *,
    check_gradcheck: bool = True,
    check_low_precision: bool = True,
    check_accumulation: bool = True,
    check_padding: bool = True,
    check_weights: bool = True,
    rtol: float = 1e-5,
    atol: float = 1e-6,
) -> None:
    """Run the whole parity kit on ``objective``.

    Arguments:
        objective: a configured usage objective.
        batch: a batch, a factory of one, or None for ``make_random_batch`` of each format in
            ``objective.data_formats`` (with reference log-probs when the objective uses them,
            weights, and KTO's mismatched sequences for the unpaired format).
        reference_fn: an independent implementation (loss and gradient compared on the batch
            without its weights, which ``assert_weights_respected`` covers), or None.
        check_*: switch single checks off, e.g. accumulation for a loss that couples the
            whole batch (AOT sorts the batch), with the reason in the calling test. The
            weights check runs when the batch has weights.
        rtol, atol: tolerances of the float32 comparisons.
    """
    if batch is None:
        batches = [
            make_random_batch(
                data_format,
                with_reference=objective.uses_reference(),
                with_weights=True,
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


def plugin_modules(package: ModuleType) -> list[ModuleType]:
    """Every plugin module of a package of plugins (``_``-prefixed helper modules are not plugins)."""
    return [
        importlib.import_module(f"{package.__name__}.{info.name}")
        for info in pkgutil.iter_modules(package.__path__)
        if not info.name.startswith("_")
    ]


def registry_of(modules: Sequence[ModuleType]) -> Registry:
    """A fresh registry holding exactly ``modules``, as if each were an installed plugin.

    Tests see the files under test, not whatever happens to be installed; a module that
    fails validation fails here, with the registry's own error.
    """
    manager = PrefcorePluginManager()
    for module in modules:
        manager.register_plugin(module, Provenance(plugin=module.__name__.rsplit(".", 1)[-1]))
    registry = Registry(manager)
    assert not registry.errors, registry.errors
    return registry

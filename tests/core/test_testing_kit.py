"""The parity kit of ``prefcore.testing``: valid random batches, and each check catching its bug.

Each check is run on a correct throw-away objective (it must pass) and on one with the
bug that check exists for (it must fail with a message naming the objective).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from prefcore.batch import DATA_FORMATS
from prefcore.batch import LogProbBatch
from prefcore.batch import LossOutput
from prefcore.methods import UsageObjective
from prefcore.testing import assert_accumulation_invariant
from prefcore.testing import assert_gradcheck
from prefcore.testing import assert_low_precision_close
from prefcore.testing import assert_matches_reference
from prefcore.testing import assert_padding_invariant
from prefcore.testing import assert_valid_output
from prefcore.testing import assert_weights_respected
from prefcore.testing import batch_to
from prefcore.testing import check_objective
from prefcore.testing import make_random_batch
from prefcore.testing import num_comparisons
from prefcore.testing import split_batch

# ----------------------------------------------------------------------------------------------
# Throw-away objectives: a correct one and one per bug
# ----------------------------------------------------------------------------------------------


def _sequence_sums(batch: LogProbBatch) -> torch.Tensor:
    logps = batch.policy_logps.float() if batch.policy_logps.dtype.itemsize < 4 else batch.policy_logps
    return torch.where(batch.mask, logps, torch.zeros_like(logps)).sum(-1)


def reference_free_logistic_loss(batch: LogProbBatch) -> torch.Tensor:
    """−log σ(log π(y_w) − log π(y_l)), the reference of ``Logistic`` written separately."""
    assert batch.chosen_index is not None and batch.rejected_index is not None
    sums = (batch.policy_logps * batch.mask).sum(-1)
    return -F.logsigmoid(sums[batch.chosen_index] - sums[batch.rejected_index]).mean()


class Logistic(UsageObjective):
    """Correct: logistic loss on summed log-prob margins, weighted, divided by num_items."""

    name = "logistic"

    def per_pair(self, batch: LogProbBatch) -> torch.Tensor:
        assert batch.chosen_index is not None and batch.rejected_index is not None
        sums = _sequence_sums(batch)
        return -F.logsigmoid(sums[batch.chosen_index] - sums[batch.rejected_index])

    def loss(self, batch: LogProbBatch) -> LossOutput:
        losses = self.per_pair(batch)
        if batch.weights is not None:
            losses = losses * batch.weights.to(losses.dtype)
        count = batch.num_items if batch.num_items is not None else losses.numel()
        return LossOutput(losses.sum() / count, {"margin": losses.detach().mean()})


class ReadsMaskedValues(Logistic):
    name = "reads_masked_values"

    def loss(self, batch: LogProbBatch) -> LossOutput:
        return Logistic.loss(self, replace(batch, mask=torch.ones_like(batch.mask)))


class MeanOfMicroBatch(Logistic):
    name = "mean_of_micro_batch"

    def loss(self, batch: LogProbBatch) -> LossOutput:
        return LossOutput(self.per_pair(batch).mean())


class IgnoresWeights(Logistic):
    name = "ignores_weights"

    def loss(self, batch: LogProbBatch) -> LossOutput:
        return Logistic.loss(self, replace(batch, weights=None))


class SumsInInputPrecision(Logistic):
    name = "sums_in_input_precision"

    def loss(self, batch: LogProbBatch) -> LossOutput:
        # An offset of 1000 leaves bf16/fp16 a resolution of 4-8 units: what fp32 accumulation avoids.
        shifted = (batch.policy_logps + 1000) * batch.mask
        sums = shifted.sum(-1) - 1000 * batch.mask.sum(-1)
        assert batch.chosen_index is not None and batch.rejected_index is not None
        losses = -F.logsigmoid(sums[batch.chosen_index] - sums[batch.rejected_index])
        return LossOutput(losses.float().mean())


class _DoubledBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, values: torch.Tensor) -> torch.Tensor:
        return values.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return 2 * grad


class WrongGradient(Logistic):
    name = "wrong_gradient"

    def loss(self, batch: LogProbBatch) -> LossOutput:
        return Logistic.loss(self, batch.with_policy_logps(_DoubledBackward.apply(batch.policy_logps)))


class StepTokenMean(UsageObjective):
    """Correct: NLL of the chosen completions, summed and divided by the step's target tokens."""

    name = "step_token_mean"

    def chosen_nll(self, batch: LogProbBatch) -> torch.Tensor:
        assert batch.chosen_index is not None
        return -_sequence_sums(batch)[batch.chosen_index].sum()

    def loss(self, batch: LogProbBatch) -> LossOutput:
        tokens = batch.num_tokens if batch.num_tokens is not None else batch.target_token_count()
        return LossOutput(self.chosen_nll(batch) / tokens)


class MicroBatchTokenMean(StepTokenMean):
    """Bug: this micro-batch's token mean weighted by its share of comparisons, exact only for equal lengths."""

    name = "micro_batch_token_mean"

    def loss(self, batch: LogProbBatch) -> LossOutput:
        assert batch.chosen_index is not None
        share = batch.chosen_index.numel() / (batch.num_items or batch.chosen_index.numel())
        return LossOutput(self.chosen_nll(batch) / batch.target_token_count() * share)


class AttachedMetric(Logistic):
    name = "attached_metric"

    def loss(self, batch: LogProbBatch) -> LossOutput:
        output = Logistic.loss(self, batch)
        return LossOutput(output.loss, {"loss": output.loss})


# ----------------------------------------------------------------------------------------------
# make_random_batch and split_batch
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data_format", DATA_FORMATS)
@pytest.mark.parametrize("options", [{}, {"with_weights": True, "with_scores": True, "reference_per_sequence": True}])
def test_random_batches_are_valid(data_format: str, options: dict[str, Any]) -> None:
    batch = make_random_batch(data_format, num_items=5, **options)
    assert (batch.mask.sum(-1) >= 1).all(), "every completion has a token"
    assert (batch.policy_logps[~batch.mask] == 0).all() and (batch.policy_logps[batch.mask] < 0).all()
    assert num_comparisons(batch) >= 5 - (data_format == "unpaired")
    if batch.weights is not None:
        expected = batch.num_sequences if data_format == "unpaired" else num_comparisons(batch)
        assert batch.weights.shape == (expected,)
    if data_format == "pairwise":
        assert batch.chosen_index is not None and batch.rejected_index is not None
        used = torch.cat([batch.chosen_index, batch.rejected_index])
        assert sorted(used.tolist()) == list(range(batch.num_sequences))
    if data_format == "listwise":
        assert batch.list_index is not None and batch.list_ranks is not None
        valid = batch.list_index >= 0
        assert sorted(batch.list_index[valid].tolist()) == list(range(batch.num_sequences))
        ranks = torch.where(valid, batch.list_ranks, torch.tensor(float("inf")))
        assert (ranks[:, 1:] >= ranks[:, :-1]).all(), "lists are best first"
    if data_format == "unpaired":
        assert batch.labels is not None and batch.labels.any() and (~batch.labels).any()


def test_random_batches_are_reproducible_and_typed() -> None:
    first = make_random_batch("pairwise", seed=3, dtype=torch.float64)
    again = make_random_batch("pairwise", seed=3, dtype=torch.float64)
    other = make_random_batch("pairwise", seed=4, dtype=torch.float64)
    assert first.policy_logps.dtype == torch.float64 and first.ref_logps is not None
    assert torch.equal(first.policy_logps, again.policy_logps) and torch.equal(first.mask, again.mask)
    assert not torch.equal(first.policy_logps, other.policy_logps)


def test_random_batch_extras() -> None:
    unpaired = make_random_batch("unpaired", num_items=4, with_mismatched=True)
    assert unpaired.mismatched_index is not None and unpaired.labels is not None
    assert not unpaired.labels[unpaired.mismatched_index].any(), "mismatched sequences are not desirable"
    assert unpaired.num_sequences == 8
    tied = make_random_batch("listwise", num_items=2, list_size=4, with_ties=True)
    assert tied.list_ranks is not None and tied.list_ranks[0, 1] == tied.list_ranks[0, 2]
    equal = make_random_batch("sft", equal_lengths=True, max_tokens=5)
    assert (equal.mask.sum(-1) == 5).all()
    with pytest.raises(ValueError, match="data_format must be one of"):
        make_random_batch("pairs")


@pytest.mark.parametrize("data_format", DATA_FORMATS)
def test_split_batch_partitions_the_comparisons(data_format: str) -> None:
    batch = make_random_batch(data_format, num_items=5, with_weights=True, with_mismatched=data_format == "unpaired")
    total = num_comparisons(batch)
    parts = split_batch(batch, [[0, 2], [1], list(range(3, total))])
    assert all(part.num_items == total for part, _ in parts)
    assert all(part.num_tokens == batch.target_token_count() for part, _ in parts)
    assert sum(part.target_token_count() for part, _ in parts) == batch.target_token_count()
    assert sum(num_comparisons(part) for part, _ in parts) == total
    for part, sequences in parts:
        torch.testing.assert_close(part.policy_logps, batch.policy_logps[sequences])
    seen = torch.cat([sequences for _, sequences in parts])
    if batch.mismatched_index is None:
        assert sorted(seen.tolist()) == list(range(batch.num_sequences))
    else:  # the mismatched reference sequences go into every part
        assert sorted(set(seen.tolist())) == list(range(batch.num_sequences))


def test_target_token_count_counts_the_nll_targets_of_each_format() -> None:
    lengths = torch.tensor([1, 2, 3, 4])
    mask = torch.arange(4)[None, :] < lengths[:, None]

    def count(**fields: torch.Tensor) -> int:
        return LogProbBatch(policy_logps=-mask.float(), mask=mask, **fields).target_token_count()

    assert count() == 10  # sft: every sequence
    assert count(chosen_index=torch.tensor([3, 0]), rejected_index=torch.tensor([1, 2])) == 4 + 1  # the chosen
    # unpaired: desirable sequences, never KTO's mismatched ones (even if labelled True)
    assert count(labels=torch.tensor([True, False, True, True]), mismatched_index=torch.tensor([3])) == 1 + 3
    ranked = {"list_index": torch.tensor([[2, 0], [1, -1]]), "list_ranks": torch.tensor([[1.0, 2.0], [1.0, 9.0]])}
    assert count(**ranked) == 3 + 2  # listwise: the best (first) of each list


def test_num_items_and_num_tokens_must_not_be_negative() -> None:
    batch = make_random_batch("sft")
    assert replace(batch, num_tokens=0).num_tokens == 0
    for name in ("num_items", "num_tokens"):
        with pytest.raises(ValueError, match=f"{name} counts the whole optimiser step"):
            replace(batch, **{name: -1})


def test_batch_to_casts_every_float_field() -> None:
    batch = batch_to(make_random_batch("pairwise", with_weights=True, with_margins=True), torch.bfloat16)
    assert {batch.policy_logps.dtype, batch.ref_logps.dtype, batch.weights.dtype, batch.margins.dtype} == {  # type: ignore[union-attr]
        torch.bfloat16
    }
    assert batch.mask.dtype == torch.bool


# ----------------------------------------------------------------------------------------------
# Each check: passes on the correct objective, fails on its bug
# ----------------------------------------------------------------------------------------------

Check = Callable[[UsageObjective, LogProbBatch], None]

CHECKS_AND_BUGS: list[tuple[Check, type[UsageObjective], str]] = [
    (assert_padding_invariant, ReadsMaskedValues, "changes with masked padding"),
    (assert_accumulation_invariant, MeanOfMicroBatch, "do not add up to the whole batch"),
    (assert_weights_respected, IgnoresWeights, "weighted loss is not the weighted sum"),
    (assert_low_precision_close, SumsInInputPrecision, "compute in float32"),
    (assert_gradcheck, WrongGradient, "float64 gradcheck failed"),
    (assert_valid_output, AttachedMetric, "attached to the graph"),
]


@pytest.mark.parametrize(("check", "buggy", "message"), CHECKS_AND_BUGS, ids=lambda value: getattr(value, "name", ""))
def test_each_check_catches_its_bug(check: Check, buggy: type[UsageObjective], message: str) -> None:
    batch = make_random_batch("pairwise", num_items=6, with_reference=False, with_weights=True)
    check(Logistic(), batch)
    with pytest.raises(AssertionError, match=message) as excinfo:
        check(buggy(), batch)
    assert f"objective {buggy.name!r}" in str(excinfo.value)


def test_accumulation_check_catches_a_micro_batch_token_mean_with_uneven_lengths() -> None:
    """The step's token count (``num_tokens``) is needed once lengths differ; equal lengths hide the bug."""
    uneven = make_random_batch("pairwise", num_items=6, max_tokens=9, with_reference=False, seed=2)
    assert_accumulation_invariant(StepTokenMean(), uneven, num_parts=3)
    with pytest.raises(AssertionError, match="objective 'micro_batch_token_mean': micro-batch losses") as excinfo:
        assert_accumulation_invariant(MicroBatchTokenMean(), uneven, num_parts=3)
    assert "do not add up" in str(excinfo.value)
    equal = make_random_batch("pairwise", num_items=6, with_reference=False, equal_lengths=True, seed=2)
    assert_accumulation_invariant(MicroBatchTokenMean(), equal, num_parts=3)


def test_reference_comparison_checks_value_and_gradient() -> None:
    batch = make_random_batch("pairwise", num_items=4, with_reference=False)
    assert_matches_reference(Logistic(), batch, reference_free_logistic_loss)
    with pytest.raises(AssertionError, match="loss differs from half_loss"):

        def half_loss(batch: LogProbBatch) -> torch.Tensor:
            return 0.5 * reference_free_logistic_loss(batch)

        assert_matches_reference(Logistic(), batch, half_loss)
    with pytest.raises(AssertionError, match=r"gradient w\.r\.t\. policy_logps differs"):
        assert_matches_reference(WrongGradient(), batch, reference_free_logistic_loss)


def test_check_objective_runs_everything_on_a_correct_objective() -> None:
    check_objective(Logistic(), reference_fn=reference_free_logistic_loss)
    check_objective(Logistic(), lambda: make_random_batch("pairwise", num_items=3, with_reference=False, seed=1))


def test_check_objective_reports_the_first_failing_check() -> None:
    with pytest.raises(AssertionError, match="objective 'mean_of_micro_batch': micro-batch losses"):
        check_objective(MeanOfMicroBatch(), check_weights=False)
    check_objective(MeanOfMicroBatch(), check_accumulation=False, check_weights=False)

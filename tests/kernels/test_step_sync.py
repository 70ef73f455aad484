"""The offline training step reads the device once: no other host sync in prefcore's code.

On a GPU every ``.item()``, ``.tolist()``, ``bool()``, ``int()`` or ``float()`` of a device tensor
stalls the CPU until the GPU catches up. The step keeps its metrics, losses, gradient norm and
the kernels' input checks on the device and reads them in one ``.tolist()`` (``prefcore.engine.step_reads``).
On CPU there is no device to wait for, so these tests count the calls instead: ``torch.Tensor``'s
reading methods are patched to raise during a DPO step (policy forward through the fused LM head,
live reference model, loss, backward, clipping, optimiser step), outside the step's host phase
(``_host_batches``: collating the CPU batches before they move to the device).

Reads that are allowed and why: the one documented read; torch.optim's AdamW step counters (host
tensors, ``torch/optim/optimizer.py``); transformers' SDPA mask check (``masking_utils``), which
is the model library's and not prefcore's.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from prefcore.demo.model import build_tiny_model
from prefcore.demo.task import preference_pairs
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.engine.batching import build_items
from prefcore.engine.models import frozen_copy
from prefcore.engine.reference import ModelReference
from prefcore.engine.trainer import TrainConfig
from prefcore.engine.trainer import Trainer
from prefcore.engine.trainer import WeightedObjective
from prefcore.kernels._checks import deferred_checks
from prefcore.kernels.logprobs import check_targets
from prefcore.kernels.preference_losses import dpo_loss
from prefcore.registry import Registry
from prefcore.testing.host_reads import LIBRARY_READS
from prefcore.testing.host_reads import STEP_READ
from prefcore.testing.host_reads import HostReadGuard

CPU = torch.device("cpu")
ALLOWED = (STEP_READ, *LIBRARY_READS)  # the one read per step, and torch's and transformers' own


@pytest.fixture
def guard(monkeypatch) -> HostReadGuard:
    return HostReadGuard(ALLOWED, what="the step").install(monkeypatch)


def _trainer(
    tmp_path,
    *,
    fused: bool = True,
    grad_accum: int = 2,
    steps: int = 3,
    precision: str = "fp32",
    device: torch.device = CPU,
) -> Trainer:
    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    policy = build_tiny_model(tokenizer, seed=0).to(device)
    reference = ModelReference(frozen_copy(policy), fused=fused, backend="auto")
    items = build_items(list(preference_pairs(count=16, seed=1)), "pairwise", tokenizer, max_length=64)
    objective = Registry.from_environment(third_party=False).create("usage", "dpo", {})
    config = TrainConfig(
        steps=steps, batch_size=4, grad_accum=grad_accum, fused_lm_head=fused, precision=precision, progress=False
    )
    return Trainer(
        policy,
        [WeightedObjective(objective)],
        items,
        config,
        pad_token_id=tokenizer.pad_token_id,
        run_dir=tmp_path,
        device=device,
        reference_logps=reference,
    )


def _guarded_step(trainer: Trainer, guard: HostReadGuard) -> dict[str, float]:
    host_batches = trainer._host_batches

    def unguarded_host_batches(local):
        with guard.suspended():
            return host_batches(local)

    trainer._host_batches = unguarded_host_batches
    guard.active = True
    try:
        return trainer.train_step()
    finally:
        guard.active = False
        trainer._host_batches = host_batches


@pytest.mark.parametrize(
    ("fused", "precision"), [(True, "fp32"), (False, "fp32"), (True, "bf16"), (True, "bf16-params")]
)
def test_dpo_step_reads_the_device_once(tmp_path, guard, fused, precision) -> None:
    trainer = _trainer(tmp_path, fused=fused, precision=precision)
    metrics = _guarded_step(trainer, guard)
    assert guard.counts[ALLOWED[0]] == 1, guard.counts
    assert math.isfinite(metrics["loss"]) and metrics["loss"] > 0
    assert set(metrics) >= {"loss", "rewards/accuracies", "logps/chosen", "grad_norm", "lr"}


def test_one_read_gives_the_metrics_of_reading_each_value(tmp_path, guard) -> None:
    """The metrics of the one-read step equal those of reading every value on its own (old code path)."""
    trainer = _trainer(tmp_path / "a")
    twin = _trainer(tmp_path / "b")
    metrics = _guarded_step(trainer, guard)
    # the same step, every value read on its own with float(), as the step did before
    twin.policy.train()
    twin.optimizer.zero_grad(set_to_none=True)
    micro = [twin.next_micro_batch() for _ in range(twin.config.grad_accum)]
    num_items = sum(len(indices) for indices in micro)
    batches = [twin._collate(indices) for indices in micro]
    num_tokens = sum(batch.target_token_count() for batch in batches)
    expected: dict[str, float] = {}
    for indices, batch in zip(micro, batches, strict=True):
        output = twin.objectives[0].objective.loss(twin._log_prob_batch(batch, num_items, num_tokens))
        for key, value in output.metrics.items():
            expected[key] = expected.get(key, 0.0) + len(indices) / num_items * float(value)
        output.loss.backward()
        expected["loss"] = expected.get("loss", 0.0) + float(output.loss.detach())
    expected["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(twin.trainable, twin.config.max_grad_norm))
    assert {key: metrics[key] for key in expected} == expected


def test_a_non_finite_loss_still_stops_before_the_update(tmp_path) -> None:
    trainer = _trainer(tmp_path)
    before = [parameter.detach().clone() for parameter in trainer.trainable]
    objective = trainer.objectives[0].objective
    loss = objective.loss
    objective.loss = lambda batch: type(loss(batch))(loss(batch).loss * float("nan"), {})
    with pytest.raises(FloatingPointError, match="nan"):
        trainer.train_step()
    assert trainer.step == 0
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.trainable, strict=True))


def test_kernel_checks_are_deferred_in_a_step_and_raise_at_the_read() -> None:
    targets = torch.tensor([1, 7, -100])
    with pytest.raises(ValueError, match="target id 7"):
        check_targets(targets, 5, -100, "fn")
    with deferred_checks() as checks:
        check_targets(targets, 5, -100, "fn")  # no read, no raise: a flag
    assert len(checks.flags) == 1
    values = torch.stack(checks.flag_tensors()).tolist()
    assert values == [1.0]
    with pytest.raises(ValueError, match="target id 7 is outside the vocabulary"):
        checks.raise_flagged(values)
    with deferred_checks() as clean:
        check_targets(torch.tensor([1, 4]), 5, -100, "fn")
    clean.raise_flagged(torch.stack(clean.flag_tensors()).tolist())  # a lowered flag raises nothing


def test_debug_checks_read_at_once(monkeypatch) -> None:
    monkeypatch.setenv("PREFCORE_DEBUG_CHECKS", "1")
    with deferred_checks() as checks, pytest.raises(ValueError, match="target id 7"):
        check_targets(torch.tensor([7]), 5, -100, "fn")
    assert not checks.flags


def test_a_bad_pair_index_in_a_step_is_flagged_and_explained() -> None:
    policy = torch.randn(4, 3, requires_grad=True)
    mask = torch.ones(4, 3, dtype=torch.bool)
    ref = torch.randn(4, 3)
    with deferred_checks() as checks:
        dpo_loss(policy, mask, torch.tensor([0, -1]), torch.tensor([1, 3]), ref_logps=ref, backend="torch")
    values = torch.stack(checks.flag_tensors()).tolist()
    with pytest.raises(ValueError, match=r"chosen_index\[1\] = -1 is out of range"):
        checks.raise_flagged(values)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA's sync-debug mode needs a CUDA GPU")
def test_cuda_step_synchronises_only_at_its_one_read(tmp_path) -> None:
    """On a GPU, CUDA's own sync-debug mode reports every host sync of the step, wherever it comes from.

    prefcore's code may synchronise only at the step's one read; the model library's SDPA mask
    check is allowed, as on CPU. The first step (allocations, kernel compilation) is not counted.
    """
    trainer = _trainer(tmp_path, device=torch.device("cuda"))
    trainer.train_step()
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            trainer.train_step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [warning for warning in caught if "synchroniz" in str(warning.message)]
    ours = [warning for warning in syncs if "/prefcore/" in warning.filename.replace("\\", "/")]
    assert ours and all(
        warning.filename.replace("\\", "/").endswith("prefcore/engine/step_reads.py") for warning in ours
    )
    assert len(ours) == 1, [(warning.filename, warning.lineno) for warning in ours]

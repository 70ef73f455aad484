"""The GRPO-family update step reads the device once: no other host sync in prefcore's code.

As the offline step (``tests/kernels/test_step_sync.py``), an online optimiser step keeps its losses,
metrics, gradient norm and the kernels' input checks on the device and reads them in one ``.tolist()``
(``prefcore.engine.step_reads.read_step``), before the optimiser steps; the update phase reads each row's
loss-token count once before its steps (``read_counts``). Sampling, scoring and the advantages (the
rollout phase) may read the device. On CPU there is nothing to wait for, so the test counts:
``torch.Tensor``'s reading methods are patched to raise during the update phase (policy forward
through the fused LM head or not, on shared prompts or full sequences, loss, backward, clipping,
optimiser) except in those two places, AdamW's host step counters and transformers' SDPA mask check.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from prefcore.batch import LossOutput
from prefcore.demo import task
from prefcore.demo.model import build_tiny_model
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.engine.models import frozen_copy
from prefcore.engine.online_loops import OnlineDPOTrainer
from prefcore.engine.online_loops import _pair_items
from prefcore.engine.online_loops import rollout_pairs
from prefcore.engine.online_trainer import OnlineTrainer
from prefcore.engine.trainer import WeightedObjective
from prefcore.errors import NonFiniteLossError
from prefcore.registry import Registry
from prefcore.rollout import Rollouts
from prefcore.settings import OnlineLoopConfig
from prefcore.settings import TrainConfig
from prefcore.testing.host_reads import LIBRARY_READS
from prefcore.testing.host_reads import PHASE_READ
from prefcore.testing.host_reads import STEP_READ
from prefcore.testing.host_reads import HostReadGuard

ALLOWED = (STEP_READ, PHASE_READ, *LIBRARY_READS)  # one read per optimiser step, one per update phase
RECORDS = task.answer_records(("sum",))[:12]
CASES = {
    # KL to the reference in the loss, batch-std advantages, fused LM head on shared prompts
    "grpo": ("grpo", {"beta": 0.04, "scale_rewards": "batch"}, {}),
    # the full sequences through the plain LM head (as FSDP2's shards take them)
    "grpo_plain": ("grpo", {"beta": 0.04}, {"fused_lm_head": False, "share_prefix": False}),
    # a token-level loss whose metrics include plain numbers
    "gspo": ("gspo", {}, {}),
}


@pytest.fixture
def guard(monkeypatch) -> HostReadGuard:
    return HostReadGuard(ALLOWED, what="the update").install(monkeypatch)


def _reward(rollouts: Rollouts, metadata: Sequence[Mapping[str, Any]]) -> tuple[torch.Tensor, dict[str, Any]]:
    answers = [metadata[group]["answer"] for group in rollouts.group_ids]
    exact = torch.tensor([float(text.strip() == answer) for text, answer in zip(rollouts.texts, answers, strict=True)])
    length = torch.tensor([float(len(text)) for text in rollouts.texts])
    return exact - 0.01 * length, {"exact": exact}


def _trainer(run_dir: Path, case: str) -> OnlineTrainer:
    method, options, engine = CASES[case]
    tokenizer = build_tokenizer()
    policy = build_tiny_model(tokenizer, seed=0)
    trainer = OnlineTrainer(
        policy,
        Registry.from_environment(third_party=False).create("usage", method, options),
        [record.prompt for record in RECORDS],
        [record.metadata for record in RECORDS],
        TrainConfig(steps=1, lr=1e-2, seed=3, progress=False, fused_lm_head=engine.get("fused_lm_head", True)),
        # 24 completions, minibatches of 10 (3 optimiser steps a pass, 2 passes), micro-batches of 4
        OnlineLoopConfig(
            prompts_per_step=6,
            samples_per_prompt=4,
            max_new_tokens=6,
            update_epochs=2,
            minibatch_size=10,
            micro_batch_size=4,
        ),
        tokenizer=tokenizer,
        reward=_reward,
        run_dir=run_dir,
        device=torch.device("cpu"),
        reference=frozen_copy(policy),
    )
    trainer.share_prefix = engine.get("share_prefix", True)
    return trainer


def _scored(trainer: OnlineTrainer) -> Any:
    return trainer.rollout_phase(trainer.local_prompts(trainer.sampler.draw(trainer.online.prompts_per_step)))


@pytest.mark.parametrize("case", list(CASES))
def test_each_optimiser_step_reads_the_device_once(tmp_path: Path, guard: HostReadGuard, case: str) -> None:
    trainer = _trainer(tmp_path, case)
    scored = _scored(trainer)  # sampling and scoring may read the device
    with guard.on():
        metrics = trainer.update_phase(scored)
    assert trainer.step == 6  # ⌈24 / 10⌉ minibatches × 2 passes
    assert guard.counts[STEP_READ] == trainer.step and guard.counts[PHASE_READ] == 1, guard.counts
    assert math.isfinite(metrics["loss"]) and {"loss", "grad_norm", "lr"} <= set(metrics)


def test_one_read_gives_the_metrics_of_reading_each_value(tmp_path: Path, guard: HostReadGuard) -> None:
    """A guarded step's metrics equal those of reading every value on its own with float() (the old path)."""
    trainer, twin = _trainer(tmp_path / "a", "grpo"), _trainer(tmp_path / "b", "grpo")
    scored, twin_scored = _scored(trainer), _scored(twin)
    ranges = trainer.row_ranges(scored.rows)
    minibatch = trainer._minibatches(scored.rows, 0)[0]
    mask = trainer._loss_mask(scored)
    num_tokens = int(mask[minibatch].sum())
    with guard.on():
        metrics = trainer.minibatch_step(scored, minibatch, ranges, num_tokens)
    twin.train_mode()
    expected: dict[str, float] = {}
    for rows, weight in twin.micro_batches(minibatch, ranges, twin.online.micro_batch_size):
        output = twin.objective.loss(twin._rows(twin_scored, rows, num_tokens, len(minibatch)))
        output.loss.backward()
        expected["loss"] = expected.get("loss", 0.0) + weight * float(output.loss.detach())
        for key, value in output.metrics.items():
            expected[key] = expected.get(key, 0.0) + weight * len(rows) / len(minibatch) * float(value)
    expected["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(twin.trainable, twin.config.max_grad_norm))
    assert len(expected) > 3 and {key: metrics[key] for key in expected} == expected
    assert list(metrics)[: len(expected)] == list(expected)  # the same keys in the same order


@pytest.mark.parametrize("fused", [True, False])
def test_an_online_dpo_step_reads_the_device_once(tmp_path: Path, guard: HostReadGuard, fused: bool) -> None:
    """Online DPO (and the human loop, which trains through it): two objectives, pairs in micro-batches of 2."""
    tokenizer = build_tokenizer()
    policy = build_tiny_model(tokenizer, seed=0)
    registry = Registry.from_environment(third_party=False)
    trainer = OnlineDPOTrainer(
        policy,
        [
            WeightedObjective(registry.create("usage", "dpo", {"beta": 0.1})),
            WeightedObjective(registry.create("usage", "ipo", {}), 0.5),
        ],
        [record.prompt for record in RECORDS],
        [record.metadata for record in RECORDS],
        TrainConfig(steps=1, lr=1e-2, seed=3, progress=False, fused_lm_head=fused),
        OnlineLoopConfig(prompts_per_step=6, samples_per_prompt=4, max_new_tokens=6, micro_batch_size=2),
        tokenizer=tokenizer,
        reward=_reward,
        run_dir=tmp_path,
        device=torch.device("cpu"),
        reference=frozen_copy(policy),
    )
    scored = trainer.score(trainer.sampler.draw(trainer.online.prompts_per_step))
    items = _pair_items(scored.rollouts, rollout_pairs(scored.rewards, 4).pairs)
    assert len(items) > 2
    host_batches = trainer._host_batches

    def unguarded(chunks: Any) -> Any:  # collating on the host (CPU tensors) reads no device
        guard.active = False
        try:
            return host_batches(chunks)
        finally:
            guard.active = True

    trainer._host_batches = unguarded  # type: ignore[method-assign]
    with guard.on():
        metrics = trainer.update(items)
    assert trainer.step == 1 and guard.counts[STEP_READ] == 1, guard.counts
    assert math.isfinite(metrics["loss"]) and {"loss", "dpo/rewards/accuracies", "grad_norm", "lr"} <= set(metrics)


def test_a_non_finite_loss_still_stops_before_the_update(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, "grpo")
    scored = _scored(trainer)
    before = [parameter.detach().clone() for parameter in trainer.trainable]
    loss = trainer.objective.loss
    trainer.objective.loss = lambda batch: LossOutput(loss(batch).loss * float("nan"), {})  # type: ignore[method-assign]
    with pytest.raises(NonFiniteLossError, match="nan"):
        trainer.update_phase(scored)
    assert trainer.step == 0
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.trainable, strict=True))

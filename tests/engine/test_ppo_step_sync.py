"""The PPO update step reads the device once: no other host sync in prefcore's code.

As the offline step (``tests/kernels/test_step_sync.py``), a PPO optimiser step keeps its losses,
metrics, both gradient norms and the kernels' input checks on the device and reads them in one
``.tolist()`` (``prefcore.engine.step_reads.read_step_norms``), before either optimiser steps; the update phase reads
each row's loss-token count once before its steps (``prefcore.engine.step_reads.read_counts``). On
CPU there is nothing to wait for, so the test counts: ``torch.Tensor``'s reading methods are patched
to raise during the update phase (policy forward through the fused LM head, values, both losses,
backward, clipping, both optimisers) except in those two places, AdamW's host step counters and
transformers' SDPA mask check.
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
from prefcore.engine import ppo_trainer as ppo_trainer_module
from prefcore.engine.models import frozen_copy
from prefcore.engine.ppo_trainer import PPOTrainer
from prefcore.engine.value_model import build_value_model
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
    "ppo": ("ppo", {}, ()),
    # one forward for log-probs, entropy (from the logits) and the heads on the policy's trunk
    "ppo_shared_entropy": ("ppo", {"critic": "shared", "entropy_coef": 0.01}, ()),
    # two heads and λ's metrics (plain numbers and 0-d tensors)
    "safe_rlhf": ("safe_rlhf", {}, ("length",)),
}


@pytest.fixture
def guard(monkeypatch) -> HostReadGuard:
    return HostReadGuard(ALLOWED, what="the update").install(monkeypatch)


def reward(rollouts: Rollouts, metadata: Sequence[Mapping[str, Any]]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    answers = [metadata[group]["answer"] for group in rollouts.group_ids]
    exact = torch.tensor([float(text.strip() == answer) for text, answer in zip(rollouts.texts, answers, strict=True)])
    words = torch.tensor([float(len(text.split())) for text in rollouts.texts])
    return exact - 0.1 * words, {"exact": exact, "length": words - 2.0}


def _trainer(run_dir: Path, case: str, **online: Any) -> PPOTrainer:
    method, options, costs = CASES[case]
    tokenizer = build_tokenizer()
    policy = build_tiny_model(tokenizer, seed=0)
    objective = Registry.from_environment(third_party=False).create("usage", method, options)
    heads = ("reward", "cost") if costs else ("reward",)
    return PPOTrainer(
        policy,
        objective,
        [record.prompt for record in RECORDS],
        [record.metadata for record in RECORDS],
        TrainConfig(steps=2, lr=1e-2, seed=3, progress=False, kernel_backend="torch"),
        # 12 completions, minibatches of 5 (5, 5, 2), micro-batches of 3: 6 optimiser steps over 2 epochs
        OnlineLoopConfig(
            **{
                "prompts_per_step": 3,
                "samples_per_prompt": 4,
                "max_new_tokens": 6,
                "update_epochs": 2,
                "minibatch_size": 5,
                "micro_batch_size": 3,
                **online,
            }
        ),
        tokenizer=tokenizer,
        reward=reward,
        run_dir=run_dir,
        device=torch.device("cpu"),
        reference=frozen_copy(policy),
        value_model=build_value_model(objective.config.critic, policy, heads=heads, seed=2),
        cost_names=costs,
    )


def _scored(trainer: PPOTrainer) -> Any:
    return trainer.rollout_phase(trainer.local_prompts(trainer.sampler.draw(trainer.online.prompts_per_step)))


def _weights(trainer: PPOTrainer) -> dict[str, torch.Tensor]:
    named = [
        *trainer.policy.named_parameters(),
        *(("value." + n, p) for n, p in trainer.value_model.named_parameters()),
    ]
    return {name: parameter.detach().clone() for name, parameter in named}


@pytest.mark.parametrize("case", list(CASES))
def test_each_ppo_optimiser_step_reads_the_device_once(tmp_path: Path, guard: HostReadGuard, case: str) -> None:
    trainer = _trainer(tmp_path, case)
    scored = _scored(trainer)
    with guard.on():
        metrics = trainer.update_phase(scored)
    assert trainer.step == 6
    assert guard.counts[STEP_READ] == 6 and guard.counts[PHASE_READ] == 1, guard.counts
    assert all(math.isfinite(value) for value in metrics.values())
    assert {"loss", "policy_loss", "grad_norm", "critic/grad_norm", "lr", "critic/lr", "value/loss"} <= set(metrics)
    if case == "safe_rlhf":
        assert {"value_cost/loss", "lagrange/lambda", "cost/over_bound_fraction"} <= set(metrics)


def _read_each(reads, checks, norms, *, step, method):
    """The step as it read before: every value with its own ``float()`` (the reference for the packing)."""
    for loss in reads.losses:
        if not math.isfinite(float(loss)):
            raise AssertionError("a non-finite loss")
    totals: dict[str, float] = {}
    for key, share, value in reads.metrics:
        totals[key] = totals.get(key, 0.0) + share * float(value)
    return totals, [None if norm is None else float(norm) for norm in norms]


@pytest.mark.parametrize("case", list(CASES))
def test_one_read_gives_the_metrics_and_weights_of_reading_each_value(
    tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = _trainer(tmp_path / "a", case)
    twin = _trainer(tmp_path / "b", case)
    metrics = trainer.update_phase(_scored(trainer))
    with monkeypatch.context() as patched:
        patched.setattr(ppo_trainer_module, "read_step_norms", _read_each)
        expected = twin.update_phase(_scored(twin))
    assert list(metrics) == list(expected)  # the same keys in the same order (the metrics file's columns)
    assert metrics == expected
    ours, theirs = _weights(trainer), _weights(twin)
    assert all(torch.equal(ours[name], theirs[name]) for name in theirs)


def test_a_non_finite_value_loss_stops_before_either_optimiser_steps(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, "ppo")
    scored = _scored(trainer)
    before = _weights(trainer)
    value_loss = trainer.objective.value_loss
    trainer.objective.value_loss = lambda values, batch: LossOutput(value_loss(values, batch).loss * float("nan"), {})
    with pytest.raises(NonFiniteLossError, match="nan"):
        trainer.update_phase(scored)
    assert trainer.step == 0
    after = _weights(trainer)
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_host_lengths_give_the_rows_the_device_would_count(tmp_path: Path) -> None:
    """``RolloutTensors.lengths`` and ``target_rows`` (what lets ``select`` and the fused LM head skip their reads)
    equal the masks' own counts, for the whole batch and for uneven selections."""
    tensors = _scored(_trainer(tmp_path, "ppo")).tensors
    assert tensors.lengths is not None
    for rows in (range(tensors.num_completions), [0], [3, 1, 7], [11, 0, 5, 6, 2]):
        selected = tensors.select(list(rows))
        reference = tensors.select(torch.tensor(list(rows)))  # a tensor of rows: measured on the device
        assert selected.lengths is not None and reference.lengths is None
        for name in ("input_ids", "attention_mask", "completion_mask"):
            assert torch.equal(getattr(selected.sequences, name), getattr(reference.sequences, name)), name
        for name in ("completion_ids", "mask", "sampling_logps"):
            assert torch.equal(getattr(selected, name), getattr(reference, name)), name
        sums = zip(selected.sequences.attention_mask.sum(1).tolist(), selected.mask.sum(1).tolist(), strict=True)
        assert list(selected.lengths) == list(sums)
        expected = selected.sequences.completion_mask.reshape(-1).nonzero()[:, 0]
        assert torch.equal(selected.target_rows(), expected)
        assert expected.numel() == int(selected.mask.sum()) > 0


@pytest.mark.parametrize("case", ["ppo", "safe_rlhf"])
def test_the_value_loss_metric_is_the_steps_however_it_is_split(tmp_path: Path, case: str) -> None:
    """One optimiser step over all 12 completions: in micro-batches of 5 (5, 5, 2) the ``value*/loss`` metrics add
    up to those of one forward over the 12 (each micro-batch's loss is its share of the step's)."""
    whole = _trainer(tmp_path / "a", case, update_epochs=1, minibatch_size=0, micro_batch_size=0)
    split = _trainer(tmp_path / "b", case, update_epochs=1, minibatch_size=0, micro_batch_size=5)
    want = whole.update_phase(_scored(whole))
    got = split.update_phase(_scored(split))
    keys = [key for key in want if key.endswith("/loss") and key.startswith("value")]
    assert keys == (["value/loss", "value_cost/loss"] if case == "safe_rlhf" else ["value/loss"])
    for key in [*keys, "loss"]:
        assert got[key] == pytest.approx(want[key], rel=1e-6), key

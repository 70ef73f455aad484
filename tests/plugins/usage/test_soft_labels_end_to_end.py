"""Soft labels and margins survive the whole path: record → build_items → batch → objective.

The demo's tiny model trains two real optimiser steps (tokenisation, length-grouped
micro-batches, reference model, fused LM head) with cDPO and IPO wrapped so that the
``LogProbBatch`` they are handed is kept. Each pair's ``probability`` and ``margin`` must be
there (NaN / 0 where the record gives none) and decide the loss: cDPO's equals its paper's
formula with the records' own values. The same holds for pairs relabelled by a reward model
(``relabel_pairs``: higher score chosen, σ(|Δ|) as the soft label).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from prefcore.batch import LogProbBatch
from prefcore.batch import LossOutput
from prefcore.demo.model import build_tiny_model
from prefcore.demo.task import preference_pairs
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.engine.batching import build_items
from prefcore.engine.batching import collate
from prefcore.engine.models import frozen_copy
from prefcore.engine.reference import ModelReference
from prefcore.engine.trainer import TrainConfig
from prefcore.engine.trainer import Trainer
from prefcore.engine.trainer import WeightedObjective
from prefcore.kernels.preference_losses import sequence_logps
from prefcore.plugins.usage.cdpo import CDPO
from prefcore.plugins.usage.cdpo import CDPOConfig
from prefcore.plugins.usage.ipo import IPO

# Each pair's soft label; None = the record has none. Distinct values identify the pairs.
PROBABILITIES = [0.9, 0.75, None, 0.6, 0.3, 0.99]
LABEL_SMOOTHING = 0.2


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return build_tokenizer()


def _records() -> list[Any]:
    pairs = preference_pairs(count=len(PROBABILITIES), seed=4)
    records = [replace(pair, probability=p) for pair, p in zip(pairs, PROBABILITIES, strict=True)]
    records[3] = replace(records[3], margin=None)  # a pair without a margin
    return records


def _recording(objective_cls: type, config: Any = None) -> Any:
    """An instance of ``objective_cls`` that keeps every batch it is given."""

    class Recording(objective_cls):
        def loss(self, batch: LogProbBatch) -> LossOutput:
            self.batches.append(batch)
            return super().loss(batch)

    recording = Recording(config)
    recording.batches = []
    return recording


def _train_two_steps(records: list[Any], tokenizer: Any, objectives: list[Any], tmp_path: Any) -> None:
    torch.set_num_threads(1)
    items = build_items(records, "pairwise", tokenizer, max_length=64)
    policy = build_tiny_model(tokenizer, seed=0)
    reference = ModelReference(frozen_copy(policy), fused=True, backend="auto")
    config = TrainConfig(steps=2, batch_size=len(items), lr=1e-2, warmup_steps=0, schedule="constant", progress=False)
    Trainer(
        policy,
        [WeightedObjective(objective) for objective in objectives],
        items,
        config,
        pad_token_id=tokenizer.pad_token_id,
        run_dir=tmp_path,
        device=torch.device("cpu"),
        reference_logps=reference,
    ).fit()


def _by_soft_label(probabilities: list[float | None], margins: list[float | None]) -> dict[str, float]:
    """Each pair's margin (0 if none) keyed by its soft label ("none" if none), to 5 decimals."""
    return {
        "none" if p is None or math.isnan(p) else f"{p:.5f}": round(m or 0.0, 5)
        for p, m in zip(probabilities, margins, strict=True)
    }


def _mitchell_cdpo_soft_loss(batch: LogProbBatch, probabilities: list[float | None]) -> torch.Tensor:
    """−p·log σ(βh) − (1 − p)·log σ(−βh) per pair, p the record's soft label or 1 − ε, averaged."""
    assert batch.chosen_index is not None and batch.rejected_index is not None and batch.ref_logps is not None
    policy, _ = sequence_logps(batch.policy_logps.detach(), batch.mask)
    reference, _ = sequence_logps(batch.ref_logps, batch.mask)
    ratio = policy - reference
    losses = []
    for i, p in enumerate(probabilities):
        p = 1 - LABEL_SMOOTHING if p is None else p
        h = 0.1 * (ratio[batch.chosen_index[i]] - ratio[batch.rejected_index[i]])
        losses.append(-p * F.logsigmoid(h) - (1 - p) * F.logsigmoid(-h))
    return torch.stack(losses).mean()


def test_collate_keeps_missing_soft_labels_apart_from_certain_ones(tokenizer: Any) -> None:
    """A record without ``probability`` is NaN in the batch, never 1 (which cDPO would read as "certain")."""
    records = _records()
    batch = collate(build_items(records, "pairwise", tokenizer, max_length=64), tokenizer.pad_token_id)
    assert batch.probabilities is not None and batch.margins is not None
    expected = [math.nan if p is None else p for p in PROBABILITIES]
    torch.testing.assert_close(batch.probabilities, torch.tensor(expected), equal_nan=True)
    expected_margins = [0.0 if record.margin is None else record.margin for record in records]
    torch.testing.assert_close(batch.margins, torch.tensor(expected_margins))


def test_soft_labels_and_margins_reach_the_objectives_through_the_trainer(tokenizer: Any, tmp_path: Any) -> None:
    records = _records()
    cdpo = _recording(CDPO, CDPOConfig(beta=0.1, label_smoothing=LABEL_SMOOTHING))
    ipo = _recording(IPO)
    _train_two_steps(records, tokenizer, [cdpo, ipo], tmp_path)
    first, batch = cdpo.batches  # in the second step the policy has moved away from the reference
    assert [id(b) for b in ipo.batches] == [id(first), id(batch)]  # every objective sees the same batch
    assert batch.probabilities is not None and batch.margins is not None
    expected = _by_soft_label(PROBABILITIES, [record.margin for record in records])
    assert _by_soft_label(batch.probabilities.tolist(), batch.margins.tolist()) == expected

    # The batch's pairs are in the trainer's order: recover each pair's record by its soft label.
    probabilities = [None if math.isnan(p) else p for p in batch.probabilities.tolist()]
    torch.testing.assert_close(cdpo.loss(batch).loss.detach(), _mitchell_cdpo_soft_loss(batch, probabilities))
    for objective in (cdpo, ipo):
        plain = objective.loss(replace(batch, probabilities=None)).loss
        assert not torch.allclose(objective.loss(batch).loss, plain), f"{objective.name} ignored the soft labels"


def test_relabelled_pairs_carry_the_reward_models_confidence(tokenizer: Any, tmp_path: Any) -> None:
    from prefcore.pipeline import relabel_pairs

    def scorer(prompts: list[Any], completions: list[Any]) -> list[float]:
        """A stand-in reward model: longer replies score higher, by 0.3 per word."""
        return [0.3 * len(str(completion).split()) for completion in completions]

    pairs = [replace(pair, probability=None) for pair in _records()]
    relabelled = relabel_pairs(pairs, scorer)
    assert relabelled, "the stand-in reward model must separate some pairs"
    gaps = [scorer([], [pair.chosen])[0] - scorer([], [pair.rejected])[0] for pair in relabelled]
    assert all(gap > 0 for gap in gaps)  # the higher-scored completion is chosen
    cdpo = _recording(CDPO, CDPOConfig(beta=0.1, label_smoothing=LABEL_SMOOTHING))
    _train_two_steps(relabelled, tokenizer, [cdpo], tmp_path)
    batch = cdpo.batches[-1]
    assert batch.probabilities is not None
    confidences = sorted(1 / (1 + math.exp(-gap)) for gap in gaps)
    assert sorted(batch.probabilities.tolist()) == pytest.approx(confidences, rel=1e-6)
    torch.testing.assert_close(
        cdpo.loss(batch).loss.detach(), _mitchell_cdpo_soft_loss(batch, batch.probabilities.tolist())
    )

"""The training loop shared by every usage objective.

One optimiser step = ``grad_accum`` micro-batches. Each objective's loss is normalised by
the number of comparisons in the whole step (``LogProbBatch.num_items``), so the summed
micro-batch gradients equal the gradient of the step mean, whatever the split; token-averaged
terms divide by the step's target tokens (``LogProbBatch.num_tokens``) likewise. Several
objectives train together as a weighted sum; each sees the same log-prob batch.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from dataclasses import replace
from pathlib import Path

import torch

from prefcore.batch import LogProbBatch
from prefcore.distributed.process_group import is_main
from prefcore.engine.batching import SequenceBatch
from prefcore.engine.batching import TrainingItem
from prefcore.engine.batching import collate
from prefcore.engine.logprobs import completion_token_logps
from prefcore.engine.loop import OptimiserLoop
from prefcore.engine.loop import check_finite
from prefcore.engine.loop import check_loss
from prefcore.engine.loop import epoch_steps
from prefcore.engine.models import enable_gradient_checkpointing
from prefcore.engine.progress import StageProgress
from prefcore.engine.sequences import PaddedSequences
from prefcore.errors import ConfigError
from prefcore.methods import UsageObjective
from prefcore.settings import TrainConfig


@dataclass(frozen=True)
class WeightedObjective:
    objective: UsageObjective
    weight: float = 1.0


ReferenceLogps = Callable[[SequenceBatch], torch.Tensor]
"""Per-token reference log-probs ``[S, L-1]`` of a batch (a frozen model's forward)."""


def with_epoch_limit(config: TrainConfig, num_items: int) -> TrainConfig:
    """``config`` with ``steps`` made concrete for ``[train] epochs``: the scheduler and the loop count steps.

    ``steps = 0`` lets the epochs decide; ``steps`` > 0 as well ends training at the first limit reached.
    Without epochs the config is returned unchanged.
    """
    if config.epochs <= 0:
        return config
    limit = epoch_steps(config.epochs, num_items, config.batch_size, config.grad_accum)
    return replace(config, steps=limit if config.steps == 0 else min(config.steps, limit))


def _autocast(config: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    if device.type != "cuda" or config.precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if config.precision == "bf16" else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def _policy_logps(
    model: torch.nn.Module, sequences: PaddedSequences, fused: bool, backend: str, autocast: AbstractContextManager
) -> torch.Tensor:
    """The policy's per-token log-probs: what DDP and FSDP2 wrap as the forward of a micro-batch."""
    with autocast:
        return completion_token_logps(model, sequences, fused=fused, backend=backend)


class Trainer(OptimiserLoop):
    """Runs optimiser steps of a weighted sum of objectives over training items.

    Under torchrun each rank collates its slice of every global micro-batch; the objectives see the
    global ``num_items`` and ``num_tokens``, so the ranks' losses add up to the single-process one.
    """

    distributed = True

    def __init__(
        self,
        policy: torch.nn.Module,
        objectives: Sequence[WeightedObjective],
        items: Sequence[TrainingItem],
        config: TrainConfig,
        *,
        pad_token_id: int,
        run_dir: Path,
        device: torch.device,
        reference_logps: ReferenceLogps | None = None,
        cached_reference: Sequence[Sequence[float]] | None = None,
        on_step: Callable[[int, Mapping[str, float]], None] | None = None,
        on_checkpoint: Callable[[int, Path], None] | None = None,
        on_evaluate: Callable[[int], None] | None = None,
        checkpoint_tag: str = "",
        stage: str = "training",
    ) -> None:
        if not items:
            raise ConfigError("there is no training data: the feedback produced no usable comparison.")
        needs_reference = any(entry.objective.uses_reference() for entry in objectives)
        if needs_reference and reference_logps is None and cached_reference is None:
            raise ConfigError("an objective needs reference log-probs but the run has no reference model.")
        config = with_epoch_limit(config, len(items))
        if config.gradient_checkpointing:
            enable_gradient_checkpointing(policy)
        super().__init__(
            policy,
            items,
            config,
            run_dir=Path(run_dir) / checkpoint_tag if checkpoint_tag else Path(run_dir),
            on_checkpoint=on_checkpoint,
            what="the policy",
            shuffle=config.shuffle,
            group_by_length=config.group_by_length,
            forward=_policy_logps,
        )
        self.policy = policy
        self.objectives = list(objectives)
        self.pad_token_id = pad_token_id
        self.device = device
        self.reference_logps = reference_logps if needs_reference else None
        self.cached_reference = cached_reference if needs_reference else None
        self.on_step = on_step
        self.on_evaluate = on_evaluate
        self.stage = stage

    def _collate(self, indices: list[int]) -> SequenceBatch:
        items = [self.items[index] for index in indices]
        cached = [self.cached_reference[index] for index in indices] if self.cached_reference is not None else None
        return collate(items, self.pad_token_id, reference_logps=cached)

    def _log_prob_batch(self, batch: SequenceBatch, num_items: int, num_tokens: int) -> LogProbBatch:
        policy_logps = self.forward(
            batch.sequences, self.config.fused_lm_head, self.config.kernel_backend, _autocast(self.config, self.device)
        )
        ref_logps = None
        if self.reference_logps is not None and batch.ref_sequence_logps is None:
            with torch.no_grad(), _autocast(self.config, self.device):
                ref_logps = self.reference_logps(batch)
        return LogProbBatch(
            policy_logps=policy_logps.float(),
            mask=batch.sequences.completion_mask,
            ref_logps=None if ref_logps is None else ref_logps.float(),
            ref_sequence_logps=batch.ref_sequence_logps,
            chosen_index=batch.chosen_index,
            rejected_index=batch.rejected_index,
            labels=batch.labels,
            list_index=batch.list_index,
            list_ranks=batch.list_ranks,
            margins=batch.margins,
            probabilities=batch.probabilities,
            scores=batch.scores,
            weights=batch.weights,
            mismatched_index=batch.mismatched_index,
            num_items=num_items,
            num_tokens=num_tokens,
        )

    # -- loop ---------------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        """One optimiser step over ``grad_accum`` micro-batches; returns the step's metrics."""
        self.policy.train()
        self.optimizer.zero_grad(set_to_none=True)
        micro = [self.next_micro_batch() for _ in range(self.config.grad_accum)]
        num_items = sum(len(indices) for indices in micro)  # global: every rank knows every micro-batch
        local = [self.local_indices(indices) for indices in micro]  # this rank's slices (all of it in one process)
        batches = [self._collate(indices) for indices, _ in local]
        # every micro-batch divides its token sums by the whole step's count, known only after collating all
        counted = [batch.target_token_count() for batch, (_, weight) in zip(batches, local, strict=True) if weight]
        num_tokens = int(self.global_sum(sum(counted)))
        totals: dict[str, float] = {}
        for position, ((indices, weight), batch) in enumerate(zip(local, batches, strict=True)):
            log_prob_batch = self._log_prob_batch(batch.to(self.device), num_items, num_tokens)
            loss = torch.zeros((), device=self.device)
            share = weight * len(indices) / num_items
            for entry in self.objectives:
                output = entry.objective.loss(log_prob_batch)
                check_loss(output.loss, self.step + 1, entry.objective)
                loss = loss + entry.weight * output.loss
                prefix = f"{entry.objective.name}/" if len(self.objectives) > 1 else ""
                for key, value in output.metrics.items():
                    totals[prefix + key] = totals.get(prefix + key, 0.0) + share * float(value)
                if prefix:  # each objective's own (unweighted) loss; micro-batch losses add up to the step's
                    totals[prefix + "loss"] = totals.get(prefix + "loss", 0.0) + weight * float(output.loss.detach())
            check_finite(loss, self.step + 1)
            self.backward(loss, final=position == len(micro) - 1, weight=weight)
            totals["loss"] = totals.get("loss", 0.0) + weight * float(loss.detach())
        totals = self.reduce_metrics(totals)
        self.apply_update(totals)
        return totals

    def fit(self) -> dict[str, float]:
        """Train until ``config.steps``; checkpoints, evaluation and metrics through the callbacks."""
        metrics: dict[str, float] = {}
        started = time.perf_counter()
        main = is_main()  # under torchrun, rank 0 alone reports and evaluates
        enabled = self.config.progress and main
        with StageProgress(self.stage, self.config.steps, enabled=enabled, initial=self.step) as bar:
            while self.step < self.config.steps:
                metrics = self.train_step()
                metrics["elapsed_s"] = round(time.perf_counter() - started, 3)
                last = self.step == self.config.steps
                if self.on_step is not None and main and (self.step % self.config.log_every == 0 or last):
                    self.on_step(self.step, metrics)
                bar.update(self.step, metrics)
                due = self.config.eval_every and self.step % self.config.eval_every == 0
                if due and self.step < self.config.steps and self.on_evaluate is not None:
                    self.gather_weights()  # evaluation runs on the plain model, on rank 0
                    if main:
                        self.on_evaluate(self.step)
                if self.config.checkpoint_every and self.step % self.config.checkpoint_every == 0:
                    self.save()
        self.gather_weights()
        return metrics

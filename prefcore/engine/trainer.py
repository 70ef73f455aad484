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
from prefcore.distributed.process_group import current
from prefcore.distributed.process_group import is_main
from prefcore.engine.batching import SequenceBatch
from prefcore.engine.batching import TrainingItem
from prefcore.engine.batching import collate
from prefcore.engine.compute_weights import compute_weights
from prefcore.engine.fused_pairwise_step import loss_aware_output
from prefcore.engine.logprobs import completion_rows
from prefcore.engine.logprobs import completion_token_logps
from prefcore.engine.logprobs import known_completion_rows
from prefcore.engine.loop import OptimiserLoop
from prefcore.engine.loop import check_loss
from prefcore.engine.loop import epoch_steps
from prefcore.engine.models import enable_gradient_checkpointing
from prefcore.engine.pair_prefix import PromptPlan
from prefcore.engine.pair_prefix import plan_prompts
from prefcore.engine.pair_prefix import reference_shared_prompt_logps
from prefcore.engine.pair_prefix import shared_prompt_token_logps
from prefcore.engine.progress import StageProgress
from prefcore.engine.reference import spread_reference
from prefcore.engine.sequences import PaddedSequences
from prefcore.engine.step_reads import StepReads
from prefcore.engine.step_reads import read_step
from prefcore.errors import ConfigError
from prefcore.kernels._checks import DeferredChecks
from prefcore.kernels._checks import deferred_checks
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


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), where bf16 autocast can pay off."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``[train] precision`` on ``device``, or None for plain fp32.

    The weights stay fp32 (the optimiser's master copy); autocast runs the matmuls in bf16/fp16 and
    the log-probs, the log-sum-exp and the losses stay fp32. fp16 is GPU-only (CPU runs fp32);
    ``auto`` is bf16 where the device has native bf16 (CUDA with bf16, AVX512-BF16/AMX CPUs).
    """
    if precision in ("fp32", "bf16-params") or device.type not in ("cuda", "cpu"):
        return None
    if device.type == "cuda":
        if precision == "auto":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
        return torch.bfloat16 if precision == "bf16" else torch.float16
    if precision == "bf16" or (precision == "auto" and cpu_has_native_bf16()):
        return torch.bfloat16
    return None


def _autocast(config: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    dtype = autocast_dtype(config.precision, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _precision(config: TrainConfig, device: torch.device, model: torch.nn.Module | None) -> AbstractContextManager:
    """The forward's precision context: autocast, or ``model`` on bf16 copies of its weights (``bf16-params``)."""
    if config.precision == "bf16-params" and model is not None:
        return compute_weights(model, torch.bfloat16)
    return _autocast(config, device)


def _policy_logps(
    model: torch.nn.Module,
    sequences: PaddedSequences,
    fused: bool,
    backend: str,
    autocast: AbstractContextManager,
    plan: PromptPlan | None = None,
) -> torch.Tensor:
    """The policy's per-token log-probs: what DDP and FSDP2 wrap as the forward of a micro-batch.

    With a ``plan`` (``[train] share_prompts``) each shared prompt runs once, when the model suits.
    """
    with autocast:
        if plan is not None:
            shared = shared_prompt_token_logps(model, plan, sequences.input_ids.device, fused=fused, backend=backend)
            if shared is not None:
                return shared
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
        parallel = current()
        if config.precision == "bf16-params" and parallel is not None and parallel.strategy == "fsdp":
            raise ConfigError(
                "[train] precision = 'bf16-params' is FSDP2's own recipe: under [distributed] strategy = 'fsdp' "
                "set [distributed] mixed_precision = 'bf16' instead.",
                field="train.precision",
            )
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
        # under FSDP2 the frozen reference is sharded like the policy (collective: every rank builds it)
        self.reference_logps = spread_reference(reference_logps, self.parallel) if needs_reference else None
        self.cached_reference = cached_reference if needs_reference else None
        self.on_step = on_step
        self.on_evaluate = on_evaluate
        self.stage = stage

    def gather_weights(self) -> None:
        """The policy's weights, and a sharded reference's, back in the plain models (every rank calls it)."""
        super().gather_weights()
        gather = getattr(self.reference_logps, "gather", None)
        if callable(gather):
            gather()

    def _collate(self, indices: list[int]) -> SequenceBatch:
        items = [self.items[index] for index in indices]
        cached = [self.cached_reference[index] for index in indices] if self.cached_reference is not None else None
        return collate(items, self.pad_token_id, reference_logps=cached)

    def _log_prob_batch(
        self, batch: SequenceBatch, num_items: int, num_tokens: int, plan: PromptPlan | None = None
    ) -> LogProbBatch:
        autocast = _precision(self.config, self.device, self.policy)
        if plan is None:  # the forward's arguments as they always were (DDP and FSDP2 wrap it)
            policy_logps = self.forward(
                batch.sequences, self.config.fused_lm_head, self.config.kernel_backend, autocast
            )
        else:
            policy_logps = self.forward(
                batch.sequences, self.config.fused_lm_head, self.config.kernel_backend, autocast, plan
            )
        ref_logps = None
        if self.reference_logps is not None and batch.ref_sequence_logps is None:
            reference_model = getattr(self.reference_logps, "model", None)
            with torch.no_grad(), _precision(self.config, self.device, reference_model):
                if plan is not None:
                    ref_logps = reference_shared_prompt_logps(self.reference_logps, plan, self.device)
                if ref_logps is None:
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
        """One optimiser step over ``grad_accum`` micro-batches; returns the step's metrics.

        The step reads the device once (``step_reads.read_step``): its metrics, losses, gradient norm and
        the kernels' deferred input checks travel in one transfer after the last backward pass and
        before the optimiser step, so a non-finite loss or bad input still never reaches the weights.
        """
        with deferred_checks() as checks:
            return self._train_step(checks)

    def _train_step(self, checks: DeferredChecks) -> dict[str, float]:
        self.policy.train()
        self.optimizer.zero_grad(set_to_none=True)
        micro = [self.next_micro_batch() for _ in range(self.config.grad_accum)]
        num_items = sum(len(indices) for indices in micro)  # global: every rank knows every micro-batch
        local = [self.local_indices(indices) for indices in micro]  # this rank's slices (all of it in one process)
        batches, rows, plans, num_tokens = self._host_batches(local)
        reads = StepReads()
        for position, ((indices, weight), batch, batch_rows, plan) in enumerate(
            zip(local, batches, rows, plans, strict=True)
        ):
            device_batch = batch.to(self.device)
            with known_completion_rows(device_batch.sequences.completion_mask, batch_rows.to(self.device)):
                fused = loss_aware_output(self, batch, device_batch, num_items, plan)  # [train] loss_aware_head
                if fused is None:
                    log_prob_batch = self._log_prob_batch(device_batch, num_items, num_tokens, plan)
            loss = torch.zeros((), device=self.device)
            share = weight * len(indices) / num_items
            for entry in self.objectives:
                output = fused if fused is not None else entry.objective.loss(log_prob_batch)
                check_loss(output.loss, self.step + 1, entry.objective, finite=False)
                reads.check(output.loss, entry.objective)
                loss = loss + entry.weight * output.loss
                prefix = f"{entry.objective.name}/" if len(self.objectives) > 1 else ""
                for key, value in output.metrics.items():
                    reads.add(prefix + key, share, value)
                if prefix:  # each objective's own (unweighted) loss; micro-batch losses add up to the step's
                    reads.add(prefix + "loss", weight, output.loss)
            reads.check(loss, None)
            self.backward(loss, final=position == len(micro) - 1, weight=weight)
            reads.add("loss", weight, loss)
        totals, grad_norm = read_step(reads, checks, self.clip_gradients(), step=self.step + 1, method=None)
        totals = self.reduce_metrics(totals)
        if grad_norm is not None:
            totals["grad_norm"] = grad_norm
        self.apply_update(totals, clipped=True)
        return totals

    def _host_batches(
        self, local: list[tuple[list[int], float]]
    ) -> tuple[list[SequenceBatch], list[torch.Tensor], list[PromptPlan | None], int]:
        """What the step learns on the host before any device work: the collated micro-batches, each
        one's completion rows (the fused LM head then counts nothing on the device), its shared
        prompts (``share_prompts``) and the step's target tokens (every micro-batch divides its token
        sums by the whole step's count)."""
        batches = [self._collate(indices) for indices, _ in local]
        rows = [completion_rows(batch.sequences.completion_mask) for batch in batches]
        plans = [plan_prompts(batch.sequences) if self.config.share_prompts else None for batch in batches]
        counted = [batch.target_token_count() for batch, (_, weight) in zip(batches, local, strict=True) if weight]
        return batches, rows, plans, int(self.global_sum(sum(counted)))

    def fit(self) -> dict[str, float]:
        """Train until ``config.steps``; checkpoints, evaluation and metrics through the callbacks."""
        metrics: dict[str, float] = {}
        started = time.perf_counter()
        main = is_main()  # under torchrun, rank 0 alone reports
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
                    self.gather_weights()  # evaluation runs on the plain model, its work split across ranks
                    self.on_evaluate(self.step)
                if self.config.checkpoint_every and self.step % self.config.checkpoint_every == 0:
                    self.save()
        self.gather_weights()
        return metrics

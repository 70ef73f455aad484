"""What every trainer shares: the optimiser and schedule, the place in the data, checkpoints.

The policy trainer and the reward-model trainer differ only in how a micro-batch becomes a
loss; the step counter, the seeded micro-batch order (which a resumed run must continue at
exactly the same place), the optimiser update and the checkpoint round trip live here once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from typing import Protocol

import torch

from prefcore.engine.batching import micro_batches
from prefcore.engine.checkpoint import checkpoint_name
from prefcore.engine.checkpoint import clean_staging
from prefcore.engine.checkpoint import list_checkpoints
from prefcore.engine.checkpoint import load_checkpoint
from prefcore.engine.checkpoint import save_checkpoint
from prefcore.errors import ConfigError
from prefcore.errors import NonFiniteLossError
from prefcore.errors import ObjectiveError
from prefcore.methods import Method


class LoopConfig(Protocol):
    """The options every training stage has (``TrainConfig``, ``RewardTrainConfig``)."""

    steps: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_steps: int
    schedule: str
    max_grad_norm: float
    seed: int
    checkpoint_every: int
    keep_checkpoints: int


def make_scheduler(optimizer: torch.optim.Optimizer, config: LoopConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine, linear or constant decay to the last step."""

    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / (config.warmup_steps + 1)
        if config.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps))
        if config.schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def epoch_steps(epochs: float, num_items: int, batch_size: int, grad_accum: int) -> int:
    """Optimiser steps that pass ``epochs`` times over ``num_items`` items (``[train] epochs``).

    An epoch is ``ceil(num_items / batch_size)`` micro-batches and a step ``grad_accum`` of
    them; a fractional remainder rounds up to a whole step, whose micro-batches may start the
    next epoch (steps run across epoch boundaries, as they always have).
    """
    steps = epochs * math.ceil(num_items / batch_size) / grad_accum
    return max(1, math.ceil(round(steps, 9)))  # 0.3 epochs of 10 batches is 3 steps, not ceil(3.0000000000000004)


class OptimiserLoop:
    """AdamW over a model's trainable parameters, stepping through seeded micro-batches of items.

    ``shuffle`` and ``group_by_length`` set the data order (``micro_batches``).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        items: Sequence[Any],
        config: LoopConfig,
        *,
        run_dir: Path,
        on_checkpoint: Callable[[int, Path], None] | None = None,
        what: str = "the model",
        shuffle: bool = True,
        group_by_length: bool = True,
    ) -> None:
        self.model = model
        self.shuffle = shuffle
        self.group_by_length = group_by_length
        self.items = list(items)
        self.config = config
        self.run_dir = Path(run_dir)
        self.on_checkpoint = on_checkpoint
        self.trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
        if not self.trainable:
            raise ConfigError(f"{what} has no trainable parameter.")
        self.optimizer = torch.optim.AdamW(self.trainable, lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = make_scheduler(self.optimizer, config)
        self.step = 0
        self.epoch = 0
        self.position = 0  # micro-batches of the current epoch already consumed
        self._batches: list[list[int]] = []
        self._batches_epoch = -1

    def resume(self) -> bool:
        """Continue from the newest checkpoint in ``run_dir``, if any; True when one was loaded.

        Staging folders that a kill left behind are removed first; only complete checkpoints count.
        """
        clean_staging(self.run_dir)
        checkpoints = list_checkpoints(self.run_dir)
        if not checkpoints:
            return False
        restored = load_checkpoint(
            checkpoints[-1], model=self.model, optimizer=self.optimizer, scheduler=self.scheduler
        )
        self.step = restored.step
        self.epoch = int(restored.trainer["epoch"])
        self.position = int(restored.trainer["position"])
        return True

    def save(self) -> Path:
        path = save_checkpoint(
            self.run_dir,
            self.step,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            trainer_state={"epoch": self.epoch, "position": self.position},
            keep_last=self.config.keep_checkpoints,
        )
        if self.on_checkpoint is not None:
            self.on_checkpoint(self.step, path)
        return path

    def save_final(self) -> Path | None:
        """Checkpoint the last step, unless checkpoints are off (``checkpoint_every = 0``) or it is saved."""
        if not self.config.checkpoint_every:
            return None
        saved = list_checkpoints(self.run_dir)
        if saved and saved[-1].name == checkpoint_name(self.step):
            return saved[-1]
        return self.save()

    def _epoch_batches(self) -> list[list[int]]:
        if self._batches_epoch != self.epoch:
            self._batches = micro_batches(
                self.items,
                self.config.batch_size,
                seed=self.config.seed,
                epoch=self.epoch,
                shuffle=self.shuffle,
                group_by_length=self.group_by_length,
            )
            self._batches_epoch = self.epoch
        return self._batches

    def next_micro_batch(self) -> list[int]:
        """Item indices of the next micro-batch; a new epoch reshuffles with its own seed."""
        if self.position >= len(self._epoch_batches()):
            self.epoch += 1
            self.position = 0
        indices = self._epoch_batches()[self.position]
        self.position += 1
        return indices

    def apply_update(self, metrics: dict[str, float]) -> None:
        """Clip, step the optimiser and schedule, count the step; adds ``grad_norm`` and ``lr``."""
        if self.config.max_grad_norm > 0:
            metrics["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.trainable, self.config.max_grad_norm))
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        metrics["lr"] = self.scheduler.get_last_lr()[0]


def check_finite(loss: torch.Tensor, step: int, method: Method | None = None) -> None:
    """Stop at the first non-finite loss, before it reaches the weights; name the method that made it."""
    if torch.isfinite(loss).all():
        return
    value = loss.detach().float().flatten()[0].item() if loss.numel() else float("nan")
    if method is None:
        raise FloatingPointError(f"the loss became {value} at step {step}; lower the learning rate or check the data.")
    raise NonFiniteLossError(
        method.label(),
        method.origin(),
        f"returned a loss of {value}",
        step=step,
        hint="Lower the learning rate or check the data; if it recurs on sane data, report it to the "
        "plugin's authors: the loss must stay finite (use logsigmoid/logsumexp rather than log(sigmoid)).",
    )


def check_loss(loss: Any, step: int, method: Method, *, inputs: str = "batch.policy_logps") -> None:
    """Check what a plugin's ``loss`` returned before autograd sees it: a finite scalar tensor with a gradient.

    Without this, a plugin bug surfaces as a bare error deep in ``backward()`` ("element 0 of
    tensors does not require grad") that does not say which of the run's methods caused it.
    """
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        shape = f"a tensor of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ObjectiveError(
            method.label(),
            method.origin(),
            f"returned {shape} as its loss",
            step=step,
            hint="A loss is a scalar tensor (the mean over the batch's comparisons): LossOutput(loss=...).",
        )
    check_finite(loss, step, method)
    if torch.is_grad_enabled() and not loss.requires_grad:
        raise ObjectiveError(
            method.label(),
            method.origin(),
            "returned a loss without a gradient (requires_grad is False, no grad_fn)",
            step=step,
            hint=f"The loss must be computed from {inputs} with torch operations; .item(), float(), "
            "torch.tensor(...), .detach() or torch.no_grad() cut it off from the model.",
        )


StepCallback = Callable[[int, Mapping[str, float]], None]

"""What every trainer shares: the optimiser and schedule, the place in the data, checkpoints.

The policy trainer and the reward-model trainer differ only in how a micro-batch becomes a
loss; the step counter, the seeded micro-batch order (which a resumed run must continue at
exactly the same place), the optimiser update and the checkpoint round trip live here once.

Under torchrun (``prefcore.distributed.current()`` set by the run) the loop also spreads the
model over the ranks (DDP or FSDP2, ``prefcore.distributed.wrap``), gives each rank its slice
of every global micro-batch, scales the backward pass so that the ranks' averaged gradients
equal 1 process × the whole batch, reduces the metrics and writes sharded (DCP) checkpoints.
A single-process run takes none of these paths.
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

from prefcore.atomic import remove_directory
from prefcore.distributed.checkpoint import is_sharded
from prefcore.distributed.checkpoint import load_sharded
from prefcore.distributed.checkpoint import save_sharded
from prefcore.distributed.process_group import Parallel
from prefcore.distributed.process_group import barrier
from prefcore.distributed.process_group import current
from prefcore.distributed.process_group import is_main
from prefcore.distributed.reduce import all_sum
from prefcore.distributed.reduce import sum_metrics
from prefcore.distributed.sampler import MicroBatchSampler
from prefcore.distributed.sampler import shard_indices
from prefcore.distributed.wrap import Forward
from prefcore.distributed.wrap import Sharded
from prefcore.distributed.wrap import wrap_model
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

    ``shuffle`` and ``group_by_length`` set the data order (``micro_batches``). ``forward(model, *args)``
    is what a subclass runs on the model per micro-batch (``self.forward(*args)``); under torchrun
    it is the function DDP or FSDP2 wraps. ``parallel`` defaults to ``prefcore.distributed.current()``
    for a subclass that declares ``distributed = True`` (it shards its micro-batches with
    ``local_indices``, calls ``forward``, ``backward``, ``global_sum`` and ``reduce_metrics``);
    any other refuses to start under torchrun rather than train each rank on its own.
    """

    distributed = False

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
        forward: Callable[..., Any] | None = None,
        parallel: Parallel | None = None,
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
        self._forward = forward if forward is not None else _call
        self.parallel = parallel if parallel is not None else current()
        if self.parallel is not None and not self.distributed:
            raise ConfigError(
                f"{type(self).__name__} does not run distributed yet: run it in one process "
                "(no torchrun, [distributed] strategy = 'none')."
            )
        self.sharded: Sharded | None = None
        if self.parallel is not None:
            self.sharded = wrap_model(model, self._forward, self.parallel)
            self.trainable = self.sharded.parameters()
        self.optimizer = torch.optim.AdamW(self.trainable, lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = make_scheduler(self.optimizer, config)
        self.step = 0
        rank, world = (self.parallel.rank, self.parallel.world_size) if self.parallel is not None else (0, 1)
        self.sampler = MicroBatchSampler(
            self.items,
            config.batch_size,
            config.seed,
            rank=rank,
            world_size=world,
            shuffle=shuffle,
            group_by_length=group_by_length,
        )

    # the data position (a checkpoint's trainer state): global micro-batches, whatever the world size
    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    @epoch.setter
    def epoch(self, value: int) -> None:
        self.sampler.epoch = value

    @property
    def position(self) -> int:
        """Micro-batches of the current epoch already consumed."""
        return self.sampler.position

    @position.setter
    def position(self, value: int) -> None:
        self.sampler.position = value

    @property
    def world_size(self) -> int:
        return self.parallel.world_size if self.parallel is not None else 1

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """``forward(model, *args)`` on this rank's model: through DDP or FSDP2 when distributed."""
        if self.sharded is not None:
            self.sharded.release()  # training: the plain model (FSDP2) gives its memory back until gathered
            return self.sharded.module(*args, **kwargs)
        return self._forward(self.model, *args, **kwargs)

    def backward(self, loss: torch.Tensor, *, final: bool, weight: float = 1.0) -> None:
        """``loss.backward()``; distributed, gradients are reduced on the step's ``final`` micro-batch only.

        DDP and FSDP2 average the ranks' gradients, and each rank's loss is already its share of the
        global mean, so the loss is scaled by the world size first (``weight`` 0: a rank without data).
        """
        if self.sharded is None:
            loss.backward()
            return
        with self.sharded.sync(final):
            (loss * (weight * self.world_size)).backward()

    def local_indices(self, indices: list[int]) -> tuple[list[int], float]:
        """This rank's slice of a global micro-batch and its weight: 1, or 0 for an empty slice,
        which then repeats the batch's first item so that the rank joins the forward and backward."""
        if self.parallel is None:
            return indices, 1.0
        local = shard_indices(indices, self.parallel.rank, self.parallel.world_size)
        return (local, 1.0) if local else (indices[:1], 0.0)

    def global_sum(self, value: float) -> float:
        """``value`` summed over the ranks (a step's target tokens)."""
        return all_sum(value) if self.parallel is not None else value

    def reduce_metrics(self, totals: dict[str, float]) -> dict[str, float]:
        """A step's metric shares summed over the ranks."""
        return sum_metrics(totals) if self.parallel is not None else totals

    def gather_weights(self) -> None:
        """Put the trained weights into the plain model (FSDP2 trains a sharded copy); every rank calls it."""
        if self.sharded is not None:
            self.sharded.copy_into()

    def resume(self) -> bool:
        """Continue from the newest checkpoint in ``run_dir``, if any; True when one was loaded.

        Staging folders that a kill left behind are removed first; only complete checkpoints count.
        """
        if is_main():
            clean_staging(self.run_dir)
        barrier()
        checkpoints = list_checkpoints(self.run_dir)
        if not checkpoints:
            return False
        if self.sharded is not None or is_sharded(checkpoints[-1]):
            self._resume_sharded(checkpoints[-1])
            return True
        restored = load_checkpoint(
            checkpoints[-1], model=self.model, optimizer=self.optimizer, scheduler=self.scheduler
        )
        self.step = restored.step
        self.epoch = int(restored.trainer["epoch"])
        self.position = int(restored.trainer["position"])
        return True

    def _resume_sharded(self, path: Path) -> None:
        if not is_sharded(path):
            raise ConfigError(
                f"checkpoint {path} was written by a single-process run; resume it in one process "
                "(distributed checkpoints resume on any number of processes, with or without torchrun)."
            )
        # one plain process reads every rank's shards (no process group); the names match the wrapped model's
        model = self.sharded.module if self.sharded is not None else Forward(self.model, self._forward)
        self.step, trainer = load_sharded(path, model=model, optimizer=self.optimizer, scheduler=self.scheduler)
        self.epoch, self.position = int(trainer["epoch"]), int(trainer["position"])
        self.gather_weights()

    def save(self) -> Path:
        if self.sharded is not None:
            return self._save_sharded()
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

    def _save_sharded(self) -> Path:
        if is_main():
            clean_staging(self.run_dir)
        path = save_sharded(
            self.run_dir / "checkpoints" / checkpoint_name(self.step),
            model=self.sharded.module if self.sharded is not None else self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            step=self.step,
            trainer_state={"epoch": self.epoch, "position": self.position},
        )
        keep = self.config.keep_checkpoints
        if is_main():
            for old in list_checkpoints(self.run_dir)[:-keep] if keep > 0 else []:
                remove_directory(old)
            if self.on_checkpoint is not None:
                self.on_checkpoint(self.step, path)
        barrier()
        return path

    def save_final(self) -> Path | None:
        """Checkpoint the last step, unless checkpoints are off (``checkpoint_every = 0``) or it is saved."""
        if not self.config.checkpoint_every:
            return None
        saved = list_checkpoints(self.run_dir)
        if saved and saved[-1].name == checkpoint_name(self.step):
            return saved[-1]
        return self.save()

    def next_micro_batch(self) -> list[int]:
        """Item indices of the next (global) micro-batch; a new epoch reshuffles with its own seed."""
        return self.sampler.next()[0]

    def clip_gradients(self) -> torch.Tensor | None:
        """Clip the gradients to ``max_grad_norm`` on the device; their norm before clipping (None: no clipping)."""
        if self.config.max_grad_norm <= 0:
            return None
        norm = torch.nn.utils.clip_grad_norm_(self.trainable, self.config.max_grad_norm)
        full_tensor = getattr(norm, "full_tensor", None)  # FSDP2: a DTensor
        return full_tensor() if callable(full_tensor) else norm

    def apply_update(self, metrics: dict[str, float], *, clipped: bool = False) -> None:
        """Clip (unless ``clipped``: the caller did and set ``grad_norm``), step the optimiser and schedule,
        count the step; adds ``grad_norm`` and ``lr``."""
        if not clipped and self.config.max_grad_norm > 0:
            metrics["grad_norm"] = float(self.clip_gradients())
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        metrics["lr"] = self.scheduler.get_last_lr()[0]


def check_finite(loss: torch.Tensor, step: int, method: Method | None = None) -> None:
    """Stop at the first non-finite loss, before it reaches the weights; name the method that made it."""
    if torch.isfinite(loss).all():
        return
    raise_non_finite(loss.detach().float().flatten()[0].item() if loss.numel() else float("nan"), step, method)


def raise_non_finite(value: float, step: int, method: Method | None = None) -> None:
    """The error of a loss that became ``value`` (nan or inf) at ``step``; names the method that made it."""
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


def check_loss(
    loss: Any, step: int, method: Method, *, inputs: str = "batch.policy_logps", finite: bool = True
) -> None:
    """Check what a plugin's ``loss`` returned before autograd sees it: a finite scalar tensor with a gradient.

    ``finite=False`` leaves the value check (a host sync) to the caller: the offline trainer reads
    every loss of a step at once.

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
    if finite:
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


def _call(model: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
    return model(*args, **kwargs)


StepCallback = Callable[[int, Mapping[str, float]], None]

"""An update step's one device read: its metrics, losses, gradient norm and kernel checks in one transfer.

On a GPU every ``.item()``, ``float()`` or ``bool()`` of a device tensor stalls the host until the
device catches up. An online update step therefore keeps what it measures on the device
(``StepReads``), runs its micro-batches' forward and backward passes, clips the gradients, and
reads everything in one ``.tolist()`` (``read_step_norms``) before the optimiser steps, so a non-finite
loss or a kernel's flagged input still never reaches the weights. ``read_counts`` is the update
phase's one read before its steps (each row's loss tokens). The offline ``Trainer``, the online
trainers and PPO (two gradient norms: policy and value model) all read through here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from prefcore.engine.loop import raise_non_finite
from prefcore.kernels._checks import DeferredChecks
from prefcore.methods import Method

__all__ = ["StepReads", "read_counts", "read_step", "read_step_norms"]


class StepReads:
    """What an update step reads from the device, in order: ``(key, share, value)`` metric shares and losses."""

    def __init__(self) -> None:
        self.metrics: list[tuple[str, float, torch.Tensor | float]] = []
        self.losses: list[torch.Tensor] = []
        self.methods: list[Method | None] = []

    def add(self, key: str, share: float, value: torch.Tensor | float) -> None:
        """A metric share; a plain number needs no read and is kept as it is."""
        self.metrics.append((key, share, value.detach() if isinstance(value, torch.Tensor) else float(value)))

    def check(self, loss: torch.Tensor, method: Method | None = None) -> None:
        """A loss whose finiteness the read checks; ``method`` made it (None: ``read_step``'s)."""
        self.losses.append(loss.detach())
        self.methods.append(method)


def read_counts(counts: torch.Tensor) -> list[int]:
    """Per-row counts on the host: the update phase's one read before its steps."""
    return counts.tolist()


def read_step(
    reads: StepReads, checks: DeferredChecks, grad_norm: torch.Tensor | None, *, step: int, method: Method | None
) -> tuple[dict[str, float], float | None]:
    """``read_step_norms`` with one gradient norm (or None): the step's metrics and that norm's value."""
    totals, norms = read_step_norms(reads, checks, [grad_norm], step=step, method=method)
    return totals, norms[0]


def read_step_norms(
    reads: StepReads,
    checks: DeferredChecks,
    grad_norms: Sequence[torch.Tensor | None],
    *,
    step: int,
    method: Method | None,
) -> tuple[dict[str, float], list[float | None]]:
    """The step's one device read: metric shares, losses, gradient norms and the kernels' flags.

    Metrics add up on the host in float64 in the order one ``float()`` per value would, so the numbers
    are those of reading each value on its own. Raises what the values say: a kernel's flagged input
    (ValueError), else the first non-finite loss, naming the method that made it (``StepReads.check``'s,
    else ``method``; None: a weighted sum of several) and optimiser step ``step``. Returns the metrics
    and each gradient norm's value (None where the norm was None: a model that did not step).
    """
    metrics = [value for _, _, value in reads.metrics if isinstance(value, torch.Tensor)]
    norms = [norm for norm in grad_norms if norm is not None]
    tensors = [*metrics, *reads.losses, *checks.flag_tensors(), *norms]
    device = tensors[0].device if tensors else None
    values = (
        torch.stack([tensor.detach().reshape(()).to(device, torch.float64) for tensor in tensors]).tolist()
        if tensors
        else []
    )
    metric_values = iter(values[: len(metrics)])
    losses = values[len(metrics) : len(metrics) + len(reads.losses)]
    checks.raise_flagged(values[len(metrics) + len(reads.losses) : len(values) - len(norms)])
    for value, maker in zip(losses, reads.methods, strict=True):
        if not math.isfinite(value):
            message = checks.explain_non_finite()
            if message is not None:
                raise ValueError(message)
            raise_non_finite(value, step, maker if maker is not None else method)
    totals: dict[str, float] = {}
    for key, share, value in reads.metrics:
        number = next(metric_values) if isinstance(value, torch.Tensor) else value
        totals[key] = totals.get(key, 0.0) + share * number
    norm_values = iter(values[len(values) - len(norms) :])
    return totals, [None if norm is None else next(norm_values) for norm in grad_norms]

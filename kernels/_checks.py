"""Input checks that cost a host synchronisation, deferred to one read per training step.

A kernel that checks its data (a target id outside the vocabulary, a loss kernel's error
counters) must read a device value to raise: one host sync per check, five to seven per DPO
step. Inside ``deferred_checks()`` (the trainer's step) a kernel instead records a device-side
flag and a function that explains it; the trainer reads every flag together with the step's
metrics in one transfer and raises the first explanation of a raised flag, before the optimiser
step, so bad data still never reaches the weights. Outside the context (direct calls, tests,
evaluation) the checks read and raise at once, as before. ``PREFCORE_DEBUG_CHECKS=1`` turns the
deferral off: every check reads at once, at the cost of the syncs.

A flag of None records an explanation only: it runs when the step's loss came out non-finite,
to name the input that made it so (the torch reference paths, whose bad inputs surface as NaN).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from dataclasses import field

import torch

__all__ = ["DeferredChecks", "debug_checks", "defer", "deferred_checks", "deferring"]

Explain = Callable[[], "str | None"]


@dataclass
class DeferredChecks:
    """The flags and explanations recorded during one training step."""

    flags: list[tuple[torch.Tensor, Explain]] = field(default_factory=list)
    on_non_finite: list[Explain] = field(default_factory=list)

    def flag_tensors(self) -> list[torch.Tensor]:
        """Each flag as a 0-d float64 tensor (1 = raised), to stack with the step's metrics."""
        return [flag.reshape(()).to(torch.float64) for flag, _ in self.flags]

    def raise_flagged(self, values: list[float]) -> None:
        """Raise ValueError with the first raised flag's explanation (``values``: the flags, read)."""
        for (_, explain), value in zip(self.flags, values, strict=True):
            if value:
                raise ValueError(explain() or "invalid inputs to a kernel of the training step.")

    def explain_non_finite(self) -> str | None:
        """The first explanation of a non-finite loss, or None when no recorded input explains it."""
        for explain in self.on_non_finite:
            message = explain()
            if message is not None:
                return message
        return None


_ACTIVE: ContextVar[DeferredChecks | None] = ContextVar("prefcore_deferred_checks", default=None)


def debug_checks() -> bool:
    """``PREFCORE_DEBUG_CHECKS=1``: every check reads its flag at once (host syncs included)."""
    return os.environ.get("PREFCORE_DEBUG_CHECKS", "") == "1"


@contextlib.contextmanager
def deferred_checks() -> Iterator[DeferredChecks]:
    """Collect the kernels' checks of a training step instead of reading each one."""
    checks = DeferredChecks()
    token = _ACTIVE.set(None if debug_checks() else checks)
    try:
        yield checks
    finally:
        _ACTIVE.reset(token)


def deferring() -> bool:
    """Whether a kernel should record its check (``defer``) rather than read it now."""
    return _ACTIVE.get() is not None


def defer(flag: torch.Tensor | None, explain: Explain) -> None:
    """Record a device-side ``flag`` (any nonzero = bad) and what explains it; see the module docstring."""
    checks = _ACTIVE.get()
    if checks is None:
        raise RuntimeError("defer() outside deferred_checks(); check deferring() first.")
    if flag is None:
        checks.on_non_finite.append(explain)
    else:
        checks.flags.append((flag.detach(), explain))

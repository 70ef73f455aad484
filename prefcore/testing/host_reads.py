"""Count a step's host reads of tensors (``.item()``, ``.tolist()``, ``bool()``, ...), by caller.

On a GPU every such read stalls the host until the device catches up, so a training step should
read the device once. On CPU there is nothing to wait for, so tests count the calls instead:
``HostReadGuard`` patches ``torch.Tensor``'s reading methods; while it is on, a read from an allowed
``(file suffix, function)`` is counted and any other raises, naming the file and the function.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterator
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["LIBRARY_READS", "PHASE_READ", "READS", "STEP_READ", "HostReadGuard"]

READS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__")
"""``torch.Tensor``'s methods that copy a value to the host."""

STEP_READ = ("prefcore/engine/step_reads.py", "read_step_norms")
"""The one read of an optimiser step, for every trainer (``prefcore.engine.step_reads``)."""

PHASE_READ = ("prefcore/engine/step_reads.py", "read_counts")
"""An online update phase's one read before its steps: each row's loss tokens."""

LIBRARY_READS = (
    ("torch/optim/optimizer.py", "_get_value"),  # AdamW's step counters live on the host
    ("transformers/masking_utils.py", "_ignore_causal_mask_sdpa"),  # the model library's own check
)
"""Reads that torch and transformers make themselves during a step."""


class HostReadGuard:
    """While on, reads from ``allowed`` callers are counted in ``counts``; any other read raises.

    Arguments:
        allowed: ``(file path suffix, function name)`` of the callers allowed to read, e.g.
            ``("prefcore/engine/step_reads.py", "read_step_norms")``.
        what: how the error names the guarded code ("the step", "the update").
    """

    def __init__(self, allowed: Sequence[tuple[str, str]], *, what: str = "the step") -> None:
        self.allowed = tuple(allowed)
        self.what = what
        self.counts: dict[tuple[str, str], int] = {}
        self.active = False

    def install(self, monkeypatch: Any) -> HostReadGuard:
        """Patch the reading methods through pytest's ``monkeypatch`` (undone after the test)."""
        for name in READS:
            monkeypatch.setattr(torch.Tensor, name, self._wrap(name))
        return self

    def _wrap(self, name: str) -> Any:
        original = getattr(torch.Tensor, name)

        def reading(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if self.active:
                frame = traceback.extract_stack(limit=2)[0]  # the function that reads
                filename, function = frame.filename.replace("\\", "/"), frame.name
                allowed = [key for key in self.allowed if filename.endswith(key[0]) and function == key[1]]
                if not allowed:
                    raise AssertionError(f"host read Tensor.{name} in {filename}:{function} during {self.what}")
                self.counts[allowed[0]] = self.counts.get(allowed[0], 0) + 1
            return original(tensor, *args, **kwargs)

        return reading

    @contextlib.contextmanager
    def on(self) -> Iterator[None]:
        """Guard the block."""
        active, self.active = self.active, True
        try:
            yield
        finally:
            self.active = active

    @contextlib.contextmanager
    def suspended(self) -> Iterator[None]:
        """Let the block read freely (a host phase inside a guarded step)."""
        active, self.active = self.active, False
        try:
            yield
        finally:
            self.active = active

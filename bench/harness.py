"""Shared harness for the pytest-benchmark suites in ``bench/``.

Every suite times the same three modes (forward, backward, forward + backward), measures peak
memory the same way and records the same columns; only the op, its providers and its byte or FLOP
accounting differ. Keeping the harness here means a fix to timing or memory tracking reaches every
suite at once, and the suites stay comparable with one another.
"""

from __future__ import annotations

import datetime
import os
import platform
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
MODES = ["forward", "backward", "full"]


def rounds(default: str) -> int:
    """Timed rounds per case: PREFCORE_BENCH_ROUNDS overrides the suite's own default."""
    return int(os.environ.get("PREFCORE_BENCH_ROUNDS", default))


def skip_unavailable(provider: str) -> None:
    """Skip the providers this machine cannot time fairly; suites add their own op-specific skips."""
    if provider == "triton" and DEVICE != "cuda":
        pytest.skip("the Triton provider is timed on a GPU only (the CPU interpreter is a test tool)")
    if provider == "torch_compile" and DEVICE != "cuda" and os.environ.get("PREFCORE_BENCH_COMPILE") != "1":
        pytest.skip("torch.compile on CPU: set PREFCORE_BENCH_COMPILE=1")


def device_name() -> str:
    """Names the machine in every record, since the numbers describe it and nothing else."""
    return torch.cuda.get_device_name() if DEVICE == "cuda" else f"CPU {platform.processor() or platform.machine()}"


def sync() -> None:
    """Waits for queued CUDA work so the timer sees the kernels, not just their launches."""
    if DEVICE == "cuda":
        torch.cuda.synchronize()


class LiveBytes(TorchDispatchMode):
    """CPU stand-in for torch.cuda.max_memory_allocated: peak bytes of storages created and alive."""

    def __init__(self) -> None:
        super().__init__()
        # Views share a storage, so bytes are counted once per storage and released with its last tensor.
        self.live: dict[int, list[int]] = {}  # storage ptr -> [nbytes, live tensors]
        self.current = 0
        self.peak = 0

    def _release(self, ptr: int) -> None:
        entry = self.live.get(ptr)
        if entry is not None:
            entry[1] -= 1
            if entry[1] == 0:
                self.current -= entry[0]
                del self.live[ptr]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(value, torch.Tensor) and value.device.type == "cpu":
                storage = value.untyped_storage()
                entry = self.live.setdefault(storage.data_ptr(), [storage.nbytes(), 0])
                if entry[1] == 0:
                    self.current += entry[0]
                    self.peak = max(self.peak, self.current)
                entry[1] += 1
                weakref.finalize(value, self._release, storage.data_ptr())
        return out


def peak_bytes(fn: Callable[[], object]) -> int:
    """Peak bytes allocated while ``fn`` runs, beyond what was allocated before it."""
    if DEVICE == "cuda":
        sync()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        sync()
        return torch.cuda.max_memory_allocated() - before
    tracker = LiveBytes()
    with tracker:
        fn()
    return tracker.peak


@dataclass(frozen=True)
class Cost:
    """How a suite counts an op's work: the recorded column, its rate column and the rate's scale."""

    name: str
    rate: str
    scale: float


# Memory-bound ops report bytes moved; GEMM-bound ops report FLOPs, since bandwidth says little there.
BYTES = Cost("bytes", "GB/s", 1e9)
FLOPS = Cost("flops", "TFLOP/s", 1e12)


@dataclass(frozen=True)
class Case:
    """One benchmark: a forward, a backward from its output, and the work (``cost``) each must do."""

    forward: Callable[[], torch.Tensor]
    # Gradient fed to the backward; None for scalar losses, whose backward needs none.
    upstream: Callable[[torch.Tensor], torch.Tensor | None]
    leaves: tuple[torch.Tensor, ...]  # inputs that receive gradients; reset before every backward
    forward_work: int
    backward_work: int
    cost: Cost = BYTES

    def clear_grads(self) -> None:
        for leaf in self.leaves:
            leaf.grad = None

    def full(self) -> None:
        self.clear_grads()
        out = self.forward()
        out.backward(self.upstream(out))


def time_case(benchmark: Any, mode: str, case: Case, rounds: int) -> None:
    """Times one mode of ``case``; the backward mode runs its forward untimed, in pedantic's setup."""

    def run_forward() -> torch.Tensor:
        out = case.forward()
        sync()
        return out

    def run_full() -> None:
        case.full()
        sync()

    if mode == "forward":
        with torch.no_grad():
            benchmark.pedantic(run_forward, rounds=rounds, warmup_rounds=1)
    elif mode == "full":
        benchmark.pedantic(run_full, rounds=rounds, warmup_rounds=1)
    else:

        def setup() -> tuple[tuple[torch.Tensor, torch.Tensor | None], dict]:
            case.clear_grads()
            out = case.forward()
            return (out, case.upstream(out)), {}

        def run_backward(out: torch.Tensor, grad: torch.Tensor | None) -> None:
            out.backward(grad)
            sync()

        benchmark.pedantic(run_backward, setup=setup, rounds=rounds, warmup_rounds=1)


def record(benchmark: Any, mode: str, case: Case, config: dict) -> None:
    """Stores the config, median time, work and rate in ``extra_info`` (kept by --benchmark-json)."""
    if benchmark.stats is None:
        # --benchmark-disable runs each case once as a smoke test and keeps no timings to record.
        return
    work = {"forward": case.forward_work, "backward": case.backward_work}.get(
        mode, case.forward_work + case.backward_work
    )
    median_s = benchmark.stats.stats.median
    benchmark.extra_info.update(
        config
        | {
            "mode": mode,
            "median_ms": median_s * 1e3,
            case.cost.name: work,
            case.cost.rate: work / median_s / case.cost.scale,
            "device": device_name(),
            "date": datetime.date.today().isoformat(),
        }
    )


def measure_memory(benchmark: Any, case: Case, extra: dict[str, int] | None = None) -> None:
    """Records the peak extra bytes of one forward + backward, after a warm-up outside the measurement."""
    case.full()  # warm-up (torch.compile, allocator caches)
    case.clear_grads()
    benchmark.extra_info["peak_bytes"] = peak_bytes(case.full)
    benchmark.extra_info.update(extra or {})
    benchmark.pedantic(case.full, rounds=1, iterations=1)

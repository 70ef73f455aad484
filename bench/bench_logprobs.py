"""Benchmarks for prefcore.kernels.logprobs: selective log-softmax from materialised logits.

Run:  pytest bench/bench_logprobs.py                              (CPU, small sizes)
      pytest bench/bench_logprobs.py --benchmark-json=out.json     (keeps machine info and date)
Providers: ``torch`` (selective_log_softmax_ref, the spec), ``naive`` (what trainers write:
``logits.float().log_softmax(-1).gather(...)``), ``prefcore_torch`` (the public function's
memory-lean torch path), ``triton`` (GPU only), ``torch_compile`` (GPU, or CPU with
PREFCORE_BENCH_COMPILE=1). Sizes: PREFCORE_BENCH_ROWS / PREFCORE_BENCH_VOCAB. Each case records
median ms, GB/s for the bytes the op must move (formula beside each count) and, in the memory
runs, peak bytes allocated beyond the inputs, on the device named in ``extra_info["device"]``.
Peers (Liger, TRL) and the H100 comparison table live in bench/gpu.py.
"""

from __future__ import annotations

import datetime
import os
import platform
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from prefcore.kernels.logprobs import selective_log_softmax
from prefcore.kernels.logprobs import selective_log_softmax_ref

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ROUNDS = int(os.environ.get("PREFCORE_BENCH_ROUNDS", "3" if DEVICE == "cpu" else "10"))
PROVIDERS = ["torch", "naive", "prefcore_torch", "torch_compile", "triton"]
MODES = ["forward", "backward", "full"]

_ROWS = int(os.environ.get("PREFCORE_BENCH_ROWS", "256" if DEVICE == "cpu" else "16384"))
_VOCAB = int(os.environ.get("PREFCORE_BENCH_VOCAB", "32000" if DEVICE == "cpu" else "128256"))
CONFIGS = [
    {"rows": _ROWS, "vocab": _VOCAB, "dtype": "bfloat16", "entropy": False},
    {"rows": _ROWS, "vocab": _VOCAB, "dtype": "float32", "entropy": False},
    {"rows": _ROWS, "vocab": _VOCAB, "dtype": "bfloat16", "entropy": True},
]


def _config_id(config: dict) -> str:
    return f"{config['dtype']}-{config['rows']}x{config['vocab']}" + ("-entropy" if config["entropy"] else "")


# ---------------------------------------------------------------------------------------------
# Harness
# ---------------------------------------------------------------------------------------------
def _skip_unavailable(provider: str, config: dict) -> None:
    if provider == "triton" and DEVICE != "cuda":
        pytest.skip("the Triton provider is timed on a GPU only (the CPU interpreter is a test tool)")
    if provider == "torch_compile" and DEVICE != "cuda" and os.environ.get("PREFCORE_BENCH_COMPILE") != "1":
        pytest.skip("torch.compile on CPU: set PREFCORE_BENCH_COMPILE=1")
    if provider == "naive" and config["entropy"]:
        pytest.skip("the naive baseline computes log-probs only")


def _device_name() -> str:
    return torch.cuda.get_device_name() if DEVICE == "cuda" else f"CPU {platform.processor() or platform.machine()}"


def _sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


class _LiveBytes(TorchDispatchMode):
    """CPU stand-in for torch.cuda.max_memory_allocated: peak bytes of storages created and alive."""

    def __init__(self) -> None:
        super().__init__()
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


def _peak_bytes(fn: Callable[[], object]) -> int:
    """Peak bytes allocated while ``fn`` runs, beyond what was allocated before it."""
    if DEVICE == "cuda":
        _sync()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        _sync()
        return torch.cuda.max_memory_allocated() - before
    tracker = _LiveBytes()
    with tracker:
        fn()
    return tracker.peak


@dataclass(frozen=True)
class Case:
    """One benchmark: a forward, a backward from its output, and the bytes each must move."""

    forward: Callable[[], torch.Tensor]
    upstream: Callable[[torch.Tensor], torch.Tensor]
    leaves: tuple[torch.Tensor, ...]  # inputs that receive gradients; reset before every backward
    forward_bytes: int
    backward_bytes: int

    def clear_grads(self) -> None:
        for leaf in self.leaves:
            leaf.grad = None

    def full(self) -> None:
        self.clear_grads()
        out = self.forward()
        out.backward(self.upstream(out))


def _time(benchmark, mode: str, case: Case) -> None:
    def run_forward() -> torch.Tensor:
        out = case.forward()
        _sync()
        return out

    def run_full() -> None:
        case.full()
        _sync()

    if mode == "forward":
        with torch.no_grad():
            benchmark.pedantic(run_forward, rounds=ROUNDS, warmup_rounds=1)
    elif mode == "full":
        benchmark.pedantic(run_full, rounds=ROUNDS, warmup_rounds=1)
    else:
        # The forward runs in setup, outside the timed region.
        def setup():
            case.clear_grads()
            out = case.forward()
            return (out, case.upstream(out)), {}

        def run_backward(out: torch.Tensor, grad: torch.Tensor) -> None:
            out.backward(grad)
            _sync()

        benchmark.pedantic(run_backward, setup=setup, rounds=ROUNDS, warmup_rounds=1)


def _record(benchmark, mode: str, case: Case, config: dict) -> None:
    nbytes = {"forward": case.forward_bytes, "backward": case.backward_bytes}.get(
        mode, case.forward_bytes + case.backward_bytes
    )
    median_s = benchmark.stats.stats.median
    benchmark.extra_info.update(
        config
        | {
            "mode": mode,
            "median_ms": median_s * 1e3,
            "bytes": nbytes,
            "GB/s": nbytes / median_s / 1e9,
            "device": _device_name(),
            "date": datetime.date.today().isoformat(),
        }
    )


# ---------------------------------------------------------------------------------------------
# Setup factory: one per op, shared by the speed and memory runs
# ---------------------------------------------------------------------------------------------
def naive_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """What trainers write: an fp32 copy of the logits, a full fp32 log-softmax, then the gather."""
    return logits.float().log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def setup_logprobs(config: dict, provider: str) -> Case:
    rows, vocab, entropy = config["rows"], config["vocab"], config["entropy"]
    dtype = getattr(torch, config["dtype"])
    logits = (torch.randn(rows, vocab, device=DEVICE) * 3).to(dtype).requires_grad_()
    targets = torch.randint(0, vocab, (rows,), device=DEVICE)
    if provider == "torch":
        op = lambda: selective_log_softmax_ref(logits, targets, return_entropy=entropy, upcast=True)
    elif provider == "naive":
        op = lambda: naive_logprobs(logits, targets)
    elif provider == "torch_compile":
        compiled = torch.compile(selective_log_softmax_ref)
        op = lambda: compiled(logits, targets, return_entropy=entropy, upcast=True)
    elif provider == "prefcore_torch":
        op = lambda: selective_log_softmax(logits, targets, return_entropy=entropy, backend="torch")
    elif provider == "triton":
        op = lambda: selective_log_softmax(logits, targets, return_entropy=entropy, backend="triton")
    else:
        raise ValueError(provider)
    upstream_logps = torch.randn(rows, device=DEVICE)
    upstream_entropy = torch.randn(rows, device=DEVICE)

    def forward() -> torch.Tensor:
        out = op()
        # Entropy runs fold both outputs into one tensor so a single backward carries both gradients.
        return out[0] + out[1] * upstream_entropy if entropy else out

    element = logits.element_size()
    outputs = 2 if entropy else 1
    return Case(
        forward=forward,
        upstream=lambda out: upstream_logps,
        leaves=(logits,),
        # read logits once, targets (int64); write log-probs (+ entropy) and 2 row statistics (fp32)
        forward_bytes=rows * vocab * element + rows * 8 + rows * (outputs + 2) * 4,
        # read logits + write grad logits; read targets, 2 row statistics and the upstream gradients
        backward_bytes=2 * rows * vocab * element + rows * 8 + rows * (2 + 2 * outputs) * 4,
    )


@pytest.mark.parametrize("config", CONFIGS, ids=_config_id)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_logprobs_speed(benchmark, provider, mode, config):
    _skip_unavailable(provider, config)
    case = setup_logprobs(config, provider)
    _time(benchmark, mode, case)
    _record(benchmark, mode, case, config | {"provider": provider})


@pytest.mark.parametrize("config", CONFIGS[:1], ids=_config_id)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_logprobs_memory(benchmark, provider, config):
    _skip_unavailable(provider, config)
    case = setup_logprobs(config, provider)
    case.full()  # warm-up outside the measurement (torch.compile, allocator caches)
    case.clear_grads()
    benchmark.extra_info["peak_bytes"] = _peak_bytes(case.full)
    benchmark.extra_info["logits_bytes"] = config["rows"] * config["vocab"] * getattr(torch, config["dtype"]).itemsize
    benchmark.pedantic(case.full, rounds=1, iterations=1)
    _record(benchmark, "full", case, config | {"provider": provider})

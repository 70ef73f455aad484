"""Benchmarks for prefcore.kernels.fused_linear_logprobs: LM head + per-token log-probs.

Run:  pytest bench/bench_fused_linear_logprobs.py                           (CPU, small sizes)
      pytest bench/bench_fused_linear_logprobs.py --benchmark-json=out.json  (keeps machine info)
Providers: ``torch`` (fused_linear_logprobs_ref: F.linear then the log-softmax, logits
materialised in the inputs' dtype), ``naive`` (what trainers write: ``hidden @ W.T``, an fp32
upcast, a full log-softmax, the gather), ``prefcore_torch`` (the chunked torch path),
``triton`` (GPU only), ``torch_compile`` (GPU, or CPU with PREFCORE_BENCH_COMPILE=1) and
``trl`` (trl.kernels.ChunkedLogProbFunction, which also runs on CPU). Sizes:
PREFCORE_BENCH_TOKENS / _HIDDEN / _VOCAB. Each case records median ms, effective TFLOP/s
(formula beside the count; the backward's recompute is not counted) and, in the memory runs,
peak bytes allocated beyond the inputs. The H100 comparison with Liger lives in bench/gpu.py.
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

from prefcore.kernels.fused_linear_logprobs import fused_linear_logprobs
from prefcore.kernels.fused_linear_logprobs import fused_linear_logprobs_ref

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ROUNDS = int(os.environ.get("PREFCORE_BENCH_ROUNDS", "3" if DEVICE == "cpu" else "10"))
PROVIDERS = ["torch", "naive", "prefcore_torch", "torch_compile", "triton", "trl"]
MODES = ["forward", "backward", "full"]
IGNORE = -100

_TOKENS = int(os.environ.get("PREFCORE_BENCH_TOKENS", "256" if DEVICE == "cpu" else "8192"))
_HIDDEN = int(os.environ.get("PREFCORE_BENCH_HIDDEN", "64" if DEVICE == "cpu" else "4096"))
_VOCAB = int(os.environ.get("PREFCORE_BENCH_VOCAB", "8192" if DEVICE == "cpu" else "128256"))
CONFIGS = [
    {"tokens": _TOKENS, "hidden": _HIDDEN, "vocab": _VOCAB, "dtype": "bfloat16", "ignored": 0.0},
    {"tokens": _TOKENS, "hidden": _HIDDEN, "vocab": _VOCAB, "dtype": "float32", "ignored": 0.0},
    # Half the tokens are prompt (ignore_index): the fused path drops them before the matmuls.
    {"tokens": _TOKENS, "hidden": _HIDDEN, "vocab": _VOCAB, "dtype": "bfloat16", "ignored": 0.5},
]


def _config_id(config: dict) -> str:
    ignored = f"-ignored{config['ignored']:g}" if config["ignored"] else ""
    return f"{config['dtype']}-{config['tokens']}x{config['hidden']}x{config['vocab']}{ignored}"


# ---------------------------------------------------------------------------------------------
# Harness
# ---------------------------------------------------------------------------------------------
def _skip_unavailable(provider: str, config: dict) -> None:
    if provider == "triton" and DEVICE != "cuda":
        pytest.skip("the Triton provider is timed on a GPU only (the CPU interpreter is a test tool)")
    if provider == "torch_compile" and DEVICE != "cuda" and os.environ.get("PREFCORE_BENCH_COMPILE") != "1":
        pytest.skip("torch.compile on CPU: set PREFCORE_BENCH_COMPILE=1")
    if provider == "trl":
        pytest.importorskip("trl.kernels")
        if config["ignored"]:
            pytest.skip("TRL's chunked log-prob has no ignore_index")


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
    """One benchmark: a forward, a backward from its output, and the FLOPs each must do."""

    forward: Callable[[], torch.Tensor]
    upstream: Callable[[torch.Tensor], torch.Tensor]
    leaves: tuple[torch.Tensor, ...]  # inputs that receive gradients; reset before every backward
    forward_flops: int
    backward_flops: int

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
    flops = {"forward": case.forward_flops, "backward": case.backward_flops}.get(
        mode, case.forward_flops + case.backward_flops
    )
    median_s = benchmark.stats.stats.median
    benchmark.extra_info.update(
        config
        | {
            "mode": mode,
            "median_ms": median_s * 1e3,
            "flops": flops,
            "TFLOP/s": flops / median_s / 1e12,
            "device": _device_name(),
            "date": datetime.date.today().isoformat(),
        }
    )


# ---------------------------------------------------------------------------------------------
# Setup factory: one per op, shared by the speed and memory runs
# ---------------------------------------------------------------------------------------------
def naive_linear_logprobs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """What trainers write: N x V logits, an fp32 copy, a full fp32 log-softmax, then the gather."""
    logits = hidden @ weight.T
    valid = targets != IGNORE
    logps = logits.float().log_softmax(-1).gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return logps * valid


def _trl_chunked(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    from trl.kernels import ChunkedLogProbFunction

    # (hidden, weight, bias, targets, temperature, vocabulary chunk, softcap, logit_scale, outputs)
    return ChunkedLogProbFunction.apply(hidden, weight, None, targets, 1.0, 8192, None, 1.0, ())[0]


def setup_fused_linear_logprobs(config: dict, provider: str) -> Case:
    tokens, width, vocab = config["tokens"], config["hidden"], config["vocab"]
    dtype = getattr(torch, config["dtype"])
    hidden = torch.randn(tokens, width, device=DEVICE).to(dtype).requires_grad_()
    weight = (torch.randn(vocab, width, device=DEVICE) / width**0.5).to(dtype).requires_grad_()
    targets = torch.randint(0, vocab, (tokens,), device=DEVICE)
    n_ignored = int(tokens * config["ignored"])
    targets[:n_ignored] = IGNORE
    if provider == "torch":
        op = lambda: fused_linear_logprobs_ref(hidden, weight, targets)
    elif provider == "naive":
        op = lambda: naive_linear_logprobs(hidden, weight, targets)
    elif provider == "torch_compile":
        compiled = torch.compile(naive_linear_logprobs)
        op = lambda: compiled(hidden, weight, targets)
    elif provider == "prefcore_torch":
        op = lambda: fused_linear_logprobs(hidden, weight, targets, backend="torch")
    elif provider == "triton":
        op = lambda: fused_linear_logprobs(hidden, weight, targets, backend="triton")
    elif provider == "trl":
        op = lambda: _trl_chunked(hidden, weight, targets)
    else:
        raise ValueError(provider)
    upstream = torch.randn(tokens, device=DEVICE)
    valid_tokens = tokens - n_ignored
    return Case(
        forward=op,
        upstream=lambda out: upstream,
        leaves=(hidden, weight),
        forward_flops=2 * valid_tokens * width * vocab,  # logits GEMM over the tokens that count
        backward_flops=4 * valid_tokens * width * vocab,  # dH = dZ W and dW = dZ^T H; recompute not counted
    )


@pytest.mark.parametrize("config", CONFIGS, ids=_config_id)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_fused_linear_logprobs_speed(benchmark, provider, mode, config):
    _skip_unavailable(provider, config)
    case = setup_fused_linear_logprobs(config, provider)
    _time(benchmark, mode, case)
    _record(benchmark, mode, case, config | {"provider": provider})


@pytest.mark.parametrize("config", CONFIGS[:1], ids=_config_id)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_fused_linear_logprobs_memory(benchmark, provider, config):
    _skip_unavailable(provider, config)
    case = setup_fused_linear_logprobs(config, provider)
    case.full()  # warm-up outside the measurement (torch.compile, allocator caches)
    case.clear_grads()
    benchmark.extra_info["peak_bytes"] = _peak_bytes(case.full)
    benchmark.extra_info["logits_bytes"] = config["tokens"] * config["vocab"] * getattr(torch, config["dtype"]).itemsize
    benchmark.pedantic(case.full, rounds=1, iterations=1)
    _record(benchmark, "full", case, config | {"provider": provider})

"""Benchmarks for prefcore.kernels.kl: per-token k1/k2/k3 and full-distribution KL/JSD.

Run:  pytest bench/bench_kl.py                      (CPU: reference vs naive torch, small sizes)
      pytest bench/bench_kl.py --benchmark-json=out.json   (keeps machine info and date)
On a CUDA machine the ``triton`` provider joins in; ``torch_compile`` needs PREFCORE_BENCH_COMPILE=1
on CPU, where compilation dwarfs the op. Each case records median ms, GB/s for the bytes the op
must move (formula beside each count) and, in the memory runs, peak bytes allocated beyond the
inputs; the numbers describe the machine in ``extra_info["device"]`` and nothing else.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from prefcore.kernels.kl import distribution_kl
from prefcore.kernels.kl import distribution_kl_ref
from prefcore.kernels.kl import per_token_kl
from prefcore.kernels.kl import per_token_kl_ref

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ROUNDS = int(os.environ.get("PREFCORE_BENCH_ROUNDS", "10"))
PROVIDERS = ["torch", "naive", "torch_compile", "triton"]
MODES = ["forward", "backward", "full"]


def _skip_unavailable(provider: str) -> None:
    if provider == "triton" and DEVICE != "cuda":
        pytest.skip("the Triton provider is timed on a GPU only (the CPU interpreter is a test tool)")
    if provider == "torch_compile" and DEVICE != "cuda" and os.environ.get("PREFCORE_BENCH_COMPILE") != "1":
        pytest.skip("torch.compile on CPU: set PREFCORE_BENCH_COMPILE=1")


def _device_name() -> str:
    return torch.cuda.get_device_name() if DEVICE == "cuda" else f"CPU {platform.processor() or platform.machine()}"


def _sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


class _LiveBytes(TorchDispatchMode):
    """CPU stand-in for torch.cuda.max_memory_allocated: peak bytes of tensors created and still alive."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, list[int]] = {}  # data_ptr -> [nbytes, live tensor count]
        self.current = 0
        self.peak = 0

    def _release(self, ptr: int) -> None:
        entry = self.live.get(ptr)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.live[ptr]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(value, torch.Tensor) and value.device.type == "cpu":
                ptr = value.untyped_storage().data_ptr()
                entry = self.live.setdefault(ptr, [value.untyped_storage().nbytes(), 0])
                if entry[1] == 0:
                    self.current += entry[0]
                    self.peak = max(self.peak, self.current)
                entry[1] += 1
                weakref.finalize(value, self._release, ptr)
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
    """What one benchmark runs: a forward, a backward from its output, and the bytes each must move."""

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


def _time(benchmark, mode: str, case: Case) -> None:
    def run_forward():
        out = case.forward()
        _sync()
        return out

    def run_full():
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

        def run_backward(out, grad):
            out.backward(grad)
            _sync()

        benchmark.pedantic(run_backward, setup=setup, rounds=ROUNDS, warmup_rounds=1)


# ---------------------------------------------------------------------------------------------
# Per-token k1/k2/k3
# ---------------------------------------------------------------------------------------------

_PER_TOKEN_CONFIGS = [
    {"tokens": 65536, "estimator": "k3"},  # one 64k-token micro-batch, the GRPO penalty
    {"tokens": 65536, "estimator": "k1"},
]


def naive_per_token_kl(logps, ref_logps, mask, estimator):
    """The usual trainer code (OpenRLHF compute_approx_kl without its clamp): elementwise ops, then mask."""
    log_ratio = logps.float() - ref_logps.float()
    if estimator == "k1":
        kl = log_ratio
    elif estimator == "k2":
        kl = log_ratio**2 / 2.0
    else:
        kl = (-log_ratio).exp() - 1 + log_ratio
    return kl * mask


def setup_per_token_kl(config: dict, provider: str) -> Case:
    tokens, estimator = config["tokens"], config["estimator"]
    logps = (-torch.rand(tokens, device=DEVICE) * 3).requires_grad_()
    ref_logps = logps.detach() + 0.1 * torch.randn(tokens, device=DEVICE)
    mask = torch.rand(tokens, device=DEVICE) > 0.2
    if provider == "torch":
        fn = lambda: per_token_kl_ref(logps, ref_logps, mask, estimator=estimator)
    elif provider == "naive":
        fn = lambda: naive_per_token_kl(logps, ref_logps, mask, estimator)
    elif provider == "torch_compile":
        compiled = torch.compile(per_token_kl_ref)
        fn = lambda: compiled(logps, ref_logps, mask, estimator=estimator)
    elif provider == "triton":
        fn = lambda: per_token_kl(logps, ref_logps, mask, estimator=estimator, backend="triton")
    else:
        raise ValueError(provider)
    upstream = torch.randn(tokens, device=DEVICE)
    return Case(
        forward=fn,
        upstream=lambda out: upstream,
        leaves=(logps,),
        forward_bytes=tokens * (4 + 4 + 1 + 4),  # read logps, ref_logps (fp32), mask (bool); write kl (fp32)
        backward_bytes=tokens * (4 + 4 + 4 + 1 + 4),  # read grad, logps, ref_logps, mask; write grad logps
    )


@pytest.mark.parametrize("config", _PER_TOKEN_CONFIGS, ids=lambda c: f"{c['estimator']}-{c['tokens']}")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_per_token_kl_speed(benchmark, provider, mode, config):
    _skip_unavailable(provider)
    case = setup_per_token_kl(config, provider)
    _time(benchmark, mode, case)
    _record(benchmark, mode, case, config | {"provider": provider})


@pytest.mark.parametrize("config", _PER_TOKEN_CONFIGS[:1], ids=lambda c: f"{c['estimator']}-{c['tokens']}")
@pytest.mark.parametrize("provider", PROVIDERS)
def test_per_token_kl_memory(benchmark, provider, config):
    _skip_unavailable(provider)
    case = setup_per_token_kl(config, provider)
    case.full()  # warm-up outside the measurement (torch.compile, allocator caches)
    case.clear_grads()
    benchmark.extra_info["peak_bytes"] = _peak_bytes(case.full)
    benchmark.pedantic(case.full, rounds=1, iterations=1)
    _record(benchmark, "full", case, config | {"provider": provider})


# ---------------------------------------------------------------------------------------------
# Full-distribution divergences
# ---------------------------------------------------------------------------------------------

# Small enough for a CPU; on a GPU the same code scales via PREFCORE_BENCH_ROWS / _VOCAB.
_ROWS = int(os.environ.get("PREFCORE_BENCH_ROWS", "64" if DEVICE == "cpu" else "8192"))
_VOCAB = int(os.environ.get("PREFCORE_BENCH_VOCAB", "32000" if DEVICE == "cpu" else "128256"))
_DIST_CONFIGS = [
    {"rows": _ROWS, "vocab": _VOCAB, "mode": "reverse", "dtype": "float32"},
    {"rows": _ROWS, "vocab": _VOCAB, "mode": "jsd", "dtype": "float32"},
    {"rows": _ROWS, "vocab": _VOCAB, "mode": "reverse", "dtype": "bfloat16"},
]


def naive_distribution_kl(logits, ref_logits, mode, beta):
    """What trainers write: materialised fp32 log-softmaxes and F.kl_div (Liger's KLDivLoss reference)."""
    log_p = F.log_softmax(logits.float(), dim=-1)
    log_r = F.log_softmax(ref_logits.float(), dim=-1)
    if mode == "reverse":
        return F.kl_div(log_r, log_p, reduction="none", log_target=True).sum(-1)
    if mode == "forward":
        return F.kl_div(log_p, log_r, reduction="none", log_target=True).sum(-1)
    log_m = torch.logsumexp(torch.stack([log_p + math.log(1 - beta), log_r + math.log(beta)]), 0)
    kl_r_m = F.kl_div(log_m, log_r, reduction="none", log_target=True).sum(-1)
    kl_p_m = F.kl_div(log_m, log_p, reduction="none", log_target=True).sum(-1)
    return beta * kl_r_m + (1 - beta) * kl_p_m


def setup_distribution_kl(config: dict, provider: str) -> Case:
    rows, vocab, mode = config["rows"], config["vocab"], config["mode"]
    dtype = getattr(torch, config["dtype"])
    beta = 0.5
    logits = (torch.randn(rows, vocab, device=DEVICE) * 2).to(dtype).requires_grad_()
    ref_logits = (logits.detach().float() + torch.randn(rows, vocab, device=DEVICE)).to(dtype)
    if provider == "torch":
        fn = lambda: distribution_kl_ref(logits, ref_logits, mode=mode, beta=beta)
    elif provider == "naive":
        fn = lambda: naive_distribution_kl(logits, ref_logits, mode, beta)
    elif provider == "torch_compile":
        compiled = torch.compile(distribution_kl_ref)
        fn = lambda: compiled(logits, ref_logits, mode=mode, beta=beta)
    elif provider == "triton":
        fn = lambda: distribution_kl(logits, ref_logits, mode=mode, beta=beta, backend="triton")
    else:
        raise ValueError(provider)
    element = logits.element_size()
    passes = 2 if mode == "jsd" else 1  # the JSD forward reads each row twice (log m needs both LSEs)
    upstream = torch.randn(rows, device=DEVICE)
    return Case(
        forward=fn,
        upstream=lambda out: upstream,
        leaves=(logits,),
        # read logits + ref_logits (passes times); write divergence and 6 row statistics (fp32)
        forward_bytes=passes * 2 * rows * vocab * element + rows * 7 * 4,
        # read logits + ref_logits once; write grad logits (ref_logits needs no gradient here)
        backward_bytes=3 * rows * vocab * element + rows * 8 * 4,
    )


@pytest.mark.parametrize("config", _DIST_CONFIGS, ids=lambda c: f"{c['mode']}-{c['dtype']}-{c['rows']}x{c['vocab']}")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_distribution_kl_speed(benchmark, provider, mode, config):
    _skip_unavailable(provider)
    case = setup_distribution_kl(config, provider)
    _time(benchmark, mode, case)
    _record(benchmark, mode, case, config | {"provider": provider})


@pytest.mark.parametrize(
    "config", _DIST_CONFIGS[::2], ids=lambda c: f"{c['mode']}-{c['dtype']}-{c['rows']}x{c['vocab']}"
)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_distribution_kl_memory(benchmark, provider, config):
    _skip_unavailable(provider)
    case = setup_distribution_kl(config, provider)
    case.full()  # warm-up outside the measurement (torch.compile, allocator caches)
    case.clear_grads()
    benchmark.extra_info["peak_bytes"] = _peak_bytes(case.full)
    benchmark.extra_info["logits_bytes"] = config["rows"] * config["vocab"] * getattr(torch, config["dtype"]).itemsize
    benchmark.pedantic(case.full, rounds=1, iterations=1)
    _record(benchmark, "full", case, config | {"provider": provider})

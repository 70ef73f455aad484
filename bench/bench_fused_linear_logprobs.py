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

import os

import pytest
import torch
from harness import DEVICE
from harness import FLOPS
from harness import MODES
from harness import Case
from harness import measure_memory
from harness import record
from harness import rounds
from harness import skip_unavailable
from harness import time_case

from prefcore.kernels.fused_linear_logprobs import fused_linear_logprobs
from prefcore.kernels.fused_linear_logprobs import fused_linear_logprobs_ref

ROUNDS = rounds("3" if DEVICE == "cpu" else "10")
PROVIDERS = ["torch", "naive", "prefcore_torch", "torch_compile", "triton", "trl"]
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


def _skip_unavailable(provider: str, config: dict) -> None:
    skip_unavailable(provider)
    if provider == "trl":
        pytest.importorskip("trl.kernels")
        if config["ignored"]:
            pytest.skip("TRL's chunked log-prob has no ignore_index")


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
        forward_work=2 * valid_tokens * width * vocab,  # logits GEMM over the tokens that count
        backward_work=4 * valid_tokens * width * vocab,  # dH = dZ W and dW = dZ^T H; recompute not counted
        cost=FLOPS,
    )


@pytest.mark.parametrize("config", CONFIGS, ids=_config_id)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_fused_linear_logprobs_speed(benchmark, provider, mode, config):
    _skip_unavailable(provider, config)
    case = setup_fused_linear_logprobs(config, provider)
    time_case(benchmark, mode, case, ROUNDS)
    record(benchmark, mode, case, config | {"provider": provider})


@pytest.mark.parametrize("config", CONFIGS[:1], ids=_config_id)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_fused_linear_logprobs_memory(benchmark, provider, config):
    _skip_unavailable(provider, config)
    case = setup_fused_linear_logprobs(config, provider)
    measure_memory(
        benchmark, case, {"logits_bytes": config["tokens"] * config["vocab"] * getattr(torch, config["dtype"]).itemsize}
    )
    record(benchmark, "full", case, config | {"provider": provider})

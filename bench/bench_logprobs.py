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

import os

import pytest
import torch
from harness import DEVICE
from harness import MODES
from harness import Case
from harness import measure_memory
from harness import record
from harness import rounds
from harness import skip_unavailable
from harness import time_case

from prefcore.kernels.logprobs import selective_log_softmax
from prefcore.kernels.logprobs import selective_log_softmax_ref

ROUNDS = rounds("3" if DEVICE == "cpu" else "10")
PROVIDERS = ["torch", "naive", "prefcore_torch", "torch_compile", "triton"]

_ROWS = int(os.environ.get("PREFCORE_BENCH_ROWS", "256" if DEVICE == "cpu" else "16384"))
_VOCAB = int(os.environ.get("PREFCORE_BENCH_VOCAB", "32000" if DEVICE == "cpu" else "128256"))
CONFIGS = [
    {"rows": _ROWS, "vocab": _VOCAB, "dtype": "bfloat16", "entropy": False},
    {"rows": _ROWS, "vocab": _VOCAB, "dtype": "float32", "entropy": False},
    {"rows": _ROWS, "vocab": _VOCAB, "dtype": "bfloat16", "entropy": True},
]


def _config_id(config: dict) -> str:
    return f"{config['dtype']}-{config['rows']}x{config['vocab']}" + ("-entropy" if config["entropy"] else "")


def _skip_unavailable(provider: str, config: dict) -> None:
    skip_unavailable(provider)
    if provider == "naive" and config["entropy"]:
        pytest.skip("the naive baseline computes log-probs only")


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
        forward_work=rows * vocab * element + rows * 8 + rows * (outputs + 2) * 4,
        # read logits + write grad logits; read targets, 2 row statistics and the upstream gradients
        backward_work=2 * rows * vocab * element + rows * 8 + rows * (2 + 2 * outputs) * 4,
    )


@pytest.mark.parametrize("config", CONFIGS, ids=_config_id)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_logprobs_speed(benchmark, provider, mode, config):
    _skip_unavailable(provider, config)
    case = setup_logprobs(config, provider)
    time_case(benchmark, mode, case, ROUNDS)
    record(benchmark, mode, case, config | {"provider": provider})


@pytest.mark.parametrize("config", CONFIGS[:1], ids=_config_id)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_logprobs_memory(benchmark, provider, config):
    _skip_unavailable(provider, config)
    case = setup_logprobs(config, provider)
    measure_memory(
        benchmark, case, {"logits_bytes": config["rows"] * config["vocab"] * getattr(torch, config["dtype"]).itemsize}
    )
    record(benchmark, "full", case, config | {"provider": provider})

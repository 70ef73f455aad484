"""Benchmarks for prefcore.kernels.kl: per-token k1/k2/k3 and full-distribution KL/JSD.

Run:  pytest bench/bench_kl.py                      (CPU: reference vs naive torch, small sizes)
      pytest bench/bench_kl.py --benchmark-json=out.json   (keeps machine info and date)
On a CUDA machine the ``triton`` provider joins in; ``torch_compile`` needs PREFCORE_BENCH_COMPILE=1
on CPU, where compilation dwarfs the op. Each case records median ms, GB/s for the bytes the op
must move (formula beside each count) and, in the memory runs, peak bytes allocated beyond the
inputs; the numbers describe the machine in ``extra_info["device"]`` and nothing else.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F
from harness import DEVICE
from harness import MODES
from harness import Case
from harness import measure_memory
from harness import record
from harness import rounds
from harness import skip_unavailable
from harness import time_case

from prefcore.kernels.kl import distribution_kl
from prefcore.kernels.kl import distribution_kl_ref
from prefcore.kernels.kl import per_token_kl
from prefcore.kernels.kl import per_token_kl_ref

ROUNDS = rounds("10")
PROVIDERS = ["torch", "naive", "torch_compile", "triton"]

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
        forward_work=tokens * (4 + 4 + 1 + 4),  # read logps, ref_logps (fp32), mask (bool); write kl (fp32)
        backward_work=tokens * (4 + 4 + 4 + 1 + 4),  # read grad, logps, ref_logps, mask; write grad logps
    )


@pytest.mark.parametrize("config", _PER_TOKEN_CONFIGS, ids=lambda c: f"{c['estimator']}-{c['tokens']}")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_per_token_kl_speed(benchmark, provider, mode, config):
    skip_unavailable(provider)
    case = setup_per_token_kl(config, provider)
    time_case(benchmark, mode, case, ROUNDS)
    record(benchmark, mode, case, config | {"provider": provider})


@pytest.mark.parametrize("config", _PER_TOKEN_CONFIGS[:1], ids=lambda c: f"{c['estimator']}-{c['tokens']}")
@pytest.mark.parametrize("provider", PROVIDERS)
def test_per_token_kl_memory(benchmark, provider, config):
    skip_unavailable(provider)
    case = setup_per_token_kl(config, provider)
    measure_memory(benchmark, case)
    record(benchmark, "full", case, config | {"provider": provider})


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
        forward_work=passes * 2 * rows * vocab * element + rows * 7 * 4,
        # read logits + ref_logits once; write grad logits (ref_logits needs no gradient here)
        backward_work=3 * rows * vocab * element + rows * 8 * 4,
    )


@pytest.mark.parametrize("config", _DIST_CONFIGS, ids=lambda c: f"{c['mode']}-{c['dtype']}-{c['rows']}x{c['vocab']}")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_distribution_kl_speed(benchmark, provider, mode, config):
    skip_unavailable(provider)
    case = setup_distribution_kl(config, provider)
    time_case(benchmark, mode, case, ROUNDS)
    record(benchmark, mode, case, config | {"provider": provider})


@pytest.mark.parametrize(
    "config", _DIST_CONFIGS[::2], ids=lambda c: f"{c['mode']}-{c['dtype']}-{c['rows']}x{c['vocab']}"
)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_distribution_kl_memory(benchmark, provider, config):
    skip_unavailable(provider)
    case = setup_distribution_kl(config, provider)
    measure_memory(
        benchmark, case, {"logits_bytes": config["rows"] * config["vocab"] * getattr(torch, config["dtype"]).itemsize}
    )
    record(benchmark, "full", case, config | {"provider": provider})

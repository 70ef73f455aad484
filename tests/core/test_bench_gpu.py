"""``bench/gpu.py``'s CPU-checkable parts: gradients count in the peak memory, wrong results are never timed."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def gpu():
    sys.path.insert(0, str(BENCH))  # gpu.py imports its neighbour harness.py, as when run as a script
    try:
        spec = importlib.util.spec_from_file_location("prefcore_bench_gpu", BENCH / "gpu.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH))
        sys.modules.pop("prefcore_bench_gpu", None)


def _grad_step(leaf: torch.Tensor):
    def step() -> None:
        leaf.grad = None
        (leaf * 2).sum().backward()

    step.outputs = lambda: (leaf.grad,)
    step.reset = lambda: setattr(leaf, "grad", None)
    return step


def test_peak_memory_counts_the_gradient_a_call_leaves(gpu) -> None:
    leaf = torch.zeros(256, 1024, requires_grad=True)  # 1 MiB of fp32
    step = _grad_step(leaf)
    step()  # the warm-up call leaves a gradient, as in measure()
    peak = gpu._peak_extra_bytes(step, CPU)
    assert peak >= leaf.numel() * 4  # the call's own gradient is in the figure
    assert leaf.grad is not None  # and it is the call's output, left for the correctness check


def test_a_wrong_result_is_reported_and_never_timed(gpu) -> None:
    logits = torch.randn(8, 50).to(torch.bfloat16)
    targets = torch.randint(0, 50, (8,))
    right = gpu.returning(lambda: gpu._naive_logprobs(logits, targets))
    wrong = gpu.returning(lambda: gpu._naive_logprobs(logits, targets) + 0.5)
    row = gpu.Row(
        "logprob-fwd",
        "test",
        {"right": lambda: right, "wrong": lambda: wrong},
        None,
        "n/a",
        expected=lambda: (gpu._naive_logprobs(logits.float(), targets),),
        tolerance=1e-2,
    )
    results = {result.provider: result for result in gpu.measure(row, CPU, rounds=1, warmup_ms=1, rep_ms=1)}
    assert results["right"].status == "" and results["right"].median_ms is not None
    assert results["wrong"].status.startswith("wrong: output 0 is off by 0.5")
    assert results["wrong"].median_ms is None and results["wrong"].peak_bytes is None


def test_dpo_row_providers_match_the_fp32_reference_gradients(gpu) -> None:
    torch.manual_seed(0)
    args = argparse.Namespace(
        pairs=2, seq_len=16, hidden=32, vocab_dpo=300, prompt_fraction=0.25, compile=False, rows=8, vocab=50
    )
    row = gpu.dpo_row(args, CPU, None)
    for name in ("prefcore", "naive torch", "trl"):
        step = row.providers[name]()
        step()
        assert gpu.check(row, step) == "", name
        reference = row.expected()
        assert all(grad is not None and grad.abs().max() > 0 for grad in reference)
    peak = gpu._peak_extra_bytes(step, CPU)
    weight_grad_bytes = args.vocab_dpo * args.hidden * 2  # the bf16 LM-head gradient is in the figure
    assert peak >= weight_grad_bytes

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
        gpu.Work(0.0, 0.0, "n/a"),
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


def test_work_counts_match_the_matmul_flops_and_the_logit_bytes(gpu) -> None:
    n, h, v = 16384, 4096, 128256
    # A fused LM-head forward is one N×H @ H×V matmul: 2·N·H·V; dH and dW are two more of the same size.
    assert gpu.linear_logprob_work(n, h, v, backward=False).flops == 2 * n * h * v
    assert gpu.linear_logprob_work(n, h, v, backward=True).flops == 3 * 2 * n * h * v
    # DPO: the policy's forward and backward plus the reference's forward, on completion tokens only.
    assert gpu.dpo_work(n, h, v).flops == 2 * n * h * v * 3 + 2 * n * h * v
    # From materialised bf16 logits: read once forward; read twice and write the gradient with the backward.
    assert gpu.logprob_work(n, v, 2, backward=False).bytes == n * v * 2
    assert gpu.logprob_work(n, v, 2, backward=True).bytes == 3 * n * v * 2
    h100 = gpu._peaks_for("NVIDIA H100 80GB HBM3")
    assert gpu.logprob_work(n, v, 2, backward=False).floor_s(h100) == pytest.approx(n * v * 2 / 3.35e12)
    assert gpu.dpo_work(8192, h, v).floor_s(h100) == pytest.approx(8 * 8192 * h * v / 989e12)
    assert gpu.dpo_work(8192, h, v).floor_s(None) is None


def test_dpo_row_counts_completion_tokens_and_keeps_the_goal_for_the_issue_sizes_only(gpu) -> None:
    args = argparse.Namespace(
        pairs=2, seq_len=16, hidden=32, vocab_dpo=300, prompt_fraction=0.25, compile=False, rows=8, vocab=50
    )
    row = gpu.dpo_row(args, CPU, (1e12, 1e14))
    assert row.work.flops == 8 * (4 * 12) * 32 * 300  # 4 sequences of 16 tokens, the first 4 ignored
    assert row.roofline_s == pytest.approx(row.work.flops / 1e14)
    assert row.goal is None


def test_summary_puts_the_best_peer_limit_prefcore_and_goal_side_by_side(gpu) -> None:
    row = gpu.Row("dpo", "t", {}, gpu.dpo_work(1, 1, 1), roofline_s=0.0448, goal=(51.0, 1.5))
    results = [
        gpu.Result("prefcore", 50.0, 2**30),
        gpu.Result("naive torch", 90.0, 3 * 2**30),
        gpu.Result("liger", 64.5, 2**31),
        gpu.Result("trl", None, None, "skipped: trl.kernels: missing"),
    ]
    header, rule, line = gpu.summary([(row, results)])
    assert header == "| workload | best peer | limit | prefcore | goal | naive torch | liger | trl |"
    assert rule.count("|") == header.count("|")
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    assert cells == [
        "dpo",
        "liger 64.500 ms, 2.00 GiB",
        "44.80 ms",
        "50.000 ms, 1.00 GiB",
        "≤ 51 ms, ≤ 1.5 GiB",
        "90.000 ms, 3.00 GiB",
        "64.500 ms, 2.00 GiB",
        "skipped",
    ]

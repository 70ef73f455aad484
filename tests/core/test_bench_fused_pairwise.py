"""``bench/bench_fused_pairwise.py`` in CI: every provider's DPO loss and gradients at a tiny size, not timings.

Liger's chunked DPO runs on its torch path (``compiled=False``) on CPU; the table refuses to
time a provider whose numbers differ from the fp32 naive reference.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(
            "prefcore_bench_fused_pairwise", BENCH / "bench_fused_pairwise.py"
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH))
        sys.modules.pop("prefcore_bench_fused_pairwise", None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_provider_gives_the_reference_numbers(bench, dtype) -> None:
    inputs = bench.make_inputs(2, 12, 16, 300, dtype, 0.25)
    results = {result.provider: result for result in bench.run(inputs, repeats=1)}
    assert set(results) == {"prefcore loss-aware", "prefcore recompute", "liger", "naive torch"}
    for name, result in results.items():
        assert result.status == "", f"{name}: {result.status}"
        assert result.max_error <= bench.TOLERANCE[dtype]
        assert result.median_ms is not None and result.peak_bytes > 0
    assert bench.table(list(results.values()), "header").count("\n| ") == 5


def test_master_weight_mode(bench, monkeypatch) -> None:
    """--master-weight: every provider trains the fp32 weight (fp32 gradient) and matches the reference."""
    monkeypatch.setattr(bench, "BLOCK_ROWS", 64)  # the blocks provider casts 300 vocab rows in 5 blocks
    inputs = bench.make_inputs(2, 12, 16, 300, torch.bfloat16, 0.25, master=True)
    assert inputs.weight.dtype == torch.float32 and inputs.hidden.dtype == torch.bfloat16
    results = {result.provider: result for result in bench.run(inputs, repeats=1)}
    assert set(results) == {
        "prefcore loss-aware",
        "prefcore loss-aware, blocks",
        "prefcore recompute",
        "liger",
        "naive torch",
    }
    for name, result in results.items():
        assert result.status == "", f"{name}: {result.status}"
        assert result.max_error <= bench.TOLERANCE[torch.bfloat16]
    step = bench.providers(master=True)["prefcore loss-aware"]()
    assert bench._call(step, inputs)[2].dtype == torch.float32  # the master weight's gradient


def test_a_wrong_provider_is_reported_and_not_timed(bench, monkeypatch) -> None:
    good = bench.providers()

    def wrong():
        step = good["prefcore loss-aware"]()
        return lambda inputs, h, w: step(inputs, h, w) * 1.1

    monkeypatch.setattr(bench, "providers", lambda master=False: {**good, "prefcore loss-aware": wrong})
    inputs = bench.make_inputs(2, 8, 8, 50, torch.float32, 0.25)
    results = {r.provider: r for r in bench.run(inputs, repeats=1, names=["prefcore loss-aware"])}
    assert results["prefcore loss-aware"].status.startswith("wrong: relative error")
    assert results["prefcore loss-aware"].median_ms is None

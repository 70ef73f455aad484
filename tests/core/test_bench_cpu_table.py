"""``bench/cpu_table.py`` in CI: a smoke test of the CPU table at a tiny size, numbers not timings.

Every provider's log-probs and gradients must equal the fp32 reference (the table refuses to
time a wrong one); the timings are not checked.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def cpu_table():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("prefcore_bench_cpu_table", BENCH / "cpu_table.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH))
        sys.modules.pop("prefcore_bench_cpu_table", None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_provider_gives_the_reference_numbers(cpu_table, dtype) -> None:
    results = {result.provider: result for result in cpu_table.run(48, 16, 300, dtype, repeats=1)}
    assert set(results) == {"prefcore", "trl", "liger", "naive torch"}
    for name, result in results.items():
        assert result.status == "", f"{name}: {result.status}"
        assert result.max_error <= cpu_table.TOLERANCE[dtype]
        assert result.median_ms is not None and result.peak_bytes > 0
    text = cpu_table.table(list(results.values()), "header")
    assert text.count("\n| ") == 5  # the column header and one row per provider


def test_a_wrong_provider_is_reported_and_not_timed(cpu_table, monkeypatch) -> None:
    good = cpu_table.providers()
    monkeypatch.setattr(
        cpu_table,
        "providers",
        lambda: {**good, "prefcore": lambda: lambda h, w, t: good["naive torch"]()(h, w, t) * 1.1},
    )
    results = {result.provider: result for result in cpu_table.run(16, 8, 50, torch.float32, repeats=1)}
    assert results["prefcore"].status.startswith("wrong: relative error")
    assert results["prefcore"].median_ms is None

"""``bench/bench_real_model.py``'s bookkeeping, without the model: what counts as set-up, and the table."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_real_model.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("prefcore_bench_real_model", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


PHASES = {
    "imports": (2.0, 1.5),
    "load": (7.0, 4.0),
    "tokenise": (0.5, 0.25),
    "first step": (10.0, 8.0),
    "step 1": (6.0, 5.0),
    "step 2": (9.0, 6.0),
    "step 3": (7.0, 5.5),
}


def test_set_up_runs_to_the_first_step_s_end_and_later_steps_take_the_median(bench) -> None:
    summary = bench.summarise(PHASES)
    assert summary["to_first_step"] == [2.0 + 7.0 + 0.5 + 10.0, 1.5 + 4.0 + 0.25 + 8.0]
    assert summary["step"] == [7.0, 5.5]
    only_first = bench.summarise({"load": (1.0, 1.0), "first step": (2.0, 1.0)})
    assert only_first == {"to_first_step": [3.0, 2.0], "step": [None, None]}


def test_table_reports_wall_and_cpu_time_memory_and_losses(bench) -> None:
    run = {**bench.summarise(PHASES), "phases": PHASES, "peak_rss": 3 * 2**30, "losses": [0.6931, 0.5], "tokens": 46}
    text = bench.table({"prefcore folder": [run]}, bench.Settings(), [28.3, 22.4])
    row = next(line for line in text.splitlines() if line.startswith("| prefcore folder"))
    assert row == "| prefcore folder | 19.5 s (13.8 s CPU) | 7.0 s (5.5 s CPU) | 3072 MiB | 0.6931 / 0.5000 | 46 |"
    assert "import-model` (GGUF → folder, once): 28.3 s (22.4 s CPU)" in text
    assert "- prefcore folder: imports 2.0/1.5, load 7.0/4.0" in text

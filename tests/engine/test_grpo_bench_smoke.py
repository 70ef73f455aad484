"""The GRPO-vs-TRL benchmark stays runnable: its tiny in-process dry run prints both rows and the loss check."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_grpo.py"


def test_grpo_benchmark_dry_run_prints_both_tools_and_the_parity() -> None:
    pytest.importorskip("trl")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tempfile.gettempdir(),  # not the repository root: its kernels/ folder would shadow the PyPI package
    )
    assert result.returncode == 0, result.stderr[-4000:]
    rows = {line.split("|")[1].strip() for line in result.stdout.splitlines() if line.startswith("| ")}
    assert {"prefcore", "trl"} <= rows
    assert "speed-up (TRL wall / prefcore wall)" in result.stdout
    parity = [line for line in result.stdout.splitlines() if line.startswith("parity ")]
    assert len(parity) == 2
    for line in parity:
        loss_diff = float(line.split("|Δloss| ")[1].split(",")[0])
        assert loss_diff < 1e-5, line

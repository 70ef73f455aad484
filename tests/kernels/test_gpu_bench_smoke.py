"""The GPU comparison script stays runnable: its tiny-size CPU dry run prints every row."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu.py"


def test_gpu_benchmark_dry_run_prints_the_table() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--dry-run"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    measured = {tuple(cell.strip() for cell in row.split("|")[1:3]) for row in rows if "skipped" not in row}
    for op in ("logprob-fwd", "logprob-fwdbwd", "dpo"):
        assert (op, "prefcore") in measured, f"no prefcore row for {op}"
        assert (op, "naive torch") in measured, f"no naive torch row for {op}"
    assert ("dpo", "prefcore loss-aware") in measured, "no row for the loss-aware fused DPO step"

"""The PPO benchmark stays runnable: its tiny in-process dry run prints a row per critic placement."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_ppo_benchmark_dry_run_times_both_critic_placements(capsys: pytest.CaptureFixture[str]) -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import bench_ppo
    finally:
        sys.path.remove(str(BENCH))
    assert bench_ppo.main(["--dry-run"]) == 0
    rows = {
        line.split("|")[1].strip(): line.split("|")
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| ") and not line.startswith("| critic")
    }
    assert set(rows) == {"separate", "shared"}
    value_parameters = {name: int(row[7].strip().replace(",", "")) for name, row in rows.items()}
    assert value_parameters["shared"] == 33  # the head alone (32 hidden + bias): the trunk is the policy's
    assert value_parameters["separate"] > 100 * value_parameters["shared"]
    for row in rows.values():
        assert float(row[2]) > 0 and float(row[3]) > 0  # wall and rollout seconds

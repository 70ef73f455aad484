"""metrics.csv: growing header, exact values, resume truncation (explicit and inferred)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from prefcore.engine.metrics_log import MetricsCSVWriter
from prefcore.engine.metrics_log import read_metrics_csv


def header(path: Path) -> list[str]:
    with open(path, newline="") as handle:
        return next(csv.reader(handle))


def test_rows_append_and_new_columns_widen_the_header(tmp_path: Path) -> None:
    path = tmp_path / "run" / "metrics.csv"
    writer = MetricsCSVWriter(path)
    writer.write(1, {"loss": 0.5})
    writer.write(2, {"loss": 0.25, "rewards/margin": 0.1})
    writer.write(2, {"win_rate/win_rate": 0.625})
    writer.write(3, {"loss": 1 / 3})
    assert header(path) == ["step", "loss", "rewards/margin", "win_rate/win_rate"]
    assert read_metrics_csv(path) == [
        {"step": 1, "loss": 0.5},
        {"step": 2, "loss": 0.25, "rewards/margin": 0.1},
        {"step": 2, "win_rate/win_rate": 0.625},
        {"step": 3, "loss": 1 / 3},  # repr round-trips floats exactly
    ]
    assert [p.name for p in path.parent.iterdir()] == ["metrics.csv"]  # no temporary file left


def test_non_finite_values_round_trip(tmp_path: Path) -> None:
    writer = MetricsCSVWriter(tmp_path / "metrics.csv")
    writer.write(1, {"win_rate": float("nan"), "kl": float("inf")})
    (row,) = writer.rows()
    assert math.isnan(row["win_rate"])
    assert row["kl"] == math.inf


def test_resume_keeps_rows_up_to_the_checkpoint_step(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    first = MetricsCSVWriter(path)
    for step in range(1, 6):
        first.write(step, {"loss": float(step)})
    first.write(4, {"eval/score": 0.5})

    resumed = MetricsCSVWriter(path, resume_from_step=3)
    assert [row["step"] for row in resumed.rows()] == [1, 2, 3]
    assert header(path) == ["step", "loss", "eval/score"]  # the header stays stable
    resumed.write(4, {"loss": 40.0})
    assert [(row["step"], row["loss"]) for row in resumed.rows()] == [(1, 1), (2, 2), (3, 3), (4, 40)]


def test_without_a_resume_step_the_first_new_row_drops_the_interrupted_tail(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    first = MetricsCSVWriter(path)
    for step in range(0, 6):
        first.write(step, {"loss": float(step)})

    resumed = MetricsCSVWriter(path)
    assert len(resumed.rows()) == 6  # nothing is dropped before a new row arrives
    resumed.write(3, {"loss": 30.0})
    resumed.write(4, {"loss": 40.0})
    assert [row["loss"] for row in resumed.rows()] == [0, 1, 2, 30, 40]


def test_inferred_truncation_works_kind_by_kind(tmp_path: Path) -> None:
    """Each stage keeps its own step count: a reward-model step 2 does not drop policy steps."""
    path = tmp_path / "metrics.csv"
    first = MetricsCSVWriter(path)
    for step in (1, 2, 3):
        first.write(step, {"reward_model/loss": float(step)})
    first.write(0, {"eval/score": 0.5})
    for step in (1, 2, 3):
        first.write(step, {"loss": float(step)})
    first.write(3, {"eval/score": 0.75})

    resumed = MetricsCSVWriter(path)
    resumed.write(3, {"eval/score": 0.8})  # resumed from the final checkpoint: only the evaluation is redone
    assert [(row["step"], sorted(row)) for row in resumed.rows()] == [
        (1, ["reward_model/loss", "step"]),
        (2, ["reward_model/loss", "step"]),
        (3, ["reward_model/loss", "step"]),
        (0, ["eval/score", "step"]),
        (1, ["loss", "step"]),
        (2, ["loss", "step"]),
        (3, ["loss", "step"]),  # the final step's training row survives
        (3, ["eval/score", "step"]),
    ]
    assert resumed.rows()[-1]["eval/score"] == 0.8
    resumed.write(2, {"loss": 20.0})  # a later kind truncates only its own rows
    assert [row["loss"] for row in resumed.rows() if "loss" in row] == [1, 20]
    assert sum("reward_model/loss" in row for row in resumed.rows()) == 3

"""What the online run-file tests share: a quick demo run file, its logged rows, a run killed and resumed.

The GRPO, PPO and Safe-RLHF pipeline tests check resume the same way (die once the step-2
checkpoint is written, resume, compare weights bit for bit), so the procedure lives here once.
Test modules import it after putting this folder on ``sys.path`` (the suite imports test
files by path, ``--import-mode=importlib``), as ``tests/distributed`` does with its helpers.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from prefcore.pipeline import run_pipeline

__all__ = ["assert_same_weights", "metric_rows", "quick_online_run", "run_killed_and_resumed", "with_sections"]


def metric_rows(run_dir: Path, key: str | None = None) -> list[dict[str, str]]:
    """The rows of ``metrics.csv``; with ``key``, only those where that column is filled."""
    with open(run_dir / "metrics.csv", newline="") as handle:
        return [row for row in csv.DictReader(handle) if key is None or row.get(key)]


def with_sections(data: dict[str, Any], **sections: Any) -> dict[str, Any]:
    """``data`` with each section merged over its table (a dict), replaced (anything else) or removed (None)."""
    for name, values in sections.items():
        if values is None:
            data.pop(name, None)
        elif isinstance(data.get(name), dict) and isinstance(values, dict):
            data[name] = {**data[name], **values}
        else:
            data[name] = values
    return data


def quick_online_run(method: str, **sections: Any) -> dict[str, Any]:
    """A quick online run of objective ``method`` on the demo's sums: a short warm start, four online steps."""
    data: dict[str, Any] = {
        "run": {"seed": 0, "heldout_fraction": 0.0, "max_new_tokens": 8, "report_to": []},
        "model": {"demo": True},
        "feedback": {"method": "demo_rule", "kind": "answers", "categories": ["sum"], "demonstrations": 256},
        "warm_start": {"steps": 4, "batch_size": 32, "lr": 3e-3},
        "usage": {"method": method},
        "reward": [{"kind": "verifiable", "mode": "exact", "extract": "whole"}],
        "online": {"prompts_per_step": 4, "samples_per_prompt": 4, "max_new_tokens": 6},
        "evaluation": [{"method": "benchmark_accuracy", "match": "exact"}],
        "train": {"steps": 4, "lr": 1e-3, "progress": False, "checkpoint_every": 2},
    }
    return with_sections(data, **sections)


def run_killed_and_resumed(config: Any, trainer: type, out: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """``config`` run straight to ``out/straight``, and to ``out/killed`` killed at step 3 then resumed.

    ``trainer`` is the class whose ``train_step`` runs the online steps; it raises
    ``KeyboardInterrupt`` once the step-2 checkpoint is written. Returns both pipeline results.
    """
    straight = run_pipeline(config, out=str(out / "straight"))
    real_step = trainer.train_step

    def dies_at_step_three(self: Any) -> dict[str, float]:
        if self.online_step == 2:  # the step-2 checkpoint is written; step 3 dies mid-rollout
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(trainer, "train_step", dies_at_step_three)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(config, out=str(out / "killed"))
    monkeypatch.setattr(trainer, "train_step", real_step)
    return straight, run_pipeline(config, out=str(out / "killed"), resume=True)


def assert_same_weights(expected_dir: Path, got_dir: Path, folder: str = "model") -> None:
    """Every tensor of ``folder/model.safetensors`` equal, bit for bit, in both run folders."""
    expected = load_file(str(expected_dir / folder / "model.safetensors"))
    got = load_file(str(got_dir / folder / "model.safetensors"))
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=0, atol=0, msg=f"{folder}: {name}")

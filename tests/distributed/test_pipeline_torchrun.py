"""``prefcore run --nproc 2`` with [distributed] strategy = "fsdp" gives the single-process run's metrics.

Warm-start SFT, a soup of two preference models (Bradley-Terry and margin Bradley-Terry, trained
one after another, ``[run] ensemble = "soup"``) and DPO against the sharded reference, each over
2 processes; the metrics rank 0 writes, the evaluation, the soup and the final ``from_pretrained``
folder must match the same run file in one process. Then the run, cut back to its step-2
checkpoint, is resumed by a plain ``prefcore run --resume`` (no torchrun) to the same final model.
"""

from __future__ import annotations

import csv
import logging
import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from dist_launch import GLOO
from dist_launch import run_file_on_processes

from prefcore.config import parse_run_config
from prefcore.pipeline import run_pipeline

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not GLOO, reason="torch.distributed with gloo is not available")]

RUN_FILE = {
    "run": {
        "seed": 1,
        "heldout_fraction": 0.25,
        "eval_prompts": 4,
        "max_new_tokens": 6,
        "threads": 1,
        "report_to": [],
        "ensemble": "soup",
    },
    "model": {"demo": True},
    "feedback": {"method": "demo_rule", "count": 64, "demonstrations": 32},
    "warm_start": {"steps": 2, "batch_size": 8},
    "preference_model": [{"method": "bradley_terry", "weight": 3}, {"method": "margin_bradley_terry", "weight": 1}],
    "reward_model": {"steps": 2, "batch_size": 8},
    "usage": {"method": "dpo", "beta": 0.1},
    "evaluation": [{"method": "preference_accuracy"}],
    "train": {"steps": 4, "batch_size": 8, "lr": 3e-3, "progress": False, "checkpoint_every": 2, "eval_every": 2},
    "distributed": {"strategy": "fsdp", "timeout_s": 60},
}


def _metrics(run_dir: Path) -> dict[tuple[str, str], float]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {(row["step"], key): float(value) for row in rows for key, value in row.items() if value and key != "step"}


def test_two_processes_write_the_single_process_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    two = run_file_on_processes(RUN_FILE, tmp_path)
    assert sorted(path.name for path in (two / "checkpoints").iterdir()) == ["step-000002", "step-000004"]
    assert (two / "checkpoints" / "step-000004" / "dcp").is_dir()
    assert (two / "reward_model" / "soup" / "model").is_dir() and (two / "warm_start" / "model").is_dir()

    single = {**RUN_FILE, "distributed": {"strategy": "none"}}
    result = run_pipeline(parse_run_config(single), out=str(tmp_path / "one"))
    want, got = _metrics(result.run_dir), _metrics(two)
    timings = {key for key in {*want, *got} if key[1].endswith("elapsed_s")}
    assert set(got) - timings == set(want) - timings
    for key in set(want) - timings:
        # a token-mean metric (nll) is a mean per micro-batch, weighted by the micro-batch's share of
        # the items, across ranks as across grad_accum micro-batches; the loss itself is exact
        rel = 1e-2 if key[1].endswith("nll") else 1e-4
        # Bradley-Terry sees reward differences only: the head's bias moves by AdamW-scaled rounding
        # noise (up to lr per step), shifting every absolute reward alike; margins and accuracy are exact
        shifted = key[1].startswith("reward_model/") and key[1].endswith(("chosen", "rejected"))
        assert got[key] == pytest.approx(want[key], rel=rel, abs=1e-3 if shifted else 1e-5), key
    assert {("4", "loss"), ("2", "warm_start/loss"), ("2", "preference_accuracy/accuracy")} <= set(got)

    from transformers import AutoModelForCausalLM

    from prefcore.cli import main
    from prefcore.engine.reward_model import RewardModel

    trained = AutoModelForCausalLM.from_pretrained(two / "model")
    for name, tensor in result.model.state_dict().items():
        torch.testing.assert_close(trained.state_dict()[name], tensor, rtol=0, atol=1e-4, msg=name)
    soup = RewardModel.load(two / "reward_model" / "soup" / "model").state_dict()
    for name, tensor in RewardModel.load(result.run_dir / "reward_model" / "soup" / "model").state_dict().items():
        if name != "head.bias":  # shift-invariant under Bradley-Terry, as above
            torch.testing.assert_close(soup[name], tensor, rtol=0, atol=2e-4, msg=name)

    # killed after the step-2 checkpoint: a plain process (no torchrun) resumes the sharded checkpoint
    shutil.rmtree(two / "checkpoints" / "step-000004")
    shutil.rmtree(two / "model")
    with caplog.at_level(logging.INFO, logger="prefcore.pipeline"):
        assert main(["run", "--resume", str(two)]) == 0
    assert "resumed from step 2" in caplog.text
    resumed = AutoModelForCausalLM.from_pretrained(two / "model")
    for name, tensor in result.model.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], tensor, rtol=0, atol=1e-4, msg=name)

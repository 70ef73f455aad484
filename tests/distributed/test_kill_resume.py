"""A rank that dies mid-training fails the run at once, and the sharded checkpoints resume it elsewhere.

Rank 1 of a 2-process FSDP2 DPO run exits before step 3 (a checkpoint after every step). The
launch must fail well within the collective timeout, leaving complete checkpoints of steps 1
and 2; resuming the newest in this plain process (no torchrun, no process group: DCP reads both
ranks' shards) must end with the weights of the uninterrupted single-process run, and the step-2
checkpoint converted to safetensors must hold the weights of a 2-step run.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))

import dist_cases
from dist_launch import GLOO
from dist_launch import torchrun

from prefcore.distributed.checkpoint import main
from prefcore.engine.checkpoint import list_checkpoints

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not GLOO, reason="torch.distributed with gloo is not available")]

TIMEOUT_S = 30  # dist_worker.TIMEOUT_S: every collective gives up after it


def test_killed_rank_fails_the_run_and_a_resume_on_one_process_reproduces_it(tmp_path: Path) -> None:
    started = time.monotonic()
    killed = torchrun(2, "kill", str(tmp_path), "dpo", cwd=tmp_path)
    elapsed = time.monotonic() - started
    assert killed.returncode != 0
    assert elapsed < 4 * TIMEOUT_S, f"the surviving rank hung for {elapsed:.0f} s"
    assert not (tmp_path / "kill.pt").exists()  # rank 0 never finished
    saved = list_checkpoints(tmp_path / "run")
    assert [path.name for path in saved] == ["step-000001", "step-000002"]
    assert not [p for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.startswith(".")]

    assert not torch.distributed.is_initialized()
    trainer, model = dist_cases.build_case("dpo", tmp_path / "run", checkpoint_every=1, keep_checkpoints=0)
    assert trainer.sharded is None and trainer.resume() and trainer.step == 2
    trainer.fit()
    assert [row["step"] for row in trainer.metrics_log] == [dist_cases.STEPS]  # continued at step 3 only

    uninterrupted = dist_cases.run_case("dpo", Path(tempfile.mkdtemp()))
    torch.testing.assert_close(trainer.metrics_log[-1]["loss"], uninterrupted["losses"][-1], rtol=1e-5, atol=1e-6)
    resumed = dist_cases.weights(model)
    for name, tensor in uninterrupted["weights"].items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=2e-4, msg=name)

    assert main([str(saved[-1]), str(tmp_path / "step2.safetensors")]) == 0
    converted = load_file(str(tmp_path / "step2.safetensors"))
    two_steps = dist_cases.run_case("dpo", Path(tempfile.mkdtemp()), steps=2)
    assert converted.keys() == two_steps["weights"].keys()
    for name, tensor in two_steps["weights"].items():
        torch.testing.assert_close(converted[name], tensor, rtol=0, atol=2e-4, msg=name)

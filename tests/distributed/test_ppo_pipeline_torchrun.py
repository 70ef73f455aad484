"""``prefcore run --nproc 2`` trains PPO under [distributed] strategy = "fsdp", the value model sharded too.

The two processes sample other draws than one process would, so the run is checked for what it must
write: one metrics row per step (rank 0 alone) with the critic's metrics, a sharded checkpoint that
holds both models (``policy.*`` and ``value.*``) and the KL controller's β, and a final
``from_pretrained`` policy equal to the checkpoint's gathered policy weights. That the training itself
equals one process is ``test_online_distributed.py``'s.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))

from dist_launch import run_file_on_processes

from prefcore.distributed.checkpoint import to_safetensors

GLOO = dist.is_available() and dist.is_gloo_available()

RUN_FILE: dict[str, Any] = {
    "run": {"seed": 1, "heldout_fraction": 0.0, "eval_prompts": 4, "max_new_tokens": 6, "threads": 1, "report_to": []},
    "model": {"demo": True},
    "feedback": {"method": "demo_rule", "kind": "answers", "categories": ["sum"]},
    "usage": {"method": "ppo", "beta": 0.02},
    "reward": [{"kind": "verifiable", "mode": "exact", "extract": "whole"}],
    "online": {"prompts_per_step": 4, "samples_per_prompt": 4, "max_new_tokens": 6},
    "evaluation": [{"method": "benchmark_accuracy", "match": "exact"}],
    "train": {"steps": 2, "lr": 1e-3, "progress": False, "checkpoint_every": 2, "eval_every": 0},
    "distributed": {"strategy": "fsdp", "timeout_s": 60},
}


@pytest.mark.slow
@pytest.mark.skipif(not GLOO, reason="torch.distributed with gloo is not available")
def test_ppo_runs_from_the_run_file_on_two_processes_under_fsdp(tmp_path: Path) -> None:
    two = run_file_on_processes(RUN_FILE, tmp_path)
    with open(two / "metrics.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("reward/mean")]
    assert [row["step"] for row in rows] == ["1", "2"]  # once each: only rank 0 writes
    assert all(row["critic/returns_mean"] and float(row["critic/grad_norm"]) > 0 for row in rows)

    last = two / "checkpoints" / "step-000002"
    state = json.loads((last / "state.json").read_text(encoding="utf-8"))["trainer"]
    assert state["online_step"] == 2 and "beta" in state["objective"]

    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    saved = load_file(str(to_safetensors(last, tmp_path / "last.safetensors", prefix="policy.")))
    assert any(name.startswith("value.trunk.") for name in saved)  # the value model's shards, gathered
    assert any(name.startswith("value.head.") for name in saved)
    policy = {name: tensor for name, tensor in saved.items() if not name.startswith("value.")}
    final = AutoModelForCausalLM.from_pretrained(two / "model").state_dict()
    assert policy and policy.keys() <= final.keys()
    for name, tensor in policy.items():
        torch.testing.assert_close(final[name], tensor, rtol=0, atol=0, msg=name)

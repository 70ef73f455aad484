"""``prefcore run --nproc 2`` trains an online objective under [distributed] strategy = "fsdp"; the dry run checks it.

The two processes sample different draws than one process would (each rank seeds its own prompts),
so the run is checked for what it must write: one metrics row per step (rank 0 alone), the
evaluation, sharded checkpoints holding the prompt sampler and the KL controller, and a final
``from_pretrained`` model that holds the last checkpoint's gathered weights. That the training
itself equals one process is ``test_online_distributed.py``'s.
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

from prefcore.config import parse_run_config
from prefcore.distributed.checkpoint import to_safetensors
from prefcore.registry import Registry
from prefcore.validation import check_run_config

GLOO = dist.is_available() and dist.is_gloo_available()
REGISTRY = Registry.from_environment(third_party=False)

RUN_FILE: dict[str, Any] = {
    "run": {"seed": 1, "heldout_fraction": 0.0, "eval_prompts": 4, "max_new_tokens": 6, "threads": 1, "report_to": []},
    "model": {"demo": True},
    "feedback": {"method": "demo_rule", "kind": "answers", "categories": ["sum"]},
    "usage": {"method": "grpo", "beta": 0.02, "kl_target": 0.05},
    "reward": [{"kind": "verifiable", "mode": "exact", "extract": "whole"}],
    "online": {"prompts_per_step": 4, "samples_per_prompt": 4, "max_new_tokens": 6},
    "evaluation": [{"method": "benchmark_accuracy", "match": "exact"}],
    "train": {"steps": 4, "lr": 1e-3, "progress": False, "checkpoint_every": 2, "eval_every": 2},
    "distributed": {"strategy": "fsdp", "timeout_s": 60},
}


def _with(**sections: Any) -> dict[str, Any]:
    data = {**RUN_FILE, **sections}
    return {name: value for name, value in data.items() if value is not None}


def test_dry_run_accepts_online_objectives_and_refuses_what_is_not_distributed_yet() -> None:
    checked = check_run_config(parse_run_config(RUN_FILE), registry=REGISTRY)
    assert checked.sections["distributed"].strategy == "fsdp" and checked.data_format == "rollout"
    online_dpo = _with(usage={"method": "dpo"}, loop={"kind": "online_dpo"}, online={"samples_per_prompt": 2})
    assert check_run_config(parse_run_config(online_dpo), registry=REGISTRY).data_format == "pairwise"
    cost = {"kind": "rule", "method": "demo_rule", "score": "harm", "role": "cost"}
    for strategy in ("ddp", "fsdp"):  # the critics, sharded under FSDP2; Safe-RLHF's λ on every rank's costs
        for usage, rewards in (
            ({"method": "ppo"}, RUN_FILE["reward"]),
            ({"method": "ppo", "critic": "shared"}, RUN_FILE["reward"]),
            ({"method": "safe_rlhf"}, [*RUN_FILE["reward"], cost]),
        ):
            data = _with(usage=usage, reward=rewards, distributed={"strategy": strategy})
            assert check_run_config(parse_run_config(data), registry=REGISTRY).data_format == "rollout"
    for sections in (  # dynamic sampling, the best-of-n and human loops and self-play rounds run distributed
        {"online": {"dynamic_sampling": True}},
        {"usage": {"method": "ppo"}, "online": {"dynamic_sampling": True}},
        {"usage": {"method": "sft"}, "loop": {"kind": "best_of_n"}, "online": {"samples_per_prompt": 2}},
        {
            "usage": {"method": "dpo"},
            "loop": {"kind": "human_online_dpo"},
            "online": {"samples_per_prompt": 2},
            "train": {"lr": 1e-3, "progress": False},
            "reward": None,
        },
        {"usage": {"method": "dpo"}, "self_play": {"rounds": 2}, "reward": None, "online": None},
    ):
        check_run_config(parse_run_config(_with(**sections)), registry=REGISTRY)


@pytest.mark.slow
@pytest.mark.skipif(not GLOO, reason="torch.distributed with gloo is not available")
def test_grpo_runs_from_the_run_file_on_two_processes(tmp_path: Path) -> None:
    two = run_file_on_processes(RUN_FILE, tmp_path)
    with open(two / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    steps = [row["step"] for row in rows if row.get("reward/mean")]
    assert steps == ["1", "2", "3", "4"]  # once each: only rank 0 writes
    assert [row["step"] for row in rows if row.get("benchmark_accuracy/accuracy")] == ["0", "2", "4"]
    assert all(float(row["completion_length"]) > 0 for row in rows if row.get("reward/mean"))

    checkpoints = sorted(path.name for path in (two / "checkpoints").iterdir())
    assert checkpoints == ["step-000002", "step-000004"]
    last = two / "checkpoints" / "step-000004"
    state = json.loads((last / "state.json").read_text(encoding="utf-8"))["trainer"]
    assert state["online_step"] == 4 and state["sampler"] == {"epoch": 0, "position": 16}
    assert "beta" in state["objective"]

    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    saved = load_file(str(to_safetensors(last, tmp_path / "last.safetensors")))
    final = AutoModelForCausalLM.from_pretrained(two / "model").state_dict()
    assert saved.keys() <= final.keys()
    for name, tensor in saved.items():
        torch.testing.assert_close(final[name], tensor, rtol=0, atol=0, msg=name)

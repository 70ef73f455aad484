"""Online DPO ([loop] kind = "online_dpo"): pairs from ranked samples, exact resume, a run that improves the policy."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
import torch

from prefcore.config import parse_run_config
from prefcore.demo import task
from prefcore.demo.model import build_tiny_model
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.engine.checkpoint import list_checkpoints
from prefcore.engine.models import frozen_copy
from prefcore.engine.online_loops import OnlineDPOTrainer
from prefcore.engine.online_loops import rollout_pairs
from prefcore.engine.trainer import WeightedObjective
from prefcore.errors import ConfigError
from prefcore.pipeline import run_pipeline
from prefcore.registry import Registry
from prefcore.rollout import Rollouts
from prefcore.settings import OnlineLoopConfig
from prefcore.settings import TrainConfig
from prefcore.validation import check_run_config


def test_pairs_are_best_against_worst_and_tied_groups_are_dropped_and_counted() -> None:
    rewards = torch.tensor([0.1, 0.9, 0.5, 0.5, 0.5, 0.5, 2.0, -1.0, 2.0, 0.0, 0.0, -3.0])
    made = rollout_pairs(rewards, 3)
    # group 0: best row 1, worst row 0; group 1 ties; group 2: first max (6), min (7); group 3: 9 over 11
    assert made.pairs == ((1, 0), (6, 7), (9, 11))
    assert made.tied_groups == 1
    assert rollout_pairs(torch.tensor([1.0, 1.0, 0.0, 1.0]), 2).pairs == ((3, 2),)
    with pytest.raises(ValueError, match="groups of 2"):
        rollout_pairs(torch.tensor([1.0, 2.0, 3.0]), 2)


def _rule_reward(rollouts: Rollouts, metadata: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    prompts = [rollouts.prompt_of(index) for index in range(rollouts.num_completions)]
    scores = torch.tensor([task.score_reply(p, r) for p, r in zip(prompts, rollouts.texts, strict=True)])
    return scores, {"rule": scores}


def _trainer(run_dir: Path, *, steps: int = 4, checkpoint_every: int = 0) -> OnlineDPOTrainer:
    tokenizer = build_tokenizer()
    policy = build_tiny_model(tokenizer, seed=0)
    registry = Registry.from_environment()
    dpo = registry.create("usage", "dpo", {"beta": 0.1})
    prompts = list(task.heldout_prompts())[:12]
    config = TrainConfig(steps=steps, lr=1e-2, seed=3, checkpoint_every=checkpoint_every, progress=False)
    return OnlineDPOTrainer(
        policy,
        [WeightedObjective(dpo)],
        prompts,
        [{} for _ in prompts],
        config,
        OnlineLoopConfig(prompts_per_step=4, samples_per_prompt=3, max_new_tokens=6, micro_batch_size=2),
        tokenizer=tokenizer,
        reward=_rule_reward,
        run_dir=run_dir,
        device=torch.device("cpu"),
        reference=frozen_copy(policy),
    )


def _weights(trainer: OnlineDPOTrainer) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in trainer.policy.state_dict().items()}


def test_a_step_logs_pairs_rewards_and_kl_and_a_killed_run_resumes_to_the_same_weights(tmp_path: Path) -> None:
    straight = _trainer(tmp_path / "straight")
    metrics = straight.train_step()
    for key in ("reward/mean", "reward/rule", "pairs", "tied_groups", "kl/k1", "entropy", "loss", "grad_norm"):
        assert key in metrics, key
    assert metrics["pairs"] + metrics["tied_groups"] == 4
    assert metrics["kl/k1"] == pytest.approx(0.0, abs=1e-4)  # the sampling policy is the reference
    assert metrics["reward/chosen"] > metrics["reward/rejected"]
    straight.fit()

    first = _trainer(tmp_path / "resumed", checkpoint_every=2)
    first.online_steps = 2  # killed after its step-2 checkpoint
    first.fit()
    assert [path.name for path in list_checkpoints(tmp_path / "resumed")] == ["step-000002"]
    second = _trainer(tmp_path / "resumed", checkpoint_every=2)
    assert second.resume() and second.online_step == 2
    second.fit()
    for name, value in _weights(straight).items():
        torch.testing.assert_close(_weights(second)[name], value, rtol=0, atol=0, msg=name)


def _run_file(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "run": {"seed": 0, "eval_prompts": 78, "max_new_tokens": 12, "samples_per_prompt": 2, "report_to": []},
        "model": {"demo": True},
        "feedback": {"method": "demo_rule", "count": 400, "demonstrations": 4000},
        "warm_start": {"steps": 300, "batch_size": 64, "lr": 3e-3, "warmup_steps": 20},
        "usage": {"method": "dpo", "beta": 0.1},
        "reward": [{"kind": "rule", "method": "demo_rule"}],
        "loop": {"kind": "online_dpo"},
        "online": {"prompts_per_step": 32, "samples_per_prompt": 2, "max_new_tokens": 12},
        "evaluation": [{"method": "win_rate"}],
        "train": {"steps": 30, "lr": 5e-4, "schedule": "constant", "progress": False},
    }
    data.update(overrides)
    return data


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"usage": {"method": "kto"}}, "trains on pairwise items"),
        ({"usage": {"method": "grpo"}}, "trains online by itself"),
        ({"reward": None}, "has no [[reward]]"),
        ({"online": {"samples_per_prompt": 1}}, "samples_per_prompt >= 2"),
        ({"online": {"minibatch_size": 4}}, "does not use online.minibatch_size"),
        ({"loop": {"kind": "online_dpo", "iterations": 2}}, "does not use iterations"),
        ({"self_play": {"rounds": 1}}, "two loops"),
        ({"loop": {"kind": "best_of_three"}}, "must be one of 'none'"),
    ],
)
def test_online_dpo_run_files_are_checked(overrides: dict[str, Any], message: str) -> None:
    data = _run_file(**overrides)
    data = {name: value for name, value in data.items() if value is not None}
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_run_config(parse_run_config(data))


def test_online_dpo_on_the_demo_raises_the_held_out_win_rate(tmp_path: Path) -> None:
    run_pipeline(parse_run_config(_run_file()), out=str(tmp_path / "run"))
    with open(tmp_path / "run" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    wins = [float(row["win_rate/win_rate"]) for row in rows if row.get("win_rate/win_rate")]
    rewards = [float(row["reward/mean"]) for row in rows if row.get("pairs")]
    assert wins[0] == 0.5 and wins[-1] >= 0.6, wins  # the start is the reference itself
    assert sum(rewards[-10:]) / 10 > sum(rewards[:10]) / 10, rewards

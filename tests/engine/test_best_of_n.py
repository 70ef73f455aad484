"""Best-of-n / rejection-sampling fine-tuning ([loop] kind = "best_of_n"): kept set, exact resume, rising reward."""

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
from prefcore.engine.models import frozen_copy
from prefcore.engine.online_loops import best_of_n_keep
from prefcore.engine.online_loops import run_best_of_n
from prefcore.engine.trainer import WeightedObjective
from prefcore.errors import ConfigError
from prefcore.pipeline import run_pipeline
from prefcore.registry import Registry
from prefcore.rollout import Rollouts
from prefcore.settings import LoopConfig
from prefcore.settings import OnlineLoopConfig
from prefcore.settings import TrainConfig
from prefcore.validation import check_run_config

REWARDS = torch.tensor([0.1, 0.9, 0.5, 0.5, 0.5, 0.5, 2.0, -1.0, 2.0, 0.0, 0.0, -3.0])


def test_best_keeps_the_argmax_of_each_prompt_first_on_ties() -> None:
    assert best_of_n_keep(REWARDS, 3, "best") == [1, 3, 6, 9]
    expected = [3 * group + int(torch.argmax(REWARDS.view(4, 3)[group])) for group in range(4)]
    assert best_of_n_keep(REWARDS, 3, "best") == expected


def test_threshold_and_top_fraction() -> None:
    assert best_of_n_keep(REWARDS, 3, "threshold", threshold=0.5) == [1, 2, 3, 4, 5, 6, 8]
    assert best_of_n_keep(REWARDS, 3, "top_fraction", top_fraction=0.25) == [1, 6, 8]  # ⌈0.25·12⌉ = 3
    assert best_of_n_keep(REWARDS, 3, "top_fraction", top_fraction=0.01) == [6]


def _rule_reward(rollouts: Rollouts, metadata: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    prompts = [rollouts.prompt_of(index) for index in range(rollouts.num_completions)]
    scores = torch.tensor([task.score_reply(p, r) for p, r in zip(prompts, rollouts.texts, strict=True)])
    return scores, {"rule": scores}


def _run(run_dir: Path, policy: torch.nn.Module, tokenizer: Any, *, on_step: Any = None) -> list[dict[str, float]]:
    sft = Registry.from_environment().create("usage", "sft", {})
    prompts = list(task.heldout_prompts())[:8]
    return run_best_of_n(
        policy,
        tokenizer,
        prompts,
        [{} for _ in prompts],
        [WeightedObjective(sft)],
        TrainConfig(steps=4, batch_size=4, lr=1e-2, seed=1, checkpoint_every=2, progress=False),
        OnlineLoopConfig(samples_per_prompt=4, max_new_tokens=6),
        LoopConfig(kind="best_of_n", iterations=2),
        reward=_rule_reward,
        run_dir=run_dir,
        device=torch.device("cpu"),
        reference=frozen_copy(policy),
        on_step=on_step,
    )


def test_metrics_per_iteration_and_a_kill_mid_iteration_resumes_to_the_same_weights(tmp_path: Path) -> None:
    tokenizer = build_tokenizer()
    straight = build_tiny_model(tokenizer, seed=0)
    history = _run(tmp_path / "straight", straight, tokenizer)
    assert [metrics["iteration"] for metrics in history] == [0.0, 1.0, 2.0]  # + the final measurement
    first = history[0]
    assert first["kept"] == 8 and first["reward/kept_mean"] >= first["reward/mean"]
    assert first["kl/k1"] == pytest.approx(0.0, abs=1e-4) and history[-1]["kl/sequence"] > 0

    def dying(step: int, metrics: Any) -> None:
        if step == 7:  # iteration 2's third SFT step: after its step-2 checkpoint, before the end
            raise KeyboardInterrupt

    killed = build_tiny_model(tokenizer, seed=0)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "killed", killed, tokenizer, on_step=dying)
    assert (tmp_path / "killed" / "iteration-1" / "model").is_dir()
    resumed = build_tiny_model(tokenizer, seed=0)
    _run(tmp_path / "killed", resumed, tokenizer)
    for name, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=0, atol=0, msg=name)


def _run_file(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "run": {"seed": 0, "eval_prompts": 32, "max_new_tokens": 12, "report_to": []},
        "model": {"demo": True},
        "feedback": {"method": "demo_rule", "count": 400, "demonstrations": 4000},
        "warm_start": {"steps": 300, "batch_size": 64, "lr": 3e-3, "warmup_steps": 20},
        "usage": {"method": "sft"},
        "reward": [{"kind": "rule", "method": "demo_rule"}],
        "loop": {"kind": "best_of_n", "iterations": 2, "prompts": 96},
        "online": {"samples_per_prompt": 6, "max_new_tokens": 12},
        "evaluation": [{"method": "kl"}],
        "train": {"steps": 25, "batch_size": 32, "lr": 5e-4, "schedule": "constant", "progress": False},
    }
    data.update(overrides)
    return {name: value for name, value in data.items() if value is not None}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"usage": {"method": "dpo"}}, "trains on sft items"),
        ({"online": {"samples_per_prompt": 4, "prompts_per_step": 8}}, "does not use online.prompts_per_step"),
        ({"train": {"epochs": 1.0}}, "[train] epochs"),
        ({"loop": {"kind": "best_of_n", "top_fraction": 0.0}}, "top_fraction must be in (0, 1]"),
        ({"reward": None}, "has no [[reward]]"),
    ],
)
def test_best_of_n_run_files_are_checked(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(
        ConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(").replace(")", r"\)")
    ):
        check_run_config(parse_run_config(_run_file(**overrides)))


def test_iterated_best_of_n_on_the_demo_raises_the_mean_reward(tmp_path: Path) -> None:
    run_pipeline(parse_run_config(_run_file()), out=str(tmp_path / "run"))
    with open(tmp_path / "run" / "metrics.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("iteration")]
    rewards = [float(row["reward/mean"]) for row in rows]
    kl = [float(row["kl/sequence"]) for row in rows]
    assert [float(row["iteration"]) for row in rows] == [0.0, 1.0, 2.0]
    assert rewards[0] < rewards[1] < rewards[2], rewards
    assert rewards[2] - rewards[0] > 0.5, rewards
    assert kl[0] == pytest.approx(0.0, abs=1e-4) and kl[2] > kl[1] > 0, kl

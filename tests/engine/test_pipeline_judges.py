"""win_rate on the user's own data file: every [judge] kind gives a win rate; no judge fails first.

The data is a small JSONL of pairs read by ``preference_file``, which has no judge of its
own: before the [judge] section this run failed at its first evaluation pass, after the run
folder, the model and (with a warm start) training had started.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import LlamaConfig
from transformers import LlamaForCausalLM

from prefcore import hookimpl
from prefcore.config import parse_run_config
from prefcore.data import write_jsonl
from prefcore.demo.task import preference_pairs
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.errors import ConfigError
from prefcore.pipeline import run_pipeline
from prefcore.registry import Registry

EVAL_PROMPTS = 3


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    write_jsonl(preference_pairs(count=32, seed=5), path)
    return path


def run_file(pairs_file: Path, judge: dict[str, Any] | None, **sections: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "run": {"seed": 1, "heldout_fraction": 0.25, "eval_prompts": EVAL_PROMPTS, "max_new_tokens": 4},
        "model": {"demo": True},
        "feedback": {"method": "preference_file", "path": str(pairs_file)},
        "usage": {"method": "dpo", "beta": 0.1},
        "evaluation": [{"method": "win_rate", "bootstrap_samples": 50}],
        "train": {"steps": 2, "batch_size": 4, "lr": 1e-3, "progress": False, "checkpoint_every": 0},
    }
    data.update(sections)
    if judge is not None:
        data["judge"] = judge
    return data


def assert_judged_win_rate(metrics: dict[str, float]) -> None:
    assert 0.0 <= metrics["win_rate/win_rate"] <= 1.0
    assert metrics["win_rate/num_pairs"] == EVAL_PROMPTS
    assert metrics["win_rate/win_rate_low"] <= metrics["win_rate/win_rate"] <= metrics["win_rate/win_rate_high"]


class _Watch:
    """Counts what the run did: its start and every training step."""

    def __init__(self) -> None:
        self.events: list[str] = []

    @hookimpl
    def prefcore_run_start(self) -> None:
        self.events.append("run_start")

    @hookimpl
    def prefcore_train_step_end(self, step: int) -> None:
        self.events.append(f"step {step}")


def test_win_rate_without_any_judge_fails_before_the_run_starts(pairs_file: Path, tmp_path: Path) -> None:
    registry = Registry.from_environment()
    watch = _Watch()
    registry.plugin_manager.register(watch, name="watch")
    config = run_file(pairs_file, None, warm_start={"steps": 2, "batch_size": 4})
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"'win_rate' needs a judge.*\[judge\]") as excinfo:
        run_pipeline(parse_run_config(config), out=str(tmp_path / "run"), registry=registry)
    assert time.perf_counter() - started < 5.0
    assert excinfo.value.field == "judge"
    assert watch.events == []  # no run start, no warm-start or training step
    assert not (tmp_path / "run").exists()


def test_rule_judge_on_own_data(pairs_file: Path, tmp_path: Path) -> None:
    # The data is the demo task's, so its rule can judge the completions.
    config = run_file(pairs_file, {"kind": "rule", "method": "demo_rule", "count": 1, "demonstrations": 0})
    result = run_pipeline(parse_run_config(config), out=str(tmp_path / "run"))
    assert_judged_win_rate(result.metrics)
    assert result.metrics["win_rate/position_consistency"] == 1.0  # a deterministic rule is order-consistent


def test_saved_reward_model_judge_on_own_data(pairs_file: Path, tmp_path: Path) -> None:
    from prefcore.engine.reward_model import build_reward_model

    folder = tmp_path / "rm"
    build_reward_model(build_tokenizer(), demo=True, seed=4).save(folder)
    config = run_file(pairs_file, {"kind": "preference_model", "path": str(folder)})
    result = run_pipeline(parse_run_config(config), out=str(tmp_path / "run"))
    assert_judged_win_rate(result.metrics)
    # σ(Δ) and σ(−Δ) sum to one: each pair's two orders agree and the first position gets 0.5 on average.
    assert result.metrics["win_rate/first_position_preference"] == pytest.approx(0.5)


def test_reward_model_trained_in_the_run_is_the_judge(pairs_file: Path, tmp_path: Path) -> None:
    config = run_file(
        pairs_file,
        {"kind": "preference_model", "path": "trained", "temperature": 0.5},
        preference_model={"method": "bradley_terry"},
        reward_model={"steps": 2, "batch_size": 4, "demo": True},
    )
    result = run_pipeline(parse_run_config(config), out=str(tmp_path / "run"))
    assert_judged_win_rate(result.metrics)
    assert result.metrics["win_rate/first_position_preference"] == pytest.approx(0.5)


@pytest.fixture(scope="module")
def llm_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama judge from a transformers config, saved with its tokenizer (answer labels 'a' / 'b')."""
    tokenizer = build_tokenizer(("a", "b", "answer", "which", "is", "better", "what", "colour", "sky", "blue"))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(7)
    folder = tmp_path_factory.mktemp("judge_model")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_llm_judge_on_own_data(pairs_file: Path, llm_folder: Path, tmp_path: Path) -> None:
    config = run_file(pairs_file, {"kind": "llm", "model_path": str(llm_folder), "batch_size": 2})
    result = run_pipeline(parse_run_config(config), out=str(tmp_path / "run"))
    assert_judged_win_rate(result.metrics)
    # One order per call: the evaluator sees (and reports) the random judge's position preference.
    first = result.metrics["win_rate/first_position_preference"]
    assert math.isfinite(first) and first != pytest.approx(0.5, abs=1e-6)

"""The pipeline end to end on the demo model: outputs, exact resume, cached reference, combinations, LoRA."""

from __future__ import annotations

import csv
import importlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from prefcore import hookimpl
from prefcore.config import parse_run_config
from prefcore.data import write_jsonl
from prefcore.demo.task import preference_pairs
from prefcore.errors import ConfigError
from prefcore.pipeline import run_pipeline
from prefcore.registry import Registry


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    write_jsonl(preference_pairs(count=96, seed=3), path)
    return path


def _config(pairs_file: Path, **sections: dict) -> dict:
    data = {
        "run": {"seed": 1, "heldout_fraction": 0.25, "eval_prompts": 4, "max_new_tokens": 6},
        "model": {"demo": True},
        "feedback": {"method": "preference_file", "path": str(pairs_file)},
        "usage": {"method": "dpo", "beta": 0.1},
        "evaluation": [{"method": "preference_accuracy"}],
        "train": {"steps": 6, "batch_size": 4, "lr": 3e-3, "progress": False, "checkpoint_every": 3},
    }
    for name, values in sections.items():
        data[name] = values if not isinstance(data.get(name), dict) else {**data[name], **values}
    return data


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _train_losses(run_dir: Path) -> dict[int, float]:
    return {int(row["step"]): float(row["loss"]) for row in _rows(run_dir) if row.get("loss")}


def test_run_writes_a_complete_run_folder(pairs_file: Path, tmp_path: Path) -> None:
    result = run_pipeline(parse_run_config(_config(pairs_file)), out=str(tmp_path / "run"))
    run_dir = result.run_dir
    for name in ("config.toml", "config.json", "metrics.csv", "report.md", "loss.png"):
        assert (run_dir / name).is_file(), name
    assert sorted(_train_losses(run_dir)) == [1, 2, 3, 4, 5, 6]
    assert "preference_accuracy/accuracy" in result.metrics
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(run_dir / "model", local_files_only=True)
    saved = load_file(str(run_dir / "model" / "model.safetensors"))
    torch.testing.assert_close(model.lm_head.weight, saved["lm_head.weight"])
    assert not list((run_dir / "checkpoints").glob(".*")), "no staging folder may remain"


class _KillAt:
    """A lifecycle plugin that interrupts the run after a given step, like a killed process."""

    def __init__(self, step: int) -> None:
        self.step = step

    @hookimpl
    def prefcore_train_step_end(self, step: int) -> None:
        if step == self.step:
            raise KeyboardInterrupt


def test_killed_run_resumes_with_identical_metrics_and_weights(pairs_file: Path, tmp_path: Path) -> None:
    config = parse_run_config(_config(pairs_file))
    straight = run_pipeline(config, out=str(tmp_path / "straight")).run_dir

    registry = Registry.from_environment()
    registry.plugin_manager.register(_KillAt(5), name="kill-at-5")
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(config, out=str(tmp_path / "resumed"), registry=registry)
    assert _train_losses(tmp_path / "resumed").keys() == {1, 2, 3, 4, 5}
    resumed = run_pipeline(config, out=str(tmp_path / "resumed"), resume=True).run_dir

    assert _train_losses(resumed) == pytest.approx(_train_losses(straight), rel=1e-6)
    straight_weights = load_file(str(straight / "model" / "model.safetensors"))
    resumed_weights = load_file(str(resumed / "model" / "model.safetensors"))
    for name, tensor in straight_weights.items():
        torch.testing.assert_close(resumed_weights[name], tensor, rtol=1e-6, atol=1e-7)


def test_resume_refuses_a_different_run_file(pairs_file: Path, tmp_path: Path) -> None:
    run_pipeline(parse_run_config(_config(pairs_file)), out=str(tmp_path / "run"))
    changed = parse_run_config(_config(pairs_file, usage={"beta": 0.5}))
    with pytest.raises(ConfigError, match="differs"):
        run_pipeline(changed, out=str(tmp_path / "run"), resume=True)
    with pytest.raises(ConfigError, match="not empty"):
        run_pipeline(changed, out=str(tmp_path / "run"))


def test_precomputed_reference_trains_identically(pairs_file: Path, tmp_path: Path) -> None:
    model_ref = run_pipeline(parse_run_config(_config(pairs_file)), out=str(tmp_path / "model_ref")).run_dir
    cached = run_pipeline(
        parse_run_config(_config(pairs_file, run={"reference": "precomputed"})), out=str(tmp_path / "cached")
    ).run_dir
    assert (cached / "reference_logps.safetensors").is_file()
    assert _train_losses(cached) == pytest.approx(_train_losses(model_ref), rel=1e-5, abs=1e-6)


def test_weighted_objectives_train_together(pairs_file: Path, tmp_path: Path) -> None:
    usage = [{"method": "dpo", "beta": 0.1}, {"method": "sft", "weight": 0.5}]
    config = _config(pairs_file)
    config["usage"] = usage
    run_dir = run_pipeline(parse_run_config(config), out=str(tmp_path / "combo")).run_dir
    row = next(row for row in _rows(run_dir) if row.get("loss"))
    assert row["dpo/rewards/margins"] != "" and row["sft/nll"] != ""


def test_lora_including_lm_head_trains_only_adapters(pairs_file: Path, tmp_path: Path) -> None:
    importlib.import_module("peft")
    config = _config(pairs_file, model={"demo": True, "lora_rank": 4, "lora_targets": ["q_proj", "v_proj", "lm_head"]})
    run_dir = run_pipeline(parse_run_config(config), out=str(tmp_path / "lora")).run_dir
    trained = load_file(str(next((run_dir / "checkpoints").iterdir()) / "model.safetensors"))
    assert trained and all("lora_" in name for name in trained)
    assert any("lm_head" in name for name in trained)
    lora_b = [tensor for name, tensor in trained.items() if "lora_B" in name]
    assert lora_b and all(tensor.abs().sum() > 0 for tensor in lora_b), "LoRA B starts at zero; training moves it"


def test_self_play_rounds_move_the_reference(tmp_path: Path) -> None:
    config = {
        "run": {"seed": 0, "eval_prompts": 4, "max_new_tokens": 8, "threads": 1},
        "model": {"demo": True},
        "feedback": {"method": "demo_rule", "count": 16, "demonstrations": 64},
        "warm_start": {"steps": 20, "batch_size": 16},
        "self_play": {"rounds": 2, "prompts": 24, "max_new_tokens": 12},
        "usage": {"method": "dpo", "beta": 0.3},
        "evaluation": [{"method": "win_rate"}],
        "train": {"steps": 3, "batch_size": 8, "lr": 1e-3, "progress": False},
    }
    run_dir = run_pipeline(parse_run_config(config), out=str(tmp_path / "spin")).run_dir
    assert (run_dir / "round-1" / "model").is_dir() and (run_dir / "round-2" / "model").is_dir()
    assert sorted(_train_losses(run_dir)) == [1, 2, 3, 4, 5, 6]
    rows = _rows(run_dir)
    assert {row["step"] for row in rows if row.get("win_rate/win_rate")} == {"0", "6"}


def test_reference_over_generation_prefers_the_human_answer() -> None:
    from prefcore.data import BinaryLabel
    from prefcore.engine.self_play import reference_over_generation

    demonstrations = [
        BinaryLabel("what colour is the sky ?", "blue", True),
        BinaryLabel("add one and two", "three", True),
    ]
    pairs = reference_over_generation(demonstrations, ["red", "three"])
    assert [(pair.chosen, pair.rejected) for pair in pairs] == [("blue", "red")]
    assert pairs[0].source == "self_play"


def test_feedback_to_preference_model_to_usage_chain(tmp_path: Path) -> None:
    config = {
        "run": {"seed": 0, "eval_prompts": 4, "max_new_tokens": 8, "threads": 1, "reward_labels": True},
        "model": {"demo": True},
        "feedback": {"method": "demo_rule", "count": 96, "demonstrations": 64},
        "warm_start": {"steps": 10, "batch_size": 16},
        "preference_model": {"method": "bradley_terry"},
        "reward_model": {"steps": 20, "batch_size": 16, "lr": 3e-3},
        "usage": {"method": "dpo", "beta": 0.3},
        "evaluation": [{"method": "reward_score"}],
        "train": {"steps": 3, "batch_size": 8, "lr": 1e-3, "progress": False},
    }
    result = run_pipeline(parse_run_config(config), out=str(tmp_path / "chain"))
    assert (result.run_dir / "reward_model" / "model").is_dir()
    rows = _rows(result.run_dir)
    assert any(row.get("reward_model/loss") for row in rows)
    assert "reward_score/policy_score" in result.metrics and "reward_score/reference_score" in result.metrics


def test_relabel_pairs_orders_by_score() -> None:
    from prefcore.data import PairwiseComparison
    from prefcore.pipeline import relabel_pairs

    pairs = [PairwiseComparison("p", "long answer", "short"), PairwiseComparison("q", "aa", "bb")]
    by_length = lambda prompts, completions: [float(len(text)) for text in completions]
    [relabelled] = relabel_pairs(pairs, by_length)  # "aa" vs "bb" ties and is left out
    assert (relabelled.chosen, relabelled.rejected) == ("long answer", "short")
    assert relabelled.probability == pytest.approx(1 / (1 + 2.718281828**-6), rel=1e-6)

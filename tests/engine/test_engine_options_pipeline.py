"""The engine options through ``run_pipeline``: the run file reaches every stage that uses them.

The options' own behaviour is tested in ``test_engine_options.py``; here a short demo run
checks that ``[train] epochs``, ``gradient_checkpointing``, ``max_prompt_length``, the data
order and ``[run] report_to`` arrive where they act, and that a LoRA run's folder holds
the PEFT adapter.
"""

from __future__ import annotations

import csv
import importlib
import importlib.machinery
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from prefcore import hookimpl
from prefcore.config import parse_run_config
from prefcore.data import write_jsonl
from prefcore.demo.task import preference_pairs
from prefcore.errors import ConfigError
from prefcore.errors import DataError
from prefcore.pipeline import run_pipeline
from prefcore.registry import Registry
from prefcore.validation import check_run_config


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    write_jsonl(preference_pairs(count=48, seed=3), path)
    return path


def _config(pairs_file: Path, **sections: dict) -> dict:
    data = {
        "run": {"seed": 1, "heldout_fraction": 0.25, "eval_prompts": 2, "max_new_tokens": 4},
        "model": {"demo": True},
        "feedback": {"method": "preference_file", "path": str(pairs_file)},
        "usage": {"method": "dpo", "beta": 0.1},
        "evaluation": [{"method": "preference_accuracy"}],
        "train": {"steps": 4, "batch_size": 8, "lr": 3e-3, "progress": False},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return data


def _run(config: dict, out: Path, **kwargs: Any) -> Path:
    return run_pipeline(parse_run_config(config), out=str(out), **kwargs).run_dir


def _losses(run_dir: Path, column: str = "loss") -> dict[int, float]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return {int(row["step"]): float(row[column]) for row in csv.DictReader(handle) if row.get(column)}


def test_epochs_decide_the_number_of_steps(pairs_file: Path, tmp_path: Path) -> None:
    config = _config(pairs_file)
    del config["train"]["steps"]
    one = _losses(_run({**config, "train": {**config["train"], "epochs": 1}}, tmp_path / "one"))
    two = _losses(_run({**config, "train": {**config["train"], "epochs": 2}}, tmp_path / "two"))
    # 36 training pairs (48 less the held-out quarter) in batches of 8: 5 micro-batches, one step each
    assert sorted(one) == [1, 2, 3, 4, 5] and sorted(two) == list(range(1, 11))


def test_epochs_with_self_play_are_refused(pairs_file: Path) -> None:
    config = _config(pairs_file, train={"epochs": 1}, self_play={"rounds": 1})
    with pytest.raises(ConfigError, match=r"\[self_play\] makes new pairs each round"):
        check_run_config(parse_run_config(config))


def test_gradient_checkpointing_trains_identically(pairs_file: Path, tmp_path: Path) -> None:
    warm = {"steps": 2, "batch_size": 8}
    plain = _run(_config(pairs_file, warm_start=warm), tmp_path / "plain")
    checkpointed = _run(_config(pairs_file, warm_start=warm, train={"gradient_checkpointing": True}), tmp_path / "gc")
    for column in ("loss", "warm_start/loss"):
        assert _losses(plain, column), column
        assert _losses(checkpointed, column) == pytest.approx(_losses(plain, column), rel=1e-5, abs=1e-7)


def test_max_prompt_length_reaches_the_tokeniser(pairs_file: Path, tmp_path: Path) -> None:
    config = _config(pairs_file, train={"max_prompt_length": 1, "truncation": "error"})
    with pytest.raises(DataError, match="max_prompt_length=1"):
        _run(config, tmp_path / "strict")
    cut = _losses(_run(_config(pairs_file, train={"max_prompt_length": 2}), tmp_path / "cut"))
    whole = _losses(_run(_config(pairs_file), tmp_path / "whole"))
    assert cut[1] == pytest.approx(whole[1])  # policy = reference at step 1: loss log 2 either way
    assert cut != pytest.approx(whole)


class _KillAt:
    def __init__(self, step: int) -> None:
        self.step = step

    @hookimpl
    def prefcore_train_step_end(self, step: int) -> None:
        if step == self.step:
            raise KeyboardInterrupt


@pytest.mark.parametrize("order", [{"shuffle": False, "group_by_length": False}, {"group_by_length": False}])
def test_data_order_resumes_exactly(pairs_file: Path, tmp_path: Path, order: dict[str, bool]) -> None:
    config = _config(pairs_file, train={"steps": 6, "batch_size": 4, "checkpoint_every": 3, **order})
    straight = _run(config, tmp_path / "straight")
    registry = Registry.from_environment()
    registry.plugin_manager.register(_KillAt(5), name="kill-at-5")
    with pytest.raises(KeyboardInterrupt):
        _run(config, tmp_path / "resumed", registry=registry)
    resumed = _run(config, tmp_path / "resumed", resume=True)
    assert _losses(resumed) == pytest.approx(_losses(straight), rel=1e-6)
    default = _losses(_run(_config(pairs_file, train={"steps": 6, "batch_size": 4}), tmp_path / "default"))
    assert _losses(straight) != pytest.approx(default), "the order option must change the batches"


def test_report_to_wandb_and_none(pairs_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[dict[str, Any]] = []

    class Run:
        def __init__(self, **init: Any) -> None:
            self.init, self.logged, self.finished = init, [], False
            runs.append(self.__dict__)

        def define_metric(self, name: str, step_metric: str | None = None) -> None:
            pass

        def log(self, values: dict[str, float]) -> None:
            self.logged.append(values)

        def finish(self) -> None:
            self.finished = True

    wandb = types.ModuleType("wandb")
    wandb.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    wandb.init = Run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", wandb)

    run_dir = _run(_config(pairs_file, run={"report_to": ["wandb"], "name": "tiny"}), tmp_path / "wandb")
    (run,) = runs
    assert run["finished"] and run["init"]["name"] == "tiny" and run["init"]["config"]["usage"]["method"] == "dpo"
    assert json.loads((run_dir / "config.json").read_text())["run"]["report_to"] == ["wandb"]
    train_steps = [values["train/step"] for values in run["logged"] if "train/loss" in values]
    eval_steps = [values["eval/step"] for values in run["logged"] if "eval/step" in values]
    assert train_steps == [1, 2, 3, 4] and eval_steps == [0, 4]
    assert not (run_dir / "tensorboard").exists() and (run_dir / "metrics.csv").is_file()

    quiet = _run(_config(pairs_file, run={"report_to": []}), tmp_path / "csv_only")
    assert (quiet / "metrics.csv").is_file() and not (quiet / "tensorboard").exists()


def test_default_run_keeps_tensorboard(pairs_file: Path, tmp_path: Path) -> None:
    importlib.import_module("tensorboard")  # a dev dependency
    assert (_run(_config(pairs_file), tmp_path / "run") / "tensorboard").is_dir()


def test_lora_run_folder_holds_the_adapter(pairs_file: Path, tmp_path: Path) -> None:
    importlib.import_module("peft")
    run_dir = _run(_config(pairs_file, model={"lora_rank": 4, "lora_targets": ["q_proj", "v_proj"]}), tmp_path / "l")
    adapter = run_dir / "model" / "adapter"
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 4

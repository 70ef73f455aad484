"""The pipeline as a library call and a long-running job: data split, checkpoints, resume, loggers, progress."""

from __future__ import annotations

import csv
import json
import logging
import random
from pathlib import Path

import pytest
import torch

from prefcore import hookimpl
from prefcore.config import parse_run_config
from prefcore.data import PairwiseComparison
from prefcore.data import write_jsonl
from prefcore.demo.task import preference_pairs
from prefcore.errors import ConfigError
from prefcore.pipeline import run_pipeline
from prefcore.registry import Registry
from prefcore.settings import RunSettings
from prefcore.settings import WarmStartConfig
from prefcore.stages.feedback import gather_feedback
from prefcore.validation import check_run_config


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
        "train": {"steps": 4, "batch_size": 4, "lr": 3e-3, "progress": False, "checkpoint_every": 2},
    }
    for name, values in sections.items():
        merge = isinstance(data.get(name), dict) and isinstance(values, dict)
        data[name] = {**data[name], **values} if merge else values
    return data


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


class _Source:
    """A feedback source of fixed records, with or without reserved evaluation prompts."""

    def __init__(self, records: list, reserved: list | None = None) -> None:
        self._records, self._reserved = records, reserved

    def records(self) -> list:
        return self._records

    def evaluation_prompts(self) -> list | None:
        return self._reserved

    def demonstrations(self) -> None:
        return None


# -- held-out data --------------------------------------------------------------------------


def test_the_feedback_is_split_once_and_nothing_is_lost() -> None:
    records = [PairwiseComparison(f"prompt {i % 40}", f"good {i}", f"bad {i}") for i in range(100)]
    data = gather_feedback([_Source(records)], RunSettings(heldout_fraction=0.2, eval_prompts=1000, seed=3))
    assert len(data.train) + len(data.heldout) == 100  # before: a second split dropped ~19% of the file
    assert 18 <= len(data.heldout) <= 22
    train_prompts = {record.prompt for record in data.train}
    heldout_prompts = {record.prompt for record in data.heldout}
    assert not train_prompts & heldout_prompts  # whole prompts are held out
    assert set(data.prompts) == heldout_prompts  # the evaluation prompts are the held-out records' prompts
    again = gather_feedback([_Source(records)], RunSettings(heldout_fraction=0.2, eval_prompts=1000, seed=3))
    assert again.heldout == data.heldout  # seeded


def test_reserved_prompts_are_evaluated_and_the_records_split_once() -> None:
    records = [PairwiseComparison(f"p{i}", "a", "b") for i in range(50)]
    data = gather_feedback([_Source(records, reserved=["x", "y"])], RunSettings(heldout_fraction=0.1))
    assert data.prompts == ["x", "y"]
    assert len(data.train) == 45 and len(data.heldout) == 5


def test_heldout_files_replace_the_split(tmp_path: Path) -> None:
    heldout = tmp_path / "heldout.jsonl"
    write_jsonl([PairwiseComparison("held", "a", "b"), PairwiseComparison("out", "c", "d")], heldout)
    records = [PairwiseComparison(f"p{i}", "a", "b") for i in range(30)]
    settings = RunSettings(heldout=str(heldout), heldout_fraction=0.5)
    data = gather_feedback([_Source(records)], settings)
    assert data.train == records  # every feedback record trains
    assert [record.prompt for record in data.heldout] == ["held", "out"]
    assert data.prompts == ["held", "out"]
    assert "heldout.jsonl" in data.heldout_from
    two = gather_feedback([_Source(records)], RunSettings(heldout=[str(heldout), str(heldout)]))
    assert len(two.heldout) == 4


def test_a_missing_heldout_or_warm_start_file_is_refused_at_validation(pairs_file: Path, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.jsonl")
    with pytest.raises(ConfigError, match=r"heldout.*nope\.jsonl"):
        run_pipeline(parse_run_config(_config(pairs_file, run={"heldout": missing})), out=str(tmp_path / "a"))
    with pytest.raises(ConfigError, match=r"data.*nope\.jsonl"):
        run_pipeline(
            parse_run_config(_config(pairs_file, warm_start={"steps": 2, "data": missing})), out=str(tmp_path / "b")
        )
    with pytest.raises(ValueError, match="steps = 0"):
        WarmStartConfig(data=str(pairs_file))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_report_and_the_log_give_the_split(
    pairs_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="prefcore"):
        run_dir = run_pipeline(parse_run_config(_config(pairs_file)), out=str(tmp_path / "run")).run_dir
    report = (run_dir / "report.md").read_text()
    counts = {}
    for label in ("training records", "held-out records", "evaluation prompts"):
        line = next(line for line in report.splitlines() if line.startswith(f"| {label} |"))
        counts[label] = int(line.split("|")[2])
    assert counts["training records"] + counts["held-out records"] == 96
    assert counts["evaluation prompts"] == 4
    assert f"{counts['training records']} training records" in caplog.text


# -- checkpoints and resume -----------------------------------------------------------------


def test_checkpoint_every_zero_writes_no_checkpoint(pairs_file: Path, tmp_path: Path) -> None:
    config = _config(pairs_file, train={"checkpoint_every": 0})
    run_dir = run_pipeline(parse_run_config(config), out=str(tmp_path / "run")).run_dir
    assert not list(run_dir.glob("checkpoints/*")), "checkpoint_every = 0 must write no checkpoint"
    assert (run_dir / "model" / "model.safetensors").is_file()


def test_checkpoint_every_saves_the_last_step_once(pairs_file: Path, tmp_path: Path) -> None:
    config = _config(pairs_file, train={"steps": 5, "checkpoint_every": 2, "keep_checkpoints": 5})
    run_dir = run_pipeline(parse_run_config(config), out=str(tmp_path / "run")).run_dir
    assert sorted(path.name for path in (run_dir / "checkpoints").iterdir()) == [
        "step-000002",
        "step-000004",
        "step-000005",
    ]


def test_resuming_from_the_final_checkpoint_keeps_its_metrics_row(
    pairs_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = parse_run_config(_config(pairs_file))
    run_dir = run_pipeline(config, out=str(tmp_path / "run")).run_dir
    before = _rows(run_dir)
    with caplog.at_level(logging.INFO, logger="prefcore"):
        run_pipeline(config, out=str(run_dir), resume=True)  # killed after the last checkpoint, say
    assert "resumed from step 4" in caplog.text
    after = _rows(run_dir)
    train_steps = [row["step"] for row in after if row.get("loss")]
    assert train_steps == ["1", "2", "3", "4"]  # before the fix the step-4 row was dropped
    evaluations = [row["step"] for row in after if row.get("preference_accuracy/accuracy")]
    assert evaluations == ["0", "4"]
    assert [row for row in after if row.get("loss")] == [row for row in before if row.get("loss")]


# -- a library call -------------------------------------------------------------------------


def test_two_runs_on_one_registry_write_their_own_metrics(pairs_file: Path, tmp_path: Path) -> None:
    registry = Registry.from_environment()
    config = parse_run_config(_config(pairs_file, train={"steps": 2}))
    first = run_pipeline(config, out=str(tmp_path / "first"), registry=registry).run_dir
    first_rows = _rows(first)
    second = run_pipeline(config, out=str(tmp_path / "second"), registry=registry).run_dir
    assert _rows(first) == first_rows  # before: the second run appended to the first run's file
    assert [row["step"] for row in _rows(second) if row.get("loss")] == ["1", "2"]
    assert not [name for name, _ in registry.plugin_manager.list_name_plugin() if "csv_metrics" in str(name)]


def test_the_callers_seeds_and_threads_are_left_alone(pairs_file: Path, tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    torch.manual_seed(1234)
    random.seed(1234)
    torch_state = torch.get_rng_state()
    python_state = random.getstate()
    config = _config(pairs_file, run={"threads": threads + 1, "seed": 7}, train={"steps": 1})
    run_pipeline(parse_run_config(config), out=str(tmp_path / "run"))
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert random.getstate() == python_state


def test_transformers_verbosity_and_bars_are_restored(pairs_file: Path, tmp_path: Path) -> None:
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    run_pipeline(parse_run_config(_config(pairs_file, train={"steps": 1})), out=str(tmp_path / "run"))
    assert hf_logging.get_verbosity() == verbosity
    assert hf_logging.is_progress_bar_enabled()


class _BrokenLogger:
    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def prefcore_train_step_end(self, step: int) -> None:
        self.calls += 1
        raise RuntimeError(f"tracker unreachable at step {step}")


def test_a_failing_logger_plugin_is_named_and_the_run_goes_on(
    pairs_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry.from_environment()
    broken = _BrokenLogger()
    registry.plugin_manager.register(broken, name="broken-tracker")
    with caplog.at_level(logging.WARNING, logger="prefcore"):
        result = run_pipeline(parse_run_config(_config(pairs_file)), out=str(tmp_path / "run"), registry=registry)
    assert broken.calls == 4  # still called every step
    failures = [record for record in caplog.records if "broken-tracker" in record.getMessage()]
    assert len(failures) == 2  # the first failure in full, then a count at the end
    assert "prefcore_train_step_end" in failures[0].getMessage()
    assert "tracker unreachable at step 1" in failures[0].getMessage()
    assert "failed 4 times" in failures[1].getMessage()
    assert [row["step"] for row in _rows(result.run_dir) if row.get("loss")] == ["1", "2", "3", "4"]
    assert (result.run_dir / "report.md").is_file()


# -- progress and logging -------------------------------------------------------------------


def test_stages_log_their_progress_and_losses(
    pairs_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = _config(
        pairs_file,
        warm_start={"steps": 3, "batch_size": 8},
        usage=[{"method": "dpo", "beta": 0.1}, {"method": "sft", "weight": 0.5}],
        train={"steps": 3, "progress": True},
    )
    with caplog.at_level(logging.INFO, logger="prefcore"):
        run_dir = run_pipeline(parse_run_config(config), out=str(tmp_path / "run")).run_dir
    messages = caplog.text
    for stage in ("warm start: step 3/3", "training: step 3/3", "evaluation at step 0", "evaluation at step 3"):
        assert stage in messages, stage
    assert "warm start: 3 steps" in messages and "last loss" in messages
    rows = _rows(run_dir)
    assert [row["step"] for row in rows if row.get("warm_start/loss")] == ["1", "2", "3"]
    for row in (row for row in rows if row.get("loss")):
        combined = float(row["dpo/loss"]) + 0.5 * float(row["sft/loss"])
        assert float(row["loss"]) == pytest.approx(combined, rel=1e-5)


def test_warm_start_trains_on_a_demonstrations_file(pairs_file: Path, tmp_path: Path) -> None:
    demonstrations = tmp_path / "demos.jsonl"
    lines = [
        {"messages": [{"role": "user", "content": f"say {word}"}, {"role": "assistant", "content": word}]}
        for word in ("yes", "no", "maybe", "never")
    ] + [{"prompt": f"repeat {word}", "completion": word} for word in ("a", "b", "c", "d")]
    demonstrations.write_text("".join(json.dumps(line) + "\n" for line in lines * 2), encoding="utf-8")
    config = _config(pairs_file, warm_start={"steps": 2, "batch_size": 4, "data": str(demonstrations)})
    run_dir = run_pipeline(parse_run_config(config), out=str(tmp_path / "run")).run_dir
    assert (run_dir / "warm_start" / "model").is_dir()
    assert [row["step"] for row in _rows(run_dir) if row.get("warm_start/loss")] == ["1", "2"]
    assert "| warm-start records | 16 from file" in (run_dir / "report.md").read_text()


def test_no_print_outside_the_command_line() -> None:
    import prefcore

    root = Path(prefcore.__file__).parent
    allowed = {"cli.py", "run.py", "annotate.py"}  # command-line output and the interactive annotator
    offenders = [
        f"{path.relative_to(root)}:{number}"
        for path in root.rglob("*.py")
        if path.name not in allowed
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if line.lstrip().startswith("print(")
    ]
    assert not offenders, f"use logging, not print: {offenders}"


# -- several preference models ---------------------------------------------------------------


def test_every_preference_model_section_trains_and_scores_as_an_ensemble(tmp_path: Path) -> None:
    config = {
        "run": {"seed": 0, "eval_prompts": 2, "max_new_tokens": 4, "ensemble": "min"},
        "model": {"demo": True},
        "feedback": {"method": "demo_rule", "count": 32},
        "preference_model": [{"method": "bradley_terry"}, {"method": "margin_bradley_terry"}],
        "reward_model": {"steps": 2, "batch_size": 8, "heldout_fraction": 0.0},
        "usage": {"method": "dpo", "beta": 0.3},
        "evaluation": [{"method": "reward_score"}],
        "train": {"steps": 1, "batch_size": 8, "progress": False},
    }
    result = run_pipeline(parse_run_config(config), out=str(tmp_path / "run"))
    folder = result.run_dir / "reward_model"
    assert (folder / "0-bradley_terry" / "model").is_dir() and (folder / "1-margin_bradley_terry" / "model").is_dir()
    rows = _rows(result.run_dir)
    assert any(row.get("reward_model/0-bradley_terry/loss") for row in rows)
    assert any(row.get("reward_model/1-margin_bradley_terry/loss") for row in rows)
    assert "reward_score/policy_score" in result.metrics


def test_preference_models_that_cannot_combine_are_refused_before_training(tmp_path: Path) -> None:
    config = {
        "model": {"demo": True},
        "feedback": {"method": "demo_rule", "count": 16},
        "preference_model": [
            {"method": "bradley_terry"},
            {"method": "multi_aspect", "aspects": ["helpfulness", "harmlessness"]},
        ],
        "reward_model": {"steps": 2},
        "usage": {"method": "dpo"},
        "train": {"steps": 1, "progress": False},
    }
    with pytest.raises(ConfigError, match="share their heads"):
        check_run_config(parse_run_config(config))  # what --dry-run runs
    with pytest.raises(ConfigError, match="share their heads"):
        run_pipeline(parse_run_config(config), out=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()

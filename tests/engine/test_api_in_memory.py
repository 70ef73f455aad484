"""``prefcore.train``: a transformers model and tokenizer, a list of dicts or a ``datasets.Dataset``, in memory."""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import pytest
import torch

import prefcore
from prefcore.config import parse_run_config
from prefcore.data import PairwiseComparison
from prefcore.data import write_jsonl
from prefcore.demo.model import build_tiny_model
from prefcore.demo.task import preference_pairs
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.errors import ConfigError
from prefcore.errors import DataError
from prefcore.stages.feedback import records_from_rows
from prefcore.validation import check_run_config

SEED = 1
PAIRS = preference_pairs(count=64, seed=3)
ROWS = [{"prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected} for pair in PAIRS]


def _config(**sections: dict) -> dict:
    """A run file without [model] and [feedback]: the model and the data come in memory."""
    data = {
        "run": {"seed": SEED, "heldout_fraction": 0.25, "eval_prompts": 4, "max_new_tokens": 6},
        "usage": {"method": "dpo", "beta": 0.1},
        "evaluation": [{"method": "preference_accuracy"}],
        "train": {"steps": 4, "batch_size": 4, "lr": 3e-3, "progress": False},
    }
    data.update(sections)
    return data


def _losses(run_dir: Path) -> dict[int, float]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return {int(row["step"]): float(row["loss"]) for row in csv.DictReader(handle) if row.get("loss")}


def _demo() -> tuple[torch.nn.Module, object]:
    tokenizer = build_tokenizer()
    return build_tiny_model(tokenizer, seed=SEED), tokenizer  # what [model] demo = true builds with [run] seed


def test_a_model_and_dicts_in_memory_train_as_the_run_file_would(tmp_path: Path) -> None:
    pairs_file = tmp_path / "pairs.jsonl"
    write_jsonl(PAIRS, pairs_file)
    from_file = prefcore.train(
        _config(model={"demo": True}, feedback={"method": "preference_file", "path": str(pairs_file)}),
        out=tmp_path / "file",
    )

    model, tokenizer = _demo()
    before = copy.deepcopy(model.state_dict())
    in_memory = prefcore.train(_config(), model=model, tokenizer=tokenizer, data=ROWS, out=tmp_path / "memory")

    assert in_memory.model is model and in_memory.tokenizer is tokenizer  # trained in place, and returned
    assert any(not torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
    assert _losses(in_memory.run_dir) == pytest.approx(_losses(from_file.run_dir), rel=1e-6)
    assert in_memory.metrics == pytest.approx(from_file.metrics, rel=1e-6)
    assert (in_memory.run_dir / "model" / "model.safetensors").is_file()


def test_a_datasets_dataset_and_heldout_records_in_memory(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    train = datasets.Dataset.from_list(ROWS[:48])
    heldout = list(PAIRS[48:])  # prefcore records are taken as they are
    model, tokenizer = _demo()
    result = prefcore.train(
        _config(train={"steps": 2, "batch_size": 4, "progress": False}),
        model=model,
        tokenizer=tokenizer,
        data=train,
        heldout=heldout,
        out=tmp_path / "run",
    )
    report = (result.run_dir / "report.md").read_text()
    assert "| training records | 48 |" in report and "| held-out records | 16 |" in report
    assert "given in memory" in report
    assert result.metrics["preference_accuracy/num_pairs"] == 16


def test_a_run_file_path_or_dict_and_data_beside_feedback_sections(tmp_path: Path) -> None:
    """Data in memory is one more feedback source: [feedback] sections still count."""
    pairs_file = tmp_path / "pairs.jsonl"
    write_jsonl(PAIRS[:32], pairs_file)
    run_file = tmp_path / "run.toml"
    run_file.write_text(
        f'[model]\ndemo = true\n[feedback]\nmethod = "preference_file"\npath = "{pairs_file}"\n'
        '[usage]\nmethod = "sft"\n[train]\nsteps = 1\nbatch_size = 4\nprogress = false\n[run]\nheldout_fraction = 0\n',
        encoding="utf-8",
    )
    result = prefcore.train(run_file, data=ROWS[32:], out=tmp_path / "run")
    assert "| training records | 64 |" in (result.run_dir / "report.md").read_text()


def test_rows_become_records_in_every_layout() -> None:
    rows = [
        {"prompt": "p", "chosen": "a", "rejected": "b"},
        {
            "chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
            "rejected": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "go"}],
        },
        {"prompt": "p", "completion": "a", "label": True},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        PairwiseComparison("q", "x", "y"),
    ]
    records = records_from_rows(rows)
    assert [type(record).__name__ for record in records] == [
        "PairwiseComparison",
        "PairwiseComparison",
        "BinaryLabel",
        "BinaryLabel",
        "PairwiseComparison",
    ]
    with pytest.raises(DataError, match=r"<data> line 2: field 'rejected'"):
        records_from_rows([{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p", "chosen": "a"}])
    with pytest.raises(DataError, match="line 1: a row must be a dict"):
        records_from_rows([("p", "a", "b")])
    with pytest.raises(ConfigError, match="preference_file"):
        records_from_rows("pairs.jsonl")
    with pytest.raises(DataError, match="no records"):
        records_from_rows([])


def test_what_is_given_in_memory_is_checked_against_the_run_file(tmp_path: Path) -> None:
    model, tokenizer = _demo()
    with pytest.raises(ConfigError, match="together"):
        prefcore.train(_config(), model=model, data=ROWS, out=tmp_path / "a")
    with pytest.raises(ConfigError, match=r"\[model\] also sets demo"):
        prefcore.train(_config(model={"demo": True}), model=model, tokenizer=tokenizer, data=ROWS, out=tmp_path / "b")
    with pytest.raises(ConfigError, match="no feedback source"):
        prefcore.train(_config(), model=model, tokenizer=tokenizer, out=tmp_path / "c")
    heldout_file = tmp_path / "heldout.jsonl"
    write_jsonl(PAIRS[:4], heldout_file)
    with pytest.raises(ConfigError, match="held-out records were given in memory"):
        prefcore.train(
            _config(run={"heldout": str(heldout_file)}),
            model=model,
            tokenizer=tokenizer,
            data=ROWS,
            heldout=ROWS[:4],
            out=tmp_path / "d",
        )
    with pytest.raises(ConfigError, match=r"\[reward_model\] path"):
        prefcore.train(
            _config(preference_model={"method": "bradley_terry"}),
            model=model,
            tokenizer=tokenizer,
            data=ROWS,
            out=tmp_path / "e",
        )
    assert not list(tmp_path.glob("[abcde]")), "refused before any run folder is made"
    # The same file with [model] and [feedback] (a dry run) needs nothing in memory.
    check_run_config(parse_run_config(_config(model={"demo": True}, feedback={"method": "demo_rule"})))

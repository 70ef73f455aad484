"""Human in the loop from the run file: ``prefcore run`` exports and stops, ``--resume`` trains on the answers.

Driven through the command line only (``prefcore run``, ``prefcore annotate``), with scripted
annotators typing their answers, over two iterations of ``examples/demo_human_online_dpo.toml``
made tiny with ``--set``.
"""

from __future__ import annotations

import csv
import io
import json
import shlex
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from prefcore.cli import main
from prefcore.config import load_run_config
from prefcore.config import parse_run_config
from prefcore.demo.model import build_tiny_model
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.errors import ConfigError
from prefcore.settings import LoopConfig
from prefcore.stages.loops import exchange_folder
from prefcore.validation import check_run_config

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "demo_human_online_dpo.toml"

TINY = [  # no warm start, 4 prompts × 3 samples of 6 tokens per iteration, 2 iterations, evaluation on 4 prompts
    *("--set", "warm_start.steps=0", "--set", "feedback.count=48", "--set", "feedback.demonstrations=0"),
    *("--set", "run.eval_prompts=4", "--set", "run.max_new_tokens=6", "--set", "online.max_new_tokens=6"),
    *("--set", "loop.iterations=2", "--set", "train.lr=1e-2", "--set", "train.progress=false"),
]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["run", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _annotate_command(printed: str, annotator: str) -> list[str]:
    """The ``prefcore annotate`` command the paused run printed, for one annotator (files in order)."""
    lines = [line.strip() for line in printed.splitlines() if line.strip().startswith("prefcore annotate ")]
    assert len(lines) == 1, printed
    return [*shlex.split(lines[0].replace("NAME", annotator))[1:], "--no-shuffle"]


def _pair_counts(items: Path) -> list[int]:
    """Per exported item, how many pairs of completions it asks about."""
    counts = []
    for line in items.read_text().splitlines():
        count = len(json.loads(line)["completions"])
        counts.append(count * (count - 1) // 2)
    return counts


def _answer(command: list[str], answers: list[str], monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(answer + "\n" for answer in answers)))
    assert main(command) == 0
    capsys.readouterr()


def _first_shown(items: Path) -> list[str]:
    """Typed answers choosing the lower-numbered completion of every pair (screen numbers are 1-based)."""
    answers = []
    for line in items.read_text().splitlines():
        count = len(json.loads(line)["completions"])
        answers += [str(i + 1) for i in range(count) for _ in range(i + 1, count)]
    return answers


def _rows(run_dir: Path) -> dict[int, dict[str, str]]:
    """metrics.csv merged per step (training and evaluation rows)."""
    merged: dict[int, dict[str, str]] = {}
    with open(run_dir / "metrics.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            merged.setdefault(int(row["step"]), {}).update({key: value for key, value in row.items() if value})
    return merged


def _differs(weights: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> bool:
    shared = weights.keys() & other.keys()
    assert shared
    return any(not torch.equal(weights[name], other[name]) for name in shared)


def test_two_iterations_through_prefcore_run_and_annotate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    exchange = out / "exchange"
    code, printed, _ = _run(capsys, str(EXAMPLE), "--out", str(out), *TINY)
    assert code == 0 and "(paused)" in printed and f"prefcore run --resume {out}" in printed
    first = exchange / "iteration-1" / "items.jsonl"
    assert f"prefcore annotate {first} --out {first.parent / 'answers' / 'NAME.jsonl'}" in printed
    assert not (out / "report.md").exists() and not (out / "model").exists()
    assert "win_rate/win_rate" in _rows(out)[0]  # evaluated once, before the first export
    exported = first.read_bytes(), (first.parent / "tokens.json").read_bytes()

    code, printed, _ = _run(capsys, "--resume", str(out))  # nothing answered yet
    assert code == 0 and "waiting" in printed and not (out / "checkpoints").exists()
    assert (first.read_bytes(), (first.parent / "tokens.json").read_bytes()) == exported  # not sampled again

    code, _, err = _run(capsys, str(EXAMPLE), "--out", str(out), *TINY)  # a fresh start on the same folder
    assert code == 2 and "not empty; pass --resume" in err

    command = _annotate_command(printed, "alice")
    _answer(command, _first_shown(first), monkeypatch, capsys)
    answers = _first_shown(first)
    answers[0] = "2"  # bob disagrees with alice on the very first pair only: it ties and is dropped
    _answer(_annotate_command(printed, "bob"), answers, monkeypatch, capsys)
    asked = sum(_pair_counts(first))

    code, printed, _ = _run(capsys, "--resume", str(out))
    assert code == 0 and "(paused)" in printed and not (out / "report.md").exists()
    second = exchange / "iteration-2" / "items.jsonl"
    assert f"prefcore annotate {second}" in printed and second.is_file()
    assert f"iteration 1 trained on {asked - 1} voted pairs ({2 * asked} answers by 2 annotator(s), 1 tied" in printed
    step = _rows(out)[1]
    assert float(step["pairs"]) == asked - 1 and float(step["tied_pairs"]) == 1
    assert float(step["answers"]) == 2 * asked and float(step["annotators"]) == 2
    after_one = load_file(str(out / "checkpoints" / "step-000001" / "model.safetensors"))
    start = {name: value.detach() for name, value in build_tiny_model(build_tokenizer(), seed=0).state_dict().items()}
    assert _differs(after_one, start)  # the policy was trained on the votes

    exported = second.read_bytes()
    code, printed, _ = _run(capsys, "--resume", str(out))  # iteration 2 unanswered: wait, sample nothing
    assert code == 0 and "waiting" in printed and second.read_bytes() == exported
    assert [path.name for path in (out / "checkpoints").iterdir()] == ["step-000001"]

    _answer(_annotate_command(printed, "alice"), _first_shown(second), monkeypatch, capsys)
    code, printed, _ = _run(capsys, "--resume", str(out))
    assert code == 0 and "(paused)" not in printed and (out / "report.md").is_file() and (out / "model").is_dir()
    rows = _rows(out)
    assert float(rows[2]["pairs"]) == sum(_pair_counts(second)) and float(rows[2]["tied_pairs"]) == 0
    assert "win_rate/win_rate" in rows[2] and "kl/kl" in rows[2]  # the final evaluation, at iteration 2
    assert "win_rate/win_rate" in printed  # the finished run prints its metrics as any run does
    after_two = load_file(str(out / "checkpoints" / "step-000002" / "model.safetensors"))
    assert _differs(after_two, after_one)

    # another run may not pick up this run's exchange folder as its own
    code, _, err = _run(
        capsys, str(EXAMPLE), "--out", str(tmp_path / "other"), *TINY, "--set", f"loop.exchange={exchange}"
    )
    assert code == 2 and "already holds another run's iterations" in err


def test_the_exchange_folder_is_the_run_folders_unless_absolute(tmp_path: Path) -> None:
    run = SimpleNamespace(run_dir=tmp_path / "run")
    assert exchange_folder(run, LoopConfig(kind="human_online_dpo")) == tmp_path / "run" / "exchange"
    assert exchange_folder(run, LoopConfig(kind="human_online_dpo", exchange="x/y")) == tmp_path / "run" / "x" / "y"
    elsewhere = str(tmp_path / "shared")
    assert exchange_folder(run, LoopConfig(kind="human_online_dpo", exchange=elsewhere)) == tmp_path / "shared"


def test_the_example_passes_the_dry_run_checks() -> None:
    checked = check_run_config(load_run_config(EXAMPLE))
    assert checked.sections["loop"].kind == "human_online_dpo" and checked.sections["reward"] is None


def _run_file(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "run": {"seed": 0},
        "model": {"demo": True},
        "feedback": {"method": "demo_rule", "count": 48},
        "usage": {"method": "dpo"},
        "loop": {"kind": "human_online_dpo"},
        "online": {"prompts_per_step": 4, "samples_per_prompt": 3},
    }
    for name, values in overrides.items():
        data[name] = {**data[name], **values} if isinstance(data.get(name), dict) else values
    return data


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"reward": [{"kind": "rule", "method": "demo_rule"}]}, "reward", "people rank the samples"),
        ({"online": {"samples_per_prompt": 1}}, "online.samples_per_prompt", "samples_per_prompt >= 2"),
        ({"usage": {"method": "kto"}}, "usage", "trains on pairwise items"),
        ({"train": {"steps": 10}}, "train.steps", "iterations counts its rounds"),
        ({"online": {"steps": 10}}, "online.steps", "does not use online.steps"),
        ({"loop": {"keep": "threshold"}}, "loop.keep", "does not use keep"),
        ({"loop": {"kind": "online_dpo", "exchange": "x"}}, "loop.exchange", "does not use exchange"),
    ],
)
def test_human_loop_run_files_are_checked(overrides: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")) as raised:
        check_run_config(parse_run_config(_run_file(**overrides)))
    assert raised.value.field == field

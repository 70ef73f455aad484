"""``prefcore evaluate``: a run file's evaluators on a saved model, a run folder's own config and warm start."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import tomllib

from prefcore.cli import main
from prefcore.config import parse_run_config
from prefcore.demo import task
from prefcore.demo.model import build_tiny_model
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.engine.models import save_model
from prefcore.evaluate_model import evaluate_model
from prefcore.stages.feedback import gather_feedback
from prefcore.validation import check_run_config

RUN_FILE = """
[run]
seed = 0
samples_per_prompt = 1
max_new_tokens = 4
threads = 1

[model]
demo = true

[feedback]
method = "demo_rule"
kind = "answers"
categories = ["sum"]
demonstrations = 0

[usage]
method = "sft"

[[evaluation]]
method = "reference_match"

[[evaluation]]
method = "contamination"
n = 4
"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tokenizer = build_tokenizer()
    folder = tmp_path_factory.mktemp("evaluate") / "model"
    save_model(build_tiny_model(tokenizer, seed=5, hidden_size=16, num_hidden_layers=1), tokenizer, folder)
    return folder


def test_evaluate_a_model_folder_with_a_run_file(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "eval.toml"
    config.write_text(RUN_FILE, encoding="utf-8")
    out = tmp_path / "evaluation.json"
    assert main(["evaluate", str(model_dir), "--config", str(config), "--out", str(out)]) == 0
    data = json.loads(out.read_text(encoding="utf-8"))
    metrics = data["metrics"]
    # the held-out records and training records are the run's own split of its feedback
    checked = check_run_config(parse_run_config(tomllib.loads(RUN_FILE)))
    feedback = gather_feedback([e.method for e in checked.selected("feedback")], checked.sections["run"])
    heldout = {record.prompt for record in feedback.heldout}
    assert {record.prompt for record in task.answer_records(("sum",), heldout=True)} <= heldout
    assert metrics["reference_match/num_prompts"] == len(heldout)
    assert metrics["contamination/heldout/num_items"] == len(heldout)
    assert metrics["contamination/num_training_texts"] == 2 * len(feedback.train)  # prompt and completion each
    assert data["model"] == str(model_dir)
    assert "reference_match/token_f1" in capsys.readouterr().out

    assert metrics["contamination/heldout/warning"] == 1.0  # every demo prompt shares a 4-gram with training
    # --set overrides the run file, as in prefcore run
    outcome = evaluate_model(model_dir, config_file=str(config), overrides=["evaluation.contamination.threshold=1.0"])
    assert outcome.metrics["contamination/heldout/warning"] == 0.0
    assert outcome.metrics["reference_match/exact_match"] == metrics["reference_match/exact_match"]


def test_a_run_folder_uses_its_own_run_file_and_warm_start(model_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(model_dir, run_dir / "model")
    shutil.copytree(model_dir, run_dir / "warm_start" / "model")
    (run_dir / "config.toml").write_text(RUN_FILE, encoding="utf-8")
    (run_dir / "config.json").write_text(json.dumps(tomllib.loads(RUN_FILE)), encoding="utf-8")  # as a run saves it
    assert main(["evaluate", str(run_dir)]) == 0
    data = json.loads((run_dir / "evaluation.json").read_text(encoding="utf-8"))
    assert data["reference"] == str(run_dir / "warm_start" / "model")
    assert 0.0 <= data["metrics"]["reference_match/exact_match"] <= 1.0


def test_a_bare_model_folder_needs_a_run_file(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(model_dir)]) == 2
    assert "--config RUN_FILE" in capsys.readouterr().err


def test_evaluating_a_finished_run_reproduces_its_final_metrics(tmp_path: Path) -> None:
    """The run's reference (its [model] without a warm start), split and evaluators, rebuilt from the folder."""
    from prefcore.pipeline import run_pipeline

    extra = '\n[[evaluation]]\nmethod = "lc_win_rate"\n\n[train]\nsteps = 2\nbatch_size = 8\nprogress = false\n'
    run_file = RUN_FILE.replace("max_new_tokens = 4", "max_new_tokens = 4\neval_prompts = 8") + extra
    result = run_pipeline(parse_run_config(tomllib.loads(run_file)), out=str(tmp_path / "run"))
    outcome = evaluate_model(result.run_dir)
    assert outcome.metrics.keys() == result.metrics.keys()
    for name, value in result.metrics.items():
        assert outcome.metrics[name] == pytest.approx(value, nan_ok=True), name

"""``prefcore run --dry-run`` checks the whole run file, with the same function the run uses.

Each case was accepted before (or failed only once training had started): NaN/inf learning
rates, a negative warm-start step count that silently skipped the warm start, zero or
negative generation settings, misspelled keys and sections, bad weights in ``[[usage]]``
combinations and in every ``[[preference_model]]``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefcore.cli import main
from prefcore.config import load_run_config
from prefcore.errors import ConfigError
from prefcore.validation import check_run_config


def dry_run(*arguments: str) -> int:
    return main(["run", "--dry-run", *arguments])


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("train.lr=nan", "[train] option 'lr' must be a finite number; got nan"),
        ("train.lr=inf", "[train] option 'lr' must be a finite number; got inf"),
        ("train.lr=0", "lr must be a finite number > 0"),
        ("train.steps=0", "steps must be >= 1"),
        ("train.batch_size=0", "batch_size must be >= 1"),
        ("train.keep_checkpoints=-1", "keep_checkpoints must be >= 0"),
        ("train.stpes=3", "[train] has no option 'stpes'. Did you mean 'steps'?"),
        ("warm_start.steps=-5", "steps and warmup_steps must be >= 0"),
        ("warm_start.lr=nan", "[warm_start] option 'lr' must be a finite number"),
        ("warm_start.lr=-1e-3", "lr must be a finite number > 0"),
        ("warm_start.batch_size=0", "batch_size >= 1"),
        ("run.temperature=-0.5", "temperature must be a finite number >= 0 (0 = greedy)"),
        ("run.temperature=inf", "[run] option 'temperature' must be a finite number"),
        ("run.max_new_tokens=0", "max_new_tokens must be >= 1"),
        ("run.samples_per_prompt=0", "samples_per_prompt must be >= 1"),
        ("run.eval_prompts=0", "eval_prompts must be >= 1"),
        ("run.heldout_fraction=1.5", "heldout_fraction must be in [0, 1)"),
        ("run.reference='nothing'", "reference must be 'model', 'precomputed' or 'none'"),
        ("run.reward_labels=true", "reward_labels = true relabels pairs with a trained preference model"),
        ("model.lora_dropout=1.5", "lora_dropout must be in [0, 1)"),
        ("model.lora_rank=-1", "lora_rank must be >= 0"),
        ("self_play.temperature=-1", "temperature must be a finite number >= 0"),
        ("self_play.max_new_tokens=0", "max_new_tokens must be >= 1"),
        ("reward_model.lr=nan", "[reward_model] option 'lr' must be a finite number"),
        ("reward_model.batch_size=0", "batch_size must be >= 1"),
        ("usage.beta=nan", "option 'beta' must be a finite number"),
        ("usage.betta=0.2", "Did you mean 'beta'?"),
        ("usage.weight=0", "'weight' must be a finite number > 0"),
        ("feedback.count=0", "count must be 1 or more"),
        ("data.path='pairs.jsonl'", "unknown section [data]"),
        ("trian.steps=3", "unknown section [trian]. Did you mean 'train'?"),
    ],
)
def test_dry_run_refuses_each_bad_value(override: str, fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert dry_run("--set", override) == 2
    err = capsys.readouterr().err
    assert fragment in err, err


def test_every_problem_is_reported_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    assert dry_run("--set", "train.lr=nan", "--set", "warm_start.steps=-5", "--set", "usage.betta=1") == 2
    err = capsys.readouterr().err
    assert "3 problems in the run file" in err
    for fragment in ("'lr' must be a finite number", "steps and warmup_steps must be >= 0", "no option 'betta'"):
        assert fragment in err


def test_objectives_must_share_a_data_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_file = tmp_path / "run.toml"
    run_file.write_text(
        "[model]\ndemo = true\n[feedback]\nmethod = 'demo_rule'\n"
        "[[usage]]\nmethod = 'kto'\n[[usage]]\nmethod = 'pro'\nweight = 0.5\n"
    )
    assert dry_run(str(run_file)) == 2
    assert "share no data format: kto (unpaired), pro (listwise)" in capsys.readouterr().err


def test_each_preference_model_section_is_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = "[model]\ndemo = true\n[feedback]\nmethod = 'demo_rule'\n[usage]\nmethod = 'dpo'\n"
    good = "[[preference_model]]\nmethod = 'bradley_terry'\n"
    run_file = tmp_path / "run.toml"
    run_file.write_text(body + good + "[[preference_model]]\nmethod = 'bradley_terry'\nnot_an_option = 1\n")
    assert dry_run(str(run_file)) == 2
    assert "preference model 'bradley_terry' has no option 'not_an_option'" in capsys.readouterr().err
    run_file.write_text(body + good + "[[preference_model]]\nmethod = 'bradley_terri'\n")
    assert dry_run(str(run_file)) == 2
    assert "bradley_terri" in capsys.readouterr().err
    run_file.write_text(body + good + good.replace("terry'", "terry'\nweight = -1"))
    assert dry_run(str(run_file)) == 2
    assert "[preference_model] #2: 'weight' must be a finite number > 0" in capsys.readouterr().err
    run_file.write_text(body + good + good)
    assert dry_run(str(run_file)) == 0, capsys.readouterr().err


def test_missing_usage_or_feedback_fails_the_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_file = tmp_path / "run.toml"
    run_file.write_text("[model]\ndemo = true\n[usage]\nmethod = 'dpo'\n")
    assert dry_run(str(run_file)) == 2
    assert "selects no feedback source" in capsys.readouterr().err
    run_file.write_text("[model]\ndemo = true\n[feedback]\nmethod = 'demo_rule'\n")
    assert dry_run(str(run_file)) == 2
    assert "selects no usage objective" in capsys.readouterr().err


def test_the_run_uses_the_same_check(tmp_path: Path) -> None:
    """run_pipeline refuses what --dry-run refuses, before it creates the run folder."""
    from prefcore.pipeline import run_pipeline

    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n")
    run_file = tmp_path / "run.toml"
    run_file.write_text(
        f"[model]\ndemo = true\n[feedback]\nmethod = 'preference_file'\npath = '{data}'\n"
        "[usage]\nmethod = 'dpo'\n[warm_start]\nsteps = -5\n"
    )
    config = load_run_config(run_file)
    with pytest.raises(ConfigError, match="steps and warmup_steps must be >= 0"):
        check_run_config(config)
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="steps and warmup_steps must be >= 0"):
        run_pipeline(config, out=str(out))
    assert not out.exists()


def test_a_good_file_passes_and_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert dry_run() == 0
    assert "run file OK" in capsys.readouterr().out


def test_python_api_checks_the_same_way() -> None:
    import prefcore
    from prefcore.config import parse_run_config
    from prefcore.defaults import default_run_data

    data = default_run_data()
    data["warm_start"]["steps"] = -5
    with pytest.raises(ConfigError, match="steps and warmup_steps must be >= 0"):
        prefcore.check_config(parse_run_config(data))
    checked = prefcore.check_config(parse_run_config(default_run_data()))
    assert checked.sections["warm_start"].steps == 800 and checked.data_format == "pairwise"

"""The command line: list, info, validate-data and run --dry-run, with their error paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefcore.cli import main


def test_list_shows_builtins_with_distribution(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "feedback"]) == 0
    out = capsys.readouterr().out
    header, _rule, *rows = out.strip().splitlines()
    assert header.split() == ["name", "kind", "distribution", "version", "summary"]
    row = next(line for line in rows if line.startswith("preference_file"))
    assert row.split()[1:3] == ["feedback", "prefcore"]


def test_list_reports_broken_plugins(make_distribution, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    make_distribution(
        "broken-dist", "2.0", {"broken": "broken_cli_mod"}, {"broken_cli_mod": "raise ImportError('nope')\n"}
    )
    monkeypatch.setenv("PREFCORE_DISABLE_PLUGIN_AUTOLOAD", "0")
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "preference_file" in out
    assert "Broken plugins" in out
    assert "PluginLoadError" in out and "broken-dist 2.0" in out and "nope" in out


def test_info_shows_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "preference_file"]) == 0
    out = capsys.readouterr().out
    assert "preference_file (feedback source)" in out
    assert "from plugin 'preference_file' from distribution prefcore" in out
    option_line = next(line for line in out.splitlines() if line.strip().startswith("skip_invalid"))
    assert option_line.split()[:3] == ["skip_invalid", "bool", "False"]


def test_unknown_name_exits_2_with_suggestion(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "preference_fil"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("UnknownMethodError: No method named 'preference_fil'.")
    assert "Did you mean 'preference_file'" in err


def test_validate_data_counts_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "pairs.jsonl"
    good = {"prompt": "Name a prime.", "chosen": "7", "rejected": "8"}
    path.write_text(json.dumps(good) + "\n" + json.dumps({"prompt": "x", "chosen": "y"}) + "\n")
    assert main(["validate-data", str(path)]) == 1
    out = capsys.readouterr().out
    assert "line 2" in out and "rejected" in out
    path.write_text(json.dumps(good) + "\n")
    assert main(["validate-data", str(path)]) == 0


RUN_FILE = """
[feedback]
method = "preference_file"
path = "{path}"

[usage]
method = "{usage}"
"""


def test_run_dry_run_validates_names_and_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n")
    run_file = tmp_path / "run.toml"
    run_file.write_text(RUN_FILE.format(path=data, usage="no_such_objective"))
    assert main(["run", str(run_file), "--dry-run"]) == 2
    assert "No usage method named 'no_such_objective'" in capsys.readouterr().err
    run_file.write_text(RUN_FILE.format(path=data, usage="no_such_objective") + "\n[train]\nsteps = 1\n")
    assert main(["run", str(run_file), "--dry-run", "--set", "feedback.skip_invalid=maybe"]) == 2
    assert "option 'skip_invalid' must be bool; got 'maybe'" in capsys.readouterr().err


TINY_RUN = [
    # 4 steps with a checkpoint at 2 and 4, no warm start, one evaluation on 2 prompts.
    *("--set", "train.steps=4", "--set", "train.batch_size=4", "--set", "train.checkpoint_every=2"),
    *("--set", "train.warmup_steps=0", "--set", "warm_start.steps=0", "--set", "feedback.count=48"),
    *("--set", "feedback.demonstrations=0", "--set", "run.eval_prompts=2", "--set", "run.max_new_tokens=3"),
]


def _metric_lines(printed: str) -> list[str]:
    return [line for line in printed.splitlines() if line.startswith("  ") and "/" in line.split()[0]]


@pytest.mark.slow
def test_resume_from_the_run_folder_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), *TINY_RUN]) == 0
    first = capsys.readouterr().out
    # No run file, no --out, no --set: the folder holds what the run was started with.
    assert main(["run", "--resume", str(out)]) == 0
    captured = capsys.readouterr()
    assert "resumed from step 4" in captured.err
    assert _metric_lines(captured.out) == _metric_lines(first)
    # The older form, with the folder's config.toml as the run file: the same run.
    assert main(["run", str(out / "config.toml"), "--resume", "--out", str(out)]) == 0
    assert "resumed from step 4" in capsys.readouterr().err
    assert main(["run", "--out", str(out), "--resume", str(out / "config.toml")]) == 0
    assert "resumed from step 4" in capsys.readouterr().err


def test_resume_errors_name_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--resume", str(tmp_path / "missing")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    assert main(["run", "--resume", str(tmp_path)]) == 2
    assert "is not a run folder (no config.json or config.toml)" in capsys.readouterr().err
    assert main(["run", "--resume"]) == 2
    assert "prefcore run --resume RUN_DIR" in capsys.readouterr().err
    (tmp_path / "config.toml").write_text("[usage]\nmethod = 'dpo'\n")
    assert main(["run", "--resume", str(tmp_path), "--out", str(tmp_path / "other")]) == 2
    assert "name different folders" in capsys.readouterr().err
    assert main(["run", "--resume", str(tmp_path), "--method", "ipo"]) == 2
    assert "--method cannot change a run being resumed" in capsys.readouterr().err


@pytest.mark.slow
def test_saved_config_toml_reproduces_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from prefcore.config import load_run_config
    from prefcore.config import load_run_dir_config

    out = tmp_path / "run"
    assert main(["run", "--method", "simpo", "--out", str(out), *TINY_RUN]) == 0
    capsys.readouterr()
    saved = load_run_config(out / "config.toml")
    snapshot = load_run_dir_config(out)  # config.json, the exact snapshot
    assert (saved.methods, saved.settings) == (snapshot.methods, snapshot.settings)
    again = tmp_path / "again"
    assert main(["run", str(out / "config.toml"), "--out", str(again)]) == 0
    assert (again / "config.json").read_text() == (out / "config.json").read_text()


def test_method_replaces_the_whole_usage_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_file = tmp_path / "run.toml"
    run_file.write_text(
        "[model]\ndemo = true\n[feedback]\nmethod = 'demo_rule'\n"
        "[[usage]]\nmethod = 'dpo'\nbeta = 0.5\n[[usage]]\nmethod = 'sft'\nweight = 0.1\n"
    )
    assert main(["run", str(run_file), "--method", "simpo", "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert [line.strip() for line in plan.splitlines() if line.startswith("  usage:")] == ["usage: simpo"]
    # --set applies after --method: options for the new objective are accepted.
    assert main(["run", str(run_file), "--method", "simpo", "--set", "usage.gamma=0.3", "--dry-run"]) == 0
    assert "usage: simpo (gamma=0.3)" in capsys.readouterr().out
    assert main(["run", "--method", "no_such_objective", "--dry-run"]) == 2
    assert "No usage method named 'no_such_objective'" in capsys.readouterr().err


def test_info_documents_every_engine_section(capsys: pytest.CaptureFixture[str]) -> None:
    from prefcore.config import ENGINE_SECTIONS
    from prefcore.config import engine_section_config
    from prefcore.config import field_docs

    assert main(["info", "--engine"]) == 0
    printed = capsys.readouterr().out
    for name in ENGINE_SECTIONS:
        assert f"[{name}] (engine section)" in printed
        for option_name, _, _, doc in field_docs(engine_section_config(name)):
            assert option_name in printed and doc, f"[{name}] {option_name} is undocumented"
    assert main(["info", "warm_start"]) == 0
    printed = capsys.readouterr().out
    assert "[warm_start] (engine section)" in printed and "SFT learning rate" in printed


def test_list_and_info_import_no_torch_also_for_engine_sections(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from prefcore.cli import main\n"
        "main(['list']); main(['info', 'dpo']); main(['info', 'train']); main(['info', '--engine'])\n"
        "print(sorted(m for m in ('torch', 'triton', 'transformers') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "[]"

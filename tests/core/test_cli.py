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

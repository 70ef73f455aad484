"""The README's first command: the embedded default job shows a real, reported improvement."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from prefcore.cli import main
from prefcore.config import load_run_config
from prefcore.config import parse_run_config
from prefcore.defaults import default_run_data

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "demo_dpo.toml"

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def test_example_file_is_the_default_job() -> None:
    assert load_run_config(EXAMPLE) == parse_run_config(default_run_data(), source=str(EXAMPLE))


@pytest.mark.slow
def test_default_job_beats_the_reference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["run", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    metrics = {
        line.split()[0]: float(line.split()[1])
        for line in printed.splitlines()
        if line.startswith("  ") and "/" in line.split()[0]
    }
    # Held-out prompts, rule judge, both orders, ties half: the lower end of the 95% interval
    # must clear a coin flip.
    assert metrics["win_rate/win_rate_low"] > 0.55, metrics
    assert metrics["preference_accuracy/accuracy"] > 0.6, metrics
    report = (out / "report.md").read_text()
    assert "win_rate" in report
    for plot in ("loss.png", "reward_margin.png", "win_rate.png"):
        assert (out / plot).stat().st_size > 1000
    assert tomllib.loads((out / "config.toml").read_text())["usage"]["method"] == "dpo"

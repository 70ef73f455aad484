"""The example third-party plugin installs like any package and its methods appear by name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "prefcore-example-plugin"


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Install the example offline into a private site folder; return the environment that sees it."""
    site = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    source = build / "src"
    subprocess.run(["cp", "-r", str(EXAMPLE), str(source)], check=True)  # keep build files out of the tree
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(source),
        ],
        check=True,
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    env["PREFCORE_DISABLE_PLUGIN_AUTOLOAD"] = "0"
    return env


def _prefcore(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prefcore.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_example_methods_are_listed_with_their_distribution(installed_example: dict[str, str]) -> None:
    result = _prefcore(installed_example, "list")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split()[1:4] for line in result.stdout.splitlines() if line.strip()}
    assert rows["example_offset_dpo"] == ["usage", "prefcore-example-plugin", "0.1.0"]
    assert rows["example_shorter_is_better"] == ["feedback", "prefcore-example-plugin", "0.1.0"]
    assert rows["dpo"][:2] == ["usage", "prefcore"]
    assert "Broken plugins" not in result.stdout


def test_example_methods_are_selectable_by_name(installed_example: dict[str, str], tmp_path: Path) -> None:
    run_file = tmp_path / "run.toml"
    run_file.write_text(
        "[model]\ndemo = true\n\n"
        '[feedback]\nmethod = "example_shorter_is_better"\n\n'
        '[usage]\nmethod = "example_offset_dpo"\noffset = 1.0\n'
    )
    result = _prefcore(installed_example, "run", str(run_file), "--dry-run", "--set", "usage.beta=0.3")
    assert result.returncode == 0, result.stderr
    assert "usage: example_offset_dpo (offset=1.0, beta=0.3)" in result.stdout
    bad = _prefcore(installed_example, "run", str(run_file), "--dry-run", "--set", "usage.beta=-1")
    assert bad.returncode == 2
    assert "beta must be > 0 for objective 'example_offset_dpo'. Got -1.0." in bad.stderr


def test_example_plugin_own_tests_pass(installed_example: dict[str, str]) -> None:
    """The example's tests run prefcore's parity kit on its objective, as a plugin author would."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        env=installed_example,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr

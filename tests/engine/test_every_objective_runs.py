"""``prefcore run --method NAME`` works for every registered usage objective on the demo job.

Parametrised over the registry's usage list, so a newly registered objective is covered
without editing this file. ``--method`` replaces the whole ``[usage]`` section: DPO's
``beta`` from the demo job must not reach objectives that do not take it (sft, pro, rrhf,
...) nor silently change those that do (simpo, orpo, kto).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from prefcore.cli import main
from prefcore.registry import Registry
from prefcore.rollout import ROLLOUT_FORMAT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

OBJECTIVES = [
    info.name
    for info in Registry.from_environment(third_party=False).methods("usage")
    if ROLLOUT_FORMAT not in info.cls.data_formats  # online objectives run through the online loop, not --method
]
TINY = [
    # 3 optimiser steps on 48 demo records, no warm start, one evaluation on 2 prompts.
    *("--set", "train.steps=3", "--set", "train.batch_size=4", "--set", "train.eval_every=0"),
    *("--set", "train.checkpoint_every=0", "--set", "train.warmup_steps=0"),
    *("--set", "warm_start.steps=0", "--set", "feedback.count=48", "--set", "feedback.demonstrations=0"),
    *("--set", "run.eval_prompts=2", "--set", "run.max_new_tokens=3", "--set", "run.samples_per_prompt=1"),
]


def test_the_registry_lists_the_objectives_this_file_covers() -> None:
    assert {"dpo", "sft", "kto", "pro", "rrhf", "simpo", "orpo", "unlikelihood"} <= set(OBJECTIVES)


@pytest.mark.parametrize("name", OBJECTIVES)
def test_dry_run_accepts_every_objective(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--method", name, "--dry-run"]) == 0, capsys.readouterr().err
    plan = capsys.readouterr().out
    [usage_line] = [line for line in plan.splitlines() if line.startswith("  usage:")]
    assert usage_line.split()[1] == name
    if name != "dpo":
        assert "beta=0.3" not in usage_line  # the demo's DPO setting does not carry over


@pytest.mark.slow
@pytest.mark.parametrize("name", OBJECTIVES)
def test_three_step_run_of_every_objective(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / name
    assert main(["run", "--method", name, "--out", str(out), *TINY]) == 0, capsys.readouterr().err
    saved = tomllib.loads((out / "config.toml").read_text(encoding="utf-8"))
    assert saved["usage"]["method"] == name
    assert "beta" not in saved["usage"] or name == "dpo"
    assert (out / "model" / "config.json").is_file()
    assert "preference_accuracy/accuracy" in capsys.readouterr().out

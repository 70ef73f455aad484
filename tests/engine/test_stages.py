"""The pipeline's layout: a short runner over stage modules, each with one documented job and a public surface."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import prefcore.stages
from prefcore import pipeline

STAGES = sorted(info.name for info in pkgutil.iter_modules(prefcore.stages.__path__))


def test_every_stage_module_says_what_it_does_and_exports_its_names() -> None:
    assert STAGES  # found through the package, not a hand-kept list
    for name in STAGES:
        module = importlib.import_module(f"prefcore.stages.{name}")
        assert module.__doc__ and module.__doc__.strip(), name
        assert module.__all__, name
        for exported in module.__all__:
            assert getattr(module, exported).__doc__, f"{name}.{exported} has no docstring"
        assert f"``{name}``" in prefcore.stages.__doc__, f"the package docstring does not list {name}"


def test_stages_use_each_other_only_through_public_names() -> None:
    for name in STAGES:
        tree = ast.parse(Path(prefcore.stages.__path__[0], f"{name}.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("prefcore.stages"):
                private = [alias.name for alias in node.names if alias.name.startswith("_")]
                assert not private, f"{name} imports {private} from {node.module}"


def test_the_runner_stays_short() -> None:
    lines = Path(pipeline.__file__).read_text(encoding="utf-8").splitlines()
    assert len(lines) < 260, "pipeline.py composes the stages; work belongs in prefcore.stages"

"""Meta-tests: one file per objective, each declared as an entry point, each with a reference test."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path
from types import ModuleType

from prefcore.batch import DATA_FORMATS
from prefcore.methods import UsageObjective
from prefcore.registry import Registry
from prefcore.rollout import ROLLOUT_FORMAT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[3]
TESTS = Path(__file__).resolve().parent
USAGE_PACKAGE = "prefcore.plugins.usage"


def _short_name(module: ModuleType) -> str:
    return module.__name__.rsplit(".", 1)[-1]


def test_each_plugin_file_registers_one_objective_named_after_it(usage_modules: list[ModuleType]) -> None:
    for module in usage_modules:
        classes = module.prefcore_register_usage_objectives()
        assert [cls.name for cls in classes] == [_short_name(module)], module.__name__
        assert all(issubclass(cls, UsageObjective) for cls in classes)


def test_each_plugin_file_follows_the_method_anatomy(usage_modules: list[ModuleType]) -> None:
    """Docstring with a paper link and a formula → config → class → the registration hook last."""
    for module in usage_modules:
        assert module.__file__ is not None
        tree = ast.parse(Path(module.__file__).read_text())
        docstring = ast.get_docstring(tree) or ""
        assert re.search(r"https://\S+", docstring), f"{module.__name__}: no paper link in the module docstring"
        assert "loss" in docstring and "=" in docstring, f"{module.__name__}: no formula in the module docstring"
        definitions = [node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
        assert definitions[-1].name == "prefcore_register_usage_objectives", module.__name__


def test_declared_attributes_are_valid(usage_registry: Registry) -> None:
    for info in usage_registry.methods("usage"):
        cls = info.cls
        assert issubclass(cls, UsageObjective)
        # offline objectives train on a LogProbBatch layout, online ones on rollouts (prefcore.rollout)
        assert cls.data_formats and set(cls.data_formats) <= {*DATA_FORMATS, ROLLOUT_FORMAT}, info.name
        assert cls().uses_reference() is cls.needs_reference, info.name
        assert info.summary, f"{info.name}: the class docstring's first line is the listing summary"


def test_every_plugin_file_is_an_entry_point(usage_modules: list[ModuleType]) -> None:
    """Built-ins load through ``[project.entry-points.prefcore]`` like third-party plugins."""
    entry_points = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["prefcore"]
    declared = {name: target for name, target in entry_points.items() if target.startswith(f"{USAGE_PACKAGE}.")}
    expected = {_short_name(module): module.__name__ for module in usage_modules}
    missing = sorted(f'{name} = "{target}"' for name, target in expected.items() if declared.get(name) != target)
    stale = sorted(name for name in declared if name not in expected)
    assert not missing, "add to [project.entry-points.prefcore]:\n" + "\n".join(missing)
    assert not stale, f"entry points without a plugin file in plugins/usage/: {stale}"


def test_every_registered_objective_has_a_reference_test(usage_registry: Registry) -> None:
    """A test named ``test_<name>_matches_<source>`` compares it with an independent implementation."""
    sources = "\n".join(path.read_text() for path in sorted(TESTS.glob("test_references_*.py")))
    untested = [name for name in usage_registry.names("usage") if f"def test_{name}_matches_" not in sources]
    assert untested == []

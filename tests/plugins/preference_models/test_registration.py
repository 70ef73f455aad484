"""Meta-tests: one file per preference model, each declared as an entry point, each with a reference test."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path
from types import ModuleType

from prefcore.engine.reward_trainer import REWARD_DATA_FORMATS
from prefcore.methods import PreferenceModel
from prefcore.registry import Registry

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[3]
TESTS = Path(__file__).resolve().parent
PACKAGE = "prefcore.plugins.preference_models"


def _short_name(module: ModuleType) -> str:
    return module.__name__.rsplit(".", 1)[-1]


def test_each_plugin_file_registers_one_model_named_after_it(preference_modules: list[ModuleType]) -> None:
    assert preference_modules, "plugins/preference_models/ holds no plugin module"
    for module in preference_modules:
        classes = module.prefcore_register_preference_models()
        assert [cls.name for cls in classes] == [_short_name(module)], module.__name__
        assert all(issubclass(cls, PreferenceModel) for cls in classes)


def test_each_plugin_file_follows_the_method_anatomy(preference_modules: list[ModuleType]) -> None:
    """Docstring with a paper link and a formula → config → class → the registration hook last."""
    for module in preference_modules:
        assert module.__file__ is not None
        tree = ast.parse(Path(module.__file__).read_text())
        docstring = ast.get_docstring(tree) or ""
        assert re.search(r"https://\S+", docstring), f"{module.__name__}: no paper link in the module docstring"
        assert "=" in docstring and ("loss" in docstring or "score" in docstring), f"{module.__name__}: no formula"
        definitions = [node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
        names = [node.name for node in definitions]
        assert names[-1] == "prefcore_register_preference_models", module.__name__
        config = next(index for index, name in enumerate(names) if name.endswith("Config"))
        method = next(index for index, node in enumerate(definitions) if _is_method_class(node))
        assert config < method, f"{module.__name__}: the config comes before the method class"


def _is_method_class(node: ast.stmt) -> bool:
    return isinstance(node, ast.ClassDef) and any(
        isinstance(base, ast.Name) and base.id == "PreferenceModel" for base in node.bases
    )


def test_declared_attributes_are_valid(preference_registry: Registry) -> None:
    for info in preference_registry.methods("preference_model"):
        cls = info.cls
        assert issubclass(cls, PreferenceModel)
        assert cls.data_formats and set(cls.data_formats) <= set(REWARD_DATA_FORMATS), info.name
        assert cls().num_heads() >= 1, info.name
        assert info.summary, f"{info.name}: the class docstring's first line is the listing summary"


def test_every_plugin_file_is_an_entry_point(preference_modules: list[ModuleType]) -> None:
    """Built-ins load through ``[project.entry-points.prefcore]`` like third-party plugins."""
    entry_points = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["prefcore"]
    declared = {name: target for name, target in entry_points.items() if target.startswith(f"{PACKAGE}.")}
    expected = {_short_name(module): module.__name__ for module in preference_modules}
    missing = sorted(f'{name} = "{target}"' for name, target in expected.items() if declared.get(name) != target)
    stale = sorted(name for name in declared if name not in expected)
    assert not missing, "add to [project.entry-points.prefcore]:\n" + "\n".join(missing)
    assert not stale, f"entry points without a plugin file in plugins/preference_models/: {stale}"


def test_every_registered_model_has_a_reference_test(preference_registry: Registry) -> None:
    """A test named ``test_<name>_matches_<source>`` compares it with an independent implementation."""
    sources = "\n".join(path.read_text() for path in sorted(TESTS.glob("test_*.py")))
    untested = [
        name for name in preference_registry.names("preference_model") if f"def test_{name}_matches_" not in sources
    ]
    assert untested == []

"""The author's surface: built-in plugins use only what a third-party plugin can use, under one name each.

tests/core/test_meta.py refuses an absolute import of a private name of prefcore; this file
adds what that leaves open:

- a relative import (``from ._helpers import x``, ``from .dpo import _scale``) reaches a
  private name of another plugin just as well, so no module under plugins/ may import a
  private name or from a private module in any spelling (``__future__`` aside);
- a public name is one its module lists in ``__all__``: a plugin that imports from a prefcore
  module without ``__all__``, or a name missing from it, leans on something nobody declared
  public;
- one name per concept: a built-in plugin's file, entry point and registered method share
  one name (``demo_rule.py`` → ``demo_rule = "prefcore.plugins.feedback.demo_rule"`` →
  ``name = "demo_rule"``).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

from prefcore.registry import OWN_DISTRIBUTION
from prefcore.registry import Registry

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ROOT / "plugins"
MODULES = sorted(PLUGINS.rglob("*.py"))


def _module_name(path: Path) -> str:
    """``plugins/usage/dpo.py`` → ``prefcore.plugins.usage.dpo`` (the name it installs under)."""
    parts = path.relative_to(PLUGINS).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(("prefcore", "plugins", *parts))


def _imported_from(path: Path) -> list[tuple[str, str]]:
    """``(absolute module, name)`` of every ``from ... import name`` of a plugin module, relative ones resolved."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = (
                importlib.util.resolve_name("." * node.level + (node.module or ""), package)
                if node.level
                else node.module
            )
            found += [(module or "", alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names]
    return found


def _is_prefcore(module: str) -> bool:
    return module.split(".")[0] == "prefcore"


def _is_private(module: str, name: str) -> bool:
    if module == "__future__":
        return False
    return name.startswith("_") or any(part.startswith("_") for part in module.split("."))


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(PLUGINS)))
def test_no_plugin_imports_a_private_name_in_any_spelling(path: Path) -> None:
    private = [
        f"from {module} import {name}" if name else f"import {module}"
        for module, name in _imported_from(path)
        if _is_prefcore(module) and _is_private(module, name)
    ]
    assert private == [], f"{path.relative_to(ROOT)} imports private names; use (or add to) a public module"


def _undeclared_imports() -> dict[str, set[str]]:
    """prefcore module → names plugins import from it that its ``__all__`` does not list ('*': no ``__all__``)."""
    undeclared: dict[str, set[str]] = {}
    for path in MODULES:
        for module, name in _imported_from(path):
            if not name or not _is_prefcore(module) or module.startswith("prefcore.plugins"):
                continue  # plain imports, other libraries, and other plugins' modules (plugins are not libraries)
            imported = importlib.import_module(module)
            if hasattr(imported, "__path__") and importlib.util.find_spec(f"{module}.{name}") is not None:
                continue  # a submodule
            exported = getattr(imported, "__all__", None)
            if exported is None:
                undeclared.setdefault(module, set()).add("*")
            elif name not in exported:
                undeclared.setdefault(module, set()).add(name)
    return undeclared


def test_plugins_import_only_names_their_module_declares_public() -> None:
    assert _undeclared_imports() == {}, (
        "list these names in their module's __all__ (and document them), or stop importing them"
    )


def test_each_builtin_plugin_registers_under_its_own_name() -> None:
    """File, entry point and registered method share one name, so a newcomer finds each from the others."""
    registry = Registry.from_environment(third_party=False)
    own = [plugin for plugin in registry.plugins() if plugin.provenance.distribution == OWN_DISTRIBUTION]
    mismatched = {
        plugin.name: [name for _, name in plugin.methods]
        for plugin in own
        if [name for _, name in plugin.methods] != [plugin.name]
    }
    assert own and mismatched == {}
    files = {path.stem for path in PLUGINS.glob("*/*.py") if not path.stem.startswith("_")}
    assert {plugin.name for plugin in own} == files

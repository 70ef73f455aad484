"""Meta-tests, in the style of datasette's: the hooks and the methods keep their documentation and tests.

- every hook specification is documented on docs/writing-a-plugin.md with its arguments, and
  has a test named ``test_hook_<hook>`` (tests/core/test_hookspecs.py holds them);
- every built-in method, found through the registry (never a hand-kept list), names its
  source in its docstring (a paper link, an arXiv id or a formula) and is named by a
  reference test of its kind;
- nothing under plugins/ imports a private name of prefcore (``_name`` or a ``_module``):
  the built-ins use only the public surface a third-party plugin has.
"""

from __future__ import annotations

import ast
import inspect
import re
import sys
from pathlib import Path

import pytest

from prefcore import hookspecs
from prefcore.registry import MethodInfo
from prefcore.registry import Registry

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
PAGE = ROOT / "docs" / "writing-a-plugin.md"

HOOKS = {
    name: function
    for name, function in vars(hookspecs).items()
    if name.startswith("prefcore_") and inspect.isfunction(function)
}

BUILT_INS = Registry.from_environment(third_party=False).methods()

REFERENCE_TESTS: dict[str, str] = {
    "usage": "plugins/usage/test_references_*.py",
    "preference_model": "plugins/preference_models/test_*.py",
    "evaluation": "plugins/evaluation/test_*.py",
    "feedback": "**/test_*.py",
    "aggregation": "plugins/aggregation/test_*.py",
}
"""Where a method of each kind is tested against a reference, as a glob under ``tests/``.

Usage objectives: against TRL or the paper's formula (``test_references_*``); preference
models and evaluators: their own test files, which compare with formulas computed by hand;
feedback sources (no formula to compare with): any test that uses the source by name.
"""

NOT_REFERENCE_TESTS = {"test_registration.py", "test_meta.py"}
"""Files that name every method without testing what it computes."""

SOURCE = re.compile(
    r"https?://"  # a paper or specification link
    r"|arXiv|\b\d{4}\.\d{4,5}\b"  # an arXiv id
    r"|^ {4,}\S.*\s=\s",  # an indented formula line: ``    loss = −log σ(β·h)``
    re.M,
)


def _documented_hooks() -> dict[str, list[str]]:
    """Hook name → argument names, from the page's ``### `prefcore_...(...)` `` headings."""
    headings = re.findall(r"^### `(prefcore_\w+)\(([^)]*)\)`$", PAGE.read_text(), re.M)
    return {name: [arg.strip() for arg in arguments.split(",") if arg.strip()] for name, arguments in headings}


def _hook_tests() -> set[str]:
    """Names of the hooks that a ``test_hook_<hook>`` function tests, anywhere under tests/."""
    found: set[str] = set()
    for path in TESTS.rglob("test_*.py"):
        found.update(re.findall(r"^def test_hook_(prefcore_\w+)\(", path.read_text(), re.M))
    return found


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_hook_is_documented_on_the_plugin_page(hook: str) -> None:
    documented = _documented_hooks()
    assert hook in documented, f"docs/writing-a-plugin.md has no '### `{hook}(...)`' section"
    assert documented[hook] == list(inspect.signature(HOOKS[hook]).parameters), (
        f"docs/writing-a-plugin.md gives {hook} the arguments {documented[hook]}"
    )


def test_the_page_documents_no_hook_that_does_not_exist() -> None:
    assert set(_documented_hooks()) <= set(HOOKS)


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_hook_has_a_test(hook: str) -> None:
    assert hook in _hook_tests(), f"no test is named test_hook_{hook}; add one that makes prefcore call the hook"


def test_the_registry_finds_methods_of_every_kind() -> None:
    assert {info.kind for info in BUILT_INS} == set(REFERENCE_TESTS)


def _ids(info: MethodInfo) -> str:
    return f"{info.kind}:{info.name}"


@pytest.mark.parametrize("info", BUILT_INS, ids=_ids)
def test_method_docstring_names_its_source(info: MethodInfo) -> None:
    module = sys.modules[info.cls.__module__]
    doc = f"{inspect.getdoc(module) or ''}\n{info.cls.__doc__ or ''}"
    assert SOURCE.search(doc), (
        f"{info.kind} {info.name!r} ({info.cls.__module__}) names no source: put the paper's link or arXiv id, "
        f"or the formula on an indented line, in its module docstring"
    )


@pytest.mark.parametrize("info", BUILT_INS, ids=_ids)
def test_method_has_a_reference_test(info: MethodInfo) -> None:
    module = info.cls.__module__
    named = re.compile(rf"""["']{info.name}["']|\b{re.escape(module)}\b""")
    files = [
        path
        for path in TESTS.glob(REFERENCE_TESTS[info.kind])
        if path.name not in NOT_REFERENCE_TESTS and named.search(path.read_text())
    ]
    assert files, f"no test matching tests/{REFERENCE_TESTS[info.kind]} names {info.kind} {info.name!r} or {module}"


# -- the author's surface ------------------------------------------------------------------------

PLUGINS = ROOT / "plugins"


def _private_imports(path: Path) -> list[str]:
    """Imports of a ``_name`` or of a ``_module`` of prefcore (built-in plugins included)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "prefcore":
            if any(part.startswith("_") for part in node.module.split(".")):
                found.append(f"from {node.module} import ...")
            found += [f"from {node.module} import {alias.name}" for alias in node.names if alias.name.startswith("_")]
        elif isinstance(node, ast.Import):
            found += [
                f"import {alias.name}"
                for alias in node.names
                if alias.name.split(".")[0] == "prefcore" and any(p.startswith("_") for p in alias.name.split("."))
            ]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "lazy_module" and node.args:
            target = node.args[0]
            if isinstance(target, ast.Constant) and any(p.startswith("_") for p in str(target.value).split(".")):
                found.append(f"lazy_module({target.value!r})")
    return found


@pytest.mark.parametrize("path", sorted(PLUGINS.rglob("*.py")), ids=lambda path: str(path.relative_to(PLUGINS)))
def test_built_in_plugins_import_only_public_names(path: Path) -> None:
    """A third party can write what a built-in writes: no plugin reaches a private name of prefcore."""
    assert _private_imports(path) == []
    if path.name != "__init__.py":
        assert not path.name.startswith("_"), "helpers shared by plugins belong in a public module of prefcore"

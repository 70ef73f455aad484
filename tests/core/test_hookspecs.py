"""Every hook is documented: a summary and a ``:param`` line for each argument."""

from __future__ import annotations

import inspect

import pytest

from prefcore import hookspecs
from prefcore.methods import KINDS

HOOKS = [
    function
    for name, function in vars(hookspecs).items()
    if name.startswith("prefcore_") and inspect.isfunction(function)
]


def test_there_is_one_registration_hook_per_kind() -> None:
    assert set(hookspecs.REGISTRATION_HOOKS) == set(KINDS)
    names = {hook.__name__ for hook in HOOKS}
    assert set(hookspecs.REGISTRATION_HOOKS.values()) <= names


@pytest.mark.parametrize("hook", HOOKS, ids=lambda hook: hook.__name__)
def test_hook_is_documented(hook) -> None:
    doc = inspect.getdoc(hook) or ""
    assert doc.splitlines() and doc.splitlines()[0].strip(), f"{hook.__name__} has no summary line"
    for parameter in inspect.signature(hook).parameters:
        assert f":param {parameter}:" in doc, f"{hook.__name__} does not document {parameter!r}"
    if hook.__name__.startswith("prefcore_register_"):
        assert ":return:" in doc

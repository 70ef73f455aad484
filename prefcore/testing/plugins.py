"""Registries of exactly the plugin modules under test, for plugin packages' own test suites."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Sequence
from types import ModuleType

from prefcore.registry import PrefcorePluginManager
from prefcore.registry import Provenance
from prefcore.registry import Registry

__all__ = ["plugin_modules", "registry_of"]


def plugin_modules(package: ModuleType) -> list[ModuleType]:
    """Every plugin module of a package of plugins (``_``-prefixed helper modules are not plugins)."""
    return [
        importlib.import_module(f"{package.__name__}.{info.name}")
        for info in pkgutil.iter_modules(package.__path__)
        if not info.name.startswith("_")
    ]


def registry_of(modules: Sequence[ModuleType]) -> Registry:
    """A fresh registry holding exactly ``modules``, as if each were an installed plugin.

    Tests see the files under test, not whatever happens to be installed; a module that
    fails validation fails here, with the registry's own error.
    """
    manager = PrefcorePluginManager()
    for module in modules:
        manager.register_plugin(module, Provenance(plugin=module.__name__.rsplit(".", 1)[-1]))
    registry = Registry(manager)
    assert not registry.errors, registry.errors
    return registry

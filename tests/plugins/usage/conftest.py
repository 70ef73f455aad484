"""Fixtures of the usage-objective tests: the built-in objectives in a fresh registry, one thread.

The built-in modules are registered directly on a fresh plugin manager (not through
installed entry points), so these tests see exactly the files in ``plugins/usage/``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from types import ModuleType

import pytest
import torch

import prefcore.plugins.usage as usage_package
from prefcore.registry import PrefcorePluginManager
from prefcore.registry import Provenance
from prefcore.registry import Registry


def usage_plugin_modules() -> list[ModuleType]:
    """Every plugin module of ``plugins/usage/`` (``_``-prefixed helper modules are not plugins)."""
    return [
        importlib.import_module(f"{usage_package.__name__}.{info.name}")
        for info in pkgutil.iter_modules(usage_package.__path__)
        if not info.name.startswith("_")
    ]


@pytest.fixture(scope="session")
def usage_modules() -> list[ModuleType]:
    return usage_plugin_modules()


@pytest.fixture(scope="session")
def usage_registry() -> Registry:
    manager = PrefcorePluginManager()
    for module in usage_plugin_modules():
        manager.register_plugin(module, Provenance(plugin=module.__name__.rsplit(".", 1)[-1]))
    registry = Registry(manager)
    assert not registry.errors, registry.errors
    return registry


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny tensors: intra-op threads only add contention (10x slower on a loaded 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

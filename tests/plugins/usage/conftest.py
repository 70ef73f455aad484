"""Fixtures of the usage-objective tests: the built-in objectives in a fresh registry, one thread.

The built-in modules are registered directly on a fresh plugin manager (not through
installed entry points), so these tests see exactly the files in ``plugins/usage/``.
"""

from __future__ import annotations

from types import ModuleType

import pytest

import prefcore.plugins.usage as usage_package
from prefcore.registry import Registry
from prefcore.testing import plugin_modules
from prefcore.testing import registry_of


@pytest.fixture(scope="session")
def usage_modules() -> list[ModuleType]:
    return plugin_modules(usage_package)


@pytest.fixture(scope="session")
def usage_registry() -> Registry:
    return registry_of(plugin_modules(usage_package))

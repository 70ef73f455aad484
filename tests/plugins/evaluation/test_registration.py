"""The evaluator modules register through the ordinary hook on a fresh plugin manager."""

from __future__ import annotations

import importlib

import pytest

from prefcore.registry import PrefcorePluginManager
from prefcore.registry import Provenance
from prefcore.registry import Registry

MODULES = (
    "win_rate",
    "preference_accuracy",
    "kl",
    "reward_score",
    "samples",
    "benchmark_accuracy",
    "lc_win_rate",
    "reward_accuracy",
    "reference_match",
    "sycophancy",
    "contamination",
)


@pytest.fixture
def registry() -> Registry:
    manager = PrefcorePluginManager()
    for name in MODULES:
        module = importlib.import_module(f"prefcore.plugins.evaluation.{name}")
        manager.register_plugin(module, Provenance(plugin=name))
    return Registry(manager)


def test_every_evaluator_registers_under_its_module_name(registry: Registry) -> None:
    assert registry.errors == []
    assert registry.names("evaluation") == sorted(MODULES)


def test_options_are_validated_by_the_registry(registry: Registry) -> None:
    evaluator = registry.create("evaluation", "win_rate", {"disagreement": "tie"})
    assert evaluator.config.disagreement == "tie"
    assert registry.create("evaluation", "samples", {"count": 3}).config.count == 3

"""Every feedback module registers its source under its module name on a fresh plugin manager."""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import pytest

from prefcore.errors import ConfigError
from prefcore.registry import PrefcorePluginManager
from prefcore.registry import Provenance
from prefcore.registry import Registry

MODULES = (
    "annotations",
    "reward_model_labels",
    "llm_judge",
    "vote_counts",
    "stronger_generator",
    "reference_over_generation",
    "verifiable_answers",
    "response_editing",
)


@pytest.fixture
def registry() -> Registry:
    manager = PrefcorePluginManager()
    for name in MODULES:
        manager.register_plugin(importlib.import_module(f"prefcore.plugins.feedback.{name}"), Provenance(plugin=name))
    return Registry(manager)


def test_every_source_registers_under_its_module_name(registry: Registry) -> None:
    assert registry.errors == []
    assert registry.names("feedback") == sorted(MODULES)


def test_every_option_is_documented(registry: Registry) -> None:
    for name in MODULES:
        config_cls = registry.get("feedback", name).config_cls
        undocumented = [field.name for field in dataclasses.fields(config_cls) if not field.metadata.get("doc")]
        assert undocumented == [], name


def test_options_from_a_run_file_are_typed_and_validated(registry: Registry, tmp_path: Path) -> None:
    source = registry.create("feedback", "stronger_generator", {"path": str(tmp_path), "ordering": ["big", "small"]})
    assert source.config.path == tmp_path and source.config.ordering == ("big", "small")
    judge = registry.create("feedback", "llm_judge", {"labels": ["1", "2"], "inconsistent": "drop"})
    assert judge.config.labels == ("1", "2")
    with pytest.raises(ConfigError) as excinfo:
        registry.create("feedback", "vote_counts", {"path": "posts.jsonl", "min_ratio": 0.5})
    assert excinfo.value.method == "feedback source 'vote_counts'"
    assert "min_ratio must be 1 or more" in str(excinfo.value)
    with pytest.raises(ConfigError) as excinfo:
        registry.create("feedback", "verifiable_answers", {"path": "a.jsonl", "mode": "fuzzy"})
    assert excinfo.value.field == "mode"

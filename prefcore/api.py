"""The Python API: the same operations as the ``prefcore`` command line.

Each function builds a fresh registry unless one is passed, so results always reflect
what is installed now (there is no module-global plugin state).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefcore.config import RunConfig
from prefcore.config import load_run_config
from prefcore.errors import UnknownMethodError
from prefcore.methods import KINDS
from prefcore.methods import Method
from prefcore.registry import MethodInfo
from prefcore.registry import Registry


def get_registry(*, third_party: bool | None = None) -> Registry:
    """Every installed method, loaded through the ``prefcore`` entry-point group."""
    return Registry.from_environment(third_party=third_party)


def list_methods(kind: str | None = None, *, registry: Registry | None = None) -> list[MethodInfo]:
    """Registered methods, optionally of one kind (``feedback``, ``preference_model``, ``usage``, ``evaluation``)."""
    return (registry or get_registry()).methods(kind)


def method_info(name: str, kind: str | None = None, *, registry: Registry | None = None) -> list[MethodInfo]:
    """The methods called ``name`` (one per kind that has it); raises if none has it."""
    registry = registry or get_registry()
    if kind is not None:
        return [registry.info(kind, name)]
    found = registry.find(name)
    if not found:
        # Suggestions across all kinds: the user did not say which kind they meant.
        every_name = sorted({info.name for info in registry.methods()})
        suggestions = difflib.get_close_matches(name, every_name, n=3)
        raise UnknownMethodError("any", name, every_name, suggestions, registry.broken_plugins(name))
    return found


def create_method(kind: str, name: str, *, registry: Registry | None = None, **options: Any) -> Method:
    """Instantiate a method by kind and name with validated options."""
    return (registry or get_registry()).create(kind, name, options)


@dataclass(frozen=True)
class SelectedMethod:
    """A method instance chosen by a run file, with its weight in a combination."""

    method: Method
    weight: float


def resolve_run_config(config: RunConfig, *, registry: Registry | None = None) -> dict[str, list[SelectedMethod]]:
    """Instantiate every method a run file selects; all errors surface before any work starts."""
    registry = registry or get_registry()
    return {
        kind: [SelectedMethod(registry.create(kind, spec.name, spec.options), spec.weight) for spec in specs]
        for kind in KINDS
        if (specs := config.selected(kind))
    }


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> RunConfig:
    """Read a TOML run file with ``section.key=value`` overrides applied."""
    return load_run_config(path, overrides)


def check_config(config: RunConfig, *, registry: Registry | None = None) -> Any:
    """Check a whole run file as ``prefcore run --dry-run`` and ``run_pipeline`` do.

    Returns a ``prefcore.validation.CheckedRun`` (methods and built engine sections); raises
    one ``ConfigError`` listing every problem. Imports the engine (torch) to build its sections.
    """
    from prefcore.validation import check_run_config

    return check_run_config(config, registry=registry)

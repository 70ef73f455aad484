"""The Python API: the same operations as the ``prefcore`` command line.

Each function builds a fresh registry unless one is passed, so results always reflect
what is installed now (there is no module-global plugin state).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from prefcore.config import RunConfig
from prefcore.config import load_run_config
from prefcore.config import parse_run_config
from prefcore.errors import UnknownMethodError
from prefcore.methods import KINDS
from prefcore.methods import Method
from prefcore.registry import MethodInfo
from prefcore.registry import Registry

if TYPE_CHECKING:
    from prefcore.stages.report import RunResult

__all__ = [
    "SelectedMethod",
    "check_config",
    "create_method",
    "get_registry",
    "list_methods",
    "load_config",
    "method_info",
    "resolve_run_config",
    "train",
]


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


def train(
    config: RunConfig | Mapping[str, Any] | str | Path,
    *,
    model: Any = None,
    tokenizer: Any = None,
    data: Any = None,
    heldout: Any = None,
    out: str | Path | None = None,
    resume: bool = False,
    registry: Registry | None = None,
) -> RunResult:
    """Run the pipeline on a run file, with the model and the data given in memory if you like.

    Arguments:
        config: a run file's path, its contents as a dict (``{"usage": {"method": "dpo"}, ...}``)
            or a parsed ``RunConfig``.
        model, tokenizer: a transformers causal LM and its tokenizer, used instead of
            ``[model] path``; the model is trained in place (``[model]`` may still set the
            device, the chat template and LoRA).
        data: feedback records instead of, or besides, ``[feedback]`` sections: a list of
            dicts in TRL's layouts (``prompt``/``chosen``/``rejected``, conversational
            messages, ``prompt``/``completion``/``label``, ``messages``) or prefcore's own, a
            list of prefcore records, or a ``datasets.Dataset``.
        heldout: held-out records for evaluation, in the same forms; every record of ``data``
            then trains (instead of the ``[run] heldout_fraction`` split).
        out: the run folder (default: ``[run] out_dir``/``name``-timestamp).
        resume: continue the run in ``out`` from its newest checkpoint.
        registry: the methods to resolve names with (default: everything installed).
    Returns:
        a ``RunResult``: ``model`` (the trained policy), ``tokenizer``, ``metrics`` (the final
        evaluation) and ``run_dir``.
    """
    from prefcore.pipeline import InMemoryInputs
    from prefcore.pipeline import run_pipeline

    if isinstance(config, (str, Path)):
        config = load_run_config(config)
    elif isinstance(config, Mapping):
        config = parse_run_config(config)
    inputs = InMemoryInputs.read(model=model, tokenizer=tokenizer, data=data, heldout=heldout)
    return run_pipeline(config, out=None if out is None else str(out), resume=resume, registry=registry, inputs=inputs)

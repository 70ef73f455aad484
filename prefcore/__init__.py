"""prefcore: human preference learning for LLMs, every method a plugin."""

from __future__ import annotations

from typing import Any

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("prefcore")
"""Marker for plugin authors: ``@hookimpl def prefcore_register_usage_objectives(): ...``."""

from prefcore.api import check_config  # noqa: E402  (after hookimpl: plugins import it)
from prefcore.api import create_method  # noqa: E402
from prefcore.api import get_registry  # noqa: E402
from prefcore.api import list_methods  # noqa: E402
from prefcore.api import load_config  # noqa: E402
from prefcore.api import method_info  # noqa: E402
from prefcore.api import train  # noqa: E402

__all__ = [
    "__version__",
    "check_config",
    "create_method",
    "get_registry",
    "hookimpl",
    "list_methods",
    "load_config",
    "method_info",
    "run_pipeline",
    "train",
]


def __getattr__(name: str) -> Any:
    # The pipeline imports torch and transformers; load it only when asked for.
    if name == "run_pipeline":
        from prefcore.pipeline import run_pipeline

        return run_pipeline
    raise AttributeError(f"module 'prefcore' has no attribute {name!r}")

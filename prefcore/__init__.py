"""prefcore: human preference learning for LLMs, every method a plugin."""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("prefcore")
"""Marker for plugin authors: ``@hookimpl def prefcore_register_usage_objectives(): ...``."""

__all__ = ["__version__", "hookimpl"]

"""Lazy imports, so that listing and describing methods never loads torch, triton or transformers.

``prefcore list`` and ``prefcore info`` import every built-in plugin module to call its
registration hook; importing torch alone takes seconds. A built-in therefore writes
``torch = lazy_module("torch")`` where it would write ``import torch``: the name is bound at
once, and the real module is imported on the first attribute access (``torch.zeros``), that
is when a loss is first computed, not when the plugin is registered.

Why a stand-in rather than ``importlib.util.LazyLoader`` (what scientific-python's
lazy_loader uses): LazyLoader puts a half-made module into ``sys.modules`` straight away, so
other libraries that probe ``"torch" in sys.modules`` (transformers, accelerate) would see
torch as imported and touch it. The stand-in leaves ``sys.modules`` alone until it is used.
On that first use it also rebinds the name in the module that created it (``torch`` in the
plugin's globals) to the real module, as Mercurial's demandimport does, so a loss computed a
million times pays for the indirection once. Until then every access goes through the real
module (nothing is copied): monkeypatching the real module is seen through the stand-in, and
setting an attribute on the stand-in sets it on the module.

What a lazy module cannot do: be used at import time. Decorators (``@torch.no_grad()``),
class bodies, default arguments, base classes (``torch.autograd.Function``) and annotations
read by ``typing.get_type_hints`` (method configs) evaluate their names when the module is
imported, which would import the real module. Keep those torch-free in the built-ins; the
kernels (``@triton.jit``, autograd functions) import torch and triton normally and are
themselves loaded lazily by the plugins that call them. Names used only in annotations go
under ``if TYPE_CHECKING:``.

Third-party plugins need none of this: a plain ``import torch`` works; it only makes
``prefcore list`` slower.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import MutableMapping
from typing import Any

__all__ = ["LazyModule", "lazy_module"]


class LazyModule(types.ModuleType):
    """Stands for the module ``name`` and imports it on first attribute access."""

    def __init__(self, name: str, namespace: MutableMapping[str, Any] | None = None) -> None:
        super().__init__(name, f"Lazy stand-in for {name!r}; imported on first attribute access.")
        # Written to __dict__ directly: __setattr__ forwards to the real module.
        self.__dict__["_lazy_namespace"] = namespace

    def _load(self) -> types.ModuleType:
        module = importlib.import_module(self.__name__)
        namespace = self.__dict__["_lazy_namespace"]
        if namespace is not None:
            # Later lookups of the name in the creating module find the real module directly.
            for key, value in list(namespace.items()):
                if value is self:
                    namespace[key] = module
            self.__dict__["_lazy_namespace"] = None
        return module

    def __getattr__(self, attribute: str) -> Any:
        # Only called for names not set on the stand-in itself (its __name__, __doc__, __spec__ ...).
        if attribute.startswith("__") and attribute.endswith("__") and attribute not in _FORWARDED_DUNDERS:
            raise AttributeError(attribute)
        return getattr(self._load(), attribute)

    def __setattr__(self, attribute: str, value: Any) -> None:
        setattr(self._load(), attribute, value)

    def __delattr__(self, attribute: str) -> None:
        delattr(self._load(), attribute)

    def __dir__(self) -> list[str]:
        return dir(self._load())

    def __repr__(self) -> str:
        return f"<lazy module {self.__name__!r}>"


# Dunders that a module defines and callers read (torch.__version__); other dunders are
# probed by tools (copy, pickle, inspect) and must not trigger the import.
_FORWARDED_DUNDERS = frozenset({"__version__", "__file__", "__path__", "__all__"})


def lazy_module(name: str) -> types.ModuleType:
    """A stand-in for module ``name`` (``"torch"``, ``"torch.nn.functional"``) that imports it when first used.

    Arguments:
        name: the absolute module name, as given to ``import``.
    Returns:
        An object that forwards every attribute access to the real module, importing it on
        the first; then the global of the calling module that holds it is rebound to the
        real module. An import error (module not installed) surfaces at that first access.
    """
    return LazyModule(name, sys._getframe(1).f_globals)

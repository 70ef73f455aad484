"""Every error a user can trigger, one base class, each carrying its data.

Messages follow one voice: who → which hook/kind → what was found → what to do.
Tests assert on the attributes (``excinfo.value.name``), not only on the text.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence

__all__ = [
    "ConfigError",
    "DataError",
    "DuplicateMethodError",
    "NonFiniteLossError",
    "ObjectiveError",
    "PluginLoadError",
    "PluginValidationError",
    "PrefcoreError",
    "StorageError",
    "UnknownKindError",
    "UnknownMethodError",
]


class PrefcoreError(Exception):
    """Base class of every error prefcore raises on purpose."""


class UnknownMethodError(PrefcoreError, LookupError):
    """A method name that no loaded plugin registers for the requested kind."""

    def __init__(
        self,
        kind: str,
        name: str,
        available: Sequence[str],
        suggestions: Sequence[str],
        broken: Sequence[PrefcoreError] = (),
    ) -> None:
        self.kind = kind
        self.name = name
        self.available = tuple(available)
        self.suggestions = tuple(suggestions)
        self.broken = tuple(broken)
        listing = ", ".join(self.available) if self.available else "(none loaded)"
        what = "method" if kind == "any" else f"{kind} method"
        message = f"No {what} named {name!r}. Available: {listing}."
        if self.suggestions:
            message += " Did you mean " + " or ".join(repr(s) for s in self.suggestions) + "?"
        for error in self.broken:  # the method may live in a plugin that did not load
            plugin = getattr(error, "plugin", "?")
            distribution = getattr(error, "distribution", None)
            origin = f" (distribution {distribution})" if distribution else ""
            cause = getattr(error, "cause", None)
            reason = f"{type(cause).__name__}: {cause}" if cause is not None else getattr(error, "reason", error)
            message += f" Plugin {plugin!r}{origin} failed to load and may provide it: {str(reason).rstrip('.')}."
        listing_command = "prefcore list" if kind == "any" else f"prefcore list {kind}"
        message += f" Run `{listing_command}` to see where each comes from."
        super().__init__(message)


class UnknownKindError(PrefcoreError, LookupError):
    """A plugin kind that does not exist."""

    def __init__(self, kind: str, kinds: Sequence[str]) -> None:
        self.kind = kind
        self.kinds = tuple(kinds)
        super().__init__(f"No plugin kind named {kind!r}. Kinds: {', '.join(self.kinds)}.")


class PluginLoadError(PrefcoreError):
    """A plugin's entry point failed to import; every other plugin still loads."""

    def __init__(self, plugin: str, entry_point: str, distribution: str, cause: BaseException) -> None:
        self.plugin = plugin
        self.entry_point = entry_point
        self.distribution = distribution
        self.cause = cause
        super().__init__(
            f"Error importing plugin {plugin!r} (entry point prefcore: {entry_point}) from distribution "
            f"{distribution}: {type(cause).__name__}: {cause}. Other plugins are loaded; disable this one "
            f"with PREFCORE_DISABLE_PLUGINS={plugin}."
        )


class PluginValidationError(PrefcoreError):
    """A plugin registered something that breaks the method contract."""

    def __init__(self, plugin: str, message: str, *, distribution: str | None = None, field: str | None = None) -> None:
        self.plugin = plugin
        self.distribution = distribution
        self.field = field
        self.reason = message
        origin = f" (distribution {distribution})" if distribution else ""
        super().__init__(
            f"Plugin {plugin!r}{origin}: {message} Its other methods are not registered; "
            f"every other plugin keeps working."
        )


class DuplicateMethodError(PrefcoreError):
    """Two plugins claim the same (kind, name)."""

    def __init__(self, kind: str, name: str, first: str, second: str) -> None:
        self.kind = kind
        self.name = name
        self.first = first
        self.second = second
        super().__init__(
            f"The {kind} name {name!r} is registered twice: by {first} and by {second}. "
            f"Neither is used until one is uninstalled or disabled (PREFCORE_DISABLE_PLUGINS=<plugin>)."
        )


class ConfigError(PrefcoreError, ValueError):
    """A method option or run-file value that the method does not accept."""

    def __init__(self, message: str, *, method: str | None = None, field: str | None = None) -> None:
        self.method = method
        self.field = field
        super().__init__(message)


class DataError(PrefcoreError, ValueError):
    """A malformed preference record: names the file, line/row, field and what is accepted."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.source = source
        self.line = line
        self.field = field
        self.reason = message
        where = []
        if source is not None:
            where.append(str(source))
        if line is not None:
            where.append(f"line {line}")
        prefix = " ".join(where)
        if field is not None:
            prefix = f"{prefix}: field {field!r}" if prefix else f"field {field!r}"
        super().__init__(f"{prefix}: {message}" if prefix else message)


class StorageError(PrefcoreError, OSError):
    """A file or folder could not be written (full disk, permissions, quota); the previous copy is intact."""

    def __init__(self, path: object, cause: OSError, *, what: str | None = None) -> None:
        self.path = str(path)
        self.cause = cause
        reason = cause.strerror or str(cause) or type(cause).__name__
        label = f"{what} {self.path}" if what else self.path
        message = f"Could not write {label}: {reason}"
        if cause.errno is not None:
            message += f" (errno {cause.errno})"
        message += ". Nothing was half-written: the previous version, if any, is intact."
        if cause.errno in (errno.ENOSPC, errno.EDQUOT):
            message += " The disk is full: free some space (old runs, checkpoints) or choose another --out"
            message += ", then rerun with --resume to continue from the last checkpoint."
        elif cause.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            message += " The folder is not writable: fix its permissions or choose another --out."
        super().__init__(message)
        self.errno = cause.errno  # after OSError.__init__, which resets it


class ObjectiveError(PrefcoreError, RuntimeError):
    """An objective's loss cannot be trained on; names the method and the plugin it came from."""

    def __init__(self, method: str, origin: str, problem: str, *, step: int, hint: str) -> None:
        self.method = method
        self.origin = origin
        self.problem = problem
        self.step = step
        super().__init__(f"{method} ({origin}) {problem} at step {step}. {hint}")


class NonFiniteLossError(ObjectiveError, FloatingPointError):
    """An objective returned a NaN or infinite loss (stopped before it reaches the weights)."""

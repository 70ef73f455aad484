"""Every error a user can trigger, one base class, each carrying its data.

Messages follow one voice: who → which hook/kind → what was found → what to do.
Tests assert on the attributes (``excinfo.value.name``), not only on the text.
"""

from __future__ import annotations

from collections.abc import Sequence


class PrefcoreError(Exception):
    """Base class of every error prefcore raises on purpose."""


class UnknownMethodError(PrefcoreError, LookupError):
    """A method name that no loaded plugin registers for the requested kind."""

    def __init__(self, kind: str, name: str, available: Sequence[str], suggestions: Sequence[str]) -> None:
        self.kind = kind
        self.name = name
        self.available = tuple(available)
        self.suggestions = tuple(suggestions)
        listing = ", ".join(self.available) if self.available else "(none loaded)"
        what = "method" if kind == "any" else f"{kind} method"
        message = f"No {what} named {name!r}. Available: {listing}."
        if self.suggestions:
            message += " Did you mean " + " or ".join(repr(s) for s in self.suggestions) + "?"
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

    def __init__(self, plugin: str, message: str, *, distribution: str | None = None) -> None:
        self.plugin = plugin
        self.distribution = distribution
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

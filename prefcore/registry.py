"""Load plugins through the ``prefcore`` entry-point group and index their methods by name.

Built-in methods are declared in prefcore's own ``[project.entry-points.prefcore]`` and
load through exactly this path, so they load identically in every process of a
distributed run and a third-party plugin is a peer of the built-ins. A plugin that fails
to import, or registers something invalid, is recorded as broken; every other plugin
keeps working and ``prefcore list`` shows what broke.

Environment switches:
- ``PREFCORE_DISABLE_PLUGINS=a,b``: never load these plugins (entry-point names).
- ``PREFCORE_DISABLE_PLUGIN_AUTOLOAD=1``: load only prefcore's own built-in plugins.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.metadata
import os
import typing
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from typing import final

import pluggy

from prefcore import hookspecs
from prefcore.config import _coerce as coerce_option  # the same type rules as the options a user gives
from prefcore.config import build_config
from prefcore.errors import ConfigError
from prefcore.errors import DuplicateMethodError
from prefcore.errors import PluginLoadError
from prefcore.errors import PluginValidationError
from prefcore.errors import PrefcoreError
from prefcore.errors import UnknownKindError
from prefcore.errors import UnknownMethodError
from prefcore.methods import BASE_CLASSES
from prefcore.methods import KIND_TITLES
from prefcore.methods import METHOD_NAME
from prefcore.methods import PLUGIN_KINDS
from prefcore.methods import Method
from prefcore.methods import declaration_problem

ENTRY_POINT_GROUP = "prefcore"
OWN_DISTRIBUTION = "prefcore"
DISABLE_ENV = "PREFCORE_DISABLE_PLUGINS"
NO_AUTOLOAD_ENV = "PREFCORE_DISABLE_PLUGIN_AUTOLOAD"


@dataclass(frozen=True)
class Provenance:
    """Where a plugin came from: its entry point and distribution, for listings and errors."""

    plugin: str
    distribution: str | None = None
    version: str | None = None
    entry_point: str | None = None

    def describe(self) -> str:
        if self.distribution is None:
            return f"plugin {self.plugin!r} (registered directly)"
        return f"plugin {self.plugin!r} from distribution {self.distribution} {self.version}"


class PrefcorePluginManager(pluggy.PluginManager):
    """A pluggy manager that remembers each plugin's distribution and every load failure."""

    def __init__(self) -> None:
        super().__init__(ENTRY_POINT_GROUP)
        self.add_hookspecs(hookspecs)
        self.provenance: dict[str, Provenance] = {}
        self.load_errors: list[PrefcoreError] = []
        # Historic: every plugin registered from now on may add hook specifications of its own.
        self.hook.prefcore_add_hookspecs.call_historic(kwargs={"plugin_manager": self})

    def register_plugin(self, plugin: object, provenance: Provenance) -> None:
        """Register ``plugin`` under ``provenance.plugin``, recording its distribution."""
        self.register(plugin, name=provenance.plugin)
        self.provenance[provenance.plugin] = provenance

    def load_entry_points(self, *, third_party: bool = True, disabled: Iterable[str] = ()) -> int:
        """Import every ``prefcore`` entry point; failures are recorded, never raised.

        Arguments:
            third_party: also load plugins from distributions other than prefcore itself.
            disabled: entry-point names to skip.
        Returns:
            the number of plugins registered by this call.
        """
        for name in disabled:
            self.set_blocked(name)
        loaded = 0
        for distribution, entry_point in _prefcore_entry_points():
            dist_name = distribution.metadata["Name"] or "unknown"
            if not third_party and _normalise(dist_name) != OWN_DISTRIBUTION:
                continue
            if self.is_blocked(entry_point.name) or self.has_plugin(entry_point.name):
                continue
            provenance = Provenance(
                plugin=entry_point.name,
                distribution=dist_name,
                version=distribution.version,
                entry_point=f"{entry_point.name} = {entry_point.value}",
            )
            try:
                plugin = entry_point.load()
                self.register_plugin(plugin, provenance)
            except Exception as exc:  # any import-time failure must not take the others down
                self.provenance[entry_point.name] = provenance
                self.load_errors.append(
                    PluginLoadError(entry_point.name, provenance.entry_point or "", _dist_label(provenance), exc)
                )
                continue
            loaded += 1
        self._drop_plugins_with_unknown_hooks()
        return loaded

    def _drop_plugins_with_unknown_hooks(self) -> None:
        """A misspelled hook name would otherwise be silently ignored; drop that plugin only."""
        for hook_name, caller in list(vars(self.hook).items()):
            if not isinstance(caller, pluggy.HookCaller) or caller.has_spec():
                continue
            for hookimpl in caller.get_hookimpls():
                provenance = self.provenance.get(hookimpl.plugin_name, Provenance(plugin=hookimpl.plugin_name))
                self.load_errors.append(
                    PluginValidationError(
                        hookimpl.plugin_name,
                        f"implements unknown hook {hook_name!r}; see prefcore.hookspecs for the hook names.",
                        distribution=_dist_label(provenance) if provenance.distribution else None,
                    )
                )
                self.unregister(name=hookimpl.plugin_name)


def _normalise(distribution_name: str) -> str:
    return distribution_name.lower().replace("_", "-")


def _dist_label(provenance: Provenance) -> str:
    return f"{provenance.distribution} {provenance.version}"


def _prefcore_entry_points() -> Iterable[tuple[importlib.metadata.Distribution, importlib.metadata.EntryPoint]]:
    seen: set[tuple[str, str]] = set()
    for distribution in importlib.metadata.distributions():
        for entry_point in distribution.entry_points:
            if entry_point.group != ENTRY_POINT_GROUP:
                continue
            key = (_normalise(distribution.metadata["Name"] or ""), entry_point.name)
            if key in seen:  # the same distribution visible twice on sys.path
                continue
            seen.add(key)
            yield distribution, entry_point


def _env_disabled() -> list[str]:
    return [name.strip() for name in os.environ.get(DISABLE_ENV, "").split(",") if name.strip()]


def get_plugin_manager(
    *, third_party: bool | None = None, disabled: Iterable[str] | None = None
) -> PrefcorePluginManager:
    """Build a fresh plugin manager with every installed prefcore plugin loaded.

    Arguments:
        third_party: load plugins of other distributions; default: unless
            ``PREFCORE_DISABLE_PLUGIN_AUTOLOAD`` is set.
        disabled: plugin names to skip; default: ``PREFCORE_DISABLE_PLUGINS``.
    Returns:
        the manager; failures are in ``manager.load_errors``.
    """
    if third_party is None:
        third_party = os.environ.get(NO_AUTOLOAD_ENV, "") in ("", "0")
    manager = PrefcorePluginManager()
    manager.load_entry_points(third_party=third_party, disabled=_env_disabled() if disabled is None else disabled)
    return manager


@dataclass(frozen=True)
class MethodInfo:
    """One registered method and where it came from."""

    kind: str
    name: str
    cls: type[Method]
    provenance: Provenance

    @property
    def summary(self) -> str:
        return self.cls.summary()


@dataclass(frozen=True)
class PluginInfo:
    """One plugin the manager knows, with what it registered: methods, or the errors that stopped it.

    A plugin may register no method at all (a logger implementing lifecycle hooks only);
    it is listed all the same, so that ``prefcore list`` shows everything installed.
    """

    provenance: Provenance
    methods: tuple[tuple[str, str], ...]
    """``(kind, name)`` of each method class its registration hooks returned."""
    errors: tuple[PrefcoreError, ...]
    loaded: bool
    """False when the plugin failed to import or was dropped (see ``errors``)."""

    @property
    def name(self) -> str:
        return self.provenance.plugin


@final
class Registry:
    """Methods indexed by ``(kind, name)``, built from a plugin manager's registration hooks."""

    def __init__(self, plugin_manager: PrefcorePluginManager) -> None:
        self.plugin_manager = plugin_manager
        self.errors: list[PrefcoreError] = list(plugin_manager.load_errors)
        self._methods: dict[tuple[str, str], MethodInfo] = {}
        self._conflicts: dict[tuple[str, str], DuplicateMethodError] = {}
        self._registered: dict[str, list[tuple[str, str]]] = {}
        for kind in PLUGIN_KINDS:
            self._collect(kind)

    @classmethod
    def from_environment(cls, *, third_party: bool | None = None, disabled: Iterable[str] | None = None) -> Registry:
        """The registry of every installed plugin (see ``get_plugin_manager``)."""
        return cls(get_plugin_manager(third_party=third_party, disabled=disabled))

    def _provenance(self, plugin_name: str) -> Provenance:
        return self.plugin_manager.provenance.get(plugin_name, Provenance(plugin=plugin_name))

    def _collect(self, kind: str) -> None:
        """Call ``kind``'s registration hook once per plugin, through pluggy, and index what each returned.

        One call per implementation (``subset_hook_caller`` leaving out the other plugins)
        keeps what each plugin returned attributed to it, so a plugin whose hook raises or
        returns something invalid is dropped alone; calling through pluggy keeps its tracing
        (``enable_tracing``), call monitoring and hook wrappers seeing every registration.
        """
        for plugin_name, result in self._call_each(hookspecs.REGISTRATION_HOOKS[kind]):
            provenance = self._provenance(plugin_name)
            try:
                if isinstance(result, BaseException):
                    raise result
                classes = self._validated(kind, result, provenance)
            except PluginValidationError as exc:
                self.errors.append(exc)
                continue
            except Exception as exc:  # a crashing hook breaks only its own plugin
                self.errors.append(
                    PluginValidationError(
                        provenance.plugin,
                        f"hook {hookspecs.REGISTRATION_HOOKS[kind]!r} raised {type(exc).__name__}: {exc}",
                        distribution=provenance.distribution,
                    )
                )
                continue
            for method_cls in classes:
                self._registered.setdefault(provenance.plugin, []).append((kind, method_cls.name))
                self._add(MethodInfo(kind, method_cls.name, method_cls, provenance))

    def _call_each(self, hook_name: str) -> list[tuple[str, Any]]:
        """``(plugin name, returned value or the exception it raised)`` for each implementation of ``hook_name``.

        Hook wrappers are not implementations of their own: they wrap every call.
        """
        manager = self.plugin_manager
        implementations = [
            impl for impl in getattr(manager.hook, hook_name).get_hookimpls() if not (impl.hookwrapper or impl.wrapper)
        ]
        results: list[tuple[str, Any]] = []
        for impl in implementations:
            others = [other.plugin for other in implementations if other.plugin is not impl.plugin]
            try:
                returned = manager.subset_hook_caller(hook_name, others)()
            except Exception as exc:  # attributed to the plugin by the caller
                results.append((impl.plugin_name, exc))
                continue
            # pluggy leaves a None result out of the list it returns
            results.append((impl.plugin_name, returned[0] if returned else None))
        return results

    def _validated(self, kind: str, returned: Any, provenance: Provenance) -> list[type[Method]]:
        hook_name = hookspecs.REGISTRATION_HOOKS[kind]
        if returned is None:
            return []
        if not isinstance(returned, (list, tuple)):
            raise PluginValidationError(
                provenance.plugin,
                f"hook {hook_name!r} returned {type(returned).__name__}; it must return a list of classes.",
                distribution=provenance.distribution,
            )
        base = BASE_CLASSES[kind]
        for method_cls in returned:
            problem, field = _method_class_problem(method_cls, base), None
            if problem is None:
                problem, field = _config_defaults_problem(method_cls)
            if problem:
                raise PluginValidationError(
                    provenance.plugin,
                    f"hook {hook_name!r} returned {method_cls!r}, which {problem}.",
                    distribution=provenance.distribution,
                    field=field,
                )
        return list(returned)

    def _add(self, info: MethodInfo) -> None:
        key = (info.kind, info.name)
        if key in self._conflicts:
            return
        existing = self._methods.get(key)
        if existing is None:
            self._methods[key] = info
            return
        if existing.cls is info.cls:  # one class exported by two plugin modules
            return
        conflict = DuplicateMethodError(
            KIND_TITLES[info.kind], info.name, existing.provenance.describe(), info.provenance.describe()
        )
        del self._methods[key]
        self._conflicts[key] = conflict
        self.errors.append(conflict)

    def methods(self, kind: str | None = None) -> list[MethodInfo]:
        """Every usable method, optionally of one kind, sorted by kind then name."""
        if kind is not None:
            _check_kind(kind)
        infos = [info for info in self._methods.values() if kind is None or info.kind == kind]
        return sorted(infos, key=lambda info: (PLUGIN_KINDS.index(info.kind), info.name))

    def names(self, kind: str) -> list[str]:
        return [info.name for info in self.methods(kind)]

    def info(self, kind: str, name: str) -> MethodInfo:
        """The method ``name`` of ``kind``; raises a helpful error for unknown or ambiguous names."""
        _check_kind(kind)
        key = (kind, name)
        if key in self._conflicts:
            raise self._conflicts[key]
        if key not in self._methods:
            available = self.names(kind)
            suggestions = difflib.get_close_matches(name, available, n=3, cutoff=0.6)
            raise UnknownMethodError(kind, name, available, suggestions, self.broken_plugins(name))
        return self._methods[key]

    def broken_plugins(self, name: str | None = None) -> list[PrefcoreError]:
        """Load and validation errors of plugins that lost methods; those named like ``name`` first.

        A plugin that failed to import cannot say what it would have registered, so when a
        method is not found every broken plugin may be the one that provides it.
        """
        broken = [error for error in self.errors if isinstance(error, (PluginLoadError, PluginValidationError))]
        if name is None:
            return broken

        def likely(error: PrefcoreError) -> bool:
            where = f"{getattr(error, 'plugin', '')} {getattr(error, 'entry_point', '')}".lower()
            return name.lower() in where

        return sorted(broken, key=lambda error: not likely(error))

    def plugins(self) -> list[PluginInfo]:
        """Every plugin the manager registered or failed to load, sorted by name, methods or not."""
        errors: dict[str, list[PrefcoreError]] = {}
        for error in self.errors:
            plugin = getattr(error, "plugin", None)
            if isinstance(error, (PluginLoadError, PluginValidationError)) and plugin is not None:
                errors.setdefault(plugin, []).append(error)
        names = {name for name, _ in self.plugin_manager.list_name_plugin() if name is not None}
        names |= set(self.plugin_manager.provenance) | set(errors)
        return [
            PluginInfo(
                provenance=self._provenance(name),
                methods=tuple(self._registered.get(name, ())),
                errors=tuple(errors.get(name, ())),
                loaded=self.plugin_manager.has_plugin(name),
            )
            for name in sorted(names)
        ]

    def fingerprint(self) -> dict[str, list[str]]:
        """What this process loaded, to compare across the ranks of a distributed run.

        ``methods``: ``kind:name`` of every usable method; ``plugins``: ``name=distribution version``
        of every plugin loaded; ``broken``: the plugins that failed to import or validate.
        """
        loaded = [plugin for plugin in self.plugins() if plugin.loaded]
        return {
            "methods": [f"{info.kind}:{info.name}" for info in self.methods()],
            "plugins": [f"{p.name}={p.provenance.distribution or '-'} {p.provenance.version or '-'}" for p in loaded],
            "broken": sorted({str(getattr(error, "plugin", "")) for error in self.broken_plugins()}),
        }

    def find(self, name: str) -> list[MethodInfo]:
        """Every method called ``name``, whatever its kind (for ``prefcore info NAME``)."""
        return [info for info in self.methods() if info.name == name]

    def get(self, kind: str, name: str) -> type[Method]:
        return self.info(kind, name).cls

    def create(self, kind: str, name: str, options: Mapping[str, Any] | None = None) -> Method:
        """Instantiate a method with ``options`` validated against its config dataclass."""
        info = self.info(kind, name)
        config = build_config(info.cls.config_cls, options or {}, method=f"{KIND_TITLES[kind]} {name!r}")
        method = info.cls(config)
        method.provenance = info.provenance  # errors in the method can then name its plugin
        return method

    def create_for(self, where: str, kind: str, name: str, options: Mapping[str, Any], *, field: str) -> Method:
        """``create``, with every error a ``ConfigError`` that starts with ``where`` (the run-file entry).

        For run-file sections that name a plugin of another kind ([judge], [[reward]]): a bad option
        keeps its own field, an unknown or ambiguous name is reported on ``field``.
        """
        try:
            return self.create(kind, name, options)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}", method=exc.method, field=exc.field) from exc
        except PrefcoreError as exc:  # an unknown or conflicting plugin name
            raise ConfigError(f"{where}: method = {name!r}: {exc}", field=field) from exc


def _check_kind(kind: str) -> None:
    if kind not in PLUGIN_KINDS:
        raise UnknownKindError(kind, PLUGIN_KINDS)


def _method_class_problem(method_cls: Any, base: type[Method]) -> str | None:
    if not isinstance(method_cls, type):
        return "is not a class"
    if not issubclass(method_cls, base):
        return f"is not a subclass of prefcore.{base.__name__}"
    name = getattr(method_cls, "name", None)
    if not isinstance(name, str):
        return "has no 'name' attribute; set a unique lowercase name, e.g. name = \"simpo\""
    if not METHOD_NAME.match(name):
        return f"has name {name!r}; names are lowercase snake_case, e.g. 'robust_dpo'"
    config_cls = getattr(method_cls, "config_cls", None)
    if not (isinstance(config_cls, type) and hasattr(config_cls, "__dataclass_fields__")):
        return "has a config_cls that is not a dataclass"
    if getattr(method_cls, "__abstractmethods__", None):
        missing = ", ".join(sorted(method_cls.__abstractmethods__))
        return f"does not implement {missing}"
    return declaration_problem(method_cls)


def _config_defaults_problem(method_cls: type[Method]) -> tuple[str | None, str | None]:
    """A default of the wrong type would only fail when a user selects the method; catch it now."""
    config_cls = method_cls.config_cls
    try:
        hints = typing.get_type_hints(config_cls)
    except Exception as exc:  # an annotation naming something the module does not import
        return f"has a config_cls whose annotations cannot be resolved ({type(exc).__name__}: {exc})", None
    for field in dataclasses.fields(config_cls):
        if not field.init:
            continue
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            try:
                default = field.default_factory()
            except Exception as exc:
                problem = f"has config field {field.name!r} whose default_factory raised {type(exc).__name__}: {exc}"
                return problem, field.name
        else:
            continue
        try:
            coerce_option(default, hints.get(field.name, typing.Any), field.name, f"{method_cls.name!r}")
        except ConfigError as exc:
            reason = str(exc).rstrip(".")
            return f"has config field {field.name!r} with a default of the wrong type ({reason})", field.name
    return None, None

"""Typed method configs and the TOML run file.

A method's options arrive as plain data (TOML, CLI ``--set``, Python kwargs) and are
checked against its config dataclass here, once, so that every method gets the same
errors: the unknown key with the accepted ones, or the field with its expected type.

Run file layout (one section per plugin kind, each naming a method and its options)::

    [usage]
    method = "dpo"
    beta = 0.1

    [[evaluation]]            # an array of tables selects several methods
    method = "win_rate"

    [train]                   # engine sections are plain tables
    steps = 200
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import math
import sys
import types
import typing
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefcore.errors import ConfigError
from prefcore.methods import KINDS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ENGINE_SECTIONS: dict[str, str] = {
    "run": "prefcore.settings:RunSettings",
    "model": "prefcore.settings:ModelConfig",
    "warm_start": "prefcore.settings:WarmStartConfig",
    "reward_model": "prefcore.settings:RewardTrainConfig",
    "self_play": "prefcore.settings:SelfPlayConfig",
    "train": "prefcore.settings:TrainConfig",
    "online": "prefcore.settings:OnlineLoopConfig",
    "loop": "prefcore.settings:LoopConfig",
    "distributed": "prefcore.settings:DistributedConfig",
    # [judge] also takes the options of the plugin it names, so build_config(JudgeSection) cannot
    # check it: prefcore.judges.plan_judge(config, registry=..., selected=...) does, with the whole file.
    "judge": "prefcore.judges:JudgeSection",
}
"""Sections that configure the engine rather than select a method: name -> "module:ConfigClass".

The class is imported only when the section is checked or documented, so that reading a run
file (and ``prefcore list``) does not import torch.
"""


TABLE_ARRAY_SECTIONS: dict[str, str] = {"reward": "prefcore.rewards:plan_rewards"}
"""Engine sections written as arrays of tables (``[[reward]]``): name -> the "module:function" that checks them.

Each entry is a table of its own kind's keys, so no single config dataclass describes them; the
function checks the list with the whole file (``prefcore.validation``).
"""


def engine_section_config(name: str) -> type:
    """The config dataclass of engine section ``name`` (imports its module)."""
    module, _, attribute = ENGINE_SECTIONS[name].partition(":")
    return getattr(importlib.import_module(module), attribute)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` Did you mean 'x'?`` for the closest of ``choices``, or an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


_SPEC_KEYS = ("method", "weight")


def field_docs(config_cls: type) -> list[tuple[str, str, str, str]]:
    """``(name, type, default, doc)`` for each field, for ``prefcore info``."""
    rows = []
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        if field.default is not dataclasses.MISSING:
            default = repr(field.default)
        elif field.default_factory is not dataclasses.MISSING:
            default = repr(field.default_factory())
        else:
            default = "(required)"
        rows.append((field.name, _type_name(hints.get(field.name, Any)), default, field.metadata.get("doc", "")))
    return rows


def build_config(config_cls: type, options: Mapping[str, Any], *, method: str) -> Any:
    """Check ``options`` against ``config_cls`` and build it.

    Arguments:
        config_cls: the method's config dataclass.
        options: raw option values (from TOML, ``--set`` or keyword arguments).
        method: how to name the method in errors, e.g. ``"usage objective 'dpo'"``.
    Returns:
        an instance of ``config_cls``.
    """
    fields = {field.name: field for field in dataclasses.fields(config_cls) if field.init}
    unknown = sorted(set(options) - set(fields))
    if unknown:
        accepted = ", ".join(sorted(fields)) or "(none)"
        raise ConfigError(
            f"{method} has no option {unknown[0]!r}.{did_you_mean(unknown[0], fields)} Accepted options: {accepted}.",
            method=method,
            field=unknown[0],
        )
    hints = typing.get_type_hints(config_cls)
    values = {
        name: _coerce(
            value, hints.get(name, Any), name, method, allow_inf=fields[name].metadata.get("allow_inf", False)
        )
        for name, value in options.items()
    }
    try:
        return config_cls(**values)
    except TypeError as exc:  # a required field without a value
        raise ConfigError(f"{method}: {exc}.", method=method) from exc
    except ValueError as exc:  # the config's own __post_init__ validation
        raise ConfigError(f"{method}: {exc}", method=method) from exc


def _type_name(annotation: Any) -> str:
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _coerce(value: Any, annotation: Any, field: str, method: str, *, allow_inf: bool = False) -> Any:
    """Return ``value`` as ``annotation`` or raise a ``ConfigError`` naming the field.

    Floats must be finite: a NaN or infinite learning rate, weight or temperature is never
    meant. A field whose metadata sets ``allow_inf`` (``option(..., metadata=...)``) accepts
    ±inf, never NaN.
    """

    def wrong() -> ConfigError:
        return ConfigError(
            f"{method} option {field!r} must be {_type_name(annotation)}; got {value!r} ({type(value).__name__}).",
            method=method,
            field=field,
        )

    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin is typing.Union or origin is types.UnionType:
        for option_type in args:
            try:
                return _coerce(value, option_type, field, method, allow_inf=allow_inf)
            except ConfigError:
                continue
        raise wrong()
    if annotation is type(None):
        if value is None:
            return None
        raise wrong()
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(
            f"{method} option {field!r} must be one of {', '.join(repr(a) for a in args)}; got {value!r}.",
            method=method,
            field=field,
        )
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise wrong()
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise wrong()
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
            if math.isnan(number) or (math.isinf(number) and not allow_inf):
                raise ConfigError(
                    f"{method} option {field!r} must be a finite number; got {value!r}.", method=method, field=field
                )
            return number
        raise wrong()
    if annotation is str:
        if isinstance(value, str):
            return value
        raise wrong()
    if annotation is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise wrong()
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise wrong()
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise wrong()
            items = [
                _coerce(v, a, f"{field}[{i}]", method, allow_inf=allow_inf)
                for i, (v, a) in enumerate(zip(value, args, strict=True))
            ]
        else:
            item_type = args[0] if args else Any
            items = [_coerce(v, item_type, f"{field}[{i}]", method, allow_inf=allow_inf) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping) or annotation in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise wrong()
        value_type = args[1] if len(args) == 2 else Any
        return {key: _coerce(v, value_type, f"{field}.{key}", method, allow_inf=allow_inf) for key, v in value.items()}
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if isinstance(value, Mapping):
            return build_config(annotation, value, method=f"{method} option {field!r}")
        raise wrong()
    if isinstance(annotation, type):
        if isinstance(value, annotation):
            return value
        raise wrong()
    return value


@dataclass(frozen=True)
class MethodSpec:
    """One selected method: its kind, name, raw options and weight in a combination."""

    kind: str
    name: str
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    weight: float = 1.0


@dataclass(frozen=True)
class RunConfig:
    """A parsed run file: the methods selected per kind, plus the engine sections."""

    methods: Mapping[str, tuple[MethodSpec, ...]]
    settings: Mapping[str, Any]  # a table per engine section; a list of tables per TABLE_ARRAY_SECTIONS entry
    source: str | None = None

    def selected(self, kind: str) -> tuple[MethodSpec, ...]:
        return self.methods.get(kind, ())

    def section(self, name: str) -> Mapping[str, Any]:
        return self.settings.get(name, {})

    def to_dict(self) -> dict[str, Any]:
        """Plain data that ``parse_run_config`` reads back (written into each run folder)."""
        data: dict[str, Any] = {
            name: dict(values) if isinstance(values, Mapping) else [dict(table) for table in values]
            for name, values in self.settings.items()
        }
        for kind, specs in self.methods.items():
            tables = [{"method": spec.name, "weight": spec.weight, **spec.options} for spec in specs]
            data[kind] = tables[0] if len(tables) == 1 else tables
        return data


def read_run_file(path: str | Path) -> dict[str, Any]:
    """A TOML run file as plain data (sections not yet checked)."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"run file {str(path)!r} does not exist.") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{path} is a folder; name a TOML run file (or resume it: --resume {path}).") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}).") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}.") from exc


def load_run_config(path: str | Path, overrides: Iterable[str] = ()) -> RunConfig:
    """Read a TOML run file and apply ``--set section.key=value`` overrides."""
    return parse_run_config(apply_overrides(read_run_file(path), overrides), source=str(path))


def dump_run_config(config: RunConfig) -> str:
    """``config`` as a TOML run file that ``load_run_config`` reads back as the same run.

    Keys set to ``None`` are left out: in a run file a missing key means the default.
    """
    from prefcore.toml_writer import TOMLWriteError
    from prefcore.toml_writer import dumps

    try:
        return dumps(config.to_dict())
    except TOMLWriteError as exc:
        raise ConfigError(f"{config.source or 'run config'}: cannot be saved as TOML: {exc}") from exc


def load_run_dir_config(run_dir: str | Path, overrides: Iterable[str] = ()) -> RunConfig:
    """The run file a run folder was started with: its ``config.json`` (exact) or ``config.toml``."""
    import json

    run_dir = Path(run_dir)
    saved_json, saved_toml = run_dir / "config.json", run_dir / "config.toml"
    if saved_json.is_file():
        try:
            data = json.loads(saved_json.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{saved_json}: not valid JSON ({exc}); resume from config.toml instead.") from exc
        if not isinstance(data, Mapping):
            raise ConfigError(f"{saved_json}: expected a JSON object of run-file sections.")
        return parse_run_config(apply_overrides(data, overrides), source=str(saved_json))
    if saved_toml.is_file():
        return load_run_config(saved_toml, overrides)
    raise ConfigError(
        f"{run_dir} is not a run folder (no config.json or config.toml): "
        "pass the folder a run wrote, e.g. prefcore run --resume runs/demo-20250101-120000."
    )


def parse_run_config(data: Mapping[str, Any], *, source: str | None = None) -> RunConfig:
    """Turn plain data (a parsed TOML document) into a ``RunConfig``."""
    where = f"{source}: " if source else ""
    methods: dict[str, tuple[MethodSpec, ...]] = {}
    settings: dict[str, Mapping[str, Any]] = {}
    for section, body in data.items():
        if section in KINDS:
            tables = body if isinstance(body, list) else [body]
            methods[section] = tuple(_method_spec(section, table, where, i) for i, table in enumerate(tables))
        elif section in ENGINE_SECTIONS:
            if not isinstance(body, Mapping):
                raise ConfigError(f"{where}section [{section}] must be a table.", field=section)
            settings[section] = dict(body)
        elif section in TABLE_ARRAY_SECTIONS:
            tables = body if isinstance(body, list) else [body]
            if not all(isinstance(table, Mapping) for table in tables):
                raise ConfigError(f"{where}[[{section}]] entries must be tables.", field=section)
            settings[section] = [dict(table) for table in tables]
        else:
            known = (*KINDS, *ENGINE_SECTIONS, *TABLE_ARRAY_SECTIONS)
            raise ConfigError(
                f"{where}unknown section [{section}].{did_you_mean(section, known)} "
                f"Accepted sections: {', '.join(known)}.",
                field=section,
            )
    return RunConfig(methods=methods, settings=settings, source=source)


def _method_spec(kind: str, table: Any, where: str, index: int) -> MethodSpec:
    label = f"[{kind}]" if index == 0 else f"[{kind}] #{index + 1}"
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}section {label} must be a table.", field=kind)
    name = table.get("method")
    if not isinstance(name, str) or not name:
        raise ConfigError(
            f"{where}section {label} needs a 'method' naming the {kind} method, e.g. method = \"dpo\".",
            field=f"{kind}.method",
        )
    weight = table.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise ConfigError(f"{where}section {label}: 'weight' must be a number; got {weight!r}.", field="weight")
    if not (math.isfinite(weight) and weight > 0):
        raise ConfigError(
            f"{where}section {label}: 'weight' must be a finite number > 0; got {weight!r}.", field="weight"
        )
    options = {key: value for key, value in table.items() if key not in _SPEC_KEYS}
    return MethodSpec(kind=kind, name=name, options=options, weight=float(weight))


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``section.key=value`` into a key path and a TOML-typed value (strings unquoted)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. --set usage.beta=0.2.")
    try:
        value = tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw
    return [part for part in key.strip().split(".")], value


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of ``data`` with each ``section.key=value`` override applied.

    For a kind with several methods, address one as ``usage.<method>.key`` or ``usage.<index>.key``.
    """
    result: dict[str, Any] = {
        key: (
            [dict(t) for t in value]
            if isinstance(value, list)
            else dict(value)
            if isinstance(value, Mapping)
            else value
        )
        for key, value in data.items()
    }
    for text in overrides:
        path, value = parse_override(text)
        if len(path) < 2:
            raise ConfigError(f"--set {text!r}: name a section and a key, e.g. --set usage.beta=0.2.")
        section = path[0]
        table = result.setdefault(section, {})
        rest = path[1:]
        if isinstance(table, list):
            table, rest = _pick_table(table, rest, text)
        for part in rest[:-1]:
            table = table.setdefault(part, {})
        table[rest[-1]] = value
    return result


def _pick_table(tables: list[dict[str, Any]], rest: list[str], text: str) -> tuple[dict[str, Any], list[str]]:
    if len(rest) < 2:
        names = ", ".join(str(t.get("method")) for t in tables)
        raise ConfigError(f"--set {text!r}: this section selects several methods ({names}); name one.")
    selector = rest[0]
    for index, table in enumerate(tables):
        if selector in (str(index), table.get("method")):
            return table, rest[1:]
    names = ", ".join(str(t.get("method")) for t in tables)
    raise ConfigError(f"--set {text!r}: no method {selector!r} in this section; it has {names}.")

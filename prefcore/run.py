"""``prefcore run``: read the run file, check it whole, then hand it to the pipeline.

Where the run file comes from, in order: ``--resume RUN_DIR`` (the folder's own saved
config), a file named on the command line, or the embedded default job. ``--method NAME``
then replaces the whole ``[usage]`` section with that objective and its own defaults, and
``--set`` overrides apply last.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefcore.config import RunConfig
from prefcore.config import apply_overrides
from prefcore.config import load_run_dir_config
from prefcore.config import parse_run_config
from prefcore.config import read_run_file
from prefcore.defaults import default_run_data
from prefcore.defaults import with_usage_method
from prefcore.errors import ConfigError
from prefcore.registry import Registry

logger = logging.getLogger("prefcore.run")


def resume_target(args: argparse.Namespace) -> tuple[Path | None, str | None]:
    """``(run folder to resume, run file)`` from ``--resume [RUN_DIR]``, ``--out`` and the positional file.

    ``--resume RUN_DIR`` names the folder itself; the older ``--resume --out RUN_DIR FILE``
    still works. Because ``--resume`` takes an optional value, ``--resume FILE`` (a run file,
    not a folder) is read as the older form.
    """
    resume, config_file = args.resume, args.config
    if resume is None or resume is False:
        return None, config_file
    if resume is True:  # bare --resume: the folder is --out
        if args.out is None:
            raise ConfigError("--resume needs the run folder: prefcore run --resume RUN_DIR.")
        return Path(args.out), config_file
    target = Path(resume)
    if target.is_file() and config_file is None:  # --resume FILE --out DIR (older form, reordered)
        if args.out is None:
            raise ConfigError(f"--resume {resume}: that is a file; name the run folder: prefcore run --resume RUN_DIR.")
        return Path(args.out), str(target)
    if not target.is_dir():
        raise ConfigError(f"--resume {resume}: no such run folder.")
    if args.out is not None and Path(args.out).resolve() != target.resolve():
        raise ConfigError(f"--resume {resume} and --out {args.out} name different folders; give only --resume.")
    return target, config_file


def load_cli_config(args: argparse.Namespace, registry: Registry | None = None) -> RunConfig:
    """The run file the command line names, with ``--method`` and ``--set`` applied."""
    run_dir, config_file = resume_target(args)
    if run_dir is not None and config_file is None:
        if args.method:
            raise ConfigError("--method cannot change a run being resumed; start a new run instead.")
        return load_run_dir_config(run_dir, args.overrides)
    if config_file:
        data, source = read_run_file(config_file), config_file
    else:
        data, source = default_run_data(), "<embedded default>"
    if args.method:
        (registry or Registry.from_environment()).info("usage", args.method)  # an unknown name fails here
        data = with_usage_method(data, args.method)
    return parse_run_config(apply_overrides(data, args.overrides), source=source)


def describe_plan(config: RunConfig) -> str:
    lines = [f"run file: {config.source}"]
    for kind, specs in config.methods.items():
        for spec in specs:
            options = ", ".join(f"{k}={v!r}" for k, v in spec.options.items())
            weight = f" weight={spec.weight:g}" if len(specs) > 1 else ""
            lines.append(f"  {kind}: {spec.name}{weight}" + (f" ({options})" if options else ""))
    for section, values in config.settings.items():
        for table in [values] if isinstance(values, Mapping) else values:  # [[reward]]: one line per entry
            label = f"[{section}]" if isinstance(values, Mapping) else f"[[{section}]]"
            lines.append(f"  {label} " + ", ".join(f"{k}={v!r}" for k, v in table.items()))
    return "\n".join(lines)


def run_from_cli(args: argparse.Namespace) -> int:
    from prefcore.validation import check_run_config

    registry = Registry.from_environment()
    config = load_cli_config(args, registry)
    check_run_config(config, registry=registry)  # every problem of the file, before any work
    print(describe_plan(config))
    if args.dry_run:
        print("run file OK: every section and option checked.")
        return 0
    from prefcore.pipeline import run_pipeline

    run_dir, _ = resume_target(args)
    out: Any = str(run_dir) if run_dir is not None else args.out
    result = run_pipeline(config, out=out, resume=run_dir is not None, registry=registry)
    if result.paused is not None:  # the human loop waits for answers; the run continues with --resume
        print(f"\nrun folder: {result.run_dir}  (paused)\n{result.paused}")
        return 0
    print(f"\nrun folder: {result.run_dir}  (report.md, metrics.csv, plots, model/)")
    for name, value in sorted(result.metrics.items()):
        print(f"  {name:<40} {value:.4g}")
    return 0

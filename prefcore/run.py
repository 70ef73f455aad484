"""``prefcore run``: resolve a run file into method instances, then hand it to the pipeline."""

from __future__ import annotations

import argparse

from prefcore.api import resolve_run_config
from prefcore.config import RunConfig
from prefcore.config import load_run_config
from prefcore.config import parse_run_config
from prefcore.errors import ConfigError


def load_cli_config(args: argparse.Namespace) -> RunConfig:
    """The run file named on the command line (or the embedded default), with overrides applied."""
    overrides = list(args.overrides)
    if args.method:
        overrides.append(f"usage.method={args.method!s}")
    if args.config:
        return load_run_config(args.config, overrides)
    from prefcore.config import apply_overrides
    from prefcore.defaults import default_run_data

    return parse_run_config(apply_overrides(default_run_data(), overrides), source="<embedded default>")


def describe_plan(config: RunConfig) -> str:
    lines = [f"run file: {config.source}"]
    for kind, specs in config.methods.items():
        for spec in specs:
            options = ", ".join(f"{k}={v!r}" for k, v in spec.options.items())
            weight = f" weight={spec.weight:g}" if len(specs) > 1 else ""
            lines.append(f"  {kind}: {spec.name}{weight}" + (f" ({options})" if options else ""))
    for section, values in config.settings.items():
        lines.append(f"  [{section}] " + ", ".join(f"{k}={v!r}" for k, v in values.items()))
    return "\n".join(lines)


def run_from_cli(args: argparse.Namespace) -> int:
    config = load_cli_config(args)
    resolve_run_config(config)  # every unknown name or bad option fails here, before any work
    print(describe_plan(config))
    if args.dry_run:
        return 0
    try:
        from prefcore.pipeline import run_pipeline
    except ImportError as exc:
        raise ConfigError("this installation has no training pipeline (prefcore.pipeline).") from exc
    result = run_pipeline(config, out=args.out, resume=args.resume)
    print(f"\nrun folder: {result.run_dir}  (report.md, metrics.csv, plots, model/)")
    for name, value in sorted(result.metrics.items()):
        print(f"  {name:<40} {value:.4g}")
    return 0

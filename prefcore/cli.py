"""The ``prefcore`` command line: list, info, validate-data, annotate and run.

Every user error ends in one readable line on stderr and exit status 2 (1 for invalid
data found by ``validate-data``); tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from collections.abc import Sequence

from prefcore import __version__
from prefcore.api import get_registry
from prefcore.api import method_info
from prefcore.config import field_docs
from prefcore.errors import PrefcoreError
from prefcore.methods import KIND_TITLES
from prefcore.methods import KINDS
from prefcore.registry import Registry


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _print_problems(registry: Registry) -> None:
    if registry.errors:
        print("\nBroken plugins and conflicts (everything else above works):")
        for error in registry.errors:
            print(f"  {type(error).__name__}: {error}")


def cmd_list(args: argparse.Namespace) -> int:
    registry = get_registry()
    rows = [
        (
            info.name,
            info.kind,
            info.provenance.distribution or "-",
            info.provenance.version or "-",
            info.summary,
        )
        for info in registry.methods(args.kind)
    ]
    if rows:
        print(_table(rows, ("name", "kind", "distribution", "version", "summary")))
    else:
        print(f"No {args.kind or ''} methods are installed.".replace("  ", " "))
    _print_problems(registry)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    for info in method_info(args.name, args.kind):
        print(f"{info.name} ({KIND_TITLES[info.kind]})")
        print(f"  from {info.provenance.describe()}")
        doc = (info.cls.__doc__ or "").strip()
        if doc:
            print("\n" + "\n".join("  " + line.strip() for line in doc.splitlines()))
        rows = field_docs(info.cls.config_cls)
        print("\n  options:")
        if rows:
            print("\n".join("    " + line for line in _table(rows, ("name", "type", "default", "doc")).splitlines()))
        else:
            print("    (none)")
        print()
    return 0


def cmd_validate_data(args: argparse.Namespace) -> int:
    from prefcore.data import validate_file

    report = validate_file(args.file, format=args.format, max_errors=args.max_errors)
    print(report.summary())
    return 0 if report.ok else 1


def cmd_run(args: argparse.Namespace) -> int:
    from prefcore.run import run_from_cli

    return run_from_cli(args)


def cmd_annotate(args: argparse.Namespace) -> int:
    from prefcore.annotate import annotate_from_cli

    return annotate_from_cli(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prefcore",
        description="Human preference learning for LLMs: every method a plugin.",
    )
    parser.add_argument("--version", action="version", version=f"prefcore {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", help="list installed methods (name, kind, distribution, version, doc)")
    listing.add_argument("kind", nargs="?", choices=KINDS, help="only methods of this kind")
    listing.set_defaults(func=cmd_list)

    info = commands.add_parser("info", help="show a method's documentation and config options")
    info.add_argument("name")
    info.add_argument("--kind", choices=KINDS, help="the kind, when several kinds share the name")
    info.set_defaults(func=cmd_info)

    validate = commands.add_parser("validate-data", help="check a preference data file (JSONL, JSON, Parquet)")
    validate.add_argument("file")
    validate.add_argument("--format", help="force a record format instead of detecting it per record")
    validate.add_argument("--max-errors", type=int, default=10, help="how many errors to show (default 10)")
    validate.set_defaults(func=cmd_validate_data)

    run = commands.add_parser("run", help="run a pipeline from a TOML run file (default: the embedded demo)")
    run.add_argument("config", nargs="?", help="TOML run file; omit to run the embedded default job")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a run-file value, e.g. --set usage.beta=0.2 (repeatable)",
    )
    run.add_argument("--method", help="the usage objective to train with, e.g. --method ipo")
    run.add_argument("--out", help="run folder (default: runs/<timestamp>)")
    run.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    run.add_argument("--dry-run", action="store_true", help="validate the run file and print the plan only")
    run.set_defaults(func=cmd_run)

    annotate = commands.add_parser(
        "annotate", help="annotate completions in the terminal (resumable), or report inter-annotator agreement"
    )
    annotate.add_argument("items", nargs="?", help="JSONL of {prompt, completions} rows or preference records")
    annotate.add_argument("--out", help="JSONL the answers are appended to (one record per answer)")
    annotate.add_argument("--annotator", help="your annotator id, stored as annotator_id")
    annotate.add_argument(
        "--mode",
        action="append",
        default=[],
        help="pairwise, tie, ranking, likert, binary, critique; comma-separated or repeated (default: pairwise)",
    )
    annotate.add_argument("--scale", nargs=2, type=int, default=(1, 5), metavar=("LOW", "HIGH"), help="Likert scale")
    annotate.add_argument("--aspect", default="overall", help="what Likert scores rate (default: overall)")
    annotate.add_argument("--seed", type=int, default=0, help="seed of the per-item display order")
    annotate.add_argument("--no-shuffle", action="store_true", help="show completions in file order")
    annotate.add_argument("--agreement", nargs="+", metavar="OUT", help="report agreement in these annotation files")
    annotate.set_defaults(func=cmd_annotate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except PrefcoreError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # pragma: no cover - interactive only
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

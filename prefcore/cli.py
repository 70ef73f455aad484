"""The ``prefcore`` command line: list, info, validate-data, run, import-model, annotate, disagreement,
elicit, generate, evaluate and human-eval.

Every user error ends in one readable line on stderr and exit status 2 (1 for invalid
data found by ``validate-data``); tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from collections.abc import Sequence

from prefcore import __version__
from prefcore.api import get_registry
from prefcore.api import method_info
from prefcore.config import ENGINE_SECTIONS
from prefcore.config import engine_section_config
from prefcore.config import field_docs
from prefcore.errors import ConfigError
from prefcore.errors import PrefcoreError
from prefcore.methods import KIND_TITLES
from prefcore.methods import PLUGIN_KINDS
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
    if args.kind is None:
        _print_plugins_without_methods(registry)
    _print_problems(registry)
    return 0


def _print_plugins_without_methods(registry: Registry) -> None:
    idle = [plugin for plugin in registry.plugins() if plugin.loaded and not plugin.methods and not plugin.errors]
    if idle:
        rows = [(p.name, p.provenance.distribution or "-", p.provenance.version or "-") for p in idle]
        print("\nPlugins that register no method (lifecycle hooks only):")
        print(_table(rows, ("plugin", "distribution", "version")))


def _print_options(config_cls: type) -> None:
    rows = field_docs(config_cls)
    print("\n  options:")
    if rows:
        print("\n".join("    " + line for line in _table(rows, ("name", "type", "default", "doc")).splitlines()))
    else:
        print("    (none)")
    print()


def _print_engine_section(name: str) -> None:
    config_cls = engine_section_config(name)
    print(f"[{name}] (engine section)")
    doc = (config_cls.__doc__ or "").strip()
    if doc:
        print("\n" + "\n".join("  " + line.strip() for line in doc.splitlines()))
    _print_options(config_cls)


def cmd_info(args: argparse.Namespace) -> int:
    if args.engine:
        for name in ENGINE_SECTIONS:
            _print_engine_section(name)
        return 0
    if args.name is None:
        raise ConfigError("prefcore info needs a method or section name, or --engine for every engine section.")
    if args.name in ENGINE_SECTIONS and args.kind is None:
        _print_engine_section(args.name)
        if not get_registry().find(args.name):
            return 0
    for info in method_info(args.name, args.kind):
        print(f"{info.name} ({KIND_TITLES[info.kind]})")
        print(f"  from {info.provenance.describe()}")
        doc = (info.cls.__doc__ or "").strip()
        if doc:
            print("\n" + "\n".join("  " + line.strip() for line in doc.splitlines()))
        _print_options(info.cls.config_cls)
    return 0


def cmd_validate_data(args: argparse.Namespace) -> int:
    from prefcore.data import validate_file

    report = validate_file(args.file, format=args.format, max_errors=args.max_errors)
    print(report.summary())
    return 0 if report.ok else 1


def cmd_run(args: argparse.Namespace) -> int:
    if args.nproc < 0:
        raise ConfigError(f"--nproc must be >= 1 (processes on this machine). Got {args.nproc}.")
    if args.nproc and not args.dry_run:  # the same command again, in N processes under torchrun
        from prefcore.distributed.launch import relaunch
        from prefcore.distributed.process_group import launched_by_torchrun

        if not launched_by_torchrun():
            return relaunch(args.nproc, args.argv)
    from prefcore.run import run_from_cli

    return run_from_cli(args)


def cmd_import_model(args: argparse.Namespace) -> int:
    from prefcore.engine.models import import_model

    out = import_model(args.source, args.out)
    print(f"{args.source} -> {out} (load it with AutoModelForCausalLM.from_pretrained or [model] path)")
    return 0


def cmd_annotate(args: argparse.Namespace) -> int:
    from prefcore.annotate import annotate_from_cli

    return annotate_from_cli(args)


def cmd_generate(args: argparse.Namespace) -> int:
    from prefcore.inference.files import generate_from_cli

    return generate_from_cli(args)


def cmd_disagreement(args: argparse.Namespace) -> int:
    from prefcore.disagreement import disagreement_from_cli

    return disagreement_from_cli(args)


def cmd_elicit(args: argparse.Namespace) -> int:
    from prefcore.elicitation import elicit_from_cli

    return elicit_from_cli(args)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from prefcore.evaluate_model import evaluate_from_cli

    return evaluate_from_cli(args)


def cmd_human_eval(args: argparse.Namespace) -> int:
    from prefcore.human_eval import human_eval_from_cli

    return human_eval_from_cli(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prefcore",
        description="Human preference learning for LLMs: every method a plugin.",
    )
    parser.add_argument("--version", action="version", version=f"prefcore {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", help="list installed methods (name, kind, distribution, version, doc)")
    listing.add_argument("kind", nargs="?", choices=PLUGIN_KINDS, help="only methods of this kind")
    listing.set_defaults(func=cmd_list)

    info = commands.add_parser(
        "info", help="show a method's or engine section's documentation and options (e.g. info dpo, info train)"
    )
    info.add_argument("name", nargs="?", help="a method name, or an engine section: " + ", ".join(ENGINE_SECTIONS))
    info.add_argument("--kind", choices=PLUGIN_KINDS, help="the kind, when several kinds share the name")
    info.add_argument("--engine", action="store_true", help="document every engine section's options")
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
    run.add_argument(
        "--method",
        help="train with this usage objective and its own defaults (replaces the whole [usage] section)",
    )
    run.add_argument("--out", help="run folder (default: runs/<timestamp>)")
    run.add_argument(
        "--resume",
        nargs="?",
        const=True,
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its last checkpoint, with the config saved there",
    )
    run.add_argument(
        "--dry-run", action="store_true", help="check the whole run file (every section and option) and print the plan"
    )
    run.add_argument(
        "--nproc",
        type=int,
        default=0,
        metavar="N",
        help="train in N processes on this machine (torchrun; set [distributed] strategy = 'ddp' or 'fsdp')",
    )
    run.set_defaults(func=cmd_run)

    importing = commands.add_parser(
        "import-model",
        help="copy a local checkpoint (a GGUF file, dequantised, or a folder) to a save_pretrained folder",
    )
    importing.add_argument("source", help="a .gguf file (needs the gguf extra) or a save_pretrained folder")
    importing.add_argument("out", help="the folder to write (replaced atomically if it exists)")
    importing.set_defaults(func=cmd_import_model)

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
        help="pairwise, tie, ranking, likert, binary, critique; comma-separated or repeated (default: pairwise); "
        "norm alone: ITEMS is a rules file (TOML) and each rule is asked about (prefcore.elicitation)",
    )
    annotate.add_argument("--scale", nargs=2, type=int, default=(1, 5), metavar=("LOW", "HIGH"), help="Likert scale")
    annotate.add_argument("--aspect", default="overall", help="what Likert scores rate (default: overall)")
    annotate.add_argument("--seed", type=int, default=0, help="seed of the per-item display order")
    annotate.add_argument("--no-shuffle", action="store_true", help="show completions in file order")
    annotate.add_argument("--agreement", nargs="+", metavar="OUT", help="report agreement in these annotation files")
    annotate.add_argument(
        "--group",
        action="append",
        default=[],
        metavar="ATTR=VALUE",
        help="your group for an attribute, stored in annotator_groups, e.g. --group community=rural (repeatable)",
    )
    annotate.set_defaults(func=cmd_annotate)

    disagree = commands.add_parser(
        "disagreement", help="where annotator groups disagree: splits, α within and between groups, a heat map"
    )
    disagree.add_argument("data", nargs="+", help="annotation or preference files (JSONL, JSON, Parquet)")
    disagree.add_argument("--by", help="the group attribute to compare (needed when records have several)")
    disagree.add_argument("--participants", help="participants table (CSV or JSONL): annotator_id, attributes")
    disagree.add_argument("--out", default="disagreement", help="folder for the report (default: disagreement)")
    disagree.add_argument(
        "--category-field", default="category", help="metadata field that names an item's category (default: category)"
    )
    disagree.add_argument("--top", type=int, default=10, help="how many largest-gap items to list (default 10)")
    disagree.set_defaults(func=cmd_disagreement)

    elicit = commands.add_parser(
        "elicit", help="norm elicitation: agreement with proposed rules per group and round, objections, changes"
    )
    elicit.add_argument("action", choices=("report",), help="report: the markdown report of norm-session answers")
    elicit.add_argument("answers", nargs="+", help="answer files of prefcore annotate RULES.toml --mode norm")
    elicit.add_argument("--by", help="the group attribute to compare (default: every participant together)")
    elicit.add_argument("--participants", help="participants table (CSV or JSONL): annotator_id, attributes")
    elicit.add_argument("--out", help="write the markdown here (default: print it)")
    elicit.add_argument("--top", type=int, default=10, help="how many most-disputed rules to list (default 10)")
    elicit.set_defaults(func=cmd_elicit)

    generate = commands.add_parser(
        "generate", help="best-of-n answers with alignment checks, a fallback and RA-LLM's robustness check"
    )
    generate.add_argument("model", help="a save_pretrained folder, or a run folder (its model/)")
    generate.add_argument("--prompts", required=True, help="JSONL ({prompt, answer?} or strings) or text, one a line")
    generate.add_argument("--out", required=True, help="JSONL written: per prompt the answer and every candidate")
    generate.add_argument("--config", help="run file: [generate], [[reward]], [[check]], [robustness]")
    generate.add_argument("--n", type=int, help="candidates per prompt (generate.n)")
    generate.add_argument("--robust", action="store_true", help="turn on RA-LLM's robustness check (its defaults)")
    generate.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a value"
    )
    generate.set_defaults(func=cmd_generate)

    evaluate = commands.add_parser(
        "evaluate", help="run a run file's [[evaluation]] sections on a trained model (a run folder or a model folder)"
    )
    evaluate.add_argument("target", help="a run folder (its model/ and saved run file), or a save_pretrained folder")
    evaluate.add_argument("--config", help="the run file (default: the run folder's own)")
    evaluate.add_argument("--reference", help="the reference model folder (default: the run's warm start or [model])")
    evaluate.add_argument("--reward-model", help="a saved reward model folder (default: the run's reward_model/model)")
    evaluate.add_argument("--out", help="JSON of metrics and samples (default: RUN_DIR/evaluation.json)")
    evaluate.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a run-file value, e.g. --set evaluation.method=sycophancy (repeatable)",
    )
    evaluate.set_defaults(func=cmd_evaluate)

    human = commands.add_parser("human-eval", help="blind human evaluation: export annotation items, import answers")
    human.add_argument("action", choices=("export", "import"), help="export RUN_DIR's items, or import DIR's answers")
    human.add_argument("target", help="export: a run folder; import: the items folder (with answers/)")
    human.add_argument("--out", help="export: the items folder to write")
    human.add_argument("--key", help="the key file, kept apart from the items (default: <DIR>.key.json)")
    human.add_argument("--reference", help="export: the model to compare against (default: the run's reference)")
    human.add_argument("--json", help="import: also write the metrics as JSON")
    human.set_defaults(func=cmd_human_eval)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the message (tests replace it)."""

    @property
    def stream(self) -> object:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def _show_progress_messages() -> None:
    """Send prefcore's INFO messages (stages, "resumed from step N") to stderr, once per process.

    Only the ``prefcore`` logger is configured: the caller's root logger and other libraries'
    loggers are left as they are.
    """
    logger = logging.getLogger("prefcore")
    if any(isinstance(handler, _StderrHandler) for handler in logger.handlers):
        return
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `run --nproc N` re-executes it under torchrun
    func: Callable[[argparse.Namespace], int] = args.func
    _show_progress_messages()
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

"""``prefcore annotate``: the command-line arguments become a session or an agreement report."""

from __future__ import annotations

import sys
from typing import Any
from typing import TextIO

from prefcore.annotate.items import read_items
from prefcore.annotate.log import AnnotationLog
from prefcore.annotate.modes import SessionConfig
from prefcore.annotate.modes import parse_modes
from prefcore.annotate.report import agreement
from prefcore.annotate.session import Terminal
from prefcore.annotate.session import run_session
from prefcore.errors import ConfigError

__all__ = ["annotate_from_cli", "check_groups_match"]


def check_groups_match(log: AnnotationLog, config: SessionConfig) -> None:
    """A resumed session's --group must agree with the groups the annotator's earlier answers carry."""
    from prefcore.groups import GroupConflictError

    earlier = log.groups.get(config.annotator, {})
    for attribute, group in config.groups.items():
        if earlier.get(attribute, group) != group:
            raise GroupConflictError(config.annotator, attribute, (earlier[attribute], group), source=log.path)


def annotate_from_cli(args: Any, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    """``prefcore annotate``: a session (exit 0; 130 when interrupted) or an agreement report."""
    stdout = sys.stdout if stdout is None else stdout
    if args.agreement:
        if args.items is not None:
            raise ConfigError("--agreement reads annotation files only; leave out the items file.", field="agreement")
        stdout.write(agreement(args.agreement).format() + "\n")
        return 0
    missing = [
        flag
        for flag, value in (("ITEMS", args.items), ("--out", args.out), ("--annotator", args.annotator))
        if not value
    ]
    if missing:
        raise ConfigError(
            f"prefcore annotate needs {', '.join(missing)}: prefcore annotate ITEMS.jsonl --out OUT.jsonl "
            "--annotator ID [--mode pairwise,likert,...], or prefcore annotate --agreement OUT.jsonl.",
            field="annotate",
        )
    modes = parse_modes(args.mode)
    if "norm" in modes:  # a rules file, not an items file: prefcore.elicitation runs the session
        if len(modes) > 1:
            raise ConfigError("--mode norm asks about rules and combines with no other mode.", field="mode")
        from prefcore.elicitation.cli import norm_session_from_cli

        return norm_session_from_cli(args, stdin, stdout)
    from prefcore.groups import parse_group_options  # prefcore.groups imports this package

    config = SessionConfig(
        annotator=args.annotator,
        groups=parse_group_options(getattr(args, "group", None) or ()),
        modes=modes,
        scale=tuple(args.scale),
        aspect=args.aspect,
        shuffle=not args.no_shuffle,
        seed=args.seed,
    )
    items = read_items(
        args.items, min_completions=config.min_completions, purpose="comparing them (modes pairwise, tie, ranking)"
    )
    terminal = Terminal(sys.stdin if stdin is None else stdin, stdout)
    with AnnotationLog(args.out) as log:
        check_groups_match(log, config)
        summary = run_session(items, log, config, terminal)
    return 130 if summary.stopped == "interrupted" else 0

"""``prefcore annotate RULES --mode norm`` and ``prefcore elicit report``: arguments to a session or a report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any
from typing import TextIO

from prefcore.annotate.log import AnnotationLog
from prefcore.annotate.session import Terminal
from prefcore.errors import ConfigError

__all__ = ["NORM_MODE", "elicit_from_cli", "norm_session_from_cli"]

NORM_MODE = "norm"
"""The ``--mode`` of ``prefcore annotate`` that reads a rules file and runs a norm session."""


def norm_session_from_cli(args: Any, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    """``prefcore annotate RULES.toml --mode norm``: a norm session (exit 0; 130 when interrupted)."""
    from prefcore.annotate.cli import check_groups_match
    from prefcore.elicitation.rules import read_rules
    from prefcore.elicitation.session import norm_config
    from prefcore.elicitation.session import run_norm_session
    from prefcore.groups import parse_group_options

    config = norm_config(args.annotator, parse_group_options(getattr(args, "group", None) or ()), tuple(args.scale))
    rules = read_rules(args.items)
    terminal = Terminal(sys.stdin if stdin is None else stdin, sys.stdout if stdout is None else stdout)
    with AnnotationLog(args.out) as log:
        check_groups_match(log, config)
        summary = run_norm_session(rules, log, config, terminal)
    return 130 if summary.stopped == "interrupted" else 0


def elicit_from_cli(args: Any, stdout: TextIO | None = None) -> int:
    """``prefcore elicit report ANSWERS... [--by ATTR]``: the markdown report, printed or written to ``--out``."""
    from prefcore.disagreement.cli import load_with_participants
    from prefcore.elicitation.report import norm_report
    from prefcore.elicitation.report import render_norm_report

    stdout = sys.stdout if stdout is None else stdout
    if args.action != "report":  # pragma: no cover - argparse allows only "report"
        raise ConfigError(f"unknown elicit action {args.action!r}; accepted: report.", field="elicit")
    records, warnings = load_with_participants(args.answers, args.participants)
    report = norm_report(records, args.by)
    report.warnings[:0] = warnings
    if not report.rounds:
        raise ConfigError(
            "no norm-elicitation answers in these files (Scores of aspect 'agreement' with metadata rule_id "
            "and round, as prefcore annotate RULES.toml --mode norm writes).",
            field="answers",
        )
    markdown = render_norm_report(report, top=args.top)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(markdown, encoding="utf-8")
        stdout.write(f"Report: {args.out}\n")
    else:
        stdout.write(markdown)
    return 0

"""``prefcore disagreement DATA``: read the records, join the participants, report, print the summary."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any
from typing import TextIO

from prefcore.data.readers import load_preferences
from prefcore.data.records import PreferenceRecord
from prefcore.disagreement.render import summary
from prefcore.disagreement.render import write_disagreement_report
from prefcore.disagreement.stats import Disagreement
from prefcore.disagreement.stats import disagreement
from prefcore.errors import ConfigError
from prefcore.groups import annotator_groups
from prefcore.groups import attributes
from prefcore.groups import join_participants
from prefcore.groups import read_participants

__all__ = ["disagreement_from_cli", "load_with_participants"]


def load_with_participants(
    paths: Sequence[str], participants: str | None = None
) -> tuple[list[PreferenceRecord], list[str]]:
    """The records of every file, with a participants table's groups joined in, and the join's warnings."""
    records: list[PreferenceRecord] = []
    for path in paths:
        records += load_preferences(path)[0]
    if participants is None:
        return records, []
    records, report = join_participants(records, read_participants(participants), source=participants)
    return records, report.warnings()


def disagreement_from_cli(args: Any, stdout: TextIO | None = None) -> int:
    """Write ``disagreement.md`` and the heat map to ``--out`` and print the summary; exit 0."""
    stdout = sys.stdout if stdout is None else stdout
    records, warnings = load_with_participants(args.data, args.participants)
    by = args.by
    if by is None:  # one attribute needs no naming; several do
        known = attributes(annotator_groups(records))
        if len(known) != 1:
            listing = ", ".join(known) if known else "none (no record has annotator_groups; see --participants)"
            raise ConfigError(f"--by names the group attribute to compare; known attributes: {listing}.", field="by")
        by = known[0]
    report: Disagreement = disagreement(records, by, category_field=args.category_field, warnings=warnings)
    markdown, plot = write_disagreement_report(report, args.out, top=args.top)
    stdout.write(summary(report) + "\n")
    stdout.write(f"Report: {markdown}" + (f", heat map: {plot}" if plot else "") + "\n")
    return 0

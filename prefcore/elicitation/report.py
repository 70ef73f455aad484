"""What a norm-elicitation study found: agreement per rule, round and group, objections, changes.

Reads the ordinary records a norm session writes (``prefcore.elicitation.session``): the
``Scores`` of aspect ``agreement`` give each participant's agreement with a rule in a round;
``Critique`` records give objections and edits. For the groups of one attribute the report
gives, per rule and round, each group's mean agreement and the share agreeing (a score
above the scale's midpoint); the rules the groups disagree on most (the gap between the
highest and lowest group mean, in the latest round of each rule); every objection and
edit; and, for a rule asked in two rounds, each group's mean before and after (what the
revision changed, and for whom).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from itertools import pairwise
from statistics import fmean

from prefcore.annotate.units import flatten
from prefcore.data.records import Critique
from prefcore.data.records import PreferenceRecord
from prefcore.data.records import Scores
from prefcore.elicitation.session import AGREEMENT
from prefcore.groups import annotator_groups
from prefcore.groups import attributes
from prefcore.groups import check_attribute

__all__ = [
    "ALL",
    "NO_GROUP",
    "Change",
    "Comment",
    "GroupAgreement",
    "NormReport",
    "RuleRound",
    "norm_report",
    "render_norm_report",
]

ALL = "(all)"
"""The row of every participant together."""
NO_GROUP = "(no group)"
"""Participants without a group of the attribute: counted, never dropped."""


@dataclass(frozen=True)
class GroupAgreement:
    """One group's answers on one rule in one round: how many, the mean score, the share agreeing."""

    n: int
    mean: float
    agreeing: float


@dataclass(frozen=True)
class Comment:
    """An objection or an edit, with who gave it."""

    annotator: str
    group: str
    objection: str | None
    edit: str | None


@dataclass
class RuleRound:
    """A rule as put to participants in one round: its text, agreement by group, comments."""

    rule_id: str
    round: int
    text: str
    scale: tuple[float, float]
    groups: dict[str, GroupAgreement] = field(default_factory=dict)
    comments: list[Comment] = field(default_factory=list)

    @property
    def gap(self) -> float | None:
        """Highest minus lowest group mean (participants without a group left out); None under two groups."""
        means = [row.mean for name, row in self.groups.items() if name not in (ALL, NO_GROUP)]
        return max(means) - min(means) if len(means) >= 2 else None


@dataclass(frozen=True)
class Change:
    """A rule asked in two rounds: its text then and now, and each group's mean before and after."""

    rule_id: str
    before: int
    after: int
    text_before: str
    text_after: str
    means: Mapping[str, tuple[float | None, float | None]]


@dataclass
class NormReport:
    """Every rule and round of a study, for the groups of ``by`` (None: every participant together)."""

    by: str | None
    rounds: dict[tuple[str, int], RuleRound]
    changes: list[Change]
    warnings: list[str] = field(default_factory=list)

    def most_disputed(self, top: int = 10) -> list[RuleRound]:
        """The latest round of each rule, largest between-group gap first."""
        latest: dict[str, RuleRound] = {}
        for (rule_id, _), entry in sorted(self.rounds.items()):
            latest[rule_id] = entry
        ranked = [entry for entry in latest.values() if entry.gap is not None]
        ranked.sort(key=lambda entry: (-(entry.gap or 0.0), entry.rule_id))
        return ranked[:top]


def _is_norm(record: PreferenceRecord) -> bool:
    metadata = record.metadata
    return isinstance(metadata.get("rule_id"), str) and isinstance(metadata.get("round"), int)


def _summarise(scores: list[float], scale: tuple[float, float]) -> GroupAgreement:
    middle = (scale[0] + scale[1]) / 2
    return GroupAgreement(len(scores), fmean(scores), sum(score > middle for score in scores) / len(scores))


def norm_report(records: Iterable[PreferenceRecord], by: str | None = None) -> NormReport:
    """The report's numbers; ``UnknownAttributeError`` when no participant has the attribute ``by``."""
    norm = [record for record in flatten(records) if _is_norm(record)]
    table = annotator_groups(norm)
    if by is not None:
        check_attribute(by, attributes(table))

    def group_of(record: PreferenceRecord) -> str:
        return ALL if by is None else record.annotator_groups.get(by, NO_GROUP)

    scores: dict[tuple[str, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    rounds: dict[tuple[str, int], RuleRound] = {}
    warnings: list[str] = []
    for record in norm:
        key = (record.metadata["rule_id"], record.metadata["round"])
        if isinstance(record, Scores) and AGREEMENT in record.aspects:
            entry = rounds.setdefault(key, RuleRound(*key, text=str(record.completions[0]), scale=record.scale))
            if entry.text != record.completions[0] or entry.scale != record.scale:
                warnings.append(
                    f"rule {key[0]!r} round {key[1]}: answers disagree on the rule's text or scale; "
                    f"the first seen is reported ({record.annotator_id!r} saw other)."
                )
            score = record.scores[0][AGREEMENT]
            scores[key][group_of(record)].append(score)
            if by is not None:
                scores[key][ALL].append(score)
    for record in norm:
        key = (record.metadata["rule_id"], record.metadata["round"])
        if not isinstance(record, Critique):
            continue
        if key not in rounds:
            warnings.append(
                f"rule {key[0]!r} round {key[1]}: {record.annotator_id!r} commented without an agreement score; "
                "the comment is not listed (no round of that rule has a score)."
            )
            continue
        objection = record.critique if record.metadata.get("has_objection", True) else None
        edit = None if record.revision is None else str(record.revision)
        rounds[key].comments.append(Comment(record.annotator_id or "?", group_of(record), objection, edit))
    for key, by_group in scores.items():
        scale = rounds[key].scale
        ordered = sorted(by_group, key=lambda name: (name == NO_GROUP, name != ALL, name))
        rounds[key].groups = {name: _summarise(by_group[name], scale) for name in ordered}
    return NormReport(by, dict(sorted(rounds.items())), _changes(rounds), warnings)


def _changes(rounds: Mapping[tuple[str, int], RuleRound]) -> list[Change]:
    per_rule: dict[str, list[RuleRound]] = defaultdict(list)
    for (rule_id, _), entry in sorted(rounds.items()):
        per_rule[rule_id].append(entry)
    changes = []
    for rule_id, entries in sorted(per_rule.items()):
        for before, after in pairwise(entries):
            names = list(dict.fromkeys([*before.groups, *after.groups]))
            means = {
                name: (
                    before.groups[name].mean if name in before.groups else None,
                    after.groups[name].mean if name in after.groups else None,
                )
                for name in names
            }
            changes.append(Change(rule_id, before.round, after.round, before.text, after.text, means))
    return changes


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_norm_report(report: NormReport, *, top: int = 10) -> str:
    """The report as markdown."""
    by = report.by
    lines = ["# Norm elicitation", ""]
    lines.append(f"Groups compared: `{by}`." if by else "All participants together (no `--by`).")
    lines += ["", "Agreement is the mean score; 'agreeing' is the share scoring above the scale's midpoint.", ""]
    for warning in report.warnings:
        lines.append(f"- Warning: {warning}")
    lines += ["## Agreement per rule and round", ""]
    for entry in report.rounds.values():
        low, high = entry.scale
        lines += [f"### `{entry.rule_id}`, round {entry.round} (scale {low:g}–{high:g})", "", f"> {entry.text}", ""]
        lines += ["| group | n | mean | agreeing |", "|---|---:|---:|---:|"]
        for name, row in entry.groups.items():
            lines.append(f"| {_cell(name)} | {row.n} | {row.mean:.2f} | {row.agreeing:.0%} |")
        lines.append("")
        if entry.gap is not None:
            lines += [f"Gap between groups (highest mean minus lowest): {entry.gap:.2f}.", ""]
    disputed = report.most_disputed(top)
    lines += ["## Rules the groups disagree on most", ""]
    if not disputed:
        lines += ["No rule has answers from two groups." if by else "Name a group attribute with `--by`.", ""]
    else:
        lines += ["| rule | round | gap | highest | lowest |", "|---|---:|---:|---|---|"]
        for entry in disputed:
            rows = {name: row for name, row in entry.groups.items() if name not in (ALL, NO_GROUP)}
            high_name = max(rows, key=lambda name: (rows[name].mean, name))
            low_name = min(rows, key=lambda name: (rows[name].mean, name))
            lines.append(
                f"| `{entry.rule_id}` | {entry.round} | {entry.gap:.2f} | {_cell(high_name)} "
                f"({rows[high_name].mean:.2f}) | {_cell(low_name)} ({rows[low_name].mean:.2f}) |"
            )
        lines.append("")
    lines += ["## Objections and edits", ""]
    commented = [entry for entry in report.rounds.values() if entry.comments]
    if not commented:
        lines += ["None.", ""]
    for entry in commented:
        lines += [f"### `{entry.rule_id}`, round {entry.round}", ""]
        for comment in entry.comments:
            who = f"{comment.annotator} ({comment.group})" if by else comment.annotator
            if comment.objection is not None:
                lines.append(f"- {_cell(who)} objects: {_cell(comment.objection)}")
            if comment.edit is not None:
                lines.append(f"- {_cell(who)} proposes: {_cell(comment.edit)}")
        lines.append("")
    lines += ["## Changes between rounds", ""]
    if not report.changes:
        lines += ["No rule was asked in two rounds.", ""]
    for change in report.changes:
        lines += [f"### `{change.rule_id}`: round {change.before} → round {change.after}", ""]
        if change.text_before == change.text_after:
            lines += ["Text unchanged.", ""]
        else:
            lines += [f"- before: {_cell(change.text_before)}", f"- after: {_cell(change.text_after)}", ""]
        lines += ["| group | before | after | change |", "|---|---:|---:|---:|"]
        for name, (before, after) in change.means.items():
            delta = None if before is None or after is None else after - before
            sign = "" if delta is None or delta < 0 else "+"
            lines.append(f"| {_cell(name)} | {_number(before)} | {_number(after)} | {sign}{_number(delta)} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"

"""Annotator groups: named attributes (community, language, role, ...) from records and a participants table.

Preference data presupposes a population. A record says who answered (``annotator_id``) and,
in ``annotator_groups``, which group the annotator belongs to for any number of attributes
(``{"community": "rural", "language": "fr"}``). The attributes come from the annotation file
(``prefcore annotate --group community=rural``), from the data file's ``annotator_groups``
field, or from a participants table joined by annotator id:

    participants.csv                      participants.jsonl
    annotator_id,community,language       {"annotator_id": "alice", "community": "rural"}
    alice,rural,fr                        {"annotator_id": "bob", "language": "en"}
    bob,,en

An empty cell (or a missing key) says nothing about that attribute. Nothing is dropped
silently: an annotator placed in two groups of one attribute (two rows of the table, the
table against a record, or two records) is a ``GroupConflictError``; an attribute nobody
has is an ``UnknownAttributeError`` naming the known ones; table rows whose annotator gave
no answer are reported (``JoinReport.unknown``) and logged as a warning.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace
from pathlib import Path

from prefcore.annotate.items import jsonl_rows
from prefcore.annotate.units import flatten
from prefcore.data.records import FeedbackRecord
from prefcore.data.records import PreferenceRecord
from prefcore.errors import ConfigError
from prefcore.errors import DataError

__all__ = [
    "ID_COLUMNS",
    "GroupConflictError",
    "GroupJudge",
    "GroupTable",
    "JoinReport",
    "UnknownAttributeError",
    "annotator_groups",
    "attributes",
    "check_attribute",
    "group_prefix",
    "join_participants",
    "parse_group_options",
    "read_participants",
    "split_group_prefix",
]

logger = logging.getLogger("prefcore")

GroupTable = dict[str, dict[str, str]]
"""Annotator id → attribute → group."""

ID_COLUMNS: tuple[str, ...] = ("annotator_id", "annotator", "id")
"""Names the annotator-id column of a participants table may have, in order of preference."""


class GroupConflictError(DataError):
    """An annotator listed in two groups of the same attribute."""

    def __init__(self, annotator: str, attribute: str, groups: Sequence[str], *, source: str | None = None) -> None:
        self.annotator = annotator
        self.attribute = attribute
        self.groups = tuple(groups)
        super().__init__(
            f"annotator {annotator!r} is listed in two groups of {attribute!r}: "
            f"{' and '.join(repr(group) for group in self.groups)}. An annotator belongs to one group per "
            "attribute; correct the participants table or the annotation file.",
            source=source,
            field=attribute,
        )


class UnknownAttributeError(ConfigError):
    """A group attribute that no annotator has."""

    def __init__(self, attribute: str, known: Sequence[str]) -> None:
        self.attribute = attribute
        self.known = tuple(known)
        listing = (
            ", ".join(repr(name) for name in self.known) if self.known else "none (no record has annotator_groups)"
        )
        super().__init__(
            f"no annotator has the group attribute {attribute!r}. Known attributes: {listing}. "
            "Attributes come from annotator_groups in the records (prefcore annotate --group ATTR=VALUE) "
            "or from a participants table (--participants FILE).",
            field="by",
        )


def _merge(table: GroupTable, annotator: str, groups: Mapping[str, str], source: str | None) -> None:
    known = table.setdefault(annotator, {})
    for attribute, group in groups.items():
        if known.get(attribute, group) != group:
            raise GroupConflictError(annotator, attribute, (known[attribute], group), source=source)
        known[attribute] = group


def annotator_groups(records: Iterable[PreferenceRecord]) -> GroupTable:
    """Every annotator's groups as the records state them; two different groups of one attribute raise."""
    table: GroupTable = {}
    for record in flatten(records):
        if record.annotator_id is not None:
            source = record.provenance.source if record.provenance else None
            _merge(table, record.annotator_id, record.annotator_groups, source)
    return table


def attributes(table: Mapping[str, Mapping[str, str]]) -> tuple[str, ...]:
    """The attribute names any annotator of ``table`` has, sorted."""
    return tuple(sorted({attribute for groups in table.values() for attribute in groups}))


def check_attribute(attribute: str, known: Iterable[str]) -> None:
    """Raise ``UnknownAttributeError`` naming the known attributes unless ``attribute`` is one."""
    known = tuple(sorted(known))
    if attribute not in known:
        raise UnknownAttributeError(attribute, known)


def parse_group_options(values: Iterable[str]) -> dict[str, str]:
    """``["community=rural", "language=fr"]`` → ``{"community": "rural", "language": "fr"}``."""
    groups: dict[str, str] = {}
    for value in values:
        attribute, equals, group = (part.strip() for part in value.partition("="))
        if not equals or not attribute or not group:
            raise ConfigError(f"--group takes ATTR=VALUE, e.g. --group community=rural; got {value!r}.", field="group")
        if groups.get(attribute, group) != group:
            raise ConfigError(
                f"--group gives {attribute!r} twice ({groups[attribute]!r} and {group!r}); "
                "an annotator belongs to one group per attribute.",
                field="group",
            )
        groups[attribute] = group
    return groups


def read_participants(path: str | os.PathLike[str]) -> GroupTable:
    """A participants table (CSV with a header, or JSONL): annotator id → attribute → group.

    The id column is the first of ``ID_COLUMNS`` present; every other column is an attribute.
    Empty cells are no attribute. An annotator may have several rows, which merge; two
    different groups of one attribute raise ``GroupConflictError``.
    """
    source = os.fspath(path)
    suffix = Path(source).suffix.lower()
    if suffix == ".csv":
        rows = _csv_rows(source)
    elif suffix in (".jsonl", ".ndjson"):
        rows = ((line, dict(row)) for line, row in jsonl_rows(source))
    else:
        raise DataError("a participants table is a .csv file with a header row, or .jsonl.", source=source)
    table: GroupTable = {}
    for line, row in rows:
        id_column = next((name for name in ID_COLUMNS if name in row), None)
        if id_column is None:
            raise DataError(
                f"has no annotator id column; name it one of {', '.join(ID_COLUMNS)}.", source=source, line=line
            )
        annotator = row.pop(id_column)
        if not isinstance(annotator, str) or not annotator.strip():
            raise DataError(f"must be a non-empty annotator id, got {annotator!r}.", source=source, line=line)
        groups = {}
        for attribute, group in row.items():
            if group is None or group == "":
                continue
            if not isinstance(group, str):
                raise DataError(
                    f"must be a group name (a string), got {group!r}.", source=source, line=line, field=attribute
                )
            groups[attribute] = group.strip()
        try:
            _merge(table, annotator.strip(), groups, source)
        except GroupConflictError as error:
            raise GroupConflictError(
                error.annotator, error.attribute, error.groups, source=f"{source} line {line}"
            ) from None
    return table


def _csv_rows(source: str) -> Iterable[tuple[int, dict[str, str | None]]]:
    if not Path(source).is_file():
        raise DataError("no such file.", source=source)
    with open(source, encoding="utf-8-sig", newline="") as file:
        reader = csv.DictReader(file)
        if reader.fieldnames is None:
            raise DataError("is empty; a participants table needs a header row.", source=source)
        for row in reader:
            if None in row:
                raise DataError("has more cells than the header has columns.", source=source, line=reader.line_num)
            yield reader.line_num, {key.strip(): value for key, value in row.items()}


@dataclass(frozen=True)
class JoinReport:
    """What joining a participants table found besides the groups it added."""

    unknown: tuple[str, ...]
    """Annotators of the table who answered nothing in the records."""
    unlisted: tuple[str, ...]
    """Annotators of the records whom the table does not list."""

    def warnings(self) -> list[str]:
        if not self.unknown:
            return []
        return [
            f"the participants table lists {len(self.unknown)} annotator(s) who gave no answer in the data: "
            f"{', '.join(self.unknown)}"
        ]


def join_participants(
    records: Sequence[PreferenceRecord], table: Mapping[str, Mapping[str, str]], *, source: str | None = None
) -> tuple[list[PreferenceRecord], JoinReport]:
    """The records with each annotator's groups from ``table`` added to ``annotator_groups``.

    A record that already names a group of an attribute must agree with the table, else
    ``GroupConflictError``. Items of a ``FeedbackRecord`` are joined on their own annotator.
    """
    seen: set[str] = set()

    def join(record: PreferenceRecord) -> PreferenceRecord:
        if isinstance(record, FeedbackRecord):
            record = replace(record, items=tuple(join(item) for item in record.items))
        annotator = record.annotator_id
        if annotator is None:
            return record
        seen.add(annotator)
        extra = table.get(annotator)
        if not extra:
            return record
        merged: GroupTable = {annotator: dict(record.annotator_groups)}
        _merge(merged, annotator, extra, source)
        return replace(record, annotator_groups=merged[annotator])

    joined = [join(record) for record in records]
    report = JoinReport(tuple(sorted(set(table) - seen)), tuple(sorted(seen - set(table))))
    for warning in report.warnings():
        logger.warning("%s: %s", source or "participants", warning)
    return joined, report


# ----------------------------------------------------------------------------------------------
# Group-conditioned prompts and per-group judges
# ----------------------------------------------------------------------------------------------

_PREFIX = re.compile(r"^\[(?P<attribute>[^:\[\]]+): (?P<group>[^\[\]]+)\] ")


def group_prefix(attribute: str, group: str) -> str:
    """``"[community: rural] "``: the text a group-conditioned prompt starts with."""
    return f"[{attribute}: {group}] "


def split_group_prefix(prompt: str) -> tuple[tuple[str, str] | None, str]:
    """``((attribute, group), rest)`` of a prompt that starts with ``group_prefix``, else ``(None, prompt)``."""
    if not isinstance(prompt, str):
        return None, prompt
    match = _PREFIX.match(prompt)
    if match is None:
        return None, prompt
    return (match["attribute"], match["group"]), prompt[match.end() :]


@dataclass(frozen=True)
class GroupJudge:
    """A pairwise judge per group of one attribute, usable wherever one judge is.

    Called as a judge, it judges a prompt tagged with one of its groups (``group_prefix``) as
    that group does, and an untagged prompt as the population does: Σ_g w_g · judge_g / Σ_g w_g,
    the expected share of people preferring the first reply. ``for_group(g)`` is group g's
    judge alone (tags stripped), which per-group evaluators ask.
    """

    attribute: str
    judges: Mapping[str, Callable[[str, str, str], float]]
    weights: Mapping[str, float]

    def __post_init__(self) -> None:
        if not self.judges:
            raise ValueError("a GroupJudge needs at least one group's judge.")
        missing = sorted(set(self.judges) - set(self.weights))
        if missing or any(not weight > 0 for weight in self.weights.values()):
            raise ValueError(f"every group needs a weight > 0; missing or bad: {missing or dict(self.weights)}.")

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(self.judges)

    def for_group(self, group: str) -> Callable[[str, str, str], float]:
        if group not in self.judges:
            raise KeyError(f"no judge for group {group!r} of {self.attribute!r}; groups: {', '.join(self.judges)}.")
        judge = self.judges[group]
        return lambda prompt, first, second: judge(split_group_prefix(prompt)[1], first, second)

    def __call__(self, prompt: str, first: str, second: str) -> float:
        tag, text = split_group_prefix(prompt)
        if tag is not None and tag[0] == self.attribute and tag[1] in self.judges:
            return float(self.judges[tag[1]](text, first, second))
        total = sum(self.weights[group] for group in self.judges)
        return (
            sum(self.weights[group] * float(judge(text, first, second)) for group, judge in self.judges.items()) / total
        )

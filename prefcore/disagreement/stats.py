"""Where annotator groups disagree: per-item splits, agreement within and between groups, per category.

Every pairwise answer (rankings, scores and critiques with a revision count as the pairs
they make) is a vote on its pair: 1 for the pair's first side, 0 for its second, ½ for a tie
(``prefcore.aggregation.collect_votes``). For the groups of one attribute ``by``:

    share_g(item)     = the first side's vote share within group g
    gap(item)         = max_g share_g − min_g share_g        over groups with a vote on the item
    α_g               = Krippendorff's α (nominal: first / second / tie) over the votes of group g
    α overall         = the same over every vote
    α between groups  = Krippendorff's α (interval) with each group one rater, its share its value

α needs an item answered by two or more annotators of the group, so a group with fewer than
``MIN_ANNOTATORS`` annotators gets none; such groups, votes without a group and records
without an annotator are all reported, never dropped silently. ``prefcore.annotate``'s
``krippendorff_alpha`` computes every α.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from prefcore.aggregation import PairVotes
from prefcore.aggregation import collect_votes
from prefcore.annotate.coefficients import krippendorff_alpha
from prefcore.annotate.units import flatten
from prefcore.data.convert import to_pairs
from prefcore.data.records import BinaryLabel
from prefcore.data.records import PairwiseComparison
from prefcore.data.records import PreferenceRecord
from prefcore.data.records import Text
from prefcore.data.records import text_to_json
from prefcore.groups import annotator_groups
from prefcore.groups import attributes
from prefcore.groups import check_attribute

__all__ = [
    "MIN_ANNOTATORS",
    "NO_CATEGORY",
    "Agreement",
    "CategoryRow",
    "Disagreement",
    "GroupRow",
    "ItemRow",
    "agreement_of",
    "between_group_alpha",
    "disagreement",
]

MIN_ANNOTATORS = 2
"""Krippendorff's α compares answers to the same item, so a group needs two annotators at least."""

NO_CATEGORY = "(no category)"
"""The category of items whose records have no value in the category field."""

_LABELS = {1.0: "first", 0.0: "second", 0.5: "tie"}


@dataclass(frozen=True)
class Agreement:
    """Krippendorff's α, or why there is none (``reason``), with what it was computed over."""

    alpha: float
    items: int
    """Items with two or more votes of the group, the units α compares."""
    reason: str | None = None

    @property
    def defined(self) -> bool:
        return self.reason is None


def agreement_of(units: Sequence[Sequence[Any]], annotators: int, *, metric: str = "nominal") -> Agreement:
    """α over ``units`` (values per item) of ``annotators`` people, or the reason it is undefined."""
    pairable = [unit for unit in units if len(unit) >= 2]
    if annotators < MIN_ANNOTATORS:
        return Agreement(math.nan, len(pairable), f"too few annotators ({annotators}; α needs {MIN_ANNOTATORS}+)")
    if not pairable:
        return Agreement(math.nan, 0, "no item answered by 2+ of its annotators")
    alpha = krippendorff_alpha(pairable, metric)
    if math.isnan(alpha):
        return Agreement(alpha, len(pairable), "undefined: every answer was the same")
    return Agreement(alpha, len(pairable))


@dataclass(frozen=True)
class ItemRow:
    """One pair's split: votes and the first side's share, overall and per group."""

    item: str
    prompt: Text
    first: Text
    second: Text
    category: str
    votes: int
    share: float
    groups: dict[str, tuple[int, float]]
    """Group → (votes, the first side's share)."""

    @property
    def gap(self) -> float | None:
        """max − min of the group shares; None with fewer than two groups voting."""
        if len(self.groups) < 2:
            return None
        shares = [share for _, share in self.groups.values()]
        return max(shares) - min(shares)


@dataclass(frozen=True)
class GroupRow:
    group: str
    annotators: int
    votes: int
    items: int
    agreement: Agreement


@dataclass(frozen=True)
class CategoryRow:
    category: str
    items: int
    mean_gap: float
    """Mean between-group gap over the category's items with 2+ groups voting (NaN: none)."""
    between: Agreement
    by_group: dict[str, Agreement]


@dataclass(frozen=True)
class Disagreement:
    """Everything ``prefcore disagreement`` reports, as data (``prefcore.disagreement.render`` writes it)."""

    by: str
    category_field: str
    groups: tuple[GroupRow, ...]
    overall: Agreement
    between: Agreement
    items: tuple[ItemRow, ...]
    categories: tuple[CategoryRow, ...]
    annotators: int
    known_attributes: tuple[str, ...]
    ungrouped: tuple[str, ...] = ()
    """Annotators without a group of ``by``: their votes count overall, in no group."""
    unattributed: int = 0
    """Records without an annotator id, left out (α compares annotators)."""
    not_pairs: int = 0
    """Records that make no pair (binary labels, single ratings), left out."""
    warnings: tuple[str, ...] = field(default=())

    def to_dict(self, *, top: int = 10) -> dict[str, Any]:
        """The numbers as plain JSON data (an undefined α is null, with its reason)."""
        return {
            "by": self.by,
            "category_field": self.category_field,
            "annotators": self.annotators,
            "items": len(self.items),
            "overall": _agreement_dict(self.overall),
            "between_groups": _agreement_dict(self.between),
            "groups": {
                row.group: {
                    "annotators": row.annotators,
                    "votes": row.votes,
                    "items": row.items,
                    "within": _agreement_dict(row.agreement),
                }
                for row in self.groups
            },
            "largest_gaps": [
                {
                    "item": item.item,
                    "category": item.category,
                    "gap": item.gap,
                    "shares": {group: share for group, (_, share) in item.groups.items()},
                }
                for item in self.largest_gaps(top)
            ],
            "categories": [
                {
                    "category": row.category,
                    "items": row.items,
                    "mean_gap": None if math.isnan(row.mean_gap) else row.mean_gap,
                    "between_groups": _agreement_dict(row.between),
                    "within": {group: _agreement_dict(agreement) for group, agreement in row.by_group.items()},
                }
                for row in self.categories_by_gap()
            ],
            "ungrouped": list(self.ungrouped),
            "unattributed": self.unattributed,
            "not_pairs": self.not_pairs,
            "warnings": list(self.warnings),
        }

    def largest_gaps(self, count: int = 10) -> list[ItemRow]:
        """The items whose groups are furthest apart, largest gap first."""
        split = [item for item in self.items if item.gap is not None]
        return sorted(split, key=lambda item: -(item.gap or 0.0))[:count]

    def categories_by_gap(self) -> list[CategoryRow]:
        """Categories where groups disagree most (largest mean gap) first; those without a gap last."""
        return sorted(self.categories, key=lambda row: (math.isnan(row.mean_gap), -row.mean_gap))


def _agreement_dict(agreement: Agreement) -> dict[str, Any]:
    return {
        "alpha": agreement.alpha if agreement.defined else None,
        "items": agreement.items,
        "reason": agreement.reason,
    }


def _item_name(pair: PairVotes) -> str:
    metadata = pair.example.metadata
    for value in (metadata.get("item_id"), pair.example.group_id):
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return str(value)
    key = repr([text_to_json(pair.prompt), text_to_json(pair.first), text_to_json(pair.second)])
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]


def _category(pair: PairVotes, category_field: str) -> str:
    value = pair.example.metadata.get(category_field)
    if value is None or isinstance(value, (dict, list)):
        return NO_CATEGORY
    return str(value)


def _pairs(records: Iterable[PreferenceRecord]) -> tuple[list[PairwiseComparison], int, int]:
    """The pairs the records make, each keeping its annotator; and how many records made none, or had no annotator."""
    pairs: list[PairwiseComparison] = []
    not_pairs = unattributed = 0
    for record in flatten(records):
        if record.annotator_id is None:
            unattributed += 1
            continue
        made = [] if isinstance(record, BinaryLabel) else to_pairs([record], ties="tie")
        if not made:
            not_pairs += 1
        pairs += made
    return pairs, not_pairs, unattributed


def disagreement(
    records: Sequence[PreferenceRecord], by: str, *, category_field: str = "category", warnings: Sequence[str] = ()
) -> Disagreement:
    """The disagreement report of ``records`` between the groups of attribute ``by``.

    Raises ``UnknownAttributeError`` (naming the known attributes) when no annotator has
    ``by``, and ``GroupConflictError`` when an annotator is in two groups of one attribute.
    """
    table = annotator_groups(records)
    known = attributes(table)
    check_attribute(by, known)
    pairs, not_pairs, unattributed = _pairs(records)
    votes = [entry for entry in collect_votes(pairs) if isinstance(entry, PairVotes)]

    items: list[ItemRow] = []
    units: dict[str, list[list[str]]] = {}  # group → per item, that group's answers
    everyone: list[list[str]] = []
    group_items: dict[str, int] = {}
    group_votes: dict[str, int] = {}
    category_units: dict[tuple[str, str], list[list[str]]] = {}
    for pair in votes:
        category = _category(pair, category_field)
        everyone.append([_LABELS[vote.value] for vote in pair.votes])
        split: dict[str, list[float]] = {}
        for vote in pair.votes:
            group = vote.groups.get(by)
            if group is not None:
                split.setdefault(group, []).append(vote.value)
        for group, values in split.items():
            labels = [_LABELS[value] for value in values]
            units.setdefault(group, []).append(labels)
            category_units.setdefault((category, group), []).append(labels)
            group_items[group] = group_items.get(group, 0) + 1
            group_votes[group] = group_votes.get(group, 0) + len(values)
        shares = {group: (len(values), sum(values) / len(values)) for group, values in sorted(split.items())}
        items.append(
            ItemRow(
                _item_name(pair), pair.prompt, pair.first, pair.second, category, len(pair.votes), pair.share, shares
            )
        )

    members: dict[str, set[str]] = {}
    for annotator, groups in table.items():
        if by in groups:
            members.setdefault(groups[by], set()).add(annotator)
    group_rows = tuple(
        GroupRow(
            group,
            len(members.get(group, ())),
            group_votes.get(group, 0),
            group_items.get(group, 0),
            agreement_of(units.get(group, []), len(members.get(group, ()))),
        )
        for group in sorted(set(members) | set(units))
    )
    group_shares = [{g: share for g, (_, share) in item.groups.items()} for item in items if len(item.groups) >= 2]
    between = between_group_alpha(group_shares, len(group_rows))

    categories = []
    for category in sorted({item.category for item in items}):
        in_category = [item for item in items if item.category == category]
        gaps = [item.gap for item in in_category if item.gap is not None]
        shares = [{g: share for g, (_, share) in item.groups.items()} for item in in_category if len(item.groups) >= 2]
        by_group = {
            row.group: agreement_of(category_units.get((category, row.group), []), row.annotators) for row in group_rows
        }
        categories.append(
            CategoryRow(
                category,
                len(in_category),
                sum(gaps) / len(gaps) if gaps else math.nan,
                between_group_alpha(shares, len(group_rows)),
                by_group,
            )
        )
    ungrouped = tuple(sorted(annotator for annotator, groups in table.items() if by not in groups))
    return Disagreement(
        by=by,
        category_field=category_field,
        groups=group_rows,
        overall=agreement_of(everyone, len(table)),
        between=between,
        items=tuple(items),
        categories=tuple(categories),
        annotators=len(table),
        known_attributes=known,
        ungrouped=ungrouped,
        unattributed=unattributed,
        not_pairs=not_pairs,
        warnings=tuple(warnings),
    )


def between_group_alpha(shares: Sequence[dict[str, float]], groups: int) -> Agreement:
    """Interval α between groups over items (group → share), each group one rater; needs two groups."""
    if groups < 2:
        return Agreement(math.nan, 0, f"needs 2+ groups, got {groups}")
    units = [list(item.values()) for item in shares]
    if not units:
        return Agreement(math.nan, 0, "no item answered by 2+ groups")
    alpha = krippendorff_alpha(units, "interval")
    if math.isnan(alpha):
        return Agreement(alpha, len(units), "undefined: every group share was the same")
    return Agreement(alpha, len(units))

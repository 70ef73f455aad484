"""Many annotators' votes on one pair turned into one training target, by a pluggable rule.

Several annotators answer the same pair; aggregating their answers decides whose
preferences the model learns. Every pairwise answer about the same two completions of one
prompt (and aspect), in either order, is one vote on one ``PairVotes``::

    value(vote) = 1 (the pair's first side preferred), 0 (its second side), ½ (a tie)
    share       = Σ values / votes          share_g = the same over the votes of group g

The first side is the one ``prefcore.annotate.pair_unit`` sorts first, so every annotator's
vote means the same whichever order the pair was shown in. An aggregation rule (a plugin of
kind ``aggregation``, ``prefcore.methods.AggregationRule``) maps a ``PairVotes`` to a
``Target``: the first side's target share, or a drop with its reason. ``aggregate_votes``
then writes one record per pair:

    hard target: chosen = the side with share > ½, no probability
    soft target: chosen = the side with share > ½, probability = max(share, 1 − share);
                 share = ½ gives a tie (probability ½)

Records other than pairwise answers pass through unchanged, in their place. Drops are
counted per reason in ``AggregationSummary``, never silent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from prefcore.annotate.units import pair_unit
from prefcore.data.records import PairwiseComparison
from prefcore.data.records import PreferenceRecord
from prefcore.data.records import Text
from prefcore.errors import ConfigError
from prefcore.errors import DataError
from prefcore.errors import PrefcoreError
from prefcore.groups import UnknownAttributeError

__all__ = [
    "AggregationSummary",
    "PairVotes",
    "Target",
    "Vote",
    "aggregate_records",
    "aggregate_votes",
    "check_aggregation_option",
    "collect_votes",
    "create_rule",
    "seat_counts",
]


@dataclass(frozen=True)
class Vote:
    """One annotator's answer about a pair: 1 for the pair's first side, 0 for its second, ½ for a tie."""

    value: float
    annotator: str | None = None
    groups: Mapping[str, str] = field(default_factory=dict)


@dataclass
class PairVotes:
    """Every vote about one pair of completions of one prompt (and aspect), in the order given.

    ``first`` and ``second`` are the pair's sides in ``pair_unit``'s fixed order;
    ``example`` is the first answer seen, whose group id, source and metadata describe the item.
    """

    key: Hashable
    prompt: Text
    first: Text
    second: Text
    example: PairwiseComparison
    votes: list[Vote] = field(default_factory=list)

    @property
    def share(self) -> float:
        """The first side's share of all votes, a tie counting half to each side."""
        return sum(vote.value for vote in self.votes) / len(self.votes)

    @property
    def annotators(self) -> list[str]:
        return [vote.annotator for vote in self.votes if vote.annotator is not None]

    def by_group(self, attribute: str) -> dict[str, list[Vote]]:
        """The votes per group of ``attribute``, groups in order of first vote.

        Raises ``DataError`` naming the annotators whose group is unknown: a vote without a
        group cannot be counted for any group, and leaving it out would change the result silently.
        When no vote has the attribute, ``UnknownAttributeError`` names the attributes they have.
        """
        if not any(attribute in vote.groups for vote in self.votes):
            raise UnknownAttributeError(attribute, sorted({name for vote in self.votes for name in vote.groups}))
        missing = sorted({vote.annotator or "(no annotator id)" for vote in self.votes if attribute not in vote.groups})
        if missing:
            raise DataError(
                f"the votes of {', '.join(missing)} have no {attribute!r} group, so they cannot be aggregated "
                f"by {attribute!r}. Give every annotator a group (prefcore annotate --group {attribute}=..., or "
                "a participants table).",
                source=self.example.provenance.source if self.example.provenance else None,
                line=self.example.provenance.line if self.example.provenance else None,
                field="annotator_groups",
            )
        groups: dict[str, list[Vote]] = {}
        for vote in self.votes:
            groups.setdefault(vote.groups[attribute], []).append(vote)
        return groups

    def group_shares(self, attribute: str) -> dict[str, float]:
        """The first side's vote share within each group of ``attribute``."""
        return {group: sum(v.value for v in votes) / len(votes) for group, votes in self.by_group(attribute).items()}


@dataclass(frozen=True)
class Target:
    """What a rule makes of one pair's votes: the first side's target share, or a drop and why.

    ``hard``: the target becomes a plain chosen/rejected pair (no probability). ``details``
    go into the record's metadata (e.g. the group shares a group rule used).
    """

    share: float | None
    hard: bool = False
    dropped: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.share is None and not self.dropped:
            raise ValueError("a Target without a share must say why the pair is dropped.")
        if self.share is not None and not 0.0 <= self.share <= 1.0:
            raise ValueError(f"a target share is in [0, 1], got {self.share}.")

    @classmethod
    def drop(cls, reason: str) -> Target:
        return cls(None, dropped=reason)


@dataclass(frozen=True)
class AggregationSummary:
    """How many pairs a rule saw, how many records it made, and the drops per reason."""

    rule: str
    pairs: int
    votes: int
    kept: int
    dropped: Mapping[str, int]

    def format(self) -> str:
        text = f"aggregation {self.rule!r}: {self.votes} votes on {self.pairs} pairs -> {self.kept} training pairs"
        if self.dropped:
            text += "; dropped: " + ", ".join(f"{count} ({reason})" for reason, count in self.dropped.items())
        return text


def collect_votes(records: Iterable[PreferenceRecord]) -> list[PairVotes | PreferenceRecord]:
    """Pairwise answers grouped into ``PairVotes`` per pair and aspect; other records pass through.

    The result keeps first-seen order: a ``PairVotes`` stands where its pair was first answered.
    """
    in_order: list[PairVotes | PreferenceRecord] = []
    by_key: dict[Hashable, PairVotes] = {}
    for record in records:
        if not isinstance(record, PairwiseComparison):
            in_order.append(record)
            continue
        unit, chosen_first = pair_unit(record.prompt, record.chosen, record.rejected)
        key = (unit, record.aspect)
        if key not in by_key:
            first, second = (record.chosen, record.rejected) if chosen_first else (record.rejected, record.chosen)
            by_key[key] = PairVotes(key, record.prompt, first, second, record)
            in_order.append(by_key[key])
        value = 0.5 if record.tie else float(chosen_first)
        by_key[key].votes.append(Vote(value, record.annotator_id, record.annotator_groups))
    return in_order


def _record(pair: PairVotes, target: Target) -> PairwiseComparison:
    assert target.share is not None
    share, first, second = target.share, pair.first, pair.second
    metadata: dict[str, Any] = {"votes": len(pair.votes), "annotators": pair.annotators, **target.details}
    common: dict[str, Any] = {
        "aspect": pair.example.aspect,
        "group_id": pair.example.group_id,
        "source": pair.example.source,
        "metadata": metadata,
    }
    if share == 0.5:
        return PairwiseComparison(
            pair.prompt, first, second, tie=True, probability=None if target.hard else 0.5, **common
        )
    if share < 0.5:
        first, second, share = second, first, 1.0 - share
    return PairwiseComparison(pair.prompt, first, second, probability=None if target.hard else share, **common)


def aggregate_votes(
    records: Iterable[PreferenceRecord], rule: Any
) -> tuple[list[PreferenceRecord], AggregationSummary]:
    """One record per pair from ``rule`` (an ``AggregationRule``), other records unchanged, and the summary."""
    out: list[PreferenceRecord] = []
    dropped: Counter[str] = Counter()
    pairs = votes = 0
    for entry in collect_votes(records):
        if not isinstance(entry, PairVotes):
            out.append(entry)
            continue
        pairs += 1
        votes += len(entry.votes)
        target = rule.aggregate(entry)
        if target.share is None:
            dropped[target.dropped] += 1
        else:
            out.append(_record(entry, target))
    kept = pairs - sum(dropped.values())
    return out, AggregationSummary(rule.name, pairs, votes, kept, dict(dropped))


def create_rule(name: str, options: Mapping[str, Any] | None = None, *, registry: Any = None) -> Any:
    """The aggregation rule ``name`` with ``options``, from the plugin registry.

    Every error is a ``ConfigError`` on the field ``aggregation``; an unknown name lists the
    available rules.
    """
    from prefcore.api import get_registry  # the registry imports every plugin: only when a rule is asked for

    registry = registry or get_registry()
    try:
        return registry.create("aggregation", name, options or {})
    except ConfigError:
        raise
    except PrefcoreError as exc:
        raise ConfigError(f"aggregation = {name!r}: {exc}", field="aggregation") from exc


def check_aggregation_option(name: str, options: Mapping[str, Any], *, method: str) -> None:
    """A feedback config's ``aggregation`` and ``aggregation_options``, checked before any data is read.

    ``"none"`` keeps every answer and takes no options; any other name must be a registered
    rule (an unknown one lists the available rules) whose options are valid.
    """
    if name == "none":
        if options:
            raise ConfigError(
                "aggregation_options is set but no aggregation rule is named.",
                method=method,
                field="aggregation_options",
            )
        return
    create_rule(name, options)


def aggregate_records(
    records: Sequence[PreferenceRecord], name: str, options: Mapping[str, Any] | None = None, *, registry: Any = None
) -> tuple[list[PreferenceRecord], AggregationSummary]:
    """``aggregate_votes`` with the rule named ``name``: what a feedback source's ``aggregation`` option does."""
    return aggregate_votes(records, create_rule(name, options, registry=registry))


def seat_counts(weights: Mapping[str, float], size: int) -> dict[str, int]:
    """``size`` seats shared by ``weights`` with the largest-remainder (Hamilton) method.

    Each group gets ⌊size · w_g / Σw⌋ seats, and the seats left go to the largest remainders
    (ties to the group listed first), so the counts add up to ``size`` and follow the weights
    as closely as whole seats can.
    """
    total = sum(weights.values())
    if size < 1 or total <= 0 or any(weight < 0 for weight in weights.values()):
        raise ValueError(f"seat_counts needs size >= 1 and non-negative weights with a positive sum, got {weights}.")
    quotas = {group: size * weight / total for group, weight in weights.items()}
    seats = {group: int(quota) for group, quota in quotas.items()}
    order = sorted(quotas, key=lambda group: -(quotas[group] - seats[group]))
    for group in order[: size - sum(seats.values())]:
        seats[group] += 1
    return seats

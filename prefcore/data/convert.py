"""Conversions between feedback formats, as plain functions.

Most objectives want pairs (DPO, reward models) or unpaired labels (KTO); feedback comes
as rankings, scores, labels and critiques. Each function here turns one format into
another and says what it keeps and what it cannot carry. Derived records inherit the
annotator, group, source, metadata and provenance of the record they come from, so an
error about a derived pair still points to the line that produced it.

Ties are never dropped by accident: every function that can meet one takes ``ties``,
``"skip"`` (leave the pair out), ``"tie"`` (emit it with ``tie=True``) or ``"error"``
(raise ``DataError``), with ``"skip"`` the default, as most pairwise losses cannot use a tie.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Literal

from prefcore.data._checks import check_number
from prefcore.data.records import BinaryLabel
from prefcore.data.records import Critique
from prefcore.data.records import FeedbackRecord
from prefcore.data.records import PairwiseComparison
from prefcore.data.records import PreferenceRecord
from prefcore.data.records import Ranking
from prefcore.data.records import Scores
from prefcore.data.records import Text
from prefcore.data.records import error_at
from prefcore.errors import ConfigError
from prefcore.errors import DataError

TieHandling = Literal["skip", "tie", "error"]

_TIE_HANDLING = ("skip", "tie", "error")
_RELATIVE_TIE_TOLERANCE = 1e-9
"""Weighted scores closer than this fraction of the scale width are equal (float sums are inexact)."""


def ranking_to_pairs(
    ranking: Ranking, *, ties: TieHandling = "skip", rank_gap_margin: bool = False
) -> list[PairwiseComparison]:
    """Every pair of a ranking, the better-ranked completion chosen.

    For completions ``i < j`` (in the record's order) the one with the lower rank is
    chosen. Equal ranks follow ``ties``; a tie pair keeps the record's order. With
    ``rank_gap_margin`` each pair's margin is the rank difference (0 for a tie), so "1st
    vs 4th" counts for more than "1st vs 2nd".
    """
    _check_ties(ties)
    pairs = []
    for first, second in itertools.combinations(range(len(ranking.completions)), 2):
        first_rank, second_rank = ranking.ranks[first], ranking.ranks[second]
        if first_rank == second_rank:
            if _keep_tie(ranking, ties, f"completions {first} and {second} share rank {first_rank}", "ranks"):
                margin = 0.0 if rank_gap_margin else None
                pairs.append(_pair(ranking, first, second, tie=True, margin=margin))
            continue
        chosen, rejected = (first, second) if first_rank < second_rank else (second, first)
        margin = float(abs(first_rank - second_rank)) if rank_gap_margin else None
        pairs.append(_pair(ranking, chosen, rejected, margin=margin))
    return pairs


def scores_to_pairs(
    scores: Scores,
    *,
    aspect: str | None = None,
    weights: Mapping[str, float] | None = None,
    ties: TieHandling = "skip",
    min_margin: float = 0.0,
) -> list[PairwiseComparison]:
    """Every pair of scored completions, the higher score chosen, the score difference as margin.

    The compared score is one ``aspect``, or the ``weights``-weighted sum of several; when
    the record rates a single aspect neither is needed. A pair whose difference is below
    ``min_margin`` is left out as too close to call; equal scores follow ``ties`` (a tie
    pair has no margin). The margin is in the record's scale units, and a pair made from
    one aspect carries that aspect's name.
    """
    _check_ties(ties)
    if min_margin < 0 or not math.isfinite(min_margin):
        raise ConfigError(f"min_margin must be a finite number >= 0, got {min_margin!r}.", field="min_margin")
    values, pair_aspect = _compared_scores(scores, aspect, weights)
    tolerance = _RELATIVE_TIE_TOLERANCE * (scores.scale[1] - scores.scale[0])
    pairs = []
    for first, second in itertools.combinations(range(len(scores.completions)), 2):
        difference = values[first] - values[second]
        if abs(difference) <= tolerance:
            reason = f"completions {first} and {second} score the same ({values[first]:g})"
            if _keep_tie(scores, ties, reason, "scores"):
                pairs.append(_pair(scores, first, second, tie=True, aspect=pair_aspect))
            continue
        if abs(difference) < min_margin:
            continue
        chosen, rejected = (first, second) if difference > 0 else (second, first)
        pairs.append(_pair(scores, chosen, rejected, margin=abs(difference), aspect=pair_aspect))
    return pairs


def _compared_scores(
    scores: Scores, aspect: str | None, weights: Mapping[str, float] | None
) -> tuple[list[float], str | None]:
    """The score each completion is compared on, and the aspect it measures (``None`` for a weighted sum)."""
    if aspect is not None and weights is not None:
        raise ConfigError("give aspect= or weights=, not both.", field="aspect")
    if weights is not None:
        if not isinstance(weights, Mapping) or not weights:
            raise ConfigError(
                f"weights must be a non-empty {{aspect: weight}} mapping, got {weights!r}.", field="weights"
            )
        checked = {}
        for name, weight in weights.items():
            try:
                checked[name] = check_number(weight, f"weights.{name}")
            except DataError as error:
                raise ConfigError(error.reason, field=error.field) from None
        missing = sorted(set(checked) - set(scores.aspects))
        if missing:
            raise error_at(
                scores,
                f"has no aspect {missing[0]!r} to weight; it rates {list(scores.aspects)}.",
                field="scores",
            )
        return [math.fsum(weight * row[name] for name, weight in checked.items()) for row in scores.scores], None
    if aspect is None:
        if len(scores.aspects) > 1:
            raise error_at(
                scores,
                f"rates several aspects {list(scores.aspects)}; pass aspect= to compare one of them "
                f"or weights= to compare a weighted sum.",
                field="scores",
            )
        aspect = scores.aspects[0]
    if aspect not in scores.aspects:
        raise error_at(scores, f"has no aspect {aspect!r}; it rates {list(scores.aspects)}.", field="scores")
    return [row[aspect] for row in scores.scores], aspect


def pair_to_binary_labels(pair: PairwiseComparison, *, ties: Literal["skip", "error"] = "skip") -> list[BinaryLabel]:
    """A pair as two unpaired labels: chosen desirable, rejected undesirable.

    This is TRL's ``unpair_preference_dataset`` convention (KTO's input), one record at a
    time: ``[chosen → True, rejected → False]``. A tie says neither is better, so it makes
    no label; it follows ``ties``. Labels carry the pair's aspect; margin and probability
    have no place in a binary label and are not carried over.
    """
    if ties not in ("skip", "error"):
        raise ConfigError(f"ties must be 'skip' or 'error' here, got {ties!r}.", field="ties")
    if pair.tie:
        _keep_tie(pair, ties, "the pair is a tie, which makes no desirable/undesirable label", "tie")
        return []
    common = pair.annotations()
    return [
        BinaryLabel(pair.prompt, pair.chosen, True, aspect=pair.aspect, **common),
        BinaryLabel(pair.prompt, pair.rejected, False, aspect=pair.aspect, **common),
    ]


def binary_labels_to_pairs(labels: Iterable[BinaryLabel]) -> list[PairwiseComparison]:
    """Pairs from unpaired labels: each desirable completion over each undesirable one of the same prompt.

    Labels are grouped by prompt and aspect, so a completion judged on safety is never
    paired with one judged on helpfulness. A completion labelled more than once counts
    once per side (first label kept); a completion labelled both desirable and
    undesirable is not paired with itself. Pairs come in order of first appearance of the
    prompt, then of the desirable and the undesirable completion. A pair keeps the
    annotator, group and source its two labels share, and the provenance of the desirable one.
    Spans are per-completion detail and are not carried into pairs.
    """
    groups: dict[tuple[Text, str | None], tuple[dict[Text, BinaryLabel], dict[Text, BinaryLabel]]] = {}
    for label in labels:
        desirable, undesirable = groups.setdefault((label.prompt, label.aspect), ({}, {}))
        (desirable if label.label else undesirable).setdefault(label.completion, label)
    pairs = []
    for (prompt, aspect), (desirable, undesirable) in groups.items():
        for good, bad in itertools.product(desirable.values(), undesirable.values()):
            if good.completion == bad.completion:
                continue
            shared = {
                name: getattr(good, name) if getattr(good, name) == getattr(bad, name) else None
                for name in ("annotator_id", "group_id", "source")
            }
            shared["annotator_groups"] = good.annotator_groups if good.annotator_groups == bad.annotator_groups else {}
            pairs.append(
                PairwiseComparison(
                    prompt,
                    good.completion,
                    bad.completion,
                    aspect=aspect,
                    provenance=good.provenance,
                    **shared,
                )
            )
    return pairs


def critique_to_pairs(critique: Critique) -> list[PairwiseComparison]:
    """A critique with a revision as one pair, the revision chosen over the original; none without one."""
    if critique.revision is None:
        return []
    return [PairwiseComparison(critique.prompt, critique.revision, critique.completion, **critique.annotations())]


def preference_target(pair: PairwiseComparison) -> float:
    """The probability that ``chosen`` is preferred: the soft label, 0.5 for a tie, else 1.

    Soft labels (annotator vote shares, judge confidences) pass through unchanged, for
    objectives that train on a target probability (cDPO, soft Bradley-Terry).
    """
    if pair.probability is not None:
        return pair.probability
    return 0.5 if pair.tie else 1.0


def to_pairs(
    records: Iterable[PreferenceRecord],
    *,
    ties: TieHandling = "skip",
    rank_gap_margin: bool = False,
    aspect: str | None = None,
    weights: Mapping[str, float] | None = None,
    min_margin: float = 0.0,
) -> list[PairwiseComparison]:
    """Every pair that any mix of records yields, for objectives that train on pairs.

    Pairs pass through (a tie follows ``ties``), rankings, scores and critiques convert
    with the functions above (the keywords go to them), and the items of a
    ``FeedbackRecord`` convert one by one, so a bundle with a choice and scores on the same
    two completions gives two pairs. Binary labels are paired across the whole input
    (``binary_labels_to_pairs``), and those pairs come after all the others.
    """
    _check_ties(ties)
    pairs: list[PairwiseComparison] = []
    labels: list[BinaryLabel] = []
    for record in records:
        items = record.items if isinstance(record, FeedbackRecord) else (record,)
        for item in items:
            if isinstance(item, PairwiseComparison):
                if not item.tie or _keep_tie(item, ties, "the pair is a tie", "tie"):
                    pairs.append(item)
            elif isinstance(item, Ranking):
                pairs += ranking_to_pairs(item, ties=ties, rank_gap_margin=rank_gap_margin)
            elif isinstance(item, Scores):
                pairs += scores_to_pairs(item, aspect=aspect, weights=weights, ties=ties, min_margin=min_margin)
            elif isinstance(item, Critique):
                pairs += critique_to_pairs(item)
            else:
                labels.append(item)
    return pairs + binary_labels_to_pairs(labels)


def _check_ties(ties: str) -> None:
    if ties not in _TIE_HANDLING:
        raise ConfigError(f"ties must be one of {', '.join(_TIE_HANDLING)}, got {ties!r}.", field="ties")


def _keep_tie(record: PreferenceRecord, ties: str, reason: str, field: str) -> bool:
    """Whether a tie is emitted; raises for ``ties="error"``."""
    if ties == "error":
        raise error_at(
            record,
            f"{reason}, and ties are not allowed here (ties='error'). "
            f"Pass ties='skip' to leave ties out or ties='tie' to keep them as tie pairs.",
            field=field,
        )
    return ties == "tie"


def _pair(
    record: Ranking | Scores,
    chosen: int,
    rejected: int,
    *,
    tie: bool = False,
    margin: float | None = None,
    aspect: str | None = None,
) -> PairwiseComparison:
    return PairwiseComparison(
        record.prompt,
        record.completions[chosen],
        record.completions[rejected],
        tie=tie,
        margin=margin,
        aspect=aspect,
        **record.annotations(),
    )

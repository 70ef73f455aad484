"""Human feedback from ``prefcore annotate``: the annotation file read back as records.

The annotation tool writes one prefcore record per answer (pairwise choices and ties,
rankings, Likert scores, binary labels, critiques), each with its ``annotator_id``, the
item as ``group_id`` and the question in ``metadata``. This source reads such files (any
record file with annotators works) and hands the records to the pipeline, optionally
restricted to some annotators or formats.

Several annotators of the same pair disagree; ``combine = "vote_share"`` turns their
answers into one soft label instead of contradictory hard ones:

    votes(a) = answers preferring a + ½ · ties,   share(a) = votes(a) / answers
    chosen = the side with share > ½, probability = its share;  share = ½ → a tie

Kaufmann et al. 2023, "A Survey of Reinforcement Learning from Human Feedback"
(https://arxiv.org/abs/2312.14925), discuss such aggregation of labeller disagreement; with
``combine = "none"`` every answer stays its own record, for preference models that model
annotators themselves. Records other than pairwise choices are never combined.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any
from typing import Literal

from prefcore import hookimpl
from prefcore.annotate import pair_unit
from prefcore.data import FORMATS
from prefcore.data import PairwiseComparison
from prefcore.data import load_preferences
from prefcore.errors import ConfigError
from prefcore.methods import FeedbackSource
from prefcore.methods import option

NAME = "annotations"


@dataclass(frozen=True)
class AnnotationsConfig:
    path: Path = option(doc="annotation file written by `prefcore annotate --out`")
    annotators: tuple[str, ...] = option((), doc="only these annotator ids (empty: everyone)")
    formats: tuple[str, ...] = option((), doc="only these record formats, e.g. ['pairwise'] (empty: all)")
    combine: Literal["none", "vote_share"] = option("none", doc="'vote_share': one soft-labelled pair per pair")
    skip_invalid: bool = option(False, doc="skip malformed lines (e.g. a line cut off by a crash) instead of stopping")

    def __post_init__(self) -> None:
        unknown = [name for name in self.formats if name not in FORMATS]
        if unknown:
            raise ConfigError(
                f"formats has unknown format(s) {unknown}; known: {', '.join(FORMATS)}.", method=NAME, field="formats"
            )
        if self.combine not in ("none", "vote_share"):
            raise ConfigError(
                f"combine must be 'none' or 'vote_share', got {self.combine!r}.", method=NAME, field="combine"
            )


@dataclass
class _Votes:
    """The answers about one pair: its first-seen answer, how many, and the first side's votes."""

    example: PairwiseComparison
    example_chosen_first: bool
    answers: int = 0
    first_votes: float = 0.0
    annotators: list[str] = field(default_factory=list)


def vote_share_pair(votes: _Votes) -> PairwiseComparison:
    share = votes.first_votes / votes.answers
    first, second = votes.example.chosen, votes.example.rejected
    if not votes.example_chosen_first:
        first, second = second, first
    metadata = {"votes": votes.answers, "annotators": votes.annotators}
    common: dict[str, Any] = {
        "aspect": votes.example.aspect,
        "group_id": votes.example.group_id,
        "source": votes.example.source,
        "metadata": metadata,
    }
    if share == 0.5:
        return PairwiseComparison(votes.example.prompt, first, second, tie=True, probability=0.5, **common)
    if share < 0.5:
        first, second, share = second, first, 1.0 - share
    return PairwiseComparison(votes.example.prompt, first, second, probability=share, **common)


def combine_votes(records: list[Any]) -> list[Any]:
    """Pairwise answers about the same pair (and aspect) merged into one vote-share pair, in first-seen order."""
    in_order: list[Any] = []
    by_unit: dict[Any, _Votes] = {}
    for record in records:
        if not isinstance(record, PairwiseComparison):
            in_order.append(record)
            continue
        unit, chosen_first = pair_unit(record.prompt, record.chosen, record.rejected)
        key = (unit, record.aspect)
        if key not in by_unit:
            by_unit[key] = _Votes(record, chosen_first)
            in_order.append(by_unit[key])
        votes = by_unit[key]
        votes.answers += 1
        votes.first_votes += 0.5 if record.tie else float(chosen_first)
        if record.annotator_id is not None:
            votes.annotators.append(record.annotator_id)
    return [vote_share_pair(entry) if isinstance(entry, _Votes) else entry for entry in in_order]


class Annotations(FeedbackSource):
    """Human feedback collected with `prefcore annotate`, per answer or combined into vote shares."""

    name = NAME
    config_cls = AnnotationsConfig

    def __init__(self, config: AnnotationsConfig) -> None:
        super().__init__(config)
        self.report: Any = None

    def records(self) -> Iterator[Any]:
        config = self.config
        records, self.report = load_preferences(config.path, skip_invalid=config.skip_invalid)
        if config.annotators:
            records = [record for record in records if record.annotator_id in config.annotators]
        if config.formats:
            records = [record for record in records if record.format in config.formats]
        yield from combine_votes(records) if config.combine == "vote_share" else records


@hookimpl
def prefcore_register_feedback() -> list[type[FeedbackSource]]:
    return [Annotations]

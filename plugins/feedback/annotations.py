"""Human feedback from ``prefcore annotate``: the annotation file read back as records.

The annotation tool writes one prefcore record per answer (pairwise choices and ties,
rankings, Likert scores, binary labels, critiques), each with its ``annotator_id``, its
``annotator_groups``, the item as ``group_id`` and the question in ``metadata``. This source
reads such files (any record file with annotators works) and hands the records to the
pipeline, optionally restricted to some annotators or formats, with the groups of a
participants table (``participants = "people.csv"``) joined in.

Several annotators of the same pair disagree; ``aggregation`` names a rule (a plugin of kind
``aggregation``: ``majority``, ``soft_label``, ``utilitarian``, ``egalitarian``, ``jury``, or
a third party's) that turns their votes into one target per pair, with the rule's options in
``aggregation_options``. ``combine = "vote_share"`` is the older spelling of
``aggregation = "soft_label"``:

    votes(a) = answers preferring a + ½ · ties,   share(a) = votes(a) / answers
    chosen = the side with share > ½, probability = its share;  share = ½ → a tie

Kaufmann et al. 2023, "A Survey of Reinforcement Learning from Human Feedback"
(https://arxiv.org/abs/2312.14925), discuss such aggregation of labeller disagreement; with
no rule (the default) every answer stays its own record, for preference models that model
annotators themselves. Records other than pairwise choices are never combined.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from typing import Literal

from prefcore import hookimpl
from prefcore.aggregation import AggregationSummary
from prefcore.aggregation import aggregate_votes
from prefcore.aggregation import check_aggregation_option
from prefcore.aggregation import create_rule
from prefcore.data import FORMATS
from prefcore.data import load_preferences
from prefcore.errors import ConfigError
from prefcore.groups import JoinReport
from prefcore.groups import join_participants
from prefcore.groups import read_participants
from prefcore.methods import FeedbackSource
from prefcore.methods import option

NAME = "annotations"

logger = logging.getLogger("prefcore")


@dataclass(frozen=True)
class AnnotationsConfig:
    path: Path = option(doc="annotation file written by `prefcore annotate --out`")
    annotators: tuple[str, ...] = option((), doc="only these annotator ids (empty: everyone)")
    formats: tuple[str, ...] = option((), doc="only these record formats, e.g. ['pairwise'] (empty: all)")
    combine: Literal["none", "vote_share"] = option(
        "none", doc="'vote_share': one soft-labelled pair per pair (the same as aggregation = 'soft_label')"
    )
    aggregation: str = option(
        "none", doc="aggregation rule for several annotators' votes on one pair, e.g. 'majority' ('none': keep each)"
    )
    aggregation_options: Mapping[str, Any] = option(
        default_factory=dict, doc="the rule's options, e.g. {by = 'community'} (see prefcore info <rule>)"
    )
    participants: Path | None = option(
        None, doc="participants table (CSV or JSONL): annotator_id and one column per group attribute"
    )
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
        if self.combine != "none" and self.aggregation != "none":
            raise ConfigError(
                "give combine or aggregation, not both (combine = 'vote_share' is aggregation = 'soft_label').",
                method=NAME,
                field="combine",
            )
        check_aggregation_option(self.aggregation, self.aggregation_options, method=NAME)

    def rule_name(self) -> str | None:
        if self.combine == "vote_share":
            return "soft_label"
        return None if self.aggregation == "none" else self.aggregation

    def rule(self) -> Any:
        """The configured aggregation rule (``prefcore.methods.AggregationRule``)."""
        return create_rule(str(self.rule_name()), self.aggregation_options)


class Annotations(FeedbackSource):
    """Human feedback collected with `prefcore annotate`, per answer or aggregated by a rule."""

    name = NAME
    config_cls = AnnotationsConfig

    def __init__(self, config: AnnotationsConfig) -> None:
        super().__init__(config)
        self.report: Any = None
        self.participants: JoinReport | None = None
        self.aggregation: AggregationSummary | None = None

    def records(self) -> Iterator[Any]:
        config = self.config
        records, self.report = load_preferences(config.path, skip_invalid=config.skip_invalid)
        if config.participants is not None:
            table = read_participants(config.participants)
            records, self.participants = join_participants(records, table, source=str(config.participants))
        if config.annotators:
            records = [record for record in records if record.annotator_id in config.annotators]
        if config.formats:
            records = [record for record in records if record.format in config.formats]
        if config.rule_name() is None:
            yield from records
            return
        records, self.aggregation = aggregate_votes(records, config.rule())
        logger.info("%s: %s", config.path, self.aggregation.format())
        yield from records


@hookimpl
def prefcore_register_feedback() -> list[type[FeedbackSource]]:
    return [Annotations]

"""Human feedback from a preference data file (JSONL, JSON or Parquet).

The records may be in any format of ``prefcore.data``: pairwise (TRL's
``prompt``/``chosen``/``rejected``, standard or conversational, as specified in
https://huggingface.co/docs/trl/dataset_formats), unpaired binary labels
(``prompt``/``completion``/``label``), listwise rankings, numeric scores or critiques.
Malformed records stop the run with the file, line and field named, unless
``skip_invalid`` is set, in which case they are counted in the load report.
``participants`` joins annotator groups from a table, and ``aggregation`` names a rule
(``prefcore.aggregation``) that turns several annotators' pairwise votes on one pair into one
target, as in the ``annotations`` source.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefcore import hookimpl
from prefcore.aggregation import aggregate_records
from prefcore.aggregation import check_aggregation_option
from prefcore.data import load_preferences
from prefcore.groups import join_participants
from prefcore.groups import read_participants
from prefcore.methods import FeedbackSource
from prefcore.methods import option

logger = logging.getLogger("prefcore")


@dataclass(frozen=True)
class PreferenceFileConfig:
    path: Path = option(doc="the data file: .jsonl, .json or .parquet")
    format: str | None = option(None, doc="force one record format instead of detecting it per record")
    skip_invalid: bool = option(False, doc="skip malformed records (they are counted and reported)")
    aggregation: str = option(
        "none", doc="aggregation rule for several annotators' votes on one pair ('none': keep each)"
    )
    aggregation_options: Mapping[str, Any] = option(
        default_factory=dict, doc="the rule's options, e.g. {by = 'community'}"
    )
    participants: Path | None = option(None, doc="participants table (CSV or JSONL): annotator_id and group columns")

    def __post_init__(self) -> None:
        check_aggregation_option(self.aggregation, self.aggregation_options, method="preference_file")


class PreferenceFile(FeedbackSource):
    """Human (or any pre-collected) feedback read from a JSONL, JSON or Parquet file."""

    name = "preference_file"
    config_cls = PreferenceFileConfig

    def __init__(self, config: PreferenceFileConfig) -> None:
        super().__init__(config)
        self.report: Any = None
        self.aggregation: Any = None

    def records(self) -> Iterator[Any]:
        config = self.config
        records, self.report = load_preferences(config.path, format=config.format, skip_invalid=config.skip_invalid)
        if config.participants is not None:
            records = join_participants(
                records, read_participants(config.participants), source=str(config.participants)
            )[0]
        if config.aggregation != "none":
            records, self.aggregation = aggregate_records(records, config.aggregation, config.aggregation_options)
            logger.info("%s: %s", config.path, self.aggregation.format())
        yield from records


@hookimpl
def prefcore_register_feedback() -> list[type[FeedbackSource]]:
    return [PreferenceFile]

"""Human feedback from a preference data file (JSONL, JSON or Parquet).

The records may be in any format of ``prefcore.data``: pairwise (TRL's
``prompt``/``chosen``/``rejected``, standard or conversational, as specified in
https://huggingface.co/docs/trl/dataset_formats), unpaired binary labels
(``prompt``/``completion``/``label``), listwise rankings, numeric scores or critiques.
Malformed records stop the run with the file, line and field named, unless
``skip_invalid`` is set, in which case they are counted in the load report.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefcore import hookimpl
from prefcore.data import load_preferences
from prefcore.methods import FeedbackSource
from prefcore.methods import option


@dataclass(frozen=True)
class PreferenceFileConfig:
    path: Path = option(doc="the data file: .jsonl, .json or .parquet")
    format: str | None = option(None, doc="force one record format instead of detecting it per record")
    skip_invalid: bool = option(False, doc="skip malformed records (they are counted and reported)")


class PreferenceFile(FeedbackSource):
    """Human (or any pre-collected) feedback read from a JSONL, JSON or Parquet file."""

    name = "preference_file"
    config_cls = PreferenceFileConfig

    def __init__(self, config: PreferenceFileConfig) -> None:
        super().__init__(config)
        self.report: Any = None

    def records(self) -> Iterator[Any]:
        records, self.report = load_preferences(
            self.config.path, format=self.config.format, skip_invalid=self.config.skip_invalid
        )
        yield from records


@hookimpl
def prefcore_register_feedback() -> list[type[FeedbackSource]]:
    return [PreferenceFile]

"""Stage 1, feedback: every source's records, split once into training and held-out records.

Sources are the run file's ``[feedback]`` plugins and, from Python, records held in memory
(``InMemoryFeedback``: a list of dicts in TRL's layouts, a list of prefcore records, or a
``datasets.Dataset``).
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prefcore.data import load_preferences
from prefcore.data import record_from_dict
from prefcore.data.records import RECORD_TYPES
from prefcore.engine.reward_trainer import split_records
from prefcore.errors import ConfigError
from prefcore.errors import DataError
from prefcore.settings import RunSettings

__all__ = ["FeedbackData", "InMemoryFeedback", "gather_feedback", "records_from_rows"]


@dataclass(frozen=True)
class FeedbackData:
    """The run's feedback, split once: what trains, what is held out, which prompts are evaluated."""

    train: list[Any]
    heldout: list[Any]
    prompts: list[Any]
    demonstrations: list[Any]
    heldout_from: str

    def summary(self) -> dict[str, Any]:
        """The counts shown in the report and the log."""
        return {
            "training records": len(self.train),
            "held-out records": len(self.heldout),
            "held out from": self.heldout_from,
            "evaluation prompts": len(self.prompts),
        }


def records_from_rows(rows: Iterable[Any], *, source: str = "data") -> list[Any]:
    """prefcore records from in-memory rows: dicts (TRL's layouts, prefcore's own) or records as they are.

    ``rows`` is any iterable of rows: a list, or a ``datasets.Dataset`` (whose rows iterate
    as dicts; ``datasets`` is not imported here). A dict is read like a line of a JSONL file
    (``record_from_dict``), so ``{"prompt", "chosen", "rejected"}``, conversational
    ``{"chosen": [messages], ...}``, KTO's ``{"prompt", "completion", "label"}`` and SFT's
    ``{"messages"}`` all work; ``DataError`` names the row (counted from 1).
    """
    if rows is None or isinstance(rows, (str, bytes, Mapping)):
        raise ConfigError(
            f"{source} must be a list of dicts or records, or a datasets.Dataset; got {type(rows).__name__}. "
            "For a file, use a [feedback] section: method = 'preference_file', path = '...'.",
            field=source,
        )
    records = []
    for number, row in enumerate(rows, start=1):
        if isinstance(row, RECORD_TYPES):
            records.append(row)
        elif isinstance(row, Mapping):
            records.append(record_from_dict(row, source=f"<{source}>", line=number))
        else:
            raise DataError(
                f"a row must be a dict or a prefcore record, got {type(row).__name__}.",
                source=f"<{source}>",
                line=number,
            )
    if not records:
        raise DataError("no records: there is nothing to train on.", source=f"<{source}>")
    return records


class InMemoryFeedback:
    """A feedback source of records given in memory (``prefcore.train(..., data=rows)``).

    Like a ``preference_file``, every record trains, demonstrations included; it reserves no
    prompts and cannot judge.
    """

    name = "in_memory"

    def __init__(self, records: Sequence[Any]) -> None:
        self._records = list(records)

    def records(self) -> list[Any]:
        return self._records

    def evaluation_prompts(self) -> None:
        return None

    def demonstrations(self) -> None:
        return None


def gather_feedback(
    sources: Sequence[Any], settings: RunSettings, *, heldout: Sequence[Any] | None = None
) -> FeedbackData:
    """Every source's records, held out once.

    With held-out records given in memory (``heldout``) or ``[run] heldout`` files, every
    feedback record trains and those are the held-out records. Otherwise one seeded split
    (``heldout_fraction``, whole prompts, as the preference-model stage splits) holds records
    out. The evaluation prompts are those a source reserves (the demo's), else the held-out
    records' own prompts: never a prompt the policy trained on.
    """
    records: list[Any] = []
    reserved: list[Any] = []
    reserved_records: list[Any] = []  # a source's own held-out records (the demo's answers), whatever the split
    demonstrations: list[Any] = []
    for source in sources:
        records += list(source.records())
        reserved += list(source.evaluation_prompts() or [])
        reserved_records += list(getattr(source, "heldout_records", lambda: None)() or [])
        demonstrations += list(source.demonstrations() or [])
    files = settings.heldout_files
    if heldout is not None:
        train, heldout_records = records, list(heldout)
        heldout_from = f"records given in memory ({len(heldout_records)})"
    elif files:
        train = records
        heldout_records = [record for path in files for record in load_preferences(path)[0]]
        heldout_from = "file " + ", ".join(str(path) for path in files)
    else:
        train, heldout_records = split_records(records, settings.heldout_fraction, settings.seed)
        heldout_from = f"split of the feedback (heldout_fraction = {settings.heldout_fraction:g}, seed {settings.seed})"
    heldout_records += reserved_records
    prompts = reserved or [
        prompt
        for prompt in dict.fromkeys(getattr(record, "prompt", None) for record in heldout_records)
        if prompt is not None
    ]
    return FeedbackData(train, heldout_records, prompts[: settings.eval_prompts], demonstrations, heldout_from)

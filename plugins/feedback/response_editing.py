"""Rule feedback from edits: a revision beats its original; an original beats its adversarial edit.

An edit is a comparison whose direction is known by construction. Improvements come from
people or models that revise an answer after a critique (Scheurer et al. 2023, "Training
Language Models with Language Feedback at Scale", https://arxiv.org/abs/2303.16755;
Bai et al. 2022, "Constitutional AI", https://arxiv.org/abs/2212.08073, critique → revision);
adversarial edits deliberately damage a good answer (a wrong fact slipped in, a step
dropped, a polite reply made rude) and give hard negatives that differ from the original
in one place only. The rule:

    edit = "improve":      chosen = edited,   rejected = original
    edit = "adversarial":  chosen = original, rejected = edited

Input (JSONL), either edit rows::

    {"prompt": "...", "original": "...", "edited": "...", "edit": "improve" | "adversarial"}

or ``Critique`` records (``{"prompt", "completion", "critique", "revision"}``, also inside
``FeedbackRecord`` bundles), whose revision is an improvement of the completion. A critique
without a revision makes no pair: it is skipped, or refused with
``critique_without_revision = "error"``. The critique text is kept in each pair's metadata.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from typing import Literal

from prefcore import hookimpl
from prefcore.data import Critique
from prefcore.data import FeedbackRecord
from prefcore.data import PairwiseComparison
from prefcore.data import record_from_dict
from prefcore.errors import ConfigError
from prefcore.feedback import Row
from prefcore.feedback import read_rows
from prefcore.methods import FeedbackSource
from prefcore.methods import option

NAME = "response_editing"
EDITS = ("improve", "adversarial")

ACCEPTED = (
    "A response_editing row is {'prompt', 'original', 'edited', 'edit': 'improve' or 'adversarial'}, "
    "or a critique record {'prompt', 'completion', 'critique', 'revision'}."
)


@dataclass(frozen=True)
class ResponseEditingConfig:
    path: Path = option(doc="JSONL of edit rows or critique records")
    critique_without_revision: Literal["skip", "error"] = option(
        "skip", doc="critiques with no revision make no pair: skip them, or stop with an error"
    )

    def __post_init__(self) -> None:
        if self.critique_without_revision not in ("skip", "error"):
            raise ConfigError(
                f"critique_without_revision must be 'skip' or 'error', got {self.critique_without_revision!r}.",
                method=NAME,
                field="critique_without_revision",
            )


def edit_pair(row: Row) -> PairwiseComparison:
    """The pair of one ``{prompt, original, edited, edit}`` row."""
    prompt = row.text("prompt")
    original = row.text("original", like=prompt)
    edited = row.text("edited", like=prompt)
    edit = row.require("edit")
    if edit not in EDITS:
        raise row.error(
            f"must be 'improve' (edited preferred) or 'adversarial' (original preferred), got {edit!r}.", "edit"
        )
    if edited == original:
        raise row.error("is identical to 'original'; an edit must change the answer.", "edited")
    chosen, rejected = (edited, original) if edit == "improve" else (original, edited)
    metadata = {key: value for key, value in row.data.items() if key not in ("prompt", "original", "edited")}
    return PairwiseComparison(prompt, chosen, rejected, source="rule", group_id=row.group_id(), metadata=metadata)


def critique_pairs(row: Row, config: ResponseEditingConfig) -> Iterator[PairwiseComparison]:
    """Revision-over-completion pairs of a critique record or of the critiques in a bundle."""
    record = record_from_dict(row.data, source=row.source, line=row.line)
    if isinstance(record, Critique):
        critiques = [(record, None)]
    elif isinstance(record, FeedbackRecord):
        critiques = [(item, f"items[{i}]") for i, item in enumerate(record.items) if isinstance(item, Critique)]
    else:
        raise row.error(f"is a {record.format} record, which holds no edit.", "type")
    for critique, field in critiques:
        if critique.revision is None:
            if config.critique_without_revision == "error":
                raise row.error("is missing: a critique needs a revision to make a pair.", _under(field, "revision"))
            continue
        yield PairwiseComparison(
            critique.prompt,
            critique.revision,
            critique.completion,
            annotator_id=critique.annotator_id,
            annotator_groups=critique.annotator_groups,
            group_id=critique.group_id or row.group_id(),
            source=critique.source or "rule",
            metadata={"edit": "improve", "critique": critique.critique},
            provenance=critique.provenance,
        )


def _under(parent: str | None, field: str) -> str:
    return field if parent is None else f"{parent}.{field}"


class ResponseEditing(FeedbackSource):
    """Rule feedback from edits: revision beats original; original beats its adversarial edit."""

    name = NAME
    config_cls = ResponseEditingConfig

    def records(self) -> Iterator[Any]:
        for row in read_rows(self.config.path, ACCEPTED):
            if row.has("original") or row.has("edited"):
                yield edit_pair(row)
            elif row.has("critique") or row.has("items") or row.has("type"):
                yield from critique_pairs(row, self.config)
            else:
                raise row.error("is missing: the row is neither an edit nor a critique record.", "original")


@hookimpl
def prefcore_register_feedback() -> list[type[FeedbackSource]]:
    return [ResponseEditing]

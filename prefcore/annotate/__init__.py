"""Human annotation in the terminal, and agreement between annotators.

``prefcore annotate ITEMS --out OUT --annotator ID --mode pairwise,likert`` shows each item
of ITEMS (JSONL of ``{"prompt", "completions": [...]}`` with an optional ``"id"``, or any
prefcore record, whose completions are shown) and asks, for each mode:

- ``pairwise``: which of two completions is better, for every pair of the item;
- ``tie``: the same question, also accepting ``t`` for "equally good";
- ``ranking``: an order of all completions, best first (``2 1 3``; ``=`` joins ties: ``2=1 3``);
- ``likert``: a whole-number score for each completion on ``--scale LOW HIGH``;
- ``binary``: whether each completion is acceptable (``y``/``n``);
- ``critique``: one line of free-text feedback on each completion.

Every answer is a prefcore record (``PairwiseComparison``, ``Ranking``, ``Scores``,
``BinaryLabel``, ``Critique``) with ``annotator_id``, written to OUT the moment it is given;
a session resumes where it stopped. ``--group ATTR=VALUE`` (repeatable) writes the
annotator's groups on every answer as ``annotator_groups`` (``prefcore.groups``).
``prefcore annotate --agreement OUT [OUT ...]`` reports agreement over units answered by two
or more annotators; ``prefcore disagreement`` compares groups. ``--mode norm`` reads a rules
file instead of items and asks each participant about proposed policy rules, round by round
(``prefcore.elicitation``, which builds on this package's terminal and log).

One module per job, in the order an answer travels:

- ``items``: read and check the items file (shared with LLM judges and reward-model labels);
- ``modes``: the questions each mode asks, the answers they accept, the records they make;
- ``log``: the output file: durable appends, resuming, one writer at a time;
- ``session``: the terminal session that asks and appends;
- ``units``, ``coefficients``, ``report``: agreement: which answers share a unit, the
  coefficients (Cohen's κ, Fleiss' κ, Krippendorff's α), the report;
- ``cli``: ``prefcore annotate``'s arguments to a session or a report.
"""

from __future__ import annotations

from prefcore.annotate.cli import annotate_from_cli
from prefcore.annotate.coefficients import Units
from prefcore.annotate.coefficients import cohen_kappa
from prefcore.annotate.coefficients import fleiss_kappa
from prefcore.annotate.coefficients import krippendorff_alpha
from prefcore.annotate.coefficients import percent_agreement
from prefcore.annotate.items import ITEM_FORMAT
from prefcore.annotate.items import Item
from prefcore.annotate.items import item_id
from prefcore.annotate.items import jsonl_rows
from prefcore.annotate.items import read_items
from prefcore.annotate.items import record_completions
from prefcore.annotate.log import AnnotationLog
from prefcore.annotate.modes import COMPARING_MODES
from prefcore.annotate.modes import MODES
from prefcore.annotate.modes import QUIT
from prefcore.annotate.modes import SKIP
from prefcore.annotate.modes import InvalidAnswer
from prefcore.annotate.modes import Question
from prefcore.annotate.modes import SessionConfig
from prefcore.annotate.modes import answer_record
from prefcore.annotate.modes import display_order
from prefcore.annotate.modes import parse_answer
from prefcore.annotate.modes import parse_modes
from prefcore.annotate.modes import plan_questions
from prefcore.annotate.modes import question_text
from prefcore.annotate.report import AgreementReport
from prefcore.annotate.report import IntervalAgreement
from prefcore.annotate.report import NominalAgreement
from prefcore.annotate.report import agreement
from prefcore.annotate.session import HELP
from prefcore.annotate.session import SessionSummary
from prefcore.annotate.session import Terminal
from prefcore.annotate.session import run_session
from prefcore.annotate.units import annotation_units
from prefcore.annotate.units import pair_unit

__all__ = [
    "COMPARING_MODES",
    "HELP",
    "ITEM_FORMAT",
    "MODES",
    "QUIT",
    "SKIP",
    "AgreementReport",
    "AnnotationLog",
    "IntervalAgreement",
    "InvalidAnswer",
    "Item",
    "NominalAgreement",
    "Question",
    "SessionConfig",
    "SessionSummary",
    "Terminal",
    "Units",
    "agreement",
    "annotate_from_cli",
    "annotation_units",
    "answer_record",
    "cohen_kappa",
    "display_order",
    "fleiss_kappa",
    "item_id",
    "jsonl_rows",
    "krippendorff_alpha",
    "pair_unit",
    "parse_answer",
    "parse_modes",
    "percent_agreement",
    "plan_questions",
    "question_text",
    "read_items",
    "record_completions",
    "run_session",
]

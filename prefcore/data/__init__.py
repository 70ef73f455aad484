"""Preference data: typed feedback records, conversions between formats, file readers.

Records (``records``): ``PairwiseComparison``, ``Ranking``, ``Scores``, ``BinaryLabel``,
``Critique`` and the ``FeedbackRecord`` bundle, each frozen and validated, with
``to_dict()`` and ``record_from_dict()`` for JSON. Conversions (``convert``): rankings,
scores, labels and critiques to pairs, pairs to unpaired labels. Files (``readers``):
``load_preferences`` and ``validate_file`` for JSONL, JSON and Parquet, ``read_demonstrations``
for SFT data (TRL's ``messages`` and ``prompt``/``completion`` layouts), ``write_jsonl``.
"""

from __future__ import annotations

from prefcore.data.convert import TieHandling
from prefcore.data.convert import binary_labels_to_pairs
from prefcore.data.convert import critique_to_pairs
from prefcore.data.convert import pair_to_binary_labels
from prefcore.data.convert import preference_target
from prefcore.data.convert import ranking_to_pairs
from prefcore.data.convert import scores_to_pairs
from prefcore.data.convert import to_pairs
from prefcore.data.parse import DEMONSTRATION
from prefcore.data.parse import READ_FORMATS
from prefcore.data.parse import detect_format
from prefcore.data.parse import record_from_dict
from prefcore.data.parse import split_messages
from prefcore.data.readers import load_preferences
from prefcore.data.readers import read_demonstrations
from prefcore.data.readers import validate_file
from prefcore.data.readers import write_jsonl
from prefcore.data.records import FORMATS
from prefcore.data.records import ROLES
from prefcore.data.records import BinaryLabel
from prefcore.data.records import Conversation
from prefcore.data.records import Critique
from prefcore.data.records import FeedbackItem
from prefcore.data.records import FeedbackRecord
from prefcore.data.records import Message
from prefcore.data.records import PairwiseComparison
from prefcore.data.records import PreferenceRecord
from prefcore.data.records import Provenance
from prefcore.data.records import Ranking
from prefcore.data.records import Scores
from prefcore.data.records import Span
from prefcore.data.records import Text
from prefcore.data.records import check_completion
from prefcore.data.records import check_prompt
from prefcore.data.report import LoadReport

__all__ = [
    "DEMONSTRATION",
    "FORMATS",
    "READ_FORMATS",
    "ROLES",
    "BinaryLabel",
    "Conversation",
    "Critique",
    "FeedbackItem",
    "FeedbackRecord",
    "LoadReport",
    "Message",
    "PairwiseComparison",
    "PreferenceRecord",
    "Provenance",
    "Ranking",
    "Scores",
    "Span",
    "Text",
    "TieHandling",
    "binary_labels_to_pairs",
    "check_completion",
    "check_prompt",
    "critique_to_pairs",
    "detect_format",
    "load_preferences",
    "pair_to_binary_labels",
    "preference_target",
    "ranking_to_pairs",
    "read_demonstrations",
    "record_from_dict",
    "scores_to_pairs",
    "split_messages",
    "to_pairs",
    "validate_file",
    "write_jsonl",
]

"""Norm elicitation: affected communities as co-designers of the rules a model follows (STELA style).

A facilitator writes proposed policy rules with worked examples (a TOML rules file, round 1);
each participant answers in the terminal with the annotation tool, ``prefcore annotate
RULES.toml --mode norm --out ann/NAME.jsonl --annotator NAME --group community=rural``:
agreement with each rule on a Likert scale, an optional objection and an optional edit of
the rule's text. The rules are revised (round 2, same ids, new text) and asked again.
``prefcore elicit report ann/*.jsonl --by community`` then shows agreement per rule, round
and group, the rules the groups disagree on most, every objection and edit, and what each
revision changed for each group. The answers are ordinary records (``Scores``,
``Critique``, ``BinaryLabel``) carrying ``annotator_groups``.

- ``rules``: read and check a rules file;
- ``session``: the questions, the records they make, the terminal session;
- ``report``: the numbers and the markdown;
- ``cli``: the command-line arguments to a session or a report.
"""

from __future__ import annotations

from prefcore.elicitation.cli import NORM_MODE
from prefcore.elicitation.cli import elicit_from_cli
from prefcore.elicitation.cli import norm_session_from_cli
from prefcore.elicitation.report import ALL
from prefcore.elicitation.report import NO_GROUP
from prefcore.elicitation.report import Change
from prefcore.elicitation.report import Comment
from prefcore.elicitation.report import GroupAgreement
from prefcore.elicitation.report import NormReport
from prefcore.elicitation.report import RuleRound
from prefcore.elicitation.report import norm_report
from prefcore.elicitation.report import render_norm_report
from prefcore.elicitation.rules import RULES_FORMAT
from prefcore.elicitation.rules import Example
from prefcore.elicitation.rules import Rule
from prefcore.elicitation.rules import RuleSet
from prefcore.elicitation.rules import read_rules
from prefcore.elicitation.session import AGREEMENT
from prefcore.elicitation.session import NORM_QUESTIONS
from prefcore.elicitation.session import EarlierAnswer
from prefcore.elicitation.session import RoundOrderError
from prefcore.elicitation.session import check_round_order
from prefcore.elicitation.session import earlier_answers
from prefcore.elicitation.session import norm_config
from prefcore.elicitation.session import norm_item_id
from prefcore.elicitation.session import norm_records
from prefcore.elicitation.session import rule_prompt
from prefcore.elicitation.session import run_norm_session

__all__ = [
    "AGREEMENT",
    "ALL",
    "NORM_MODE",
    "NORM_QUESTIONS",
    "NO_GROUP",
    "RULES_FORMAT",
    "Change",
    "Comment",
    "EarlierAnswer",
    "Example",
    "GroupAgreement",
    "NormReport",
    "RoundOrderError",
    "Rule",
    "RuleRound",
    "RuleSet",
    "check_round_order",
    "earlier_answers",
    "elicit_from_cli",
    "norm_config",
    "norm_item_id",
    "norm_records",
    "norm_report",
    "norm_session_from_cli",
    "read_rules",
    "render_norm_report",
    "rule_prompt",
    "run_norm_session",
]

"""A norm-elicitation session: show each proposed rule with its examples, ask, append the answers.

Built on the annotation tool (``prefcore.annotate``): the same terminal, the same durable
log (``AnnotationLog``: one fsynced line per answer, resumed without asking anything twice)
and ordinary records. For each rule of a round a participant answers two questions:

- ``agreement``: a Likert score on ``--scale`` (default 1-5), written at once as ``Scores``
  (the rule text the completion, aspect ``agreement``);
- ``comment``: an objection (one line, blank for none), then an edit of the rule text (one
  line, blank keeps it). The two lines are one answer, written together: a ``Critique``
  (the objection as ``critique``, the edit as ``revision``; ``metadata.has_objection`` says
  whether the critique is an objection or only carries an edit), or, with both blank, a
  ``BinaryLabel`` with aspect ``objection`` and label false, so that "no objection" is on
  record and the question is not asked again.

In a later round each revised rule is shown beside what the participant saw and scored in
their latest earlier round (read back from the same output file), so that a revision is
judged against the version it replaces. Every record carries ``annotator_groups`` and
``metadata`` ``{rule_id, round, item_id, question}``. Rounds only go forward: a participant
whose answers in the file reach round 3 cannot answer a round-2 file into it
(``RoundOrderError``).
"""

from __future__ import annotations

from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from datetime import timezone
from typing import Any

from prefcore.annotate.items import jsonl_rows
from prefcore.annotate.log import AnnotationLog
from prefcore.annotate.modes import QUIT
from prefcore.annotate.modes import SKIP
from prefcore.annotate.modes import InvalidAnswer
from prefcore.annotate.modes import Question
from prefcore.annotate.modes import SessionConfig
from prefcore.annotate.modes import parse_answer
from prefcore.annotate.session import SessionSummary
from prefcore.annotate.session import Terminal
from prefcore.data.records import BinaryLabel
from prefcore.data.records import Critique
from prefcore.data.records import PreferenceRecord
from prefcore.data.records import Scores
from prefcore.elicitation.rules import Rule
from prefcore.elicitation.rules import RuleSet
from prefcore.errors import ConfigError

__all__ = [
    "AGREEMENT",
    "NORM_QUESTIONS",
    "EarlierAnswer",
    "RoundOrderError",
    "check_round_order",
    "earlier_answers",
    "norm_config",
    "norm_item_id",
    "norm_records",
    "rule_prompt",
    "run_norm_session",
]

AGREEMENT = "agreement"
"""The aspect of the agreement score, and the key of its question."""
NORM_QUESTIONS: tuple[str, ...] = (AGREEMENT, "comment")

_COMMANDS = "s skips this rule (asked next time), q saves and quits."


class RoundOrderError(ConfigError):
    """A participant answering a round older than one they already answered in the same file."""

    def __init__(self, annotator: str, round_number: int, latest: int, path: str) -> None:
        self.annotator = annotator
        self.round = round_number
        self.latest = latest
        super().__init__(
            f"{annotator!r} already answered round {latest} in {path}; this rules file is round {round_number}. "
            "Rounds only go forward: give the latest rules file, or a new --out file for an older round.",
            field="round",
        )


def norm_config(annotator: str, groups: Mapping[str, str], scale: tuple[int, int] = (1, 5)) -> SessionConfig:
    """The annotation tool's session settings for a norm session: a Likert question on ``agreement``."""
    return SessionConfig(annotator=annotator, modes=("likert",), scale=scale, aspect=AGREEMENT, groups=groups)


def norm_item_id(rule_id: str, round_number: int) -> str:
    """The log's item id of a rule in a round: the same rule is asked again in each round."""
    return f"round{round_number}:{rule_id}"


def rule_prompt(rule_id: str, round_number: int) -> str:
    """The records' prompt: which rule, in which round, was put to the participant."""
    return f"Proposed policy rule {rule_id!r} (round {round_number}): do you agree?"


@dataclass(frozen=True)
class EarlierAnswer:
    """A participant's agreement with a rule in an earlier round: shown beside the revised rule."""

    round: int
    text: str
    score: float


def _norm_rows(log: AnnotationLog, annotator: str) -> Iterator[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """``(row, metadata)`` of ``annotator``'s norm-session answers in the log."""
    for _, row in jsonl_rows(log.path):
        metadata = row.get("metadata")
        if row.get("annotator_id") != annotator or not isinstance(metadata, Mapping):
            continue
        found = metadata.get("round")
        if isinstance(found, int) and not isinstance(found, bool) and isinstance(metadata.get("rule_id"), str):
            yield row, metadata


def check_round_order(log: AnnotationLog, annotator: str, round_number: int) -> None:
    """``RoundOrderError`` when ``annotator``'s answers in the log reach a later round."""
    latest = max((metadata["round"] for _, metadata in _norm_rows(log, annotator)), default=0)
    if latest > round_number:
        raise RoundOrderError(annotator, round_number, latest, log.path)


def earlier_answers(log: AnnotationLog, annotator: str, round_number: int) -> dict[str, EarlierAnswer]:
    """Rule id → ``annotator``'s agreement in the latest round before ``round_number``, from the log."""
    found: dict[str, EarlierAnswer] = {}
    for row, metadata in _norm_rows(log, annotator):
        if metadata.get("question") != AGREEMENT or not metadata["round"] < round_number:
            continue
        try:
            text, score = row["completions"][0], row["scores"][0][AGREEMENT]
        except (KeyError, IndexError, TypeError):
            continue  # not a norm session's Scores line: nothing to show
        previous = found.get(metadata["rule_id"])
        if isinstance(text, str) and (previous is None or previous.round < metadata["round"]):
            found[metadata["rule_id"]] = EarlierAnswer(metadata["round"], text, score)
    return found


def _common(rule: Rule, round_number: int, question: str, config: SessionConfig, **extra: Any) -> dict[str, Any]:
    return {
        "annotator_id": config.annotator,
        "annotator_groups": dict(config.groups),
        "group_id": norm_item_id(rule.id, round_number),
        "source": "human",
        "metadata": {
            "rule_id": rule.id,
            "round": round_number,
            "item_id": norm_item_id(rule.id, round_number),
            "question": question,
            "annotated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **extra,
        },
    }


def norm_records(rule: Rule, round_number: int, question: str, value: Any, config: SessionConfig) -> PreferenceRecord:
    """The record one answer becomes: ``Scores`` for agreement; ``Critique`` or ``BinaryLabel`` for the comment."""
    prompt = rule_prompt(rule.id, round_number)
    if question == AGREEMENT:
        common = _common(rule, round_number, question, config)
        return Scores(prompt, (rule.text,), ({AGREEMENT: value},), config.scale, **common)
    objection, edit = value
    revision = edit if edit and edit != rule.text else None
    if not objection and revision is None:
        common = _common(rule, round_number, question, config)
        return BinaryLabel(prompt, rule.text, False, aspect="objection", **common)
    common = _common(rule, round_number, question, config, has_objection=bool(objection))
    critique = objection or "No objection; proposes an edit of the rule."
    return Critique(prompt, rule.text, critique, revision, **common)


def _show_rule(
    terminal: Terminal, rule: Rule, round_number: int, number: int, total: int, earlier: EarlierAnswer | None
) -> None:
    lines = [f"\n=== rule {number} of {total} (id {rule.id}, round {round_number}) ===", f"Rule: {rule.text}"]
    if rule.previous is not None:
        lines.append(f"Revises: {rule.previous}")
    if earlier is not None:  # a revision: what the participant saw and said last time
        if earlier.text == rule.text:
            lines.append(f"Unchanged since round {earlier.round}.")
        elif earlier.text != rule.previous:
            lines.append(f"In round {earlier.round} it read: {earlier.text}")
        lines.append(f"Your agreement in round {earlier.round}: {earlier.score:g}.")
    for index, example in enumerate(rule.examples, start=1):
        lines += [f"[{index}] Prompt: {example.prompt}", f"    Reply: {example.reply}"]
        if example.verdict is not None:
            lines.append(f"    Verdict: {example.verdict}")
    terminal.show("\n".join(lines))


def _line(terminal: Terminal, prompt: str) -> str | None:
    """One line of free text, or ``QUIT``/``SKIP``/None (end of input)."""
    answer = terminal.ask(prompt)
    if answer is None:
        return None
    if answer.strip().lower() in (QUIT, SKIP):
        return answer.strip().lower()
    return answer.strip()


def _ask_agreement(terminal: Terminal, config: SessionConfig) -> tuple[int] | str | None:
    low, high = config.scale
    question = Question(f"likert:{AGREEMENT}:0", "likert", (0,), (1,))
    while True:
        answer = _line(terminal, f"Agreement with this rule ({low} = disagree strongly, {high} = agree strongly) > ")
        if answer is None or answer in (QUIT, SKIP):
            return answer
        try:
            return (parse_answer(question, answer, config),)
        except InvalidAnswer as invalid:
            terminal.show(f"Invalid answer {answer!r}: {invalid} ({_COMMANDS})")


def _ask_comment(terminal: Terminal) -> tuple[tuple[str, str]] | str | None:
    objection = _line(terminal, "Objections (one line; blank for none) > ")
    if objection is None or objection in (QUIT, SKIP):
        return objection
    edit = _line(terminal, "Your edit of the rule text (one line; blank keeps it) > ")
    if edit is None or edit in (QUIT, SKIP):
        return edit
    return ((objection, edit),)


def run_norm_session(rules: RuleSet, log: AnnotationLog, config: SessionConfig, terminal: Terminal) -> SessionSummary:
    """Ask every unanswered question of ``rules``; each answer is in ``log`` before the next question."""
    check_round_order(log, config.annotator, rules.round)

    def open_questions(rule: Rule) -> list[str]:
        item = norm_item_id(rule.id, rules.round)
        return [q for q in NORM_QUESTIONS if not log.answered(config.annotator, item, q)]

    todo = sum(len(open_questions(rule)) for rule in rules.rules)
    earlier = earlier_answers(log, config.annotator, rules.round)
    if log.dropped_partial_line:
        terminal.show(f"Dropped an unfinished last line of {log.path} (cut off by a crash); its question comes again.")
    terminal.show(
        f"Round {rules.round}: {todo} questions to answer as {config.annotator!r}; answers go to {log.path}. "
        f"Commands at any question: {_COMMANDS}"
    )
    answered = 0
    stopped = "done"
    try:
        for number, rule in enumerate(rules.rules, start=1):
            questions = open_questions(rule)
            if not questions:
                continue
            _show_rule(terminal, rule, rules.round, number, len(rules.rules), earlier.get(rule.id))
            value: Any = ()
            for question in questions:
                value = _ask_agreement(terminal, config) if question == AGREEMENT else _ask_comment(terminal)
                if value in (QUIT, SKIP, None):
                    break
                log.append(norm_records(rule, rules.round, question, value[0], config))
                answered += 1
            if value is None or value == QUIT:
                stopped = "end of input" if value is None else "quit"
                break
    except KeyboardInterrupt:
        stopped = "interrupted"
    remaining = todo - answered
    if stopped == "done" and remaining:
        stopped = "skipped"
    if stopped == "done":
        terminal.show(f"\nAll done: {answered} answers saved this session to {log.path}.")
    else:
        terminal.show(
            f"\nStopped ({stopped}): {answered} answers saved to {log.path}; {remaining} left. "
            "Run the same command to resume."
        )
    return SessionSummary(answered, remaining, stopped)

"""The interactive session: show each item, ask its open questions, append each answer.

Terminal I/O lives here and nowhere else, over text streams, so that a test (or a pipe)
drives a whole session with ``io.StringIO``; what to ask comes from ``modes``, where answers
go from ``log``.
"""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from typing import TextIO

from prefcore.annotate.items import Item
from prefcore.annotate.log import AnnotationLog
from prefcore.annotate.modes import QUIT
from prefcore.annotate.modes import SKIP
from prefcore.annotate.modes import InvalidAnswer
from prefcore.annotate.modes import Question
from prefcore.annotate.modes import SessionConfig
from prefcore.annotate.modes import answer_record
from prefcore.annotate.modes import display_order
from prefcore.annotate.modes import parse_answer
from prefcore.annotate.modes import plan_questions
from prefcore.annotate.modes import question_text
from prefcore.data.records import Text

__all__ = ["HELP", "SessionSummary", "Terminal", "run_session"]


class Terminal:
    """Questions out, answers in, over text streams (a console, a pipe, a test script).

    A byte that is not UTF-8 must not end a session, nor cost the answers typed after it:
    an input stream that can be reconfigured reads such bytes as lone surrogates
    (``surrogateescape``, also what ``input()`` then uses), and the answer holding them is
    refused and asked again. Without that, a decode error mid-buffer would drop the lines
    read with it.
    """

    def __init__(self, stdin: TextIO, stdout: TextIO) -> None:
        self.stdin = stdin
        self.stdout = stdout
        if isinstance(stdin, io.TextIOWrapper):
            stdin.reconfigure(errors="surrogateescape")

    def show(self, text: str) -> None:
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def ask(self, prompt: str) -> str | None:
        """One line of input without its newline; None at the end of input."""
        if self.stdin is sys.stdin and self.stdout is sys.stdout and sys.stdin.isatty():
            try:
                return input(prompt)  # a console: line editing
            except EOFError:
                return None
        self.stdout.write(prompt)
        self.stdout.flush()
        line = self.stdin.readline()
        return None if line == "" else line.rstrip("\r\n")


@dataclass(frozen=True)
class SessionSummary:
    """How a session ended: ``stopped`` is done, skipped (items left by ``s``), quit, end of input or interrupted."""

    answered: int
    remaining: int
    stopped: str


def _render(text: Text) -> str:
    if isinstance(text, str):
        return text
    return "\n".join(f"{message.role}: {message.content}" for message in text)


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines() or [""])


HELP = "Commands at any question: s skips the rest of this item (asked next time), q saves and quits."


def run_session(items: Sequence[Item], log: AnnotationLog, config: SessionConfig, terminal: Terminal) -> SessionSummary:
    """Ask every unanswered question of ``items``; each answer is in ``log`` before the next question."""
    plans = [(item, plan_questions(item, config)) for item in items]
    todo = sum(
        not log.answered(config.annotator, item.id, question.key) for item, questions in plans for question in questions
    )
    answered = 0
    if log.dropped_partial_line:
        terminal.show(f"Dropped an unfinished last line of {log.path} (cut off by a crash); its question comes again.")
    terminal.show(f"{todo} questions to answer as {config.annotator!r}; answers go to {log.path}. {HELP}")
    stopped = "done"
    try:
        for number, (item, questions) in enumerate(plans, start=1):
            open_questions = [q for q in questions if not log.answered(config.annotator, item.id, q.key)]
            if not open_questions:
                continue
            _show_item(terminal, item, config, number, len(plans))
            for question in open_questions:
                value = _ask(terminal, question, config)
                if value in (QUIT, SKIP, None):
                    break
                log.append(answer_record(item, question, value[0], config))
                answered += 1
            if value is None or value == QUIT:
                stopped = "end of input" if value is None else "quit"
                break
    except KeyboardInterrupt:
        stopped = "interrupted"
    remaining = todo - answered
    if stopped == "done" and remaining:
        stopped = "skipped"
    if stopped == "done" and remaining == 0:
        terminal.show(f"\nAll done: {answered} answers saved this session to {log.path}.")
    else:
        terminal.show(
            f"\nStopped ({stopped}): {answered} answers saved to {log.path}; {remaining} left. "
            "Run the same command to resume."
        )
    return SessionSummary(answered, remaining, stopped)


def _show_item(terminal: Terminal, item: Item, config: SessionConfig, number: int, total: int) -> None:
    lines = [f"\n=== item {number} of {total} (id {item.id}) ===", "Prompt:", _indent(_render(item.prompt))]
    for position, index in enumerate(display_order(item, config), start=1):
        lines += [f"[{position}]", _indent(_render(item.completions[index]))]
    terminal.show("\n".join(lines))


def _ask(terminal: Terminal, question: Question, config: SessionConfig) -> tuple[Any] | str | None:
    """``(value,)`` for an answer, ``QUIT``/``SKIP`` for a command, None at the end of input."""
    while True:
        try:
            answer = terminal.ask(question_text(question, config))
        except UnicodeDecodeError:  # a stream that could not be told to keep undecodable bytes
            terminal.show("That answer was not UTF-8 text; type it again (s skips this item, q quits).")
            continue
        if answer is None:
            return None
        if _SURROGATE.search(answer):
            terminal.show(
                f"Invalid answer {answer.strip()!r}: it holds bytes that are not UTF-8 text; "
                "type it again (s skips this item, q quits)."
            )
            continue
        command = answer.strip().lower()
        if command in (QUIT, SKIP):
            return command
        try:
            return (parse_answer(question, answer, config),)
        except InvalidAnswer as invalid:
            terminal.show(f"Invalid answer {answer.strip()!r}: {invalid} (s skips this item, q quits).")


_SURROGATE = re.compile(r"[\ud800-\udfff]")

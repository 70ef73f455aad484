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

Why it works this way:

- every answer is a prefcore record (``PairwiseComparison``, ``Ranking``, ``Scores``,
  ``BinaryLabel``, ``Critique``) with ``annotator_id``, written to OUT the moment it is given
  (one ``write`` then ``fsync``): Ctrl-C, a closed terminal or a crash loses at most the
  question on screen;
- a session resumes: questions this annotator already answered in OUT (matched by item id
  and question) are never asked again, so nothing is duplicated; a line cut short by a
  crash is dropped on the next start and its question asked again;
- completions are shown in an order shuffled per item and annotator, seeded so a resumed
  session shows the same order: position bias then spreads over the completions instead of
  favouring whichever one the file lists first;
- one session writes an output file at a time (an OS lock): several annotators use one
  file each, or take turns on a shared one.

``prefcore annotate --agreement OUT [OUT ...]`` reports agreement over units (a pair of
completions, one completion's score or label) answered by two or more annotators. Nominal
answers (pairwise choices and ties, rankings read as the pairs they order, binary labels):
percent agreement, Cohen's κ for each pair of annotators (Cohen 1960) and Fleiss' κ over
all (Fleiss 1971, in the form that allows a different number of annotators per unit).
Likert scores: Krippendorff's α with the interval metric (Krippendorff 2011,
"Computing Krippendorff's Alpha-Reliability"); it takes any number of annotators and
missing ratings and weighs disagreements by the distance between scores, where Spearman's
ρ would compare only two annotators' orderings.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
import os
import random
import re
import sys
from collections import Counter
from collections.abc import Hashable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace
from datetime import datetime
from datetime import timezone
from pathlib import Path
from typing import Any
from typing import TextIO

from prefcore.data.parse import record_from_dict
from prefcore.data.readers import decode_jsonl_line
from prefcore.data.readers import load_preferences
from prefcore.data.records import BinaryLabel
from prefcore.data.records import Critique
from prefcore.data.records import FeedbackRecord
from prefcore.data.records import PairwiseComparison
from prefcore.data.records import PreferenceRecord
from prefcore.data.records import Provenance
from prefcore.data.records import Ranking
from prefcore.data.records import Scores
from prefcore.data.records import Text
from prefcore.data.records import check_completion
from prefcore.data.records import check_prompt
from prefcore.data.records import text_to_json
from prefcore.errors import ConfigError
from prefcore.errors import DataError

# -- items ---------------------------------------------------------------------------------

ITEM_FORMAT = (
    "An item is a JSON object with 'prompt' and 'completions' (a list of distinct strings or "
    "message lists; 'completion' for a single one) and an optional 'id', or any prefcore record."
)

_RECORD_MARKERS = frozenset({"type", "chosen", "rejected", "ranks", "scores", "scale", "label", "critique", "items"})


@dataclass(frozen=True)
class Item:
    """A prompt and the completions to judge: one unit of an annotation or labelling file.

    ``id`` is the row's ``"id"`` or, without one, a hash of the prompt and completions, so
    the same item keeps its id when the file is reordered or extended.
    """

    id: str
    prompt: Text
    completions: tuple[Text, ...]
    source: str
    line: int

    @property
    def provenance(self) -> Provenance:
        """Where the item was read, for records made from it."""
        return Provenance(self.source, self.line)


def jsonl_rows(path: str | os.PathLike[str]) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """``(line, object)`` for each non-blank line of a JSONL file; ``DataError`` for anything else.

    Lines are decoded as the data readers decode them: deep nesting, huge numbers, repeated
    keys, bytes that are not UTF-8 and lone surrogates are named errors, not crashes.
    """
    source = os.fspath(path)
    if not Path(source).is_file():
        raise DataError("no such file.", source=source)
    with open(source, "rb") as file:
        for line, raw in enumerate(file, start=1):
            row = decode_jsonl_line(raw, source, line)
            if row is None:
                continue
            if isinstance(row, DataError):
                raise row
            if not isinstance(row, Mapping):
                raise DataError(f"must be a JSON object, got {type(row).__name__}.", source=source, line=line)
            yield line, row


def item_id(prompt: Text, completions: Sequence[Text]) -> str:
    """A stable id for an item without one: a hash of its prompt and completions."""
    content = json.dumps([text_to_json(prompt), [text_to_json(c) for c in completions]], ensure_ascii=False)
    return hashlib.sha256(content.encode("utf-8")).hexdigest()[:16]


def record_completions(record: PreferenceRecord) -> tuple[Text, ...]:
    """Every completion a record mentions, once each, in order."""
    if isinstance(record, PairwiseComparison):
        return (record.chosen, record.rejected)
    if isinstance(record, (Ranking, Scores)):
        return record.completions
    if isinstance(record, Critique) and record.revision is not None:
        return (record.completion, record.revision)
    if isinstance(record, (BinaryLabel, Critique)):
        return (record.completion,)
    if isinstance(record, FeedbackRecord):
        return record.completions
    raise TypeError(f"record_completions takes prefcore records, got {type(record).__name__}.")


def _plain_item(row: Mapping[str, Any], source: str, line: int) -> tuple[Text, tuple[Text, ...]]:
    def fail(message: str, field: str) -> DataError:
        return DataError(f"{message} {ITEM_FORMAT}", source=source, line=line, field=field)

    for name in ("prompt", "completions"):
        if name not in row and not (name == "completions" and "completion" in row):
            raise fail("is missing.", name)
    try:
        prompt = check_prompt(row["prompt"], "prompt")
        raw = row["completions"] if "completions" in row else [row["completion"]]
        if not isinstance(raw, list):
            raise fail(f"must be a list of completions, got {type(raw).__name__}.", "completions")
        completions = tuple(check_completion(value, f"completions[{index}]") for index, value in enumerate(raw))
    except DataError as error:
        if error.source is not None:
            raise
        raise fail(error.reason, error.field or "completions") from None
    seen: dict[Text, int] = {}
    for index, completion in enumerate(completions):
        if isinstance(completion, str) != isinstance(prompt, str):
            raise fail("must be text like the prompt, or all message lists.", f"completions[{index}]")
        if completion in seen:
            raise fail(f"repeats completion {seen[completion]}; completions must be distinct.", f"completions[{index}]")
        seen[completion] = index
    return prompt, completions


def read_items(path: str | os.PathLike[str], *, min_completions: int = 1, purpose: str = "") -> list[Item]:
    """The items of a JSONL file, in file order.

    Arguments:
        path: JSONL of ``{"prompt", "completions"}`` rows or prefcore records.
        min_completions: items with fewer completions raise ``DataError``.
        purpose: what needs that many completions, for the error (e.g. "the ranking mode").
    """
    source = os.fspath(path)
    items: list[Item] = []
    lines_of: dict[str, int] = {}
    for line, row in jsonl_rows(source):
        if _RECORD_MARKERS & set(row):
            record = record_from_dict(row, source=source, line=line)
            prompt, completions = record.prompt, record_completions(record)
        else:
            prompt, completions = _plain_item(row, source, line)
        if len(completions) < min_completions:
            raise DataError(
                f"has {len(completions)} completion(s); {purpose or 'this use'} needs at least {min_completions}.",
                source=source,
                line=line,
                field="completions",
            )
        given = row.get("id")
        if given is not None and (isinstance(given, bool) or not isinstance(given, (str, int))):
            raise DataError(f"must be a string or a whole number, got {given!r}.", source=source, line=line, field="id")
        identity = str(given) if given is not None else item_id(prompt, completions)
        if identity in lines_of:
            raise DataError(
                f"item {identity!r} repeats line {lines_of[identity]}; each item appears once "
                "(give distinct 'id's, or remove the duplicate).",
                source=source,
                line=line,
                field="id" if given is not None else "completions",
            )
        lines_of[identity] = line
        items.append(Item(identity, prompt, completions, source, line))
    return items


# -- questions and answers -----------------------------------------------------------------

MODES: tuple[str, ...] = ("pairwise", "tie", "ranking", "likert", "binary", "critique")
COMPARING_MODES = frozenset({"pairwise", "tie", "ranking"})
QUIT = "q"
SKIP = "s"


class InvalidAnswer(Exception):
    """An answer the question cannot take; the message says what it accepts."""


@dataclass(frozen=True)
class SessionConfig:
    """How one annotator annotates: the modes asked, the Likert scale, the display order."""

    annotator: str
    modes: tuple[str, ...] = ("pairwise",)
    scale: tuple[int, int] = (1, 5)
    aspect: str = "overall"
    shuffle: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.annotator.strip():
            raise ConfigError("--annotator needs a non-empty id, e.g. --annotator alice.", field="annotator")
        if not self.modes:
            raise ConfigError(f"give at least one --mode: {', '.join(MODES)}.", field="mode")
        for mode in self.modes:
            if mode not in MODES:
                raise ConfigError(f"unknown --mode {mode!r}. Accepted: {', '.join(MODES)}.", field="mode")
        low, high = self.scale
        if not low < high:
            raise ConfigError(f"--scale needs LOW < HIGH, got {low} {high}.", field="scale")
        if not self.aspect.strip():
            raise ConfigError("--aspect needs a non-empty name.", field="aspect")

    @property
    def min_completions(self) -> int:
        return 2 if COMPARING_MODES & set(self.modes) else 1


def parse_modes(values: Iterable[str]) -> tuple[str, ...]:
    """``["pairwise,likert", "binary"]`` → ``("pairwise", "likert", "binary")``, duplicates dropped."""
    modes = [part.strip() for value in values for part in value.split(",") if part.strip()]
    return tuple(dict.fromkeys(modes)) or ("pairwise",)


@dataclass(frozen=True)
class Question:
    """One question about an item: ``key`` identifies it for resuming, ``shown`` are 1-based screen numbers."""

    key: str
    mode: str
    indices: tuple[int, ...]
    shown: tuple[int, ...]


def display_order(item: Item, config: SessionConfig) -> list[int]:
    """Completion indices in screen order: shuffled per item and annotator, the same on every run."""
    order = list(range(len(item.completions)))
    if config.shuffle:
        random.Random(f"{config.seed}:{item.id}:{config.annotator}").shuffle(order)
    return order


def plan_questions(item: Item, config: SessionConfig) -> list[Question]:
    """The questions the configured modes ask about ``item``, in asking order."""
    order = display_order(item, config)
    screen = {index: position + 1 for position, index in enumerate(order)}
    questions: list[Question] = []
    if {"pairwise", "tie"} & set(config.modes):
        mode = "tie" if "tie" in config.modes else "pairwise"
        for first, second in itertools.combinations(order, 2):
            low, high = sorted((first, second))
            questions.append(Question(f"pairwise:{low}-{high}", mode, (first, second), (screen[first], screen[second])))
    if "ranking" in config.modes:
        questions.append(Question("ranking", "ranking", tuple(order), tuple(screen[i] for i in order)))
    for mode in ("likert", "binary", "critique"):
        if mode in config.modes:
            key = f"likert:{config.aspect}" if mode == "likert" else mode
            questions += [Question(f"{key}:{i}", mode, (i,), (screen[i],)) for i in order]
    return questions


def question_text(question: Question, config: SessionConfig) -> str:
    shown = question.shown
    if question.mode in ("pairwise", "tie"):
        tie = ", t = tie" if question.mode == "tie" else ""
        return f"Which is better, [{shown[0]}] or [{shown[1]}]? ({shown[0]}/{shown[1]}{tie}) > "
    if question.mode == "ranking":
        example = " ".join(str(number) for number in sorted(shown))
        return f"Rank all, best first (e.g. {example}; '=' joins ties) > "
    if question.mode == "likert":
        low, high = config.scale
        return f"Score [{shown[0]}] for {config.aspect} ({low}-{high}) > "
    if question.mode == "binary":
        return f"Is [{shown[0]}] acceptable? (y/n) > "
    return f"Critique of [{shown[0]}] (one line) > "


def parse_answer(question: Question, answer: str, config: SessionConfig) -> Any:
    """The answer as a value (see ``answer_record``), or ``InvalidAnswer`` saying what is accepted."""
    text = answer.strip()
    if question.mode in ("pairwise", "tie"):
        first, second = question.shown
        number = _whole_number(text)
        if number == first:
            return "first"
        if number == second:
            return "second"
        if question.mode == "tie" and text.lower() == "t":
            return "tie"
        accepted = f"{first} or {second}" + (", or t for a tie" if question.mode == "tie" else "")
        raise InvalidAnswer(f"type {accepted}")
    if question.mode == "ranking":
        return _parse_ranking(text, question.shown)
    if question.mode == "likert":
        low, high = config.scale
        score = _whole_number(text[1:] if text[:1] in ("+", "-") else text)
        if score is not None and text.startswith("-"):
            score = -score
        if score is None or not low <= score <= high:
            raise InvalidAnswer(f"type a whole number from {low} to {high}")
        return score
    if question.mode == "binary":
        if text.lower() in ("y", "yes"):
            return True
        if text.lower() in ("n", "no"):
            return False
        raise InvalidAnswer("type y (acceptable) or n (not acceptable)")
    if not text:
        raise InvalidAnswer("a critique needs some text")
    return text


def _whole_number(text: str) -> int | None:
    """The whole number ``text`` spells in decimal digits, or None.

    ``str.isdigit`` is true for '²' and '①', which ``int`` refuses; ``isdecimal`` is true only
    for digits ``int`` reads (any script's), and the length cap keeps ``int`` far from its
    4300-digit limit.
    """
    return int(text) if text.isdecimal() and len(text) <= 9 else None


def _parse_ranking(text: str, shown: tuple[int, ...]) -> dict[int, int]:
    """``"2=1 3"`` → ``{2: 1, 1: 1, 3: 2}``: screen number → rank (1 = best, equal = tie)."""
    numbers = [str(number) for number in sorted(shown)]
    tied = " ".join([f"{numbers[1]}={numbers[0]}", *numbers[2:]])
    example = f"e.g. '{' '.join(numbers)}' ('=' joins ties: '{tied}')"
    groups = [group for group in re.split(r"[\s,>]+", text) if group]
    ranks: dict[int, int] = {}
    for rank, group in enumerate(groups, start=1):
        for part in group.split("="):
            number = _whole_number(part)
            if number is None or number not in shown:
                raise InvalidAnswer(
                    f"{part or '='!r} is not a completion number; list every one once, best first, {example}"
                )
            if number in ranks:
                raise InvalidAnswer(f"[{number}] appears twice; list every completion once, best first, {example}")
            ranks[number] = rank
    missing = [number for number in sorted(shown) if number not in ranks]
    if missing:
        listed = ", ".join(f"[{number}]" for number in missing)
        raise InvalidAnswer(f"{listed} missing; list every completion once, best first, {example}")
    return ranks


def answer_record(item: Item, question: Question, value: Any, config: SessionConfig) -> PreferenceRecord:
    """The record an answer becomes; ``metadata`` names the item and question, for resuming."""
    common: dict[str, Any] = {
        "annotator_id": config.annotator,
        "group_id": item.id,
        "source": "human",
        "metadata": {
            "item_id": item.id,
            "question": question.key,
            "annotated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    }
    completions = item.completions
    if question.mode in ("pairwise", "tie"):
        first, second = (completions[i] for i in question.indices)
        chosen, rejected = (second, first) if value == "second" else (first, second)
        return PairwiseComparison(item.prompt, chosen, rejected, tie=value == "tie", **common)
    if question.mode == "ranking":
        screen_of = dict(zip(question.indices, question.shown, strict=True))
        ranks = tuple(value[screen_of[index]] for index in range(len(completions)))
        return Ranking(item.prompt, completions, ranks, **common)
    completion = completions[question.indices[0]]
    if question.mode == "likert":
        return Scores(item.prompt, (completion,), ({config.aspect: value},), config.scale, **common)
    if question.mode == "binary":
        return BinaryLabel(item.prompt, completion, value, **common)
    return Critique(item.prompt, completion, value, **common)


# -- the output file -----------------------------------------------------------------------


def _lock(fd: int, path: str) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no POSIX locks (Windows): one session per file is on the user
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ConfigError(
            f"{path} is being written by another annotation session. Give each annotator their own --out "
            "file, or wait until the other session ends.",
            field="out",
        ) from None


class AnnotationLog:
    """The output JSONL of a session: which questions are answered, and durable appends.

    Use as a context manager: entering locks the file, drops an unfinished last line (a
    write cut off by a crash; its question is asked again) and reads the answers so far.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.dropped_partial_line = False
        self._answered: set[tuple[str, str, str]] = set()
        self._fd: int | None = None

    def __enter__(self) -> AnnotationLog:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            _lock(fd, self.path)
            self._repair_tail(fd)
            self._read_answers()
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the lock
            self._fd = None

    def _repair_tail(self, fd: int) -> None:
        size = os.fstat(fd).st_size
        if size == 0:
            return
        with open(self.path, "rb") as file:
            data = file.read()
        if data.endswith(b"\n"):
            return
        os.ftruncate(fd, data.rfind(b"\n") + 1)
        os.fsync(fd)
        self.dropped_partial_line = True

    def _read_answers(self) -> None:
        for _, row in jsonl_rows(self.path):
            metadata = row.get("metadata")
            if not isinstance(metadata, Mapping):
                continue  # a record from elsewhere: kept, but it answers no question of a session
            keys = (row.get("annotator_id"), metadata.get("item_id"), metadata.get("question"))
            if all(isinstance(key, str) for key in keys):
                self._answered.add(keys)  # type: ignore[arg-type]

    def answered(self, annotator: str, item: str, question: str) -> bool:
        return (annotator, item, question) in self._answered

    def append(self, record: PreferenceRecord) -> None:
        """Write one record as one line, then fsync: once this returns, the answer survives a crash."""
        if self._fd is None:
            raise RuntimeError("AnnotationLog.append outside its with-block.")
        metadata = record.metadata
        key = (record.annotator_id, metadata["item_id"], metadata["question"])
        if key in self._answered:
            raise RuntimeError(f"question {key} is already answered in {self.path}.")
        data = (json.dumps(record.to_dict(), ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
        written = 0
        while written < len(data):
            written += os.write(self._fd, data[written:])
        os.fsync(self._fd)
        self._answered.add(key)  # type: ignore[arg-type]


# -- the session ---------------------------------------------------------------------------


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


# -- agreement -----------------------------------------------------------------------------

Units = Sequence[Sequence[Hashable]]
"""Answers per unit: one sequence per unit, one answer per annotator of that unit."""


def percent_agreement(units: Units) -> float:
    """Mean over units of the share of annotator pairs that give the same answer."""
    shares = []
    for answers in units:
        pairs = list(itertools.combinations(answers, 2))
        shares.append(sum(first == second for first, second in pairs) / len(pairs))
    return sum(shares) / len(shares) if shares else math.nan


def cohen_kappa(first: Sequence[Hashable], second: Sequence[Hashable]) -> float:
    """Cohen's κ of two annotators' answers on the same units: (p_o − p_e) / (1 − p_e).

    p_o is the share of units they agree on, p_e = Σ_c p₁(c)·p₂(c) the agreement expected
    from each annotator's own answer frequencies. NaN when p_e = 1 (both always gave the same
    single answer: agreement beyond chance is undefined).
    """
    if len(first) != len(second) or not first:
        raise ValueError("cohen_kappa needs two equally long, non-empty answer lists.")
    n = len(first)
    observed = sum(a == b for a, b in zip(first, second, strict=True)) / n
    counts_first, counts_second = Counter(first), Counter(second)
    expected = sum(counts_first[c] * counts_second[c] for c in counts_first) / (n * n)
    return math.nan if expected == 1.0 else (observed - expected) / (1.0 - expected)


def fleiss_kappa(units: Units) -> float:
    """Fleiss' κ over units rated by two or more annotators each (the number may vary).

    P_u = Σ_c n_uc(n_uc − 1) / (n_u(n_u − 1)) is the agreeing share of annotator pairs in unit
    u, P̄ their mean; p_c = Σ_u n_uc / Σ_u n_u, P_e = Σ_c p_c². κ = (P̄ − P_e) / (1 − P_e).
    With the same number of annotators per unit this is Fleiss (1971) exactly.
    """
    if not units:
        return math.nan
    observed = percent_agreement(units)
    totals: Counter[Hashable] = Counter()
    for answers in units:
        totals.update(answers)
    answers_total = sum(totals.values())
    expected = sum((count / answers_total) ** 2 for count in totals.values())
    return math.nan if expected == 1.0 else (observed - expected) / (1.0 - expected)


def krippendorff_alpha(units: Sequence[Sequence[float]], metric: str = "interval") -> float:
    """Krippendorff's α = 1 − D_o / D_e over units with two or more values (missing ones left out).

    D_o = Σ_u 1/(m_u − 1) Σ_{i≠j in u} δ²(v_i, v_j) / n: disagreement within units, each unit
    weighted by its m_u values; D_e = Σ_{i≠j over all pairable values} δ²(v_i, v_j) / (n(n − 1)):
    disagreement between any two values. δ² is (v_i − v_j)² (``interval``) or 0/1 (``nominal``).
    """
    if metric not in ("interval", "nominal"):
        raise ValueError(f"metric must be 'interval' or 'nominal', got {metric!r}.")
    pairable = [list(values) for values in units if len(values) >= 2]
    distance = _squared_difference if metric == "interval" else _mismatch
    values = [value for unit in pairable for value in unit]
    n = len(values)
    if n < 2:
        return math.nan
    observed = 0.0
    for unit in pairable:
        within = sum(distance(a, b) for a, b in itertools.permutations(unit, 2))
        observed += within / (len(unit) - 1)
    observed /= n
    expected = sum(distance(a, b) for a, b in itertools.permutations(values, 2)) / (n * (n - 1))
    return math.nan if expected == 0.0 else 1.0 - observed / expected


def _squared_difference(first: float, second: float) -> float:
    return (float(first) - float(second)) ** 2


def _mismatch(first: Hashable, second: Hashable) -> float:
    return float(first != second)


@dataclass(frozen=True)
class NominalAgreement:
    """Agreement on answers that are categories: pairwise choices, ranking pairs, binary labels."""

    kind: str
    units: int
    annotators: tuple[str, ...]
    percent: float
    cohen: Mapping[tuple[str, str], tuple[float, int]]
    """(annotator, annotator) → (κ, units both answered)."""
    fleiss: float


@dataclass(frozen=True)
class IntervalAgreement:
    """Agreement on Likert scores of one aspect."""

    kind: str
    units: int
    ratings: int
    annotators: tuple[str, ...]
    alpha: float


@dataclass(frozen=True)
class AgreementReport:
    """Agreement per kind of answer, over units answered by two or more annotators."""

    sources: tuple[str, ...]
    annotators: tuple[str, ...]
    sections: tuple[NominalAgreement | IntervalAgreement, ...]
    unattributed: int
    """Records without an ``annotator_id``, left out."""

    def section(self, kind: str) -> NominalAgreement | IntervalAgreement:
        for section in self.sections:
            if section.kind == kind:
                return section
        raise KeyError(f"no agreement section {kind!r}; have {[s.kind for s in self.sections]}.")

    def format(self) -> str:
        lines = [
            f"Agreement in {', '.join(self.sources)}: {len(self.annotators)} annotators ({', '.join(self.annotators)})"
        ]
        if self.unattributed:
            lines.append(f"({self.unattributed} records without annotator_id left out)")
        if not self.sections:
            lines.append("No unit was answered by two or more annotators: nothing to compare.")
        for section in self.sections:
            lines.append("")
            if isinstance(section, NominalAgreement):
                lines.append(f"{section.kind}: {section.units} units answered by 2+ annotators")
                lines.append(f"  percent agreement   {_number(section.percent)}")
                for (first, second), (kappa, shared) in section.cohen.items():
                    lines.append(
                        f"  Cohen's kappa       {_number(kappa)}  ({first} vs {second}, {shared} shared units)"
                    )
                lines.append(f"  Fleiss' kappa       {_number(section.fleiss)}")
            else:
                lines.append(f"{section.kind}: {section.units} units, {section.ratings} ratings by 2+ annotators")
                lines.append(f"  Krippendorff's alpha (interval)  {_number(section.alpha)}")
        return "\n".join(lines)


def _number(value: float) -> str:
    return "undefined (every answer was the same)" if math.isnan(value) else f"{value:.3f}"


def _key(text: Text) -> str:
    return json.dumps(text_to_json(text), ensure_ascii=False, sort_keys=True)


def pair_unit(prompt: Text, first: Text, second: Text) -> tuple[tuple[str, str, str], bool]:
    """The unit of a comparison, whatever order it was shown in, and whether ``first`` is its first side.

    A pair's two sides are put in one fixed (sorted) order, so the answer "the first side is
    better" means the same for every annotator of the unit.
    """
    a, b = _key(first), _key(second)
    return (_key(prompt), min(a, b), max(a, b)), a <= b


def _flatten(records: Iterable[PreferenceRecord]) -> Iterator[PreferenceRecord]:
    for record in records:
        if not isinstance(record, FeedbackRecord):
            yield record
            continue
        for item in record.items:
            if item.annotator_id is None and record.annotator_id is not None:
                item = replace(item, annotator_id=record.annotator_id)  # the bundle's annotator answered it
            yield item


def annotation_units(records: Iterable[PreferenceRecord]) -> tuple[dict[str, dict[Hashable, dict[str, Any]]], int]:
    """Answers by kind → unit → annotator, and how many records had no annotator.

    Kinds: ``pairwise`` (values first / second / tie), ``ranking`` (each ranked pair, same
    values), ``binary[:aspect]`` (True / False), ``likert:<aspect>`` (scores).
    """
    kinds: dict[str, dict[Hashable, dict[str, Any]]] = {}
    unattributed = 0

    def put(kind: str, unit: Hashable, annotator: str, value: Any) -> None:
        kinds.setdefault(kind, {}).setdefault(unit, {})[annotator] = value

    for record in _flatten(records):
        annotator = record.annotator_id
        if annotator is None:
            unattributed += 1
            continue
        if isinstance(record, PairwiseComparison):
            unit, chosen_first = pair_unit(record.prompt, record.chosen, record.rejected)
            value = "tie" if record.tie else ("first" if chosen_first else "second")
            put("pairwise" + (f":{record.aspect}" if record.aspect else ""), unit, annotator, value)
        elif isinstance(record, Ranking):
            for i, j in itertools.combinations(range(len(record.completions)), 2):
                unit, i_first = pair_unit(record.prompt, record.completions[i], record.completions[j])
                if record.ranks[i] == record.ranks[j]:
                    value = "tie"
                else:
                    value = "first" if (record.ranks[i] < record.ranks[j]) == i_first else "second"
                put("ranking", unit, annotator, value)
        elif isinstance(record, BinaryLabel):
            unit = (_key(record.prompt), _key(record.completion))
            put("binary" + (f":{record.aspect}" if record.aspect else ""), unit, annotator, record.label)
        elif isinstance(record, Scores):
            for completion, row in zip(record.completions, record.scores, strict=True):
                for aspect, score in row.items():
                    put(f"likert:{aspect}", (_key(record.prompt), _key(completion)), annotator, score)
    return kinds, unattributed


def agreement(paths: Sequence[str | os.PathLike[str]]) -> AgreementReport:
    """Inter-annotator agreement over the records of one or more annotation files."""
    records: list[PreferenceRecord] = []
    for path in paths:
        records += load_preferences(path)[0]
    kinds, unattributed = annotation_units(records)
    sections: list[NominalAgreement | IntervalAgreement] = []
    everyone: set[str] = set()
    for kind in sorted(kinds):
        shared = {unit: answers for unit, answers in kinds[kind].items() if len(answers) >= 2}
        everyone.update(annotator for answers in kinds[kind].values() for annotator in answers)
        if not shared:
            continue
        annotators = tuple(sorted({annotator for answers in shared.values() for annotator in answers}))
        values = [list(answers.values()) for answers in shared.values()]
        if kind.startswith("likert"):
            alpha = krippendorff_alpha(values, "interval")
            sections.append(IntervalAgreement(kind, len(shared), sum(map(len, values)), annotators, alpha))
            continue
        cohen = {}
        for first, second in itertools.combinations(annotators, 2):
            both = [answers for answers in shared.values() if first in answers and second in answers]
            if both:
                kappa = cohen_kappa([a[first] for a in both], [a[second] for a in both])
                cohen[(first, second)] = (kappa, len(both))
        sections.append(
            NominalAgreement(kind, len(shared), annotators, percent_agreement(values), cohen, fleiss_kappa(values))
        )
    return AgreementReport(tuple(map(os.fspath, paths)), tuple(sorted(everyone)), tuple(sections), unattributed)


# -- command line --------------------------------------------------------------------------


def annotate_from_cli(args: Any, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    """``prefcore annotate``: a session (exit 0; 130 when interrupted) or an agreement report."""
    stdout = sys.stdout if stdout is None else stdout
    if args.agreement:
        if args.items is not None:
            raise ConfigError("--agreement reads annotation files only; leave out the items file.", field="agreement")
        stdout.write(agreement(args.agreement).format() + "\n")
        return 0
    missing = [
        flag
        for flag, value in (("ITEMS", args.items), ("--out", args.out), ("--annotator", args.annotator))
        if not value
    ]
    if missing:
        raise ConfigError(
            f"prefcore annotate needs {', '.join(missing)}: prefcore annotate ITEMS.jsonl --out OUT.jsonl "
            "--annotator ID [--mode pairwise,likert,...], or prefcore annotate --agreement OUT.jsonl.",
            field="annotate",
        )
    config = SessionConfig(
        annotator=args.annotator,
        modes=parse_modes(args.mode),
        scale=tuple(args.scale),
        aspect=args.aspect,
        shuffle=not args.no_shuffle,
        seed=args.seed,
    )
    items = read_items(
        args.items, min_completions=config.min_completions, purpose="comparing them (modes pairwise, tie, ranking)"
    )
    terminal = Terminal(sys.stdin if stdin is None else stdin, stdout)
    with AnnotationLog(args.out) as log:
        summary = run_session(items, log, config, terminal)
    return 130 if summary.stopped == "interrupted" else 0

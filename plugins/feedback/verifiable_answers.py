"""Rule feedback from a checker: completions whose final answer is right beat those whose answer is wrong.

Where the answer can be verified (arithmetic, maths, code output, short facts), a program
is a noise-free labeller: RFT / STaR-style rejection sampling and RLVR ("reinforcement
learning with verifiable rewards", Lambert et al. 2024, "Tülu 3",
https://arxiv.org/abs/2411.15124) label samples by comparing their final answer with the
reference; Pang et al. 2024 ("Iterative Reasoning Preference Optimization",
https://arxiv.org/abs/2404.19733) build DPO pairs from exactly this split. The rule:

    answer(c) = the final answer extracted from completion c   (``extract``)
    correct(c) = answer(c) matches a reference answer         (``mode``)
    every correct completion of a prompt is preferred over every incorrect one

``mode``: ``exact`` (after trimming spaces and a final full stop; case-insensitive unless
``case_sensitive``), ``numeric`` (|a − r| ≤ tolerance + relative_tolerance·|r|; "1,200",
"3/4" and "-2.5e3" parse) or ``regex`` (the reference is a pattern the whole answer must
match). ``extract``: ``auto`` takes the last ``\\boxed{...}``, else the text after the last
``####``, else after the last "answer is" / "answer:", else (numeric mode) the last number,
else the last non-empty line; ``whole``, ``last_line``, ``last_number`` and ``boxed`` do one
of these only; anything else is a regular expression whose last match is the answer (its
first group, if it has one). A completion without an answer counts as wrong, or is left
out with ``unanswered = "skip"``. Prompts whose completions are all right or all wrong
make no pair; ``output = "binary"`` labels each completion right/wrong instead (KTO-style).

As a reward (``prefcore.rewards``, ``[[reward]] kind = "verifiable"``) the same check scores
each new completion on its own: ``scorer()`` returns ``reward(prompts, completions, *,
answers)`` = ``correct_reward`` where the answer checks out, ``wrong_reward`` where it does
not, ``unanswered_reward`` where no answer can be extracted; ``answers`` holds each
completion's reference answer(s), as the ``answer`` field below. No ``path`` is needed then.

Input (JSONL)::

    {"prompt": "...", "completions": ["...", "..."], "answer": "42"}

``answer`` is a string or a number, or a list of them (any one is right).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any
from typing import Literal

from prefcore import hookimpl
from prefcore.data import BinaryLabel
from prefcore.data import PairwiseComparison
from prefcore.errors import ConfigError
from prefcore.feedback import Row
from prefcore.feedback import read_rows
from prefcore.methods import FeedbackSource
from prefcore.methods import option

NAME = "verifiable_answers"
MODES = ("exact", "numeric", "regex")
EXTRACTORS = ("auto", "whole", "last_line", "last_number", "boxed")

Fail = Callable[[str, str], Exception]
"""Makes the error for a malformed reference answer from (message, field)."""

ACCEPTED = (
    "A verifiable_answers row is {'prompt': text, 'completions': [text, ...], 'answer': the reference "
    "(a string or number, or a list of them)}."
)

NUMBER = re.compile(r"[-+]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?(?:\s*/\s*\d+)?")
BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")
HASHES = re.compile(r"####\s*(.+)")
ANSWER_IS = re.compile(r"answer\s*(?:is|:)\s*:?\s*(.+)", re.IGNORECASE)


def _fail(message: str, field: str) -> ConfigError:
    return ConfigError(message, method=NAME, field=field)


@dataclass(frozen=True)
class VerifiableAnswersConfig:
    path: Path | None = option(None, doc="JSONL of {prompt, completions, answer} rows; none: a reward only")
    mode: Literal["exact", "numeric", "regex"] = option("exact", doc="how an answer is checked: exact, numeric, regex")
    extract: str = option("auto", doc="auto, whole, last_line, last_number, boxed, or a regex (last match)")
    tolerance: float = option(1e-6, doc="numeric mode: absolute tolerance")
    relative_tolerance: float = option(0.0, doc="numeric mode: tolerance relative to the reference")
    case_sensitive: bool = option(False, doc="exact and regex modes: compare case-sensitively")
    unanswered: Literal["wrong", "skip"] = option("wrong", doc="completions without an answer: wrong, or skip them")
    output: Literal["pairs", "binary"] = option("pairs", doc="'pairs': right beats wrong; 'binary': right/wrong labels")
    correct_reward: float = option(1.0, doc="as a reward: the score of a completion whose answer checks out")
    wrong_reward: float = option(0.0, doc="as a reward: the score of a completion whose answer is wrong")
    unanswered_reward: float = option(0.0, doc="as a reward: the score of a completion without an extractable answer")

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise _fail(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}.", "mode")
        if self.extract not in EXTRACTORS:
            try:
                re.compile(self.extract)
            except re.error as error:
                raise _fail(
                    f"extract is neither one of {', '.join(EXTRACTORS)} nor a valid regular expression: {error}.",
                    "extract",
                ) from None
        if self.tolerance < 0 or self.relative_tolerance < 0:
            raise _fail("tolerance and relative_tolerance must be 0 or more.", "tolerance")
        if self.unanswered not in ("wrong", "skip"):
            raise _fail(f"unanswered must be 'wrong' or 'skip', got {self.unanswered!r}.", "unanswered")
        if self.output not in ("pairs", "binary"):
            raise _fail(f"output must be 'pairs' or 'binary', got {self.output!r}.", "output")
        for name in ("correct_reward", "wrong_reward", "unanswered_reward"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise _fail(f"{name} must be a finite number, got {value!r}.", name)


def _last(pattern: re.Pattern[str], text: str) -> str | None:
    matches = list(pattern.finditer(text))
    if not matches:
        return None
    match = matches[-1]
    return match.group(1) if pattern.groups else match.group(0)


def _last_line(text: str) -> str | None:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else None


def extract_answer(text: str, extract: str, mode: str) -> str | None:
    """The final answer of a completion, or None when it gives none."""
    if extract == "whole":
        return text if text.strip() else None
    if extract == "last_line":
        return _last_line(text)
    if extract == "last_number":
        return _last(NUMBER, text)
    if extract == "boxed":
        return _last(BOXED, text)
    if extract != "auto":
        return _last(re.compile(extract), text)
    for pattern in (BOXED, HASHES, ANSWER_IS):
        found = _last(pattern, text)
        if found is not None:
            return (_last(NUMBER, found) or found) if mode == "numeric" else found
    return _last(NUMBER, text) if mode == "numeric" else _last_line(text)


def parse_number(text: str) -> float | None:
    """``"1,200"`` → 1200.0, ``"3/4"`` → 0.75, ``"$5."`` → 5.0; None when no number is there."""
    found = _last(NUMBER, text)
    if found is None:
        return None
    cleaned = found.replace(",", "").replace(" ", "")
    try:
        return float(Fraction(cleaned)) if "/" in cleaned else float(cleaned)
    except (ValueError, ZeroDivisionError):
        return None


def _normalise(text: str, case_sensitive: bool) -> str:
    text = " ".join(text.split()).rstrip(".").strip()
    return text if case_sensitive else text.casefold()


def reference_answers(config: VerifiableAnswersConfig, raw: Any, fail: Fail) -> list[Any]:
    """The reference answers of one prompt, parsed for ``config.mode``.

    ``raw`` is a string or a number, or a list of them (any one is right); ``fail(message,
    field)`` makes the error for a malformed one (a row's ``DataError``, or a reward's).
    """
    references = raw if isinstance(raw, list) else [raw]
    if not references:
        raise fail("is an empty list; give at least one reference answer.", "answer")
    return [
        _reference(config, reference, "answer" if not isinstance(raw, list) else f"answer[{index}]", fail)
        for index, reference in enumerate(references)
    ]


def _reference(config: VerifiableAnswersConfig, reference: Any, field: str, fail: Fail) -> Any:
    mode = config.mode
    if isinstance(reference, bool) or not isinstance(reference, (str, int, float)):
        raise fail(f"must be a string or a number, got {reference!r}.", field)
    if mode == "numeric":
        value = float(reference) if not isinstance(reference, str) else parse_number(reference)
        if value is None or not math.isfinite(value):
            raise fail(f"is not a number ({reference!r}), which numeric mode needs.", field)
        return value
    if mode == "regex":
        try:
            return re.compile(str(reference), 0 if config.case_sensitive else re.IGNORECASE)
        except re.error as error:
            raise fail(f"is not a valid regular expression for regex mode: {error}.", field) from None
    return _normalise(str(reference), config.case_sensitive)


class Checker:
    """Whether an extracted answer matches one of a row's reference answers."""

    def __init__(self, config: VerifiableAnswersConfig, row: Row | None = None, *, answer: Any = None) -> None:
        """The references of ``row`` (its ``answer`` field), or ``answer`` itself when no row is given."""
        self.config = config
        if row is not None:
            self.references = reference_answers(config, row.require("answer"), row.error)
        else:
            self.references = reference_answers(config, answer, _reference_error(answer))

    def correct(self, answer: str) -> bool:
        config = self.config
        if config.mode == "numeric":
            value = parse_number(answer)
            return value is not None and any(
                abs(value - ref) <= config.tolerance + config.relative_tolerance * abs(ref) for ref in self.references
            )
        if config.mode == "regex":
            return any(pattern.fullmatch(answer.strip()) for pattern in self.references)
        return _normalise(answer, config.case_sensitive) in self.references


def _reference_error(raw: Any) -> Fail:
    def fail(message: str, field: str) -> Exception:
        return ValueError(f"reference answer {raw!r}: {field} {message}")

    return fail


class AnswerReward:
    """The checker as a pointwise reward: ``reward(prompts, completions, *, answers) -> scores``.

    ``answers[i]`` is the reference of completion ``i`` (a string or number, or a list of
    them); a completion without one is refused, naming its index.
    """

    def __init__(self, config: VerifiableAnswersConfig) -> None:
        self.config = config

    def score(self, completion: str, answer: Any) -> float:
        """``correct_reward``, ``wrong_reward`` or ``unanswered_reward`` of one completion."""
        config = self.config
        extracted = extract_answer(completion, config.extract, config.mode)
        if extracted is None:
            return float(config.unanswered_reward)
        right = Checker(config, answer=answer).correct(extracted)
        return float(config.correct_reward if right else config.wrong_reward)

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[str], /, *, answers: Sequence[Any] | None = None
    ) -> list[float]:
        if answers is None:
            raise ValueError(
                "a verifiable_answers reward needs each completion's reference answer: give the prompts "
                "metadata with an 'answer'."
            )
        if len(answers) != len(completions):
            raise ValueError(f"got {len(answers)} reference answers for {len(completions)} completions.")
        scores = []
        for index, (completion, answer) in enumerate(zip(completions, answers, strict=True)):
            if answer is None:
                raise ValueError(f"completion {index} has no reference answer to check against.")
            if not isinstance(completion, str):
                raise ValueError(f"completion {index} is not text: answers are extracted from text completions.")
            scores.append(self.score(completion, answer))
        return scores


class VerifiableAnswers(FeedbackSource):
    """Rule feedback: completions whose final answer checks out beat those whose answer does not."""

    name = NAME
    config_cls = VerifiableAnswersConfig

    def records(self) -> Iterator[Any]:
        config = self.config
        if config.path is None:
            raise _fail(
                "feedback source 'verifiable_answers' has no completions to check: set path = \"<rows.jsonl>\" "
                '(without a path it is a reward only: [[reward]] kind = "verifiable").',
                "path",
            )
        for row in read_rows(config.path, ACCEPTED):
            prompt = row.text("prompt")
            completions = row.texts("completions", like=prompt)
            checker = Checker(config, row)
            graded: list[tuple[Any, str | None, bool]] = []
            for index, completion in enumerate(completions):
                if not isinstance(completion, str):
                    raise row.error(
                        "must be text: answers are extracted from text completions.", f"completions[{index}]"
                    )
                answer = extract_answer(completion, config.extract, config.mode)
                if answer is None and config.unanswered == "skip":
                    continue
                graded.append((completion, answer, answer is not None and checker.correct(answer)))
            common: dict[str, Any] = {"source": "rule", "group_id": row.group_id()}
            if config.output == "binary":
                for completion, answer, right in graded:
                    yield BinaryLabel(prompt, completion, right, metadata={"answer": answer}, **common)
                continue
            right = [entry for entry in graded if entry[2]]
            wrong = [entry for entry in graded if not entry[2]]
            for (chosen, chosen_answer, _), (rejected, rejected_answer, _) in itertools.product(right, wrong):
                yield PairwiseComparison(
                    prompt, chosen, rejected, metadata={"answers": [chosen_answer, rejected_answer]}, **common
                )

    def scorer(self) -> AnswerReward:
        """The check as a reward of each new completion against its reference answer."""
        return AnswerReward(self.config)


@hookimpl
def prefcore_register_feedback() -> list[type[FeedbackSource]]:
    return [VerifiableAnswers]

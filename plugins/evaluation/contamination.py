"""Contamination check: n-gram overlap between evaluation prompts and the training data, per evaluation set.

A held-out score means little if the held-out prompts were trained on. GPT-3 (Brown et al.
2020, https://arxiv.org/abs/2005.14165, appendix C) flags an evaluation item as dirty when
any of its 13-grams occurs in the training data. Texts are lower-cased and split into word
tokens (``\\w+``); with G_n(t) the set of n-grams of t and G_n(D) those of all training texts:

    overlap(x)          = |G_n(x) ∩ G_n(D)| / |G_n(x)|
    contaminated_rate   = share of the set's items with overlap(x) > 0
    exact_duplicate_rate = share of items whose normalised text equals a training text's

An item shorter than n words has no n-gram, and skipping it misses short prompts entirely
(marin-community/marin#6852); it is checked as one m-gram of its own length m instead, so it
counts as contaminated when it occurs word for word inside a training text. Each set whose
contaminated_rate exceeds ``threshold`` is logged as a warning and marked ``<set>/warning = 1``.

Evaluation sets: ``prompts`` (the run's evaluation prompts), ``heldout`` (the prompts of its
held-out records) and one per ``eval_files`` entry (named by the file's stem). Training data:
the run's training records (``EvaluationContext.training``) and ``train_files``; every text
field (prompt, chosen, rejected, completion(s), revision) counts. Paraphrases evade n-gram
matching; a clean result is a lower bound on contamination, not a proof of its absence.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefcore import hookimpl
from prefcore.errors import ConfigError
from prefcore.evaluation import EvaluationContext
from prefcore.evaluation import EvaluationInputError
from prefcore.evaluation import EvaluationResult
from prefcore.evaluation import prompt_display
from prefcore.methods import Evaluator
from prefcore.methods import option

logger = logging.getLogger("prefcore.evaluation")

TEXT_FIELDS = ("prompt", "chosen", "rejected", "completion", "completions", "revision")
WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class ContaminationConfig:
    n: int = option(13, doc="n-gram length in words (GPT-3: 13); shorter items are matched whole")
    threshold: float = option(0.05, doc="warn when a set's contaminated share exceeds this")
    train_files: tuple[str, ...] = option((), doc="JSONL files of training records, besides the run's training data")
    eval_files: tuple[str, ...] = option((), doc="JSONL files of further evaluation sets (named by file stem)")

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError("n must be at least 1.", method="contamination", field="n")
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError("threshold must be in [0, 1].", method="contamination", field="threshold")
        for key in ("train_files", "eval_files"):
            for path in getattr(self, key):
                if not Path(path).is_file():
                    raise ConfigError(f"{key}: {path!r} is not a file.", method="contamination", field=key)


def words(text: str) -> tuple[str, ...]:
    """Lower-cased word tokens."""
    return tuple(WORD.findall(text.lower()))


def ngrams(tokens: Sequence[str], n: int) -> set[tuple[str, ...]]:
    """Every contiguous n-gram of ``tokens``."""
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def _texts(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict) and isinstance(value.get("content"), str):
        yield value["content"]
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _texts(item)
    elif hasattr(value, "content") and isinstance(value.content, str):  # a chat Message
        yield value.content


def record_texts(record: Any) -> list[str]:
    """The text fields of a record (an object or a JSON dict), chat turns included."""
    found: list[str] = []
    for name in TEXT_FIELDS:
        value = record.get(name) if isinstance(record, dict) else getattr(record, name, None)
        found.extend(_texts(value))
    return found


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file (a bare string line is read as a prompt)."""
    rows = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} line {number}: not valid JSON ({exc.msg}).", method="contamination") from exc
        rows.append(row if isinstance(row, dict) else {"prompt": row})
    return rows


class TrainingIndex:
    """The training data's n-grams, and its m-grams for each shorter length m that an item needs."""

    def __init__(self, texts: Iterable[str], n: int) -> None:
        self.token_lists = [words(text) for text in texts]
        self.n = n
        self.normalised = {" ".join(tokens) for tokens in self.token_lists}
        self.grams: dict[int, set[tuple[str, ...]]] = {}

    def of_length(self, length: int) -> set[tuple[str, ...]]:
        if length not in self.grams:
            self.grams[length] = set().union(*(ngrams(tokens, length) for tokens in self.token_lists))
        return self.grams[length]

    def overlap(self, text: str) -> float:
        """overlap(x): the share of the item's n-grams (or its whole self, when shorter) found in training."""
        tokens = words(text)
        if not tokens:
            return 0.0
        length = min(self.n, len(tokens))
        grams = ngrams(tokens, length)
        return len(grams & self.of_length(length)) / len(grams)

    def duplicate(self, text: str) -> bool:
        return " ".join(words(text)) in self.normalised


def evaluation_sets(context: EvaluationContext, config: ContaminationConfig) -> dict[str, list[str]]:
    """Set name → its item texts (the prompts)."""
    sets: dict[str, list[str]] = {}
    if context.prompts:
        sets["prompts"] = [prompt_display(prompt) for prompt in context.prompts]
    heldout = list(dict.fromkeys(prompt_display(r.prompt) for r in context.preferences if hasattr(r, "prompt")))
    if heldout:
        sets["heldout"] = heldout
    for path in config.eval_files:
        sets[Path(path).stem] = [text for row in read_jsonl(path) for text in _texts(row.get("prompt"))]
    return sets


class Contamination(Evaluator):
    """Share of each evaluation set's prompts with an n-gram (or, when short, all of it) in the training data."""

    name = "contamination"
    config_cls = ContaminationConfig

    def evaluate(self, context: EvaluationContext) -> EvaluationResult:
        training = [text for record in context.training for text in record_texts(record)]
        training += [text for path in self.config.train_files for row in read_jsonl(path) for text in record_texts(row)]
        if not training:
            raise EvaluationInputError(
                self.name,
                "training data",
                "Run it in a run (its training records), or list train_files = [...] of JSONL records.",
            )
        sets = evaluation_sets(context, self.config)
        if not any(sets.values()):
            raise EvaluationInputError(
                self.name, "evaluation prompts", "Give the run evaluation prompts, or list eval_files = [...]."
            )
        index = TrainingIndex(training, self.config.n)
        metrics: dict[str, float] = {"num_training_texts": float(len(training))}
        for name, items in sets.items():
            if not items:
                continue
            overlaps = [index.overlap(text) for text in items]
            rate = sum(value > 0 for value in overlaps) / len(items)
            metrics[f"{name}/contaminated_rate"] = rate
            metrics[f"{name}/mean_overlap"] = sum(overlaps) / len(items)
            metrics[f"{name}/exact_duplicate_rate"] = sum(index.duplicate(text) for text in items) / len(items)
            metrics[f"{name}/num_items"] = float(len(items))
            metrics[f"{name}/warning"] = float(rate > self.config.threshold)
            if rate > self.config.threshold:
                logger.warning(
                    "contamination: %.1f%% of evaluation set %r (%d prompts) share a %d-gram with the training data, "
                    "above the %.1f%% threshold; its scores may measure memorisation.",
                    100 * rate,
                    name,
                    len(items),
                    self.config.n,
                    100 * self.config.threshold,
                )
        return EvaluationResult(metrics)


@hookimpl
def prefcore_register_evaluators() -> list[type[Evaluator]]:
    return [Contamination]

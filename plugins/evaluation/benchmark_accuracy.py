"""Accuracy of the policy's greedy answers on prompts whose right answer is known.

Two sources of truth, the first that exists wins:

1. ``context.cache["checker"]``: a callable ``checker(prompt, completion) -> bool`` (or a
   score in [0, 1]) applied to every held-out prompt; for answers a string match cannot
   judge (maths with equivalent forms, code run against tests).
2. ``metadata["answer"]`` of the held-out records in ``context.preferences``: a string,
   number or list of accepted answers; each distinct prompt counts once, with the answer
   of its first record.

    accuracy = (1 / N) Σ_i correct(x_i, ŷ_i)

with x_i the N prompts and ŷ_i the policy's greedy completion. With ``match = "exact"`` a
completion is correct if it equals an accepted answer; with ``"contains"`` if an accepted
answer occurs in it as a whole word or phrase. Greedy decoding makes the score a property
of the policy, not of a sampling seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prefcore import hookimpl
from prefcore.errors import ConfigError
from prefcore.evaluation import AnswerMatch
from prefcore.evaluation import EvaluationContext
from prefcore.evaluation import EvaluationInputError
from prefcore.evaluation import EvaluationResult
from prefcore.evaluation import answer_matches
from prefcore.evaluation import cached_completions
from prefcore.evaluation import evaluation_prompts
from prefcore.evaluation import greedy
from prefcore.evaluation import metadata_answers
from prefcore.methods import Evaluator
from prefcore.methods import option

Match = AnswerMatch
Checker = Callable[[Any, str], Any]


@dataclass(frozen=True)
class BenchmarkAccuracyConfig:
    match: Match = option("contains", doc="'exact': completion equals an answer; 'contains': answer occurs in it")
    normalize: bool = option(True, doc="compare lower-cased text with runs of whitespace collapsed")
    batch_size: int = option(16, doc="prompts per generation batch")

    def __post_init__(self) -> None:
        if self.match not in ("exact", "contains"):
            raise ConfigError(
                f"match must be 'exact' or 'contains', got {self.match!r}.", method="benchmark_accuracy", field="match"
            )
        if self.batch_size < 1:
            raise ConfigError("batch_size must be at least 1.", method="benchmark_accuracy", field="batch_size")


def known_answers(context: EvaluationContext) -> dict[Any, tuple[str, ...]]:
    """Prompt → accepted answers, from the held-out records' ``metadata["answer"]``."""
    return metadata_answers(context, "answer")


class BenchmarkAccuracy(Evaluator):
    """Share of greedy policy completions that give the known answer (or pass a checker)."""

    name = "benchmark_accuracy"
    config_cls = BenchmarkAccuracyConfig

    def evaluate(self, context: EvaluationContext) -> EvaluationResult:
        checker: Checker | None = context.cache.get("checker")
        if checker is not None:
            prompts = evaluation_prompts(context)
            answers: dict[Any, tuple[str, ...]] = {}
        else:
            answers = known_answers(context)
            prompts = list(answers)
        if not prompts:
            raise EvaluationInputError(
                self.name,
                "prompts with known answers",
                'Put the right answer in each held-out record\'s metadata["answer"], or a '
                'checker(prompt, completion) callable in context.cache["checker"].',
            )
        settings = greedy(context.generation)
        completions = cached_completions(context, prompts, settings=settings, batch_size=self.config.batch_size)
        if checker is not None:
            correct = [float(checker(prompt, text)) for prompt, text in zip(prompts, completions.texts, strict=True)]
        else:
            correct = [
                float(answer_matches(text, answers[prompt], match=self.config.match, normalize=self.config.normalize))
                for prompt, text in zip(prompts, completions.texts, strict=True)
            ]
        return EvaluationResult({"accuracy": sum(correct) / len(correct), "num_prompts": float(len(correct))})


@hookimpl
def prefcore_register_evaluators() -> list[type[Evaluator]]:
    return [BenchmarkAccuracy]

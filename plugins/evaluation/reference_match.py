"""Reference-based metrics for prompts with golden answers: exact match, token F1 and ROUGE-L.

The policy answers each held-out prompt greedily; its answer ŷ is compared with every
golden answer y of the prompt (``metadata[answer_key]``: a string or a list) and the best
match counts. Following SQuAD's official script (Rajpurkar et al. 2016,
https://arxiv.org/abs/1606.05250), both are normalised first (lower case, punctuation and the
articles a/an/the removed, whitespace collapsed), and with T(·) the normalised tokens:

    exact_match = [norm(ŷ) = norm(y)]
    token_f1    = 2 P R / (P + R),  P = |T(ŷ) ∩ T(y)| / |T(ŷ)|,  R = |T(ŷ) ∩ T(y)| / |T(y)|   (multiset ∩)
    rouge_l     = ROUGE-L F-measure (Lin 2004), from LCS(ŷ, y); computed by Google's
                  ``rouge-score`` package, the implementation papers report (``pip install prefcore[rouge]``)

Each metric is the mean over prompts of the maximum over the prompt's golden answers.
"""

from __future__ import annotations

import importlib.util
import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prefcore import hookimpl
from prefcore.errors import ConfigError
from prefcore.evaluation import EvaluationContext
from prefcore.evaluation import EvaluationInputError
from prefcore.evaluation import EvaluationResult
from prefcore.evaluation import cached_completions
from prefcore.evaluation import greedy
from prefcore.evaluation import metadata_answers
from prefcore.methods import Evaluator
from prefcore.methods import option

ROUGE_EXTRA = "rouge"
ARTICLES = re.compile(r"\b(a|an|the)\b")


@dataclass(frozen=True)
class ReferenceMatchConfig:
    answer_key: str = option("answer", doc="metadata key of each held-out record's golden answer(s)")
    rouge: bool = option(True, doc="also report ROUGE-L (needs the rouge-score package: prefcore[rouge])")
    batch_size: int = option(16, doc="prompts per generation batch")

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError("batch_size must be at least 1.", method="reference_match", field="batch_size")
        if self.rouge and importlib.util.find_spec("rouge_score") is None:
            raise ConfigError(
                "reference_match computes ROUGE-L with the rouge-score package, which is not installed. Install it "
                f"with `pip install 'prefcore[{ROUGE_EXTRA}]'` (or `pip install rouge-score`), or set rouge = false.",
                method="reference_match",
                field="rouge",
            )


def normalise_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, references: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals a normalised reference."""
    return float(any(normalise_answer(prediction) == normalise_answer(ref) for ref in references))


def _f1(prediction: str, reference: str) -> float:
    predicted, expected = normalise_answer(prediction).split(), normalise_answer(reference).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, references: Sequence[str]) -> float:
    """The best token-overlap F1 of the prediction against any reference."""
    return max(_f1(prediction, reference) for reference in references)


def rouge_l(prediction: str, references: Sequence[str]) -> float:
    """The best ROUGE-L F-measure against any reference, by ``rouge_score``."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    return max(scorer.score(reference, prediction)["rougeL"].fmeasure for reference in references)


def golden_answers(context: EvaluationContext, key: str) -> dict[Any, tuple[str, ...]]:
    """Prompt → golden answers, from the held-out records' ``metadata[key]`` (the first record of a prompt wins)."""
    return metadata_answers(context, key)


class ReferenceMatch(Evaluator):
    """Exact match, token F1 and ROUGE-L of greedy answers against golden answers."""

    name = "reference_match"
    config_cls = ReferenceMatchConfig

    def evaluate(self, context: EvaluationContext) -> EvaluationResult:
        answers = golden_answers(context, self.config.answer_key)
        if not answers:
            raise EvaluationInputError(
                self.name,
                "prompts with golden answers",
                f'Put each held-out record\'s golden answer(s) in metadata["{self.config.answer_key}"].',
            )
        prompts = list(answers)
        completions = cached_completions(
            context, prompts, settings=greedy(context.generation), batch_size=self.config.batch_size
        )
        pairs = list(zip(completions.texts, (answers[prompt] for prompt in prompts), strict=True))
        metrics = {
            "exact_match": sum(exact_match(text, refs) for text, refs in pairs) / len(pairs),
            "token_f1": sum(token_f1(text, refs) for text, refs in pairs) / len(pairs),
            "num_prompts": float(len(pairs)),
        }
        if self.config.rouge:
            metrics["rouge_l"] = sum(rouge_l(text, refs) for text, refs in pairs) / len(pairs)
        return EvaluationResult(metrics)


@hookimpl
def prefcore_register_evaluators() -> list[type[Evaluator]]:
    return [ReferenceMatch]

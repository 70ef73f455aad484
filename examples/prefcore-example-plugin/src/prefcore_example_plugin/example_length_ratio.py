"""Evaluator ``example_length_ratio``: does the policy answer at greater length than its reference?

Preference training tends to lengthen answers, and judges tend to reward length (Singhal
et al. 2023, "A Long Way to Go: Investigating Length Correlations in RLHF",
https://arxiv.org/abs/2310.03716). This evaluator reports

    length_ratio = (Σ_i |a_i|) / (Σ_i |b_i|)

with a_i the policy's and b_i the reference's sampled completion of held-out prompt x_i and
|·| the length in words. A ratio well above 1 beside a rising win rate says the judge may be
won by length. The completions are the ones every evaluator of the pass sees.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefcore import hookimpl
from prefcore.evaluation import EvaluationContext
from prefcore.evaluation import EvaluationInputError
from prefcore.evaluation import EvaluationResult
from prefcore.evaluation import cached_completions
from prefcore.evaluation import require_prompts
from prefcore.methods import Evaluator
from prefcore.methods import check_positive
from prefcore.methods import option


@dataclass(frozen=True)
class LengthRatioConfig:
    batch_size: int = option(16, doc="prompts per generation batch")

    def __post_init__(self) -> None:
        check_positive("example_length_ratio", "batch_size", self.batch_size)


class LengthRatio(Evaluator):
    """Length of policy completions over reference completions, in words."""

    name = "example_length_ratio"
    config_cls = LengthRatioConfig

    def evaluate(self, context: EvaluationContext) -> EvaluationResult:
        if context.reference is None:
            raise EvaluationInputError(self.name, "a reference model", "Keep the reference model for evaluation.")
        prompts = require_prompts(context, self.name)
        policy = cached_completions(context, prompts, role="policy", batch_size=self.config.batch_size)
        reference = cached_completions(context, prompts, role="reference", batch_size=self.config.batch_size)
        policy_words = sum(len(text.split()) for text in policy.texts)
        reference_words = sum(len(text.split()) for text in reference.texts)
        return EvaluationResult(
            {
                "length_ratio": policy_words / reference_words if reference_words else float("nan"),
                "policy_words": policy_words / len(policy.texts),
                "reference_words": reference_words / len(reference.texts),
            }
        )


@hookimpl
def prefcore_register_evaluators() -> list[type[Evaluator]]:
    return [LengthRatio]

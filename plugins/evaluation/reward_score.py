"""Mean scalar score of policy and reference samples under the run's scorer (a reward model).

    policy_score = mean_i s(x_i, a_i),  reference_score = mean_i s(x_i, b_i),
    score_difference = policy_score − reference_score

with s the batched scorer, a_i the policy's completion and b_i the reference's for
prompt x_i. ``policy_better_rate`` is the share of prompts (samples) where the policy's
completion scores strictly higher. A reward-model score needs no pairing and has no
position bias, which makes it a cheap companion to the judged win rate; it is only as good
as the reward model, which the policy may have learnt to exploit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prefcore import hookimpl
from prefcore.errors import ConfigError
from prefcore.evaluation import EvaluationContext
from prefcore.evaluation import EvaluationInputError
from prefcore.evaluation import EvaluationResult
from prefcore.evaluation import GeneratedCompletions
from prefcore.evaluation import Scorer
from prefcore.evaluation import batched_scores
from prefcore.evaluation import cached_completions
from prefcore.evaluation import require_prompts
from prefcore.lazy import lazy_module
from prefcore.methods import Evaluator
from prefcore.methods import option

np = lazy_module("numpy")


@dataclass(frozen=True)
class RewardScoreConfig:
    batch_size: int = option(16, doc="prompts per generation batch and per scorer call")

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError("batch_size must be at least 1.", method="reward_score", field="batch_size")


class RewardScore(Evaluator):
    """Mean scorer (reward model) score of policy vs reference samples, and their difference."""

    name = "reward_score"
    config_cls = RewardScoreConfig

    def scores(self, scorer: Scorer, samples: GeneratedCompletions) -> np.ndarray:
        """One score per sampled completion, asking the scorer ``batch_size`` at a time."""
        prompts: Sequence[Any] = [prompt for prompt in samples.prompts for _ in range(samples.num_samples)]
        scores = batched_scores(scorer, prompts, samples.texts, batch_size=self.config.batch_size, evaluator=self.name)
        return np.asarray(scores, dtype=np.float64)

    def evaluate(self, context: EvaluationContext) -> EvaluationResult:
        if context.scorer is None:
            raise EvaluationInputError(
                self.name, "a scorer", "Configure a reward model (or any batched scorer) for the run."
            )
        prompts = require_prompts(context, self.name)
        policy = self.scores(context.scorer, cached_completions(context, prompts, batch_size=self.config.batch_size))
        metrics = {"policy_score": float(policy.mean()), "num_samples": float(len(policy))}
        if context.reference is not None:
            reference_samples = cached_completions(
                context, prompts, role="reference", batch_size=self.config.batch_size
            )
            reference = self.scores(context.scorer, reference_samples)
            metrics.update(
                reference_score=float(reference.mean()),
                score_difference=float(policy.mean() - reference.mean()),
                policy_better_rate=float((policy > reference).mean()),
            )
        return EvaluationResult(metrics)


@hookimpl
def prefcore_register_evaluators() -> list[type[Evaluator]]:
    return [RewardScore]

"""Example completions for the report: prompts drawn uniformly at random, never picked.

``count`` prompts are drawn without replacement, uniformly, with ``random.Random(seed)``
where seed is the run's evaluation seed, so the same run shows the same rows and nobody
chooses flattering ones. Each row holds the prompt, the policy's completion (its first
sample), the reference's when there is a reference, and, when a judge exists too, the
judge's position-controlled probability that the policy's completion is better,

    p = (judge(x, a, b) + 1 − judge(x, b, a)) / 2.

The completions are the ones every other evaluator of the pass sees (shared cache).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from prefcore import hookimpl
from prefcore.errors import ConfigError
from prefcore.evaluation import EvaluationContext
from prefcore.evaluation import EvaluationResult
from prefcore.evaluation import cached_completions
from prefcore.evaluation import judged_verdicts
from prefcore.evaluation import prompt_display
from prefcore.evaluation import require_prompts
from prefcore.methods import Evaluator
from prefcore.methods import option


@dataclass(frozen=True)
class SamplesConfig:
    count: int = option(5, doc="how many prompts to draw (all of them if there are fewer)")
    batch_size: int = option(16, doc="prompts per generation batch")

    def __post_init__(self) -> None:
        for name in ("count", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1.", method="samples", field=name)


def draw_indices(population: int, count: int, seed: int) -> list[int]:
    """``count`` distinct indices below ``population``, uniformly at random, in ascending order."""
    return sorted(random.Random(seed).sample(range(population), min(count, population)))


class Samples(Evaluator):
    """Randomly drawn prompts with policy and reference completions (and the judge's verdict)."""

    name = "samples"
    config_cls = SamplesConfig

    def evaluate(self, context: EvaluationContext) -> EvaluationResult:
        prompts = require_prompts(context, self.name)
        indices = draw_indices(len(prompts), self.config.count, context.seed)
        policy = cached_completions(context, prompts, batch_size=self.config.batch_size)
        rows: list[dict[str, Any]] = [
            {"index": index, "prompt": prompt_display(prompts[index]), "policy": policy.for_prompt(index)[0]}
            for index in indices
        ]
        if context.reference is not None:
            reference = cached_completions(context, prompts, role="reference", batch_size=self.config.batch_size)
            first_rows = [index * policy.num_samples for index in indices]
            for row, first in zip(rows, first_rows, strict=True):
                row["reference"] = reference.texts[first]
            if context.judge is not None:
                verdicts = judged_verdicts(context, prompts, policy, reference, first_rows, evaluator=self.name)
                for row, first in zip(rows, first_rows, strict=True):
                    row["judge"] = round(verdicts[first].averaged, 4)
        return EvaluationResult({"num_shown": float(len(rows))}, samples=rows)


@hookimpl
def prefcore_register_evaluators() -> list[type[Evaluator]]:
    return [Samples]

"""Stage 7, evaluation: every selected evaluator on one shared context, before, during and after training.

``Evaluation.run(step)`` is called at step 0 (the policy still equals the reference), every
``[train] eval_every`` steps by the trainer, and at the last step; each pass fires
``prefcore_evaluation_end`` and keeps its metrics and samples for the report.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any

from prefcore.distributed.process_group import is_main
from prefcore.engine.progress import StageProgress
from prefcore.evaluation import EvaluationContext
from prefcore.evaluation import GenerationSettings
from prefcore.evaluation import evaluation_beta
from prefcore.stages.session import RunHooks

if TYPE_CHECKING:
    from prefcore.methods import UsageObjective
    from prefcore.settings import RunSettings

__all__ = ["Evaluation", "run_sampling"]

logger = logging.getLogger("prefcore.pipeline")


def run_sampling(settings: RunSettings, objective: UsageObjective) -> dict[str, Any]:
    """The ``EvaluationContext`` fields fixed by ``[run]`` and the run's first objective.

    How evaluators sample, the condition before each prompt and the β of implicit rewards:
    ``prefcore run`` and ``prefcore evaluate`` both take them from here, so a saved run
    evaluates as it was evaluated during training.
    """
    return {
        "generation": GenerationSettings(
            max_new_tokens=settings.max_new_tokens,
            temperature=settings.temperature,
            num_samples=settings.samples_per_prompt,
            seed=settings.seed,
        ),
        "generation_prefix": objective.generation_prefix(),
        "beta": evaluation_beta(objective),  # the objective declares it (implicit_reward_beta)
        "seed": settings.seed,
    }


class Evaluation:
    """Runs every selected evaluator on one shared context and reports through the hooks.

    Under torchrun every rank calls ``run`` at the same points: the evaluators' sampling and
    log-prob scoring are split across the ranks and gathered (``prefcore.distributed.shards``),
    every rank computes the same metrics, and rank 0 alone logs them and fires the hook.

    Arguments:
        evaluators: the run file's evaluation methods.
        hooks: the run's lifecycle hooks.
        progress: show a progress bar per pass.
        context: the fields of ``EvaluationContext`` (policy, reference, prompts, judge, ...);
            a fresh context per pass, because the policy has changed.
    """

    def __init__(self, evaluators: Sequence[Any], hooks: RunHooks, *, progress: bool = True, **context: Any) -> None:
        self.evaluators = evaluators
        self.hooks = hooks
        self.progress = progress
        self.context = context
        self.metrics: dict[str, float] = {}
        self.samples: list[Mapping[str, Any]] = []

    def run(self, step: int) -> None:
        if not self.evaluators:
            return
        context = EvaluationContext(**self.context)  # a fresh cache: the policy has changed
        metrics: dict[str, float] = {}
        rows: list[Mapping[str, Any]] = []
        stage = f"evaluation at step {step}"
        enabled = self.progress and is_main()
        with StageProgress(stage, len(self.evaluators), enabled=enabled, unit="evaluator") as bar:
            for done, evaluator in enumerate(self.evaluators, start=1):
                result = evaluator.evaluate(context)
                metrics.update({f"{evaluator.name}/{key}": float(value) for key, value in result.metrics.items()})
                rows += list(result.samples)
                bar.update(done)
        context.policy.train()
        self.metrics, self.samples = metrics, rows
        if not is_main():  # under torchrun every rank computed the same metrics; rank 0 reports them
            return
        logger.info("%s: %s", stage, ", ".join(f"{name} {value:.4g}" for name, value in metrics.items()))
        self.hooks.fire("prefcore_evaluation_end", step=step, metrics=metrics)

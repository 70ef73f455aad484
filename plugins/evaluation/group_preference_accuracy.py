"""Held-out preference accuracy of the policy's implicit reward, per group of annotators.

Each held-out pair names the group that judged it (``annotator_groups[by]``); for group g

    accuracy_g = share of g's pairs with r(x, chosen) > r(x, rejected), equal rewards counting ½

with r = β · (log π − log π_ref) (log π without a reference), as ``preference_accuracy``
computes it. A majority-trained policy can rank the majority's choices well and the
minority's badly: ``worst_group_accuracy`` and ``accuracy_gap`` (best − worst) say how much.
Ties carry no preference and are skipped. Records without a group of ``by`` are left out
(``num_ungrouped`` counts them).
"""

from __future__ import annotations

from dataclasses import dataclass

from prefcore import hookimpl
from prefcore.data import PairwiseComparison
from prefcore.errors import ConfigError
from prefcore.evaluation import EvaluationContext
from prefcore.evaluation import EvaluationResult
from prefcore.group_evaluation import group_pairs
from prefcore.group_evaluation import implicit_pair_rewards
from prefcore.group_evaluation import summarise_groups
from prefcore.methods import Evaluator
from prefcore.methods import option

NAME = "group_preference_accuracy"


@dataclass(frozen=True)
class GroupPreferenceAccuracyConfig:
    by: str = option("community", doc="the group attribute of the held-out records (annotator_groups)")
    batch_size: int = option(8, doc="pairs per forward pass (two sequences each)")
    max_length: int = option(1024, doc="prompt + completion tokens; longer prompts are cut from the left")

    def __post_init__(self) -> None:
        if not self.by.strip():
            raise ConfigError("by must name a group attribute, e.g. by = 'community'.", method=NAME, field="by")
        for name in ("batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1.", method=NAME, field=name)


class GroupPreferenceAccuracy(Evaluator):
    """Implicit-reward preference accuracy on each group's held-out pairs, the worst group and the gap."""

    name = NAME
    config_cls = GroupPreferenceAccuracyConfig

    def evaluate(self, context: EvaluationContext) -> EvaluationResult:
        by_group = group_pairs(context.preferences, self.config.by, self.name)
        pairwise = [record for record in context.preferences if isinstance(record, PairwiseComparison)]
        accuracies: dict[str, float] = {}
        metrics: dict[str, float] = {}
        for group, pairs in by_group.items():
            chosen, rejected = implicit_pair_rewards(
                context, pairs, batch_size=self.config.batch_size, max_length=self.config.max_length
            )
            margins = chosen - rejected
            accuracies[group] = float(((margins > 0).double() + 0.5 * (margins == 0).double()).mean())
            metrics[f"num_pairs/{group}"] = float(len(pairs))
        metrics.update(summarise_groups(accuracies, "accuracy"))
        metrics["num_ungrouped"] = float(sum(1 for r in pairwise if self.config.by not in r.annotator_groups))
        return EvaluationResult(metrics)


@hookimpl
def prefcore_register_evaluators() -> list[type[Evaluator]]:
    return [GroupPreferenceAccuracy]

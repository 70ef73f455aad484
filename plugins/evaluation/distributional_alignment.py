"""Distributional alignment: Jensen–Shannon distance between the policy's preferences and each group's votes.

A group is rarely unanimous, and groups differ; a policy aligned with a population should
match how split each group is, not only which side wins (Sorensen et al. 2024, "A Roadmap
to Pluralistic Alignment", https://arxiv.org/abs/2402.05070, distributional pluralism;
Durmus et al. 2023, "Towards Measuring the Representation of Subjective Global Opinions",
https://arxiv.org/abs/2306.16388, score models by 1 − Jensen–Shannon distance). On a
held-out pair judged by group g with vote share s_g for its chosen reply (``probability``,
1 when absent, ½ for a tie), the policy prefers chosen with

    p = σ(r(x, chosen) − r(x, rejected)),   r = β · (log π − log π_ref)  (log π without a reference)

    js_distance_g = mean over g's pairs of √JS(Bernoulli(p), Bernoulli(s_g)), base 2, in [0, 1]

Reported: ``js_distance/<group>``, ``worst_group_js_distance`` (the largest),
``js_distance_gap`` and ``alignment`` = 1 − the mean distance over groups. Ties (s_g = ½)
count: matching an even split is part of distributional alignment.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefcore import hookimpl
from prefcore.data import PairwiseComparison
from prefcore.errors import ConfigError
from prefcore.evaluation import EvaluationContext
from prefcore.evaluation import EvaluationResult
from prefcore.group_evaluation import bernoulli_js_distance
from prefcore.group_evaluation import group_pairs
from prefcore.group_evaluation import implicit_pair_rewards
from prefcore.group_evaluation import summarise_groups
from prefcore.lazy import lazy_module
from prefcore.methods import Evaluator
from prefcore.methods import option

torch = lazy_module("torch")

NAME = "distributional_alignment"


@dataclass(frozen=True)
class DistributionalAlignmentConfig:
    by: str = option("community", doc="the group attribute of the held-out records (annotator_groups)")
    batch_size: int = option(8, doc="pairs per forward pass (two sequences each)")
    max_length: int = option(1024, doc="prompt + completion tokens; longer prompts are cut from the left")

    def __post_init__(self) -> None:
        if not self.by.strip():
            raise ConfigError("by must name a group attribute, e.g. by = 'community'.", method=NAME, field="by")
        for name in ("batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1.", method=NAME, field=name)


def _share(pair: PairwiseComparison) -> float:
    """The judging group's share for chosen: ½ for a tie, 1 for a plain choice, else its ``probability``."""
    if pair.tie:
        return 0.5
    return 1.0 if pair.probability is None else pair.probability


class DistributionalAlignment(Evaluator):
    """Jensen–Shannon distance between the policy's preference probability and each group's vote share."""

    name = NAME
    config_cls = DistributionalAlignmentConfig

    def evaluate(self, context: EvaluationContext) -> EvaluationResult:
        by_group = group_pairs(context.preferences, self.config.by, self.name, keep_ties=True)
        distances: dict[str, float] = {}
        for group, pairs in by_group.items():
            chosen, rejected = implicit_pair_rewards(
                context, pairs, batch_size=self.config.batch_size, max_length=self.config.max_length
            )
            model = torch.sigmoid(chosen - rejected).tolist()
            shares = [_share(pair) for pair in pairs]
            per_pair = [bernoulli_js_distance(p, s) for p, s in zip(model, shares, strict=True)]
            distances[group] = sum(per_pair) / len(per_pair)
        metrics = summarise_groups(distances, "js_distance", lower_is_better=True)
        metrics["alignment"] = 1.0 - sum(distances.values()) / len(distances)
        return EvaluationResult(metrics)


@hookimpl
def prefcore_register_evaluators() -> list[type[Evaluator]]:
    return [DistributionalAlignment]

"""Judged win rate of the policy over the reference for each group, the worst group's, and the gap.

A policy can win for the population on average and lose for one of its groups. With a
``prefcore.groups.GroupJudge`` (a judge per group of one attribute; the ``demo_groups``
feedback gives one), each group g judges the pairs of its prompts in both orders:

    p = (judge_g(x, a, b) + 1 − judge_g(x, b, a)) / 2,     win_rate_g = mean of p

with a the policy's completion and b the reference's (position bias cancels, as in
``win_rate``). A prompt tagged with a group (``prefcore.groups.group_prefix``, a
group-conditioned policy) is judged by that group only; an untagged prompt by every group,
since everyone gets the same answer. Reported: ``win_rate/<group>``,
``worst_group_win_rate`` and ``win_rate_gap`` (best − worst group).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from prefcore import hookimpl
from prefcore.errors import ConfigError
from prefcore.evaluation import EvaluationContext
from prefcore.evaluation import EvaluationInputError
from prefcore.evaluation import EvaluationResult
from prefcore.evaluation import cached_completions
from prefcore.evaluation import require_prompts
from prefcore.group_evaluation import summarise_groups
from prefcore.groups import GroupJudge
from prefcore.groups import split_group_prefix
from prefcore.methods import Evaluator
from prefcore.methods import option

NAME = "group_win_rate"
HINT = (
    "Use a feedback source whose judge is a prefcore.groups.GroupJudge (e.g. demo_groups), or pass "
    "judge=GroupJudge(...) to EvaluationContext."
)


@dataclass(frozen=True)
class GroupWinRateConfig:
    batch_size: int = option(16, doc="prompts per generation batch")

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError("batch_size must be at least 1.", method=NAME, field="batch_size")


class GroupWinRate(Evaluator):
    """Win rate over the reference judged by each group (both orders), worst group and best − worst gap."""

    name = NAME
    config_cls = GroupWinRateConfig
    needs_judge: ClassVar[bool] = True

    def evaluate(self, context: EvaluationContext) -> EvaluationResult:
        judge = context.judge
        if not isinstance(judge, GroupJudge):
            raise EvaluationInputError(self.name, "a judge per group (a prefcore.groups.GroupJudge)", HINT)
        if context.reference is None:
            raise EvaluationInputError(self.name, "a reference model", "Keep the reference model for evaluation.")
        prompts = require_prompts(context, self.name)
        policy = cached_completions(context, prompts, role="policy", batch_size=self.config.batch_size)
        reference = cached_completions(context, prompts, role="reference", batch_size=self.config.batch_size)
        tags = [split_group_prefix(prompt)[0] for prompt in prompts]
        win_rates: dict[str, float] = {}
        counts: dict[str, int] = {}
        for group in judge.groups:
            group_judge = judge.for_group(group)
            scores = []
            for row in range(len(policy.texts)):
                prompt_index = row // policy.num_samples
                tag = tags[prompt_index]
                if tag is not None and tag[0] == judge.attribute and tag[1] != group:
                    continue
                prompt, a, b = prompts[prompt_index], policy.texts[row], reference.texts[row]
                scores.append((float(group_judge(prompt, a, b)) + 1.0 - float(group_judge(prompt, b, a))) / 2)
            if scores:
                win_rates[group] = sum(scores) / len(scores)
                counts[group] = len(scores)
        metrics = summarise_groups(win_rates, "win_rate")
        metrics.update({f"num_pairs/{group}": float(count) for group, count in counts.items()})
        return EvaluationResult(metrics)


@hookimpl
def prefcore_register_evaluators() -> list[type[Evaluator]]:
    return [GroupWinRate]

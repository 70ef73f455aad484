"""Judged win rate of the policy against the reference, with position bias controlled.

Pairwise judges, LLM judges above all, favour whichever answer they read first (Zheng
et al. 2023, "Judging LLM-as-a-Judge", https://arxiv.org/abs/2306.05685, section 3.3).
Each pair is therefore judged in both orders and the two verdicts are combined:

    p = (judge(x, a, b) + 1 − judge(x, b, a)) / 2

with x the prompt, a the policy's completion, b the reference's and ``judge(x, first,
second)`` the probability that ``first`` is better. A judge that always prefers the first
position gives p = 0.5 for every pair. ``disagreement`` says what to do when the two
orders disagree (one says win, the other tie or loss): ``average`` keeps p, ``tie``
scores the pair 0.5, ``drop`` leaves it out.

win_rate = mean of p over pairs (for hard 0/½/1 verdicts: wins + ½·ties, over pairs);
tie_rate = share of pairs with p = 0.5; position_consistency = share of pairs whose two
orders agree; first_position_preference = mean probability given to the first-shown
completion (0.5 = no position bias). The 95% interval is a percentile bootstrap over
prompts, so several samples of one prompt count as one cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar
from typing import Literal

from prefcore import hookimpl
from prefcore.errors import ConfigError
from prefcore.evaluation import TIE_TOLERANCE
from prefcore.evaluation import EvaluationContext
from prefcore.evaluation import EvaluationResult
from prefcore.evaluation import Verdict
from prefcore.evaluation import judge_against_reference
from prefcore.lazy import lazy_module
from prefcore.methods import Evaluator
from prefcore.methods import option

np = lazy_module("numpy")

Disagreement = Literal["average", "tie", "drop"]
DISAGREEMENTS: tuple[str, ...] = ("average", "tie", "drop")


@dataclass(frozen=True)
class WinRateConfig:
    disagreement: Disagreement = option(
        "average", doc="order-inconsistent verdicts: 'average' both orders, score as 'tie', or 'drop'"
    )
    bootstrap_samples: int = option(2000, doc="bootstrap resamples of prompts for the 95% interval")
    confidence: float = option(0.95, doc="coverage of the reported interval")
    batch_size: int = option(16, doc="prompts per generation batch")

    def __post_init__(self) -> None:
        if self.disagreement not in DISAGREEMENTS:
            raise ConfigError(
                f"disagreement must be one of {', '.join(DISAGREEMENTS)}, got {self.disagreement!r}.",
                method="win_rate",
                field="disagreement",
            )
        if self.bootstrap_samples < 1:
            raise ConfigError("bootstrap_samples must be at least 1.", method="win_rate", field="bootstrap_samples")
        if not 0.0 < self.confidence < 1.0:
            raise ConfigError("confidence must lie between 0 and 1.", method="win_rate", field="confidence")
        if self.batch_size < 1:
            raise ConfigError("batch_size must be at least 1.", method="win_rate", field="batch_size")


def pair_score(verdict: Verdict, disagreement: Disagreement) -> float | None:
    """The policy's score for one pair under the disagreement rule; None = dropped."""
    if verdict.consistent or disagreement == "average":
        return verdict.averaged
    return 0.5 if disagreement == "tie" else None


def bootstrap_interval(
    prompt_sums: np.ndarray, prompt_counts: np.ndarray, *, resamples: int, confidence: float, seed: int
) -> tuple[float, float]:
    """Percentile interval of the pooled mean, resampling whole prompts with replacement."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(prompt_sums), size=(resamples, len(prompt_sums)))
    means = prompt_sums[picks].sum(axis=1) / prompt_counts[picks].sum(axis=1)
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


class WinRate(Evaluator):
    """Judged win rate of policy over reference completions, judged in both orders."""

    name = "win_rate"
    config_cls = WinRateConfig
    needs_judge: ClassVar[bool] = True
    """A run that selects this evaluator must configure a judge; ``prefcore.judges.plan_judge`` checks it."""

    def evaluate(self, context: EvaluationContext) -> EvaluationResult:
        judged = judge_against_reference(
            context,
            self.name,
            batch_size=self.config.batch_size,
            reference_hint="Keep the reference model for evaluation, or use the 'reward_score' evaluator instead.",
        )
        num_samples = judged.policy.num_samples
        sums = np.zeros(len(judged.prompts))
        counts = np.zeros(len(judged.prompts))
        scores: list[float] = []
        for row, verdict in judged.verdicts.items():
            score = pair_score(verdict, self.config.disagreement)
            if score is None:
                continue
            scores.append(score)
            sums[row // num_samples] += score
            counts[row // num_samples] += 1
        all_verdicts = list(judged.verdicts.values())
        metrics = {
            "position_consistency": float(np.mean([verdict.consistent for verdict in all_verdicts])),
            "first_position_preference": float(
                np.mean([verdict.first_position_preference for verdict in all_verdicts])
            ),
            "num_prompts": float((counts > 0).sum()),
            "num_pairs": float(len(scores)),
            "num_dropped": float(len(all_verdicts) - len(scores)),
        }
        if not scores:  # every pair dropped as order-inconsistent: there is no win rate to report
            nan = float("nan")
            metrics.update(win_rate=nan, tie_rate=nan, win_rate_low=nan, win_rate_high=nan)
            return EvaluationResult(metrics)
        with_pairs = counts > 0
        low, high = bootstrap_interval(
            sums[with_pairs],
            counts[with_pairs],
            resamples=self.config.bootstrap_samples,
            confidence=self.config.confidence,
            seed=context.seed,
        )
        scores_array = np.asarray(scores)
        metrics.update(
            win_rate=float(scores_array.mean()),
            tie_rate=float((np.abs(scores_array - 0.5) <= TIE_TOLERANCE).mean()),
            win_rate_low=low,
            win_rate_high=high,
        )
        return EvaluationResult(metrics)


@hookimpl
def prefcore_register_evaluators() -> list[type[Evaluator]]:
    return [WinRate]

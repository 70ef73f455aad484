"""What several evaluators share: their inputs, one error, and position-controlled judging.

Not an evaluator itself (it registers nothing). Judge verdicts are cached in
``EvaluationContext.cache`` next to the completions, so ``win_rate`` and ``samples``
show the same verdict for the same pair and a costly judge is asked once per order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prefcore.engine.generation import GeneratedCompletions
from prefcore.engine.generation import prompts_key
from prefcore.errors import PrefcoreError
from prefcore.evaluation import EvaluationContext

JUDGE_HINT = (
    'Add a [judge] section to the run file (kind = "rule", "preference_model" or "llm"; see prefcore.judges), '
    "or pass judge= to EvaluationContext from Python."
)

TIE_TOLERANCE = 1e-9
"""Verdicts this close to 0.5 are ties (judges return floats)."""


class EvaluationInputError(PrefcoreError, ValueError):
    """An evaluator was asked to run without an input it cannot do without."""

    def __init__(self, evaluator: str, missing: str, hint: str) -> None:
        self.evaluator = evaluator
        self.missing = missing
        super().__init__(f"Evaluator {evaluator!r} needs {missing}, but the evaluation context has none. {hint}")


def evaluation_prompts(context: EvaluationContext) -> list[Any]:
    """The held-out prompts, or else the distinct prompts of the held-out preference records."""
    if context.prompts:
        return list(context.prompts)
    seen: dict[Any, None] = {}
    for record in context.preferences:
        prompt = getattr(record, "prompt", None)
        if prompt is not None:
            seen.setdefault(prompt, None)
    return list(seen)


def require_prompts(context: EvaluationContext, evaluator: str) -> list[Any]:
    prompts = evaluation_prompts(context)
    if not prompts:
        raise EvaluationInputError(
            evaluator, "held-out prompts", "Give the run an evaluation split (prompts or preference records)."
        )
    return prompts


def prompt_display(prompt: Any) -> str:
    """A prompt as one readable string: the text, or its chat turns as ``role: content``."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{message.role}: {message.content}" for message in prompt)


@dataclass(frozen=True)
class Verdict:
    """A judge's view of one policy/reference pair, asked in both orders.

    ``policy_first``: judge(x, policy, reference), the probability the policy is better
    when shown first. ``reference_first``: judge(x, reference, policy).
    """

    policy_first: float
    reference_first: float

    @property
    def policy_second_score(self) -> float:
        """The policy's win probability read from the reversed order."""
        return 1.0 - self.reference_first

    @property
    def averaged(self) -> float:
        """p = (judge(x, a, b) + 1 − judge(x, b, a)) / 2: the position bias cancels."""
        return (self.policy_first + self.policy_second_score) / 2

    @property
    def consistent(self) -> bool:
        """Whether both orders give the same verdict (win, tie or loss for the policy)."""
        return _side(self.policy_first) == _side(self.policy_second_score)

    @property
    def first_position_preference(self) -> float:
        """Mean probability given to whichever completion was shown first; 0.5 = unbiased."""
        return (self.policy_first + self.reference_first) / 2


def _side(probability: float) -> int:
    if abs(probability - 0.5) <= TIE_TOLERANCE:
        return 0
    return 1 if probability > 0.5 else -1


def _judge_value(value: Any, evaluator: str) -> float:
    probability = float(value)
    if not 0.0 <= probability <= 1.0:
        raise ValueError(
            f"Evaluator {evaluator!r}: the judge returned {probability!r}; a judge returns the probability "
            f"(0 to 1) that the first completion is better."
        )
    return probability


def judged_verdicts(
    context: EvaluationContext,
    prompts: Sequence[Any],
    policy: GeneratedCompletions,
    reference: GeneratedCompletions,
    rows: Sequence[int],
    *,
    evaluator: str,
) -> dict[int, Verdict]:
    """Verdicts for the completion ``rows``, asking the judge only about rows not yet judged."""
    if context.judge is None:
        raise EvaluationInputError(evaluator, "a judge", JUDGE_HINT)
    key = ("verdicts", prompts_key(prompts), policy.texts, reference.texts)
    cache: dict[int, Verdict] = context.cache.setdefault(key, {})
    for row in rows:
        if row in cache:
            continue
        prompt = prompts[row // policy.num_samples]
        policy_text, reference_text = policy.texts[row], reference.texts[row]
        cache[row] = Verdict(
            _judge_value(context.judge(prompt, policy_text, reference_text), evaluator),
            _judge_value(context.judge(prompt, reference_text, policy_text), evaluator),
        )
    return {row: cache[row] for row in rows}

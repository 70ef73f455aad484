"""What an evaluator receives and returns.

An evaluator gets the trained policy, the reference it started from, a held-out
dataset and whatever judges or scorers the run has; it returns metrics plus samples.
Judges and scorers are plain callables so that a rule, an LLM judge or a reward model
plug in the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any

Judge = Callable[[Any, str, str], float]
"""``judge(prompt, first, second)`` → probability that ``first`` is better (0.5 = tie)."""

Scorer = Callable[[Sequence[Any], Sequence[str]], Sequence[float]]
"""``scorer(prompts, completions)`` → one scalar score per completion, batched."""


@dataclass(frozen=True)
class GenerationSettings:
    """How evaluators sample completions; fixed per run so results are reproducible."""

    max_new_tokens: int = 24
    temperature: float = 0.7
    top_p: float = 1.0
    num_samples: int = 1
    seed: int = 0


@dataclass
class EvaluationContext:
    """Everything an evaluator may use; absent parts are None and evaluators say what they need.

    Attributes:
        policy: the trained causal LM (eval mode).
        reference: the model the policy started from, or None.
        tokenizer: the tokenizer both share.
        prompts: held-out prompts (text or message lists).
        preferences: held-out preference records (for accuracy metrics).
        judge: a pairwise judge (rule, LLM judge, reward model; a run file's ``[judge]``, see
            ``prefcore.judges``), or None. Evaluators that need one set ``needs_judge = True``.
        scorer: a batched scalar scorer (reward model), or None.
        generation: sampling settings.
        generation_prefix: text the usage objective wants before each prompt when generating.
        beta: the objective's β, for implicit-reward metrics.
        device: where the models live.
        seed: the seed of random draws (which samples are shown).
    """

    policy: Any
    tokenizer: Any
    reference: Any = None
    prompts: Sequence[Any] = ()
    preferences: Sequence[Any] = ()
    judge: Judge | None = None
    scorer: Scorer | None = None
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    generation_prefix: str = ""
    beta: float = 0.1
    device: str = "cpu"
    seed: int = 0
    cache: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluationResult:
    """Named scalar metrics plus example rows (dicts) for the report."""

    metrics: Mapping[str, float]
    samples: Sequence[Mapping[str, Any]] = ()

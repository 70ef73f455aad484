"""The scoring API every reward network shares, and the rule that turns heads into one score.

A network scores texts in batches without gradients (``score``: ``[N, A]``, one column per
head) and offers a ``prefcore.evaluation.Scorer`` (``scorer``: one number per completion).
``RewardNetworkBase`` implements both once, on top of the one method a network provides,
``sequence_scores`` of a padded batch; texts are tokenised by
``prefcore.engine.sequences``, so a score is computed on exactly the tokens training saw.
``ScoringRule`` says how the heads combine, and travels with a saved network.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import asdict
from dataclasses import dataclass
from typing import Any
from typing import Literal

import torch
from torch import nn

from prefcore.engine.sequences import PaddedSequences
from prefcore.engine.sequences import TokenizedSequence
from prefcore.engine.sequences import pad_sequences
from prefcore.engine.sequences import tokenize_sequence
from prefcore.errors import ConfigError
from prefcore.evaluation import Scorer

__all__ = [
    "STEP_AGGREGATES",
    "RewardNetworkBase",
    "RewardOutput",
    "ScoringRule",
    "StepAggregate",
    "resolve_aspect_weights",
]

StepAggregate = Literal["min", "product"]
STEP_AGGREGATES: tuple[str, ...] = ("min", "product")


@dataclass(frozen=True)
class ScoringRule:
    """How ``scorer()`` turns a network's heads into one score per completion.

    Attributes:
        aspect_weights: one weight per head for the weighted sum; None = equal weights.
        step_aggregate: None scores the whole completion (the sequence reward); ``"min"`` or
            ``"product"`` scores a process reward model: the completion is cut into steps at
            ``step_separator``, each step gets P(correct) = σ(reward at its last token), and the
            score is the smallest step probability or their product (Lightman et al. 2023).
        step_separator: the text between reasoning steps when scoring a process reward model.
    """

    aspect_weights: tuple[float, ...] | None = None
    step_aggregate: StepAggregate | None = None
    step_separator: str = "\n"

    def __post_init__(self) -> None:
        if self.aspect_weights is not None:
            weights = tuple(float(weight) for weight in self.aspect_weights)
            if not weights or not all(math.isfinite(weight) for weight in weights):
                raise ConfigError(f"aspect_weights must be finite numbers, got {self.aspect_weights!r}.")
            object.__setattr__(self, "aspect_weights", weights)
        if self.step_aggregate is not None and self.step_aggregate not in STEP_AGGREGATES:
            raise ConfigError(
                f"step_aggregate must be one of {', '.join(STEP_AGGREGATES)} or None, got {self.step_aggregate!r}."
            )
        if not self.step_separator:
            raise ConfigError("step_separator must be a non-empty string.")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["aspect_weights"] = None if self.aspect_weights is None else list(self.aspect_weights)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ScoringRule:
        weights = data.get("aspect_weights")
        return cls(
            aspect_weights=None if weights is None else tuple(weights),
            step_aggregate=data.get("step_aggregate"),
            step_separator=data.get("step_separator", "\n"),
        )


def resolve_aspect_weights(
    aspects: Sequence[str], aspect_weights: Mapping[str, float] | Sequence[float] | None, default: ScoringRule
) -> torch.Tensor:
    """``[A]`` head weights: given by aspect name or position, else the rule's, else equal."""
    count = len(aspects)
    if aspect_weights is None:
        if default.aspect_weights is None:
            return torch.full((count,), 1.0 / count)
        aspect_weights = default.aspect_weights
    if isinstance(aspect_weights, Mapping):
        unknown = sorted(set(aspect_weights) - set(aspects))
        if unknown:
            raise ConfigError(f"aspect_weights names unknown aspect {unknown[0]!r}; the heads are {list(aspects)}.")
        values = [float(aspect_weights.get(name, 0.0)) for name in aspects]
    else:
        values = [float(weight) for weight in aspect_weights]
        if len(values) != count:
            raise ConfigError(f"aspect_weights has {len(values)} entries for {count} heads {list(aspects)}.")
    if not all(math.isfinite(value) for value in values):
        raise ConfigError(f"aspect_weights must be finite numbers, got {values}.")
    return torch.tensor(values, dtype=torch.float32)


@dataclass(frozen=True)
class RewardOutput:
    """``rewards`` ``[S, A]`` float32 at each sequence's last token; ``token_rewards`` ``[S, L, A]`` or None."""

    rewards: torch.Tensor
    token_rewards: torch.Tensor | None = None


class RewardNetworkBase(nn.Module, abc.ABC):
    """Batched, gradient-free scoring of prompt/completion texts, shared by every reward network."""

    tokenizer: Any
    aspects: tuple[str, ...]
    max_length: int
    prefix: str
    scoring: ScoringRule

    @property
    def num_heads(self) -> int:
        return len(self.aspects)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def tokenize(self, prompts: Sequence[Any], completions: Sequence[Any]) -> list[TokenizedSequence]:
        """Prompt + completion ids exactly as training tokenises them (over-long prompts cut from the left).

        An empty completion is scored as the prompt followed by the end-of-sequence token.
        """
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts for {len(completions)} completions; give one per completion.")
        return [
            tokenize_sequence(
                self.tokenizer,
                prompt,
                completion,
                max_length=self.max_length,
                prefix=self.prefix,
                truncation="truncate",
                where=f"completion {index}",
                allow_empty=True,  # a sampled reply may stop at once; it is scored, not trained on
            )
            for index, (prompt, completion) in enumerate(zip(prompts, completions, strict=True))
        ]

    @abc.abstractmethod
    def sequence_scores(self, sequences: PaddedSequences) -> torch.Tensor:
        """``[S, A]`` rewards of a padded batch (called without gradients)."""

    def score(self, prompts: Sequence[Any], completions: Sequence[Any], *, batch_size: int = 32) -> torch.Tensor:
        """``[N, A]`` float32 rewards on the CPU, one row per completion, computed without gradients.

        Sequences are batched by length so that each batch pads little; the result keeps the input order.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        sequences = self.tokenize(prompts, completions)
        order = sorted(range(len(sequences)), key=lambda index: sequences[index].length)
        scores = torch.zeros(len(sequences), self.num_heads)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                for start in range(0, len(order), batch_size):
                    rows = order[start : start + batch_size]
                    padded = pad_sequences([sequences[row] for row in rows], self.tokenizer.pad_token_id)
                    scores[rows] = self.sequence_scores(padded.to(self.device)).float().cpu()
        finally:
            self.train(was_training)
        return scores

    def scorer(self, aspect_weights: Mapping[str, float] | Sequence[float] | None = None) -> Scorer:
        """A ``prefcore.evaluation.Scorer``: the weighted sum of the heads of each completion.

        ``aspect_weights`` by aspect name or head position; None uses the network's scoring
        rule (set from the objective it was trained with), or equal weights.
        """
        weights = resolve_aspect_weights(self.aspects, aspect_weights, self.scoring)

        def score(prompts: Sequence[Any], completions: Sequence[str]) -> list[float]:
            return (self.score(prompts, completions) @ weights).tolist()

        return score

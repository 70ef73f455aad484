"""Reward-conditioned SFT (SteerLM style): imitate every answer, conditioned on its quality.

Dong et al. 2023, "SteerLM: Attribute Conditioned SFT as an (User-Steerable) Alternative
to RLHF", https://arxiv.org/abs/2310.05344; also Hu et al. 2023, "Aligning Language Models
with Offline Learning from Human Feedback" (reward-conditioned training),
https://arxiv.org/abs/2308.12050.

Each rated completion y of prompt x becomes one SFT example whose prompt starts with a
condition token naming its quality level q(y):

    prompt'    = "<quality:{q(y)}> " + x
    completion = y
    loss       = −Σ_{y ∈ B} Σ_t log π(y_t | prompt', y_<t) / Σ_{y ∈ B} |y|    (SFT)

q(y) is one of ``levels`` (worst first): for scores, the bin of the score on the record's
scale (one aspect, or the mean over aspects); for a ranking, the rank's position between
the best and the worst rank; for a pair, the chosen gets the best level and the rejected
the worst (ties are left out); for a binary label, best or worst; for a critique with a
revision, the revision best and the original worst. B: the batch; π: the policy. Every
answer is learned, good and bad, and at generation the best condition
(``generation_prefix``, e.g. "<quality:good> ") asks for the good kind. For conversations
the condition is a leading system message, as the engine puts it at generation.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prefcore import hookimpl
from prefcore.data import BinaryLabel
from prefcore.data import Critique
from prefcore.data import FeedbackRecord
from prefcore.data import PairwiseComparison
from prefcore.data import Ranking
from prefcore.data import Scores
from prefcore.data import Text
from prefcore.methods import UsageObjective
from prefcore.methods import option
from prefcore.objectives import check_template
from prefcore.objectives import conditioned_prompt
from prefcore.plugins.usage.sft import SFT


@dataclass(frozen=True)
class RewardConditionedSFTConfig:
    levels: tuple[str, ...] = option(("bad", "ok", "good"), doc="quality levels, worst first")
    condition_template: str = option("<quality:{level}> ", doc="the condition text before the prompt, with {level}")
    aspect: str | None = option(None, doc="the scored aspect that sets the level; None = the mean of all aspects")

    def __post_init__(self) -> None:
        levels = tuple(self.levels)
        named = all(isinstance(level, str) and level for level in levels)
        if len(levels) < 2 or len(set(levels)) != len(levels) or not named:
            raise ValueError(
                f"levels must be at least two distinct non-empty strings for objective 'reward_conditioned_sft'. "
                f"Got {self.levels!r}."
            )
        object.__setattr__(self, "levels", levels)
        check_template("reward_conditioned_sft", "condition_template", self.condition_template, "level")
        if self.aspect is not None and not self.aspect:
            raise ValueError(
                f"aspect must be None or a non-empty name for objective 'reward_conditioned_sft'. Got {self.aspect!r}."
            )


class RewardConditionedSFT(SFT):
    """Reward-conditioned SFT: every answer imitated under a condition token naming its quality."""

    name = "reward_conditioned_sft"
    config_cls = RewardConditionedSFTConfig
    data_formats = ("sft",)
    needs_reference = False

    def condition(self, level: int) -> str:
        """The condition text of level index ``level`` (0 = worst)."""
        return self.config.condition_template.format(level=self.config.levels[level])

    def generation_prefix(self) -> str:
        return self.condition(len(self.config.levels) - 1)

    def transform_records(self, records: list[Any]) -> list[Any]:
        """One desirable ``BinaryLabel`` per rated completion, its prompt prefixed with its condition."""
        conditioned = []
        for record in records:
            for item in record.items if isinstance(record, FeedbackRecord) else (record,):
                for completion, level in self._levels(item):
                    conditioned.append(
                        BinaryLabel(
                            conditioned_prompt(item.prompt, self.condition(level)),
                            completion,
                            True,
                            **item.annotations(),
                        )
                    )
        return conditioned

    def _levels(self, item: Any) -> Iterator[tuple[Text, int]]:
        best = len(self.config.levels) - 1
        if isinstance(item, PairwiseComparison):
            if not item.tie:
                yield item.chosen, best
                yield item.rejected, 0
        elif isinstance(item, BinaryLabel):
            yield item.completion, best if item.label else 0
        elif isinstance(item, Critique):
            if item.revision is not None:
                yield item.revision, best
                yield item.completion, 0
        elif isinstance(item, Ranking):
            top, bottom = min(item.ranks), max(item.ranks)
            for completion, rank in zip(item.completions, item.ranks, strict=True):
                position = 1.0 if top == bottom else (bottom - rank) / (bottom - top)
                yield completion, round(position * best)
        elif isinstance(item, Scores):
            low, high = item.scale
            for completion, row in zip(item.completions, item.scores, strict=True):
                score = self._score(row, item)
                yield completion, min(math.floor((score - low) / (high - low) * len(self.config.levels)), best)

    def _score(self, row: Any, item: Scores) -> float:
        if self.config.aspect is None:
            return sum(row.values()) / len(row)
        if self.config.aspect not in row:
            raise ValueError(
                f"objective 'reward_conditioned_sft' conditions on aspect {self.config.aspect!r}, but a scores "
                f"record rates {', '.join(sorted(row))}" + (f" ({item.provenance})" if item.provenance else "") + "."
            )
        return row[self.config.aspect]


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [RewardConditionedSFT]

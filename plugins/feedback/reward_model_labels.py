"""Model feedback from a reward model: completions labelled by their scores.

A trained reward model stands in for the annotator and labels as many completions as
needed, as in iterative / online DPO (Xiong et al. 2024, "Iterative Preference Learning
from Human Feedback", https://arxiv.org/abs/2312.11456; Dong et al. 2024, "RLHF Workflow",
https://arxiv.org/abs/2405.07863), which score several samples per prompt and keep the best
against the worst. For two completions with scores s₁, s₂ and Δ = s₁ − s₂:

    chosen = the higher-scored one,  margin = |Δ|,  probability = σ(|Δ| / τ)
    |Δ| ≤ tie_threshold  →  a tie (kept with probability 0.5, or dropped)

σ is the logistic function and τ (``temperature``) converts score gaps into the
Bradley-Terry probability that the reward model's preference is right. ``pairs = "all"``
compares every two completions of a prompt, ``"best_worst"`` only the highest against the
lowest. ``output = "ranking"`` gives one ranking per prompt instead: completions sorted by
score, a new rank starting wherever the gap to the next higher score exceeds
``tie_threshold``.

The scorer is a ``prefcore.evaluation.Scorer`` (``scorer(prompts, completions) -> scores``).
From a run file it is the reward model in the folder ``reward_model``, loaded with
``prefcore.engine.reward_model.RewardModel.load(folder).scorer()``; from Python any scorer
can be passed as ``RewardModelLabels(config, scorer=...)``. The same scorer is the source's
``judge()``: P(first better) = σ((s_first − s_second) / τ).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from typing import Literal

from prefcore import hookimpl
from prefcore.annotate import Item
from prefcore.annotate import read_items
from prefcore.data import PairwiseComparison
from prefcore.data import Ranking
from prefcore.errors import ConfigError
from prefcore.evaluation import Scorer
from prefcore.methods import FeedbackSource
from prefcore.methods import option

NAME = "reward_model_labels"
OUTPUTS = ("pairs", "ranking")
PAIRINGS = ("all", "best_worst")
TIES = ("keep", "drop")


def _check_choice(value: str, choices: tuple[str, ...], field: str) -> None:
    if value not in choices:
        raise ConfigError(f"{field} must be one of {', '.join(choices)}, got {value!r}.", method=NAME, field=field)


@dataclass(frozen=True)
class RewardModelLabelsConfig:
    path: Path = option(doc="JSONL of {prompt, completions} rows (or records) whose completions are labelled")
    reward_model: Path | None = option(None, doc="reward-model folder (RewardModel.load); or pass scorer= in Python")
    output: Literal["pairs", "ranking"] = option("pairs", doc="'pairs': pairwise records; 'ranking': one per prompt")
    pairs: Literal["all", "best_worst"] = option("all", doc="which pairs: every two completions, or best vs worst")
    temperature: float = option(1.0, doc="τ of probability = σ(score gap / τ)")
    tie_threshold: float = option(0.0, doc="score gaps up to this are ties")
    ties: Literal["keep", "drop"] = option("keep", doc="tied pairs: keep as tie records, or drop them")
    batch_size: int = option(16, doc="completions per scorer call")
    device: str = option("cpu", doc="device the reward model is loaded on")

    def __post_init__(self) -> None:
        _check_choice(self.output, OUTPUTS, "output")
        _check_choice(self.pairs, PAIRINGS, "pairs")
        _check_choice(self.ties, TIES, "ties")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}.", method=NAME, field="temperature")
        if self.tie_threshold < 0:
            raise ConfigError(
                f"tie_threshold must be 0 or more, got {self.tie_threshold}.", method=NAME, field="tie_threshold"
            )
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be 1 or more, got {self.batch_size}.", method=NAME, field="batch_size")


def sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-value)) if value >= 0 else math.exp(value) / (1.0 + math.exp(value))


def scored_pairs(item: Item, scores: Sequence[float], config: RewardModelLabelsConfig) -> Iterator[PairwiseComparison]:
    """The pairs of one item under the configured pairing, tie and probability rules."""
    indices = range(len(item.completions))
    if config.pairs == "best_worst":
        best = max(indices, key=lambda i: scores[i])
        worst = min(indices, key=lambda i: scores[i])
        candidates = [(best, worst)] if best != worst else []
    else:
        candidates = list(itertools.combinations(indices, 2))
    for first, second in candidates:
        gap = scores[first] - scores[second]
        chosen, rejected = (first, second) if gap >= 0 else (second, first)
        metadata = {"scores": [scores[chosen], scores[rejected]]}
        common: dict[str, Any] = {
            "source": "reward_model",
            "group_id": item.id,
            "metadata": metadata,
            "provenance": item.provenance,
        }
        if abs(gap) <= config.tie_threshold:
            if config.ties == "keep":
                yield PairwiseComparison(
                    item.prompt,
                    item.completions[chosen],
                    item.completions[rejected],
                    tie=True,
                    probability=0.5,
                    **common,
                )
            continue
        yield PairwiseComparison(
            item.prompt,
            item.completions[chosen],
            item.completions[rejected],
            margin=abs(gap),
            probability=sigmoid(abs(gap) / config.temperature),
            **common,
        )


def score_ranks(scores: Sequence[float], tie_threshold: float) -> tuple[int, ...]:
    """Dense ranks (1 = best); a new rank starts where the gap to the next higher score exceeds the threshold."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    ranks = [0] * len(scores)
    rank = 1
    for position, index in enumerate(order):
        if position and scores[order[position - 1]] - scores[index] > tie_threshold:
            rank += 1
        ranks[index] = rank
    return tuple(ranks)


def load_reward_model_scorer(folder: Path, device: str) -> Scorer:
    """The scorer of a saved reward model (imported here: the engine module loads torch models)."""
    from prefcore.engine.reward_model import RewardModel

    return RewardModel.load(folder, device=device).scorer()


class RewardModelLabels(FeedbackSource):
    """Model feedback: completions labelled by a reward model's scores (pairs or rankings, soft labels)."""

    name = NAME
    config_cls = RewardModelLabelsConfig

    def __init__(self, config: RewardModelLabelsConfig, *, scorer: Scorer | None = None) -> None:
        """``scorer``: any ``Scorer`` to label with instead of loading ``config.reward_model``."""
        super().__init__(config)
        self._scorer = scorer

    def scorer(self) -> Scorer:
        if self._scorer is None:
            if self.config.reward_model is None:
                raise ConfigError(
                    "feedback source 'reward_model_labels' needs a scorer: set reward_model = \"<folder>\" "
                    "(a saved reward model), or pass scorer= from Python.",
                    method=NAME,
                    field="reward_model",
                )
            self._scorer = load_reward_model_scorer(self.config.reward_model, self.config.device)
        return self._scorer

    def score(self, items: Sequence[Item]) -> list[list[float]]:
        """Scores per item, one per completion, asking the scorer ``batch_size`` completions at a time."""
        flat = [(item.prompt, completion) for item in items for completion in item.completions]
        scores: list[float] = []
        scorer = self.scorer()
        for start in range(0, len(flat), self.config.batch_size):
            batch = flat[start : start + self.config.batch_size]
            result = [float(score) for score in scorer([p for p, _ in batch], [c for _, c in batch])]
            if len(result) != len(batch):
                raise ValueError(f"the scorer returned {len(result)} scores for {len(batch)} completions.")
            scores += result
        remaining = iter(scores)
        return [list(itertools.islice(remaining, len(item.completions))) for item in items]

    def records(self) -> Iterator[Any]:
        items = read_items(self.config.path, min_completions=2, purpose="labelling by a reward model")
        for item, scores in zip(items, self.score(items), strict=True):
            if self.config.output == "ranking":
                ranks = score_ranks(scores, self.config.tie_threshold)
                yield Ranking(
                    item.prompt,
                    item.completions,
                    ranks,
                    source="reward_model",
                    group_id=item.id,
                    metadata={"scores": scores},
                    provenance=item.provenance,
                )
            else:
                yield from scored_pairs(item, scores, self.config)

    def judge(self) -> Callable[[Any, str, str], float]:
        scorer, temperature = self.scorer(), self.config.temperature

        def judge(prompt: Any, first: str, second: str) -> float:
            first_score, second_score = (float(s) for s in scorer([prompt, prompt], [first, second]))
            return sigmoid((first_score - second_score) / temperature)

        return judge


@hookimpl
def prefcore_register_feedback() -> list[type[FeedbackSource]]:
    return [RewardModelLabels]

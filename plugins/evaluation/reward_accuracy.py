"""Reward-model evaluation on held-out pairs: accuracy by category, calibration, agreement with gold labels.

RewardBench (Lambert et al. 2024, https://arxiv.org/abs/2403.13787) scores a reward model r
by how often it ranks the chosen completion above the rejected one, strictly:

    correct_i = [r(x_i, chosen_i) > r(x_i, rejected_i)]        (equal scores count as wrong)
    accuracy  = mean_i correct_i,  and the same per category (``metadata[category_key]``, else ``aspect``)

Calibration reads the Bradley-Terry probability p_i = σ(scale · (r_c − r_r)) as the model's
confidence that the chosen completion is better. Folded to the predicted side,
confidence_i = max(p_i, 1 − p_i), right when the predicted side is the labelled one (p_i > ½);
with B equal-width bins over [½, 1]:

    ECE   = Σ_b (n_b / N) · |accuracy_b − confidence_b|
    Brier = mean_i (1 − p_i)²

Each bin's confidence, accuracy and count is reported (``reliability/<b>/...``), the data of
a reliability plot. Where a pair's true order is known independently of its label
(``metadata[gold_key]``: "chosen"/1/true, "rejected"/0/false; "tie"/0.5 skipped; with
``judge_gold``, else the run's judge, e.g. the demo's rule: judge(x, chosen, rejected) > ½), two more
numbers: ``gold_agreement``, how often the model ranks the gold-better completion strictly
higher, and ``label_gold_agreement``, how often the label itself agrees with gold (label noise).
Pairs labelled as ties carry no order and are skipped (``num_skipped_ties``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prefcore import hookimpl
from prefcore.errors import ConfigError
from prefcore.evaluation import EvaluationContext
from prefcore.evaluation import EvaluationInputError
from prefcore.evaluation import EvaluationResult
from prefcore.evaluation import Scorer
from prefcore.evaluation import batched_scores
from prefcore.evaluation import held_out_pairs
from prefcore.lazy import lazy_module
from prefcore.methods import Evaluator
from prefcore.methods import option

np = lazy_module("numpy")

GOLD_CHOSEN = ("chosen", 1, 1.0, True)
GOLD_REJECTED = ("rejected", 0, 0.0, False)


@dataclass(frozen=True)
class RewardAccuracyConfig:
    category_key: str = option("category", doc="metadata key naming each pair's category (else its aspect)")
    gold_key: str = option("gold", doc="metadata key of the known true order: 'chosen' or 'rejected'")
    judge_gold: bool = option(False, doc="where no record says, the run's judge gives the gold order (a rule)")
    bins: int = option(10, doc="equal-width confidence bins over [0.5, 1] for ECE and the reliability data")
    scale: float = option(1.0, doc="p = sigmoid(scale * (r_chosen - r_rejected)), the calibrated confidence")
    batch_size: int = option(16, doc="completions per scorer call")

    def __post_init__(self) -> None:
        for name in ("bins", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1.", method="reward_accuracy", field=name)
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ConfigError("scale must be a finite number > 0.", method="reward_accuracy", field="scale")


def expected_calibration_error(probabilities: Sequence[float], bins: int) -> tuple[float, list[dict[str, float]]]:
    """ECE of chosen-side probabilities p_i (the label is always "chosen"), and each bin's data.

    Confidence is max(p, 1 − p) and a prediction is right when p > ½; bins split [½, 1] evenly,
    the last one closed.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    confidence = np.maximum(p, 1.0 - p)
    correct = (p > 0.5).astype(np.float64)
    index = np.minimum(((confidence - 0.5) * 2 * bins).astype(int), bins - 1)
    ece, table = 0.0, []
    for b in range(bins):
        members = index == b
        count = int(members.sum())
        if count:
            gap = abs(correct[members].mean() - confidence[members].mean())
            ece += count / len(p) * gap
        table.append(
            {
                "low": 0.5 + b / (2 * bins),
                "high": 0.5 + (b + 1) / (2 * bins),
                "confidence": float(confidence[members].mean()) if count else float("nan"),
                "accuracy": float(correct[members].mean()) if count else float("nan"),
                "count": float(count),
            }
        )
    return float(ece), table


def _gold(value: Any) -> int | None:
    """1: chosen is truly better, 0: rejected is, None: unknown or a tie."""
    if isinstance(value, str):
        value = value.lower()
    if value in GOLD_CHOSEN:
        return 1
    if value in GOLD_REJECTED:
        return 0
    return None


class RewardAccuracy(Evaluator):
    """Strict held-out pair accuracy of the run's reward model, by category, with calibration and gold agreement."""

    name = "reward_accuracy"
    config_cls = RewardAccuracyConfig

    def scores(self, scorer: Scorer, prompts: Sequence[Any], completions: Sequence[Any]) -> np.ndarray:
        values = batched_scores(scorer, prompts, completions, batch_size=self.config.batch_size, evaluator=self.name)
        return np.asarray(values, dtype=np.float64)

    def evaluate(self, context: EvaluationContext) -> EvaluationResult:
        if context.scorer is None:
            raise EvaluationInputError(
                self.name, "a scorer", "Configure a reward model ([preference_model]) or pass scorer= from Python."
            )
        pairs, skipped = held_out_pairs(context, self.name)
        metrics: dict[str, float] = {"num_pairs": float(len(pairs)), "num_skipped_ties": float(skipped)}
        if not pairs:
            metrics["accuracy"] = float("nan")
            return EvaluationResult(metrics)
        prompts = [pair.prompt for pair in pairs]
        chosen = self.scores(context.scorer, prompts, [pair.chosen for pair in pairs])
        rejected = self.scores(context.scorer, prompts, [pair.rejected for pair in pairs])
        margins = chosen - rejected
        correct = margins > 0
        metrics.update(accuracy=float(correct.mean()), tie_rate=float((margins == 0).mean()))
        categories = [pair.metadata.get(self.config.category_key, pair.aspect) for pair in pairs]
        for category in sorted({str(c) for c in categories if c is not None}):
            members = np.array([str(c) == category for c in categories])
            metrics[f"accuracy/{category}"] = float(correct[members].mean())
            metrics[f"num_pairs/{category}"] = float(members.sum())
        probabilities = 1.0 / (1.0 + np.exp(-self.config.scale * margins))
        ece, table = expected_calibration_error(probabilities, self.config.bins)
        metrics.update(ece=ece, brier=float(((1.0 - probabilities) ** 2).mean()))
        for b, row in enumerate(table):
            for key in ("confidence", "accuracy", "count"):
                metrics[f"reliability/{b}/{key}"] = row[key]
        gold = [_gold(pair.metadata.get(self.config.gold_key)) for pair in pairs]
        if self.config.judge_gold:
            if context.judge is None:
                raise EvaluationInputError(self.name, "a judge", "judge_gold = true reads the gold order from [judge].")
            for index, pair in enumerate(pairs):
                if gold[index] is None:
                    verdict = float(context.judge(pair.prompt, pair.chosen, pair.rejected))
                    gold[index] = None if verdict == 0.5 else int(verdict > 0.5)
        known = [i for i, g in enumerate(gold) if g is not None]
        metrics["num_gold"] = float(len(known))
        if known:
            metrics["gold_agreement"] = float(
                np.mean([(margins[i] > 0) if gold[i] == 1 else (margins[i] < 0) for i in known])
            )
            metrics["label_gold_agreement"] = float(np.mean([gold[i] == 1 for i in known]))
        return EvaluationResult(metrics)


@hookimpl
def prefcore_register_evaluators() -> list[type[Evaluator]]:
    return [RewardAccuracy]

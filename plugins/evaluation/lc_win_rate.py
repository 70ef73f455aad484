"""Judged win rate with length control, and the judge's own position and length bias.

Judges prefer longer answers, so a policy can win by saying more (Dubois et al. 2024,
"Length-Controlled AlpacaEval", https://arxiv.org/abs/2404.04475). Each pair is judged in
both orders, as ``win_rate`` does, giving p_i = (judge(x, a, b) + 1 − judge(x, b, a)) / 2, the
probability that the policy's completion a beats the reference's b. A logistic regression
with soft labels explains p_i by the length difference:

    logit P(policy wins on i) = θ + φ · tanh(Δ_i / sd(Δ)),     Δ_i = len(a_i) − len(b_i) in characters

fitted by Newton's method on Σ_i [p_i log σ_i + (1 − p_i) log(1 − σ_i)] − λ/2 (θ² + φ²)
(λ = ``regularization`` keeps θ finite when every pair is won). The length-controlled win
rate is the prediction at zero length difference, ``lc_win_rate = σ(θ)``, as AlpacaEval's
``length_controlled_v1`` reports it; this version has no per-instruction difficulty term
and no "gamed" baselines, so with few pairs it is a rougher fit than theirs.

The judge's biases, from its verdicts in both orders (2 per pair):
``first_position_preference`` = mean probability given to the completion shown first (0.5 =
none); ``position_consistency`` = share of pairs whose two orders agree; ``longer_preference``
= mean probability given to the longer completion, over pairs of unequal length (0.5 = none;
it mixes length bias with any real quality gap, which ``length_coefficient`` φ also absorbs).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from prefcore import hookimpl
from prefcore.errors import ConfigError
from prefcore.evaluation import EvaluationContext
from prefcore.evaluation import EvaluationResult
from prefcore.evaluation import Verdict
from prefcore.evaluation import judge_against_reference
from prefcore.lazy import lazy_module
from prefcore.methods import Evaluator
from prefcore.methods import option

np = lazy_module("numpy")
logger = logging.getLogger("prefcore.evaluation")

__all__ = ["LengthControlledWinRate", "LengthFit", "fit_length_control", "length_bias"]


@dataclass(frozen=True)
class LengthControlledWinRateConfig:
    regularization: float = option(0.01, doc="L2 penalty λ on θ and φ (keeps the fit finite when all pairs are won)")
    warn_gap: float = option(0.1, doc="log a warning when |lc_win_rate - win_rate| exceeds this (a suspect fit)")
    batch_size: int = option(16, doc="prompts per generation batch")

    def __post_init__(self) -> None:
        if not (math.isfinite(self.regularization) and self.regularization >= 0):
            raise ConfigError(
                "regularization must be a finite number >= 0.", method="lc_win_rate", field="regularization"
            )
        if not 0 < self.warn_gap <= 1:
            raise ConfigError("warn_gap must be in (0, 1].", method="lc_win_rate", field="warn_gap")
        if self.batch_size < 1:
            raise ConfigError("batch_size must be at least 1.", method="lc_win_rate", field="batch_size")


@dataclass(frozen=True)
class LengthFit:
    """θ, φ and the scale sd(Δ) of ``logit P = θ + φ tanh(Δ / sd)``."""

    theta: float
    phi: float
    scale: float

    @property
    def lc_win_rate(self) -> float:
        """σ(θ): the predicted win probability at zero length difference."""
        return 1.0 / (1.0 + math.exp(-self.theta))


def fit_length_control(
    scores: Sequence[float], length_differences: Sequence[float], *, regularization: float = 0.01
) -> LengthFit:
    """Newton's method on the penalised soft-label log-likelihood of ``logit P = θ + φ tanh(Δ / sd(Δ))``."""
    p = np.asarray(scores, dtype=np.float64)
    delta = np.asarray(length_differences, dtype=np.float64)
    if p.shape != delta.shape or p.size == 0:
        raise ValueError(f"need one length difference per score; got {p.size} scores and {delta.size} differences.")
    scale = float(delta.std())
    z = np.tanh(delta / scale) if scale > 0 else np.zeros_like(delta)
    features = np.stack([np.ones_like(z), z], axis=1)
    weights = np.zeros(2)
    penalty = regularization * np.eye(2)
    for _ in range(100):
        probability = 1.0 / (1.0 + np.exp(-(features @ weights)))
        gradient = features.T @ (p - probability) - regularization * weights
        hessian = (features * (probability * (1 - probability))[:, None]).T @ features + penalty
        if regularization == 0:
            hessian = hessian + 1e-12 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        weights = weights + step
        if np.abs(step).max() < 1e-10:
            break
    return LengthFit(float(weights[0]), float(weights[1]), scale)


def length_bias(verdicts: Sequence[Verdict], policy_lengths: Sequence[int], reference_lengths: Sequence[int]) -> float:
    """Mean probability the judge gives the longer completion, both orders, unequal lengths only (NaN if none)."""
    given: list[float] = []
    for verdict, policy_length, reference_length in zip(verdicts, policy_lengths, reference_lengths, strict=True):
        if policy_length == reference_length:
            continue
        policy_longer = policy_length > reference_length
        for policy_score in (verdict.policy_first, verdict.policy_second_score):
            given.append(policy_score if policy_longer else 1.0 - policy_score)
    return float(np.mean(given)) if given else float("nan")


class LengthControlledWinRate(Evaluator):
    """Win rate at zero length difference (a logistic fit on the length gap), and the judge's biases."""

    name = "lc_win_rate"
    config_cls = LengthControlledWinRateConfig
    needs_judge: ClassVar[bool] = True

    def evaluate(self, context: EvaluationContext) -> EvaluationResult:
        judged = judge_against_reference(
            context,
            self.name,
            batch_size=self.config.batch_size,
            reference_hint="Keep the reference model for evaluation to judge against it.",
        )
        verdicts = list(judged.verdicts.values())
        policy_lengths = [len(text) for text in judged.policy.texts]
        reference_lengths = [len(text) for text in judged.reference.texts]
        scores = [verdict.averaged for verdict in verdicts]
        differences = [a - b for a, b in zip(policy_lengths, reference_lengths, strict=True)]
        fit = fit_length_control(scores, differences, regularization=self.config.regularization)
        raw = float(np.mean(scores))
        if abs(fit.lc_win_rate - raw) > self.config.warn_gap:
            logger.warning(
                "lc_win_rate: the length-controlled win rate %.3f is %.3f from the raw %.3f; length explains much of "
                "the judge's preference, or the fit on %d pairs is poor.",
                fit.lc_win_rate,
                abs(fit.lc_win_rate - raw),
                raw,
                len(scores),
            )
        return EvaluationResult(
            {
                "win_rate": raw,
                "lc_win_rate": fit.lc_win_rate,
                "length_coefficient": fit.phi,
                "length_scale": fit.scale,
                "mean_length_difference": float(np.mean(differences)),
                "longer_preference": length_bias(verdicts, policy_lengths, reference_lengths),
                "first_position_preference": float(np.mean([v.first_position_preference for v in verdicts])),
                "position_consistency": float(np.mean([v.consistent for v in verdicts])),
                "num_pairs": float(len(scores)),
            }
        )


@hookimpl
def prefcore_register_evaluators() -> list[type[Evaluator]]:
    return [LengthControlledWinRate]

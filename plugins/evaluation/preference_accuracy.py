"""Held-out preference accuracy of the policy's implicit reward.

A policy trained by DPO and its relatives defines a reward (Rafailov et al. 2023,
https://arxiv.org/abs/2305.18290, section 5):

    r(x, y) = β · (log π(y | x) − log π_ref(y | x))

with log π the summed log-probability of the completion tokens, π_ref the reference and
β ``context.beta``: the β the run's objective declares (``implicit_reward_beta()``, read
by ``prefcore.evaluation.evaluation_beta``), 0.1 for one without an implicit reward (SFT).
Without a reference (reference-free objectives such as SimPO or ORPO) the ranking is by
r(x, y) = log π(y | x).

accuracy = share of held-out pairs with r(x, chosen) > r(x, rejected), equal rewards
counting ½ (a policy identical to its reference scores 0.5, not 0);
reward_margin = mean of r(x, chosen) − r(x, rejected).
Pairs labelled as ties carry no preference to rank and are skipped; ``num_skipped_ties``
reports how many. Prompts are conditioned on ``context.generation_prefix``, the condition
the policy is used with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from prefcore import hookimpl
from prefcore.data import PairwiseComparison
from prefcore.errors import ConfigError
from prefcore.evaluation import EvaluationContext
from prefcore.evaluation import EvaluationResult
from prefcore.evaluation import held_out_pairs
from prefcore.evaluation import sequence_logps
from prefcore.evaluation import tokenize_completion
from prefcore.lazy import lazy_module
from prefcore.methods import Evaluator
from prefcore.methods import option

torch = lazy_module("torch")


@dataclass(frozen=True)
class PreferenceAccuracyConfig:
    batch_size: int = option(8, doc="pairs per forward pass (two sequences each)")
    max_length: int = option(1024, doc="prompt + completion tokens; longer prompts are cut from the left")

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1.", method="preference_accuracy", field=name)


class PreferenceAccuracy(Evaluator):
    """Share of held-out pairs whose chosen completion the policy's implicit reward ranks higher."""

    name = "preference_accuracy"
    config_cls = PreferenceAccuracyConfig

    def implicit_rewards(
        self, context: EvaluationContext, pairs: Sequence[PairwiseComparison]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``r(x, chosen)`` and ``r(x, rejected)``, each ``[P]``."""
        chosen_rewards: list[torch.Tensor] = []
        rejected_rewards: list[torch.Tensor] = []
        for start in range(0, len(pairs), self.config.batch_size):
            batch = pairs[start : start + self.config.batch_size]
            rows = [
                tokenize_completion(
                    context.tokenizer,
                    pair.prompt,
                    completion,
                    max_length=self.config.max_length,
                    prefix=context.generation_prefix,
                    where=str(pair.provenance) if pair.provenance else "held-out record",
                )
                for pair in batch
                for completion in (pair.chosen, pair.rejected)
            ]
            rewards = sequence_logps(context.policy, rows, context)
            if context.reference is not None:
                rewards = context.beta * (rewards - sequence_logps(context.reference, rows, context))
            chosen_rewards.append(rewards[0::2])
            rejected_rewards.append(rewards[1::2])
        return torch.cat(chosen_rewards), torch.cat(rejected_rewards)

    def evaluate(self, context: EvaluationContext) -> EvaluationResult:
        pairs, skipped = held_out_pairs(context, self.name)
        if not pairs:
            nan = float("nan")
            return EvaluationResult(
                {"accuracy": nan, "reward_margin": nan, "num_pairs": 0.0, "num_skipped_ties": float(skipped)}
            )
        chosen, rejected = self.implicit_rewards(context, pairs)
        margins = (chosen - rejected).double()
        correct = (margins > 0).double() + 0.5 * (margins == 0).double()
        return EvaluationResult(
            {
                "accuracy": correct.mean().item(),
                "reward_margin": margins.mean().item(),
                "chosen_reward": chosen.double().mean().item(),
                "rejected_reward": rejected.double().mean().item(),
                "num_pairs": float(len(pairs)),
                "num_skipped_ties": float(skipped),
            }
        )


@hookimpl
def prefcore_register_evaluators() -> list[type[Evaluator]]:
    return [PreferenceAccuracy]

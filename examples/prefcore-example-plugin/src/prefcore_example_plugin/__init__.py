"""An example third-party prefcore plugin: copy this package to publish your own methods.

It registers two methods:

- ``example_shorter_is_better`` (feedback): between two completions of the same prompt
  the shorter one is preferred, a length inductive bias that needs no annotator;
- ``example_offset_dpo`` (usage objective): DPO whose implicit-reward margin must clear a
  fixed offset Δ (the constant-offset case of ODPO, Amini et al. 2024,
  https://arxiv.org/abs/2402.10571):

      h = [log π(y_w|x) − log π_ref(y_w|x)] − [log π(y_l|x) − log π_ref(y_l|x)]
      loss = −log σ(β·h − Δ)

  written once, on the per-token log-probs the engine hands every objective, with the
  sequence sums from ``prefcore.kernels`` (Triton on GPU, torch on CPU).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from prefcore import hookimpl
from prefcore.batch import LogProbBatch
from prefcore.batch import LossOutput
from prefcore.data import PairwiseComparison
from prefcore.kernels.preference_losses import sequence_logps
from prefcore.methods import FeedbackSource
from prefcore.methods import UsageObjective
from prefcore.methods import option


@dataclass(frozen=True)
class ShorterIsBetterConfig:
    prompt: str = option("Say hello.", doc="the prompt both completions answer")
    completions: tuple[str, ...] = option(("Hello!", "Hello there, how are you today?"), doc="completions to compare")
    min_length_gap: int = option(1, doc="pairs whose lengths differ by less are labelled ties")

    def __post_init__(self) -> None:
        if self.min_length_gap < 0:
            raise ValueError(f"min_length_gap must be >= 0. Got {self.min_length_gap}.")


class ShorterIsBetter(FeedbackSource):
    """Rule feedback: of two completions, the shorter one is preferred."""

    name = "example_shorter_is_better"
    config_cls = ShorterIsBetterConfig

    def records(self) -> Iterator[PairwiseComparison]:
        completions = self.config.completions
        for i, first in enumerate(completions):
            for second in completions[i + 1 :]:
                chosen, rejected = sorted((first, second), key=len)
                tie = len(rejected) - len(chosen) < self.config.min_length_gap
                yield PairwiseComparison(
                    prompt=self.config.prompt, chosen=chosen, rejected=rejected, tie=tie, source="rule"
                )


@dataclass(frozen=True)
class OffsetDPOConfig:
    beta: float = option(0.1, doc="β: strength of the implicit KL penalty")
    offset: float = option(0.5, doc="Δ: the reward margin the chosen completion must clear")

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0 for objective 'example_offset_dpo'. Got {self.beta}.")


class OffsetDPO(UsageObjective):
    """DPO whose implicit-reward margin must clear a fixed offset Δ."""

    name = "example_offset_dpo"
    config_cls = OffsetDPOConfig
    data_formats = ("pairwise",)
    needs_reference = True

    def loss(self, batch: LogProbBatch) -> LossOutput:
        policy, _ = sequence_logps(batch.policy_logps, batch.mask)
        if batch.ref_sequence_logps is not None:
            reference = batch.ref_sequence_logps.to(policy.dtype)
        else:
            reference, _ = sequence_logps(batch.ref_logps, batch.mask)
        ratio = policy - reference
        chosen, rejected = ratio[batch.chosen_index], ratio[batch.rejected_index]
        losses = -F.logsigmoid(self.config.beta * (chosen - rejected) - self.config.offset)
        if batch.weights is not None:
            losses = losses * batch.weights.to(losses.dtype)
        denominator = batch.num_items if batch.num_items is not None else losses.numel()
        margin = (self.config.beta * (chosen - rejected)).detach()
        return LossOutput(
            losses.sum() / denominator,
            {"rewards/margin": margin.mean(), "rewards/accuracy": (margin > 0).to(torch.float32).mean()},
        )


@hookimpl
def prefcore_register_feedback() -> list[type[FeedbackSource]]:
    return [ShorterIsBetter]


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [OffsetDPO]

"""Process reward model: a correctness verdict on every reasoning step, read at the step's last token.

Lightman et al. 2023, "Let's Verify Step by Step" (https://arxiv.org/abs/2305.20050),
section 2.5; Uesato et al. 2022, "Solving math word problems with process- and
outcome-based feedback" (https://arxiv.org/abs/2211.14275). Labellers mark each step of a
solution correct or not; the model predicts that label at the token that ends the step.

    loss  = 1/N · Σ_steps BCE(σ(r_t), y_t) = 1/N · Σ_steps −[y_t·log σ(r_t) + (1 − y_t)·log σ(−r_t)]
    score = min_t σ(r_t)   or   Π_t σ(r_t)

r_t: the reward head's output at the last token of step t; y_t ∈ {0, 1}: the step's label;
N: the labelled steps of the optimiser step (the mean over steps, as a token-level
classifier is trained). A solution is as good as its weakest step (min) or the chance
that every step is right (product, Lightman et al.'s choice).

Data format "stepwise": a ``prefcore.data.BinaryLabel`` whose ``spans`` are the steps. Each
span ``[start, end)`` covers one step's characters in the completion and carries that
step's label; the step is read at the token holding the span's last character. Text
outside every span (separators) is context only. A record without spans is one step, the
whole completion, labelled ``label`` at its EOS token: outcome supervision (Uesato et al.'s
ORM) through the same loss. At scoring time steps are the completion's pieces between
``step_separator``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Literal

from prefcore import hookimpl
from prefcore.batch import LossOutput
from prefcore.errors import ConfigError
from prefcore.lazy import lazy_module
from prefcore.methods import PreferenceModel
from prefcore.methods import option
from prefcore.preference import RewardBatch
from prefcore.preference import item_weights
from prefcore.preference import mean_or_zero
from prefcore.preference import reduce_losses

if TYPE_CHECKING:
    from prefcore.engine.reward_model import ScoringRule

torch = lazy_module("torch")
F = lazy_module("torch.nn.functional")
reward_model = lazy_module("prefcore.engine.reward_model")

# prefcore.engine.reward_model.STEP_AGGREGATES, spelled out so the config check loads no torch.
STEP_AGGREGATES: tuple[str, ...] = ("min", "product")


@dataclass(frozen=True)
class ProcessRewardConfig:
    aggregate: Literal["min", "product"] = option(
        "min", doc="score of a solution: the min or the product of step P(correct)"
    )
    step_separator: str = option("\n", doc="text between reasoning steps when scoring new completions")

    def __post_init__(self) -> None:
        if self.aggregate not in STEP_AGGREGATES:
            raise ConfigError(
                f"aggregate must be one of {', '.join(STEP_AGGREGATES)} for objective 'process_reward'. "
                f"Got {self.aggregate!r}.",
                method="process_reward",
                field="aggregate",
            )
        if not isinstance(self.step_separator, str) or not self.step_separator:
            raise ConfigError(
                f"step_separator must be a non-empty string for objective 'process_reward'. "
                f"Got {self.step_separator!r}.",
                method="process_reward",
                field="step_separator",
            )


class ProcessReward(PreferenceModel):
    """Process reward model (Let's Verify Step by Step): per-step cross-entropy at the tokens that end steps."""

    name = "process_reward"
    config_cls = ProcessRewardConfig
    data_formats = ("stepwise",)

    def scoring_rule(self) -> ScoringRule:
        """The trained model scores a completion by the min or product of its steps' P(correct)."""
        return reward_model.ScoringRule(step_aggregate=self.config.aggregate, step_separator=self.config.step_separator)

    def loss(self, batch: RewardBatch) -> LossOutput:
        if batch.step_mask is None or batch.step_rewards is None or batch.step_labels is None:
            raise ValueError(
                f"preference model {self.name!r} trains on labelled reasoning steps, but the batch has no "
                f"step_mask/step_rewards/step_labels; use stepwise data (BinaryLabel records with spans)."
            )
        if not batch.step_mask.shape == batch.step_rewards.shape == batch.step_labels.shape:
            raise ValueError("step_mask, step_rewards and step_labels must have the same [S, T] shape.")
        mask = batch.step_mask
        rewards = batch.step_rewards.float()
        labels = batch.step_labels.to(rewards.dtype)
        token_losses = F.binary_cross_entropy_with_logits(rewards, labels, reduction="none")
        weights = item_weights(batch, rewards.shape[0], "sequence")
        if weights is not None:
            token_losses = token_losses * weights.to(rewards.dtype).unsqueeze(-1)
        losses = token_losses[mask]
        loss = reduce_losses(losses, batch)
        predicted = rewards.detach()[mask] > 0
        truth = labels[mask] > 0.5
        return LossOutput(
            loss,
            {
                "steps/accuracy": mean_or_zero((predicted == truth).float()),
                "steps/correct_probability": mean_or_zero(torch.sigmoid(rewards.detach()[mask][truth])),
                "steps/incorrect_probability": mean_or_zero(torch.sigmoid(rewards.detach()[mask][~truth])),
            },
        )


@hookimpl
def prefcore_register_preference_models() -> list[type[PreferenceModel]]:
    return [ProcessReward]

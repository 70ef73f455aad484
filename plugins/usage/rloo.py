"""RLOO: REINFORCE leave-one-out, each completion's baseline the mean reward of the others of its prompt.

Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization for Learning
from Human Feedback in LLMs", https://arxiv.org/abs/2402.14740, Eq. 8 (TRL ``RLOOTrainer``).

    A_i    = R_i − (1/(G−1)) Σ_{j≠i} R_j,      R_i = score_i − β·Σ_t k1_t
    ρ_i    = exp( Σ_t [log π_θ(y_t) − log π_old(y_t)] )
    loss   = −(1/N) Σ_i min(ρ_i·A_i, clip(ρ_i, 1 − ε_low, 1 + ε_high)·A_i)

G: completions per prompt; the whole completion is one action, so the ratio is the
sequence's (summed log-probs) and the loss is one term per completion. The KL to the
reference is in the reward (k1 summed over the completion, from the sampling log-probs),
as in TRL; ``kl_location = "loss"`` adds β·Σ_t k_t per completion instead. Defaults are
TRL 1.16's: β = 0.05, ε = 0.2 (2 completions per prompt is the engine's setting).
"""

from __future__ import annotations

from dataclasses import dataclass

from prefcore import hookimpl
from prefcore.batch import LossOutput
from prefcore.lazy import lazy_module
from prefcore.methods import UsageObjective
from prefcore.methods import check_in_range
from prefcore.methods import check_positive
from prefcore.methods import option
from prefcore.online_objectives import OnlineConfig
from prefcore.online_objectives import OnlineObjective
from prefcore.online_objectives import check_online_options
from prefcore.online_objectives import clamp_log_ratio
from prefcore.online_objectives import clip_metrics
from prefcore.online_objectives import clipped_surrogate
from prefcore.online_objectives import kl_estimate
from prefcore.online_objectives import log_ratio
from prefcore.online_objectives import sequence_advantages
from prefcore.rollout import RolloutBatch

torch = lazy_module("torch")


@dataclass(frozen=True)
class RLOOConfig(OnlineConfig):
    beta: float = option(0.05, doc="β: weight of the KL penalty to the reference (TRL's 0.05)")
    kl_estimator: str = option("k1", doc="per-token KL estimator: k1 (TRL's, in the reward), k2, k3 or k3+")
    kl_location: str = option("reward", doc="where the KL penalty goes: reward (−β·Σ KL), loss (+β·Σ KL) or none")
    epsilon: float = option(0.2, doc="ε_low: the sequence ratio is clipped below at 1 − ε")
    epsilon_high: float | None = option(None, doc="ε_high: clipped above at 1 + ε_high; unset = ε")
    log_ratio_clamp: float = option(20.0, doc="|log of the sequence ratio| is clamped to this before exp")

    def __post_init__(self) -> None:
        check_online_options("rloo", self)
        check_in_range("rloo", "epsilon", self.epsilon, 0.0, 1.0, closed="()")
        if self.epsilon_high is not None:
            check_positive("rloo", "epsilon_high", self.epsilon_high)
        check_positive("rloo", "log_ratio_clamp", self.log_ratio_clamp)


class RLOO(OnlineObjective):
    """RLOO: leave-one-out baseline, clipped sequence-level importance ratio, KL in the reward."""

    name = "rloo"
    config_cls = RLOOConfig
    advantage_estimator = "rloo"
    needs_reference = True

    def loss(self, batch: RolloutBatch) -> LossOutput:  # type: ignore[override]
        config = self.config
        mask = self.loss_mask(batch)
        epsilon_high = config.epsilon if config.epsilon_high is None else config.epsilon_high
        sequence_log_ratios = clamp_log_ratio(log_ratio(batch, mask, float("inf")).sum(-1), config.log_ratio_clamp)
        advantages = sequence_advantages(batch, mask)
        losses = clipped_surrogate(
            sequence_log_ratios, advantages, epsilon_low=config.epsilon, epsilon_high=epsilon_high
        )
        if self.kl_in_loss():
            reference = self.require_reference(batch).detach()
            kl = kl_estimate(batch.policy_logps, reference, mask, config.kl_estimator)
            losses = losses + self.beta * kl.sum(-1).to(losses.dtype)
        keep = mask.any(-1)  # a completion with no loss tokens (masked truncation) carries no loss
        losses = torch.where(keep, losses, torch.zeros_like(losses))
        loss = losses.sum() / max(batch.step_sequences(), 1)
        metrics = clip_metrics(sequence_log_ratios, advantages, keep, config.epsilon, epsilon_high)
        return LossOutput(loss, {**self.kl_metrics(batch, mask), **metrics})


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [RLOO]

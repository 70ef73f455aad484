"""PPO: the clipped policy surrogate with a learned value model (critic), GAE and the KL in the reward.

Schulman et al. 2017, "Proximal Policy Optimization Algorithms", https://arxiv.org/abs/1707.06347,
Eq. 7 and 9; as RLHF uses it, Ziegler et al. 2019, "Fine-Tuning Language Models from Human
Preferences", https://arxiv.org/abs/1909.08593, §2.2 (the KL in the reward, adaptive β):

    r_t   = −β·k1_t + [t = |y|]·R              k1_t = log π_old(y_t) − log π_ref(y_t)
    δ_t   = r_t + γ·V_old(t+1) − V_old(t),   A_t = Σ_l (γλ)^l·δ_{t+l},   G_t = A_t + V_old(t)
    ρ_t   = π_θ(y_t)/π_old(y_t)
    L_t   = −min(ρ_t·Â_t, clip(ρ_t, 1 − ε_low, 1 + ε_high)·Â_t) − c_H·H_t(π_θ)     Â: A whitened
    L_V   = ½·max((V_θ − G)², (V_old + clip(V_θ − V_old, ±ε_v) − G)²)
    loss  = aggregate(L_t) + c_V·aggregate(L_V)

The engine (``prefcore.engine.ppo_trainer.PPOTrainer``, picked because ``needs_critic`` is set)
computes the old values, the per-token rewards and GAE (``prefcore.critic``) in the rollout
phase and stores the returns and old values in ``batch.extras`` (``returns/<head>``,
``old_values/<head>``); ``loss`` is the policy's part, ``value_loss`` the critic's.

Defaults follow TRL's PPO (``trl/experimental/ppo``), the reference closest to this setting:
β = 0.05 with k1 in the reward, γ = 1, λ = 0.95, ε = 0.2, ε_v = 0.2, c_V = 0.1, whitened
advantages, unwhitened rewards, token-mean aggregation. verl and OpenRLHF use λ = 1 and
ε_v = 0.5 (see ``shared/reference/online-rl.md``). The critic is a separate copy of the
policy by default (``critic = "separate"``); ``reward_model`` starts it from the run's trained
reward model (OpenRLHF's and Safe-RLHF's default, where a run has one); ``shared`` puts the
value head on the policy's own trunk (one forward; the value loss also trains the trunk).
``critic_lr`` 0 uses the policy's ``[train] lr``; ``critic_warmup`` trains only the critic for
the first online steps (verl ``critic_warmup``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from typing import ClassVar

from prefcore import hookimpl
from prefcore.batch import LossOutput
from prefcore.critic import clipped_value_loss
from prefcore.errors import ConfigError
from prefcore.lazy import lazy_module
from prefcore.methods import UsageObjective
from prefcore.methods import check_in_range
from prefcore.methods import check_non_negative
from prefcore.methods import check_positive
from prefcore.methods import option
from prefcore.online_objectives import ClippedOnlineConfig
from prefcore.online_objectives import TokenObjective
from prefcore.online_objectives import check_choice
from prefcore.online_objectives import check_clip_options
from prefcore.online_objectives import check_online_options
from prefcore.online_objectives import clipped_token_loss
from prefcore.rollout import RolloutBatch

torch = lazy_module("torch")

CRITIC_PLACEMENTS: tuple[str, ...] = ("separate", "reward_model", "shared")
"""Where the value head sits: a copy of the policy's trunk, the reward model's trunk, the policy's own."""


@dataclass(frozen=True)
class PPOConfig(ClippedOnlineConfig):
    beta: float = option(0.05, doc="β: weight of the KL penalty to the reference (TRL PPO's kl_coef)")
    kl_estimator: str = option("k1", doc="per-token KL estimator: k1 (in the reward, as RLHF does), k2, k3 or k3+")
    kl_location: str = option("reward", doc="where the KL penalty goes: reward (−β·KL per token), loss or none")
    gamma: float = option(1.0, doc="γ: discount of GAE over the completion's tokens")
    lam: float = option(0.95, doc="λ: GAE's bias-variance trade-off (1 = Monte Carlo return minus value)")
    value_clip: float = option(0.2, doc="ε_v: the new value stays within ±ε_v of the old one in the loss (0 = off)")
    vf_coef: float = option(0.1, doc="c_V: weight of the value loss beside the policy loss")
    entropy_coef: float = option(0.0, doc="c_H: entropy bonus per token (the engine computes the entropy when > 0)")
    whiten_advantages: bool = option(True, doc="whiten the advantages over the whole rollout batch")
    whiten_rewards: bool = option(False, doc="whiten the per-token rewards before GAE (the mean kept, as TRL)")
    critic: str = option("separate", doc="value model: separate (copy of the policy), reward_model, or shared trunk")
    critic_lr: float = option(0.0, doc="the value model's learning rate; 0 = the policy's [train] lr")
    critic_warmup: int = option(0, doc="first online steps that train only the value model (the policy frozen)")

    def __post_init__(self) -> None:
        check_online_options("ppo", self)
        check_clip_options("ppo", self)
        check_ppo_options("ppo", self)


def check_ppo_options(objective: str, config: PPOConfig) -> None:
    """The critic's options of a ``PPOConfig`` (shared with objectives built on PPO, such as Safe-RLHF)."""
    check_in_range(objective, "gamma", config.gamma, 0.0, 1.0, closed="[]")
    check_in_range(objective, "lam", config.lam, 0.0, 1.0, closed="[]")
    check_non_negative(objective, "value_clip", config.value_clip)
    check_positive(objective, "vf_coef", config.vf_coef)
    check_non_negative(objective, "entropy_coef", config.entropy_coef)
    check_non_negative(objective, "critic_lr", config.critic_lr)
    check_choice(objective, "critic", config.critic, CRITIC_PLACEMENTS)
    for name in ("whiten_advantages", "whiten_rewards"):
        if not isinstance(getattr(config, name), bool):
            raise ConfigError(
                f"{name} must be true or false for objective {objective!r}. Got {getattr(config, name)!r}.",
                method=objective,
                field=name,
            )
    if not isinstance(config.critic_warmup, int) or isinstance(config.critic_warmup, bool) or config.critic_warmup < 0:
        raise ConfigError(
            f"critic_warmup must be a whole number >= 0 for objective {objective!r}. Got {config.critic_warmup!r}.",
            method=objective,
            field="critic_warmup",
        )


class PPO(TokenObjective):
    """PPO with a critic: clipped surrogate on GAE advantages, entropy bonus, clipped value loss."""

    name = "ppo"
    config_cls = PPOConfig
    advantage_estimator = "ppo_gae"
    needs_reference = True  # β > 0 by default: k1 in the reward needs the reference's log-probs
    needs_critic: ClassVar[bool] = True

    def estimator_options(self) -> dict[str, Any]:
        return {"gamma": self.config.gamma, "lam": self.config.lam, "whiten_advantages": self.config.whiten_advantages}

    def needs_entropy(self) -> bool:
        """Whether the engine must compute ``batch.entropy`` (only for an entropy bonus: it costs the full logits)."""
        return self.config.entropy_coef > 0

    def token_loss(self, batch: RolloutBatch, mask: torch.Tensor) -> tuple[torch.Tensor, Mapping[str, Any]]:
        losses, metrics = clipped_token_loss(batch, mask, self.config)
        if self.config.entropy_coef > 0:
            if batch.entropy is None:
                raise ValueError(
                    f"objective {self.name!r} has entropy_coef={self.config.entropy_coef} but the batch has no "
                    "entropy; the engine computes it when needs_entropy() is True."
                )
            entropy = batch.entropy.to(losses.dtype)
            losses = losses - self.config.entropy_coef * entropy
            with torch.no_grad():
                metrics["policy_entropy"] = (entropy * mask).sum() / mask.sum().clamp(min=1)
        return losses, metrics

    def value_loss(self, values: Mapping[str, torch.Tensor], batch: RolloutBatch) -> LossOutput:
        """c_V·Σ_heads L_V: each head's clipped value loss against ``returns/<head>`` from ``old_values/<head>``.

        ``values``: ``[S, T]`` per head, with gradient, aligned with ``batch.policy_logps``. The loss
        tokens and the reduction are the policy loss's (``sequence_mean`` stays per sequence,
        every other aggregation is a token mean over the step). The ``value/loss`` metrics are the
        micro-batch's share of the step's loss scaled by the step's completions over the batch's: the
        engine weighs each micro-batch's metrics by its share of the completions, so they add up to the
        step's value loss however the step is split (into micro-batches, or across ranks).
        """
        mask = self.loss_mask(batch)
        aggregation = "sequence_mean" if self.config.aggregation == "sequence_mean" else "token_mean"
        clip = self.config.value_clip or None
        total = None
        metrics: dict[str, Any] = {}
        for head, head_values in values.items():
            loss, head_metrics = clipped_value_loss(
                head_values,
                batch.extras[f"old_values/{head}"],
                batch.extras[f"returns/{head}"],
                mask,
                clip,
                aggregation=aggregation,
                num_tokens=batch.num_tokens,
                num_sequences=batch.num_sequences,
            )
            prefix = "value" if head == "reward" else f"value_{head}"
            metrics[f"{prefix}/loss"] = loss.detach() * (batch.step_sequences() / max(batch.num_completions, 1))
            metrics.update({key.replace("value/", f"{prefix}/", 1): value for key, value in head_metrics.items()})
            total = loss if total is None else total + loss
        if total is None:
            raise ValueError("value_loss needs the values of at least one head.")
        return LossOutput(self.config.vf_coef * total, metrics)


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [PPO]

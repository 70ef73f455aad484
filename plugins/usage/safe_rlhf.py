"""Safe-RLHF: PPO on the reward subject to a bound on the expected cost, through a Lagrange multiplier.

Dai et al. 2023, "Safe RLHF: Safe Reinforcement Learning from Human Feedback",
https://arxiv.org/abs/2310.12773, Eq. 10-11 (``safe_rlhf/algorithms/ppo_lag/trainer.py``).
The policy maximises the helpfulness reward J_R(θ) subject to J_C(θ) ≤ d, the expected cost of
its replies (a cost model's score, or a rule's: C > 0 unsafe), by solving

    min_θ max_{λ≥0}  −J_R(θ) + λ·(J_C(θ) − d)

    A_t   = (A^R_t − λ·A^C_t) / (1 + λ)          A^R, A^C: GAE of the reward and cost critics
    L_t   = −min(ρ_t·A_t, clip(ρ_t, 1 − ε, 1 + ε)·A_t)                 ρ_t = π_θ(y_t)/π_old(y_t)
    log λ ← log λ + η·λ·(Ĉ − d),  λ ≤ λ_max      Ĉ: mean of the last ``cost_window`` episode costs

The cost critic's per-token rewards are +β·k_t plus the episode cost on the last token (the KL
is subtracted from the reward and added to the cost); both critics take the clipped value loss.
The 1/(1 + λ) keeps the advantage's scale whatever λ, so the step size means the same while λ
moves. λ is ``prefcore.lagrangian.LagrangeMultiplier`` (``lambda_update = "projected"`` for
λ ← max(0, λ + η·(Ĉ − d)); ``lambda_lr = 0`` fixes λ, and ``lambda_init = 0`` with it is
plain PPO on the reward, the unconstrained run to compare against); it is updated once per
batch of rollouts, from that batch's costs, before the batch's advantages are combined (Safe-RLHF
updates it at each of its PPO steps, on the same window), and the trainer checkpoints it.

The engine (``prefcore.engine.ppo_trainer.PPOTrainer``) runs the reward and cost critics and
calls ``combine_advantages``; the costs are the ``[[reward]]`` entries with ``role = "cost"``.
Logged every step: ``lagrange/lambda``, ``cost/window_mean`` (Ĉ), ``cost/over_bound_fraction``
(the share of the batch's samples whose cost exceeds d) and ``cost/bound`` (d), beside ``reward/mean``
and ``cost/mean``; the report plots them in ``constraint.png``.

Defaults are Safe-RLHF's ``scripts/ppo-lag.sh`` where it sets them: d = 0, λ_init = 1, η = 0.1,
λ_max = 5, window 128, β = 0.01 (k1 in the reward), γ = 1, λ_GAE = 0.95, ε = 0.2, advantages not
whitened, the loss a mean per sequence then over sequences (its ``masked_mean``); the critic
options are PPO's (``plugins/usage/ppo.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from typing import ClassVar

from prefcore import hookimpl
from prefcore.lagrangian import LagrangeMultiplier
from prefcore.lagrangian import check_lagrange_options
from prefcore.lazy import lazy_module
from prefcore.methods import UsageObjective
from prefcore.methods import option
from prefcore.online_objectives import check_clip_options
from prefcore.online_objectives import check_online_options
from prefcore.plugins.usage.ppo import PPO
from prefcore.plugins.usage.ppo import PPOConfig
from prefcore.plugins.usage.ppo import check_ppo_options
from prefcore.rollout import RolloutBatch

torch = lazy_module("torch")


@dataclass(frozen=True)
class SafeRLHFConfig(PPOConfig):
    beta: float = option(0.01, doc="β: the KL penalty, subtracted from the reward and added to the cost (Safe-RLHF)")
    aggregation: str = option(
        "sequence_mean", doc="sequence_mean (Safe-RLHF's masked mean per sequence), token_mean, dr_grpo or token_sum"
    )
    whiten_advantages: bool = option(False, doc="whiten the combined advantages over the batch (Safe-RLHF: no)")
    cost_bound: float = option(0.0, doc="d: the bound on the mean episode cost (0: safe on average for a cost model)")
    lambda_init: float = option(1.0, doc="λ at the start (0 with lambda_lr = 0: unconstrained PPO, for comparison)")
    lambda_lr: float = option(0.1, doc="η: step size of λ on the gap Ĉ − d (0: λ fixed)")
    lambda_max: float | None = option(5.0, doc="λ_max: λ is clamped from above (unset: no clamp)")
    lambda_update: str = option("log", doc="log (SGD on log λ, Safe-RLHF) or projected (λ ← max(0, λ + η·gap))")
    lambda_delay: int = option(0, doc="batches of rollouts before λ starts to move")
    cost_window: int = option(128, doc="Ĉ is the mean of the last this-many episode costs")

    def __post_init__(self) -> None:
        check_online_options("safe_rlhf", self)
        check_clip_options("safe_rlhf", self)
        check_ppo_options("safe_rlhf", self)
        check_lagrange_options(
            "safe_rlhf",
            bound=self.cost_bound,
            init=self.lambda_init,
            lr=self.lambda_lr,
            max_value=self.lambda_max,
            update=self.lambda_update,
            delay=self.lambda_delay,
            window=self.cost_window,
        )


def lagrangian_advantages(
    reward_advantages: torch.Tensor, cost_advantages: torch.Tensor, multiplier: float
) -> torch.Tensor:
    """Safe-RLHF's policy advantage (A^R − λ·A^C)/(1 + λ), elementwise."""
    return (reward_advantages - multiplier * cost_advantages) / (1.0 + multiplier)


class SafeRLHF(PPO):
    """PPO-Lagrangian: reward advantage minus λ times cost advantage, scaled by 1/(1+λ); λ ascends on Ĉ − d."""

    name = "safe_rlhf"
    config_cls = SafeRLHFConfig
    value_heads: ClassVar[tuple[str, ...]] = ("reward", "cost")
    uses_costs: ClassVar[bool] = True

    def __init__(self, config: Any | None = None) -> None:
        super().__init__(config)
        self.multiplier = LagrangeMultiplier(
            self.config.cost_bound,
            init=self.config.lambda_init,
            lr=self.config.lambda_lr,
            max_value=self.config.lambda_max,
            update=self.config.lambda_update,
            delay=self.config.lambda_delay,
            window=self.config.cost_window,
        )
        self._step_metrics: dict[str, float] = {"lagrange/lambda": self.multiplier.value}

    @property
    def lagrange_multiplier(self) -> float:
        """λ now."""
        return self.multiplier.value

    def combine_advantages(
        self, advantages: Mapping[str, torch.Tensor], mask: torch.Tensor, *, costs: torch.Tensor
    ) -> torch.Tensor:
        """Update λ from this batch's episode costs ``[S]``, then (A^R − λ·A^C)/(1 + λ) on ``mask``."""
        episode_costs = costs.detach().float()
        value = self.multiplier.update(episode_costs.tolist())
        self._step_metrics = {
            "lagrange/lambda": value,
            "cost/window_mean": self.multiplier.cost_estimate,
            "cost/over_bound_fraction": float((episode_costs > self.config.cost_bound).float().mean()),
            "cost/bound": self.config.cost_bound,
        }
        combined = lagrangian_advantages(advantages["reward"], advantages["cost"], value)
        return combined * mask.to(combined.dtype)

    def token_loss(self, batch: RolloutBatch, mask: torch.Tensor) -> tuple[torch.Tensor, Mapping[str, Any]]:
        losses, metrics = super().token_loss(batch, mask)
        return losses, {**metrics, **{key: torch.tensor(value) for key, value in self._step_metrics.items()}}

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """The KL controller's β and the multiplier (λ, its update count and cost window)."""
        return {**super().state_dict(), "lagrange": self.multiplier.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:  # type: ignore[override]
        super().load_state_dict({key: value for key, value in state.items() if key != "lagrange"})
        if "lagrange" in state:
            self.multiplier.load_state_dict(state["lagrange"])
            self._step_metrics = {"lagrange/lambda": self.multiplier.value}


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [SafeRLHF]

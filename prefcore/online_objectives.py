"""The online-objective author's surface: the base class of the REINFORCE/GRPO family and its helpers.

An online objective turns a ``RolloutBatch`` (``prefcore.rollout``) into a loss. The engine
samples, scores and estimates advantages with the estimator the objective names; the
objective writes one formula on per-token tensors and never touches a model. Two bases:

- ``OnlineObjective``: declares ``advantage_estimator`` (a name of ``prefcore.advantages``),
  the KL settings (β, estimator, in the loss or in the reward, fixed or adaptive), the
  truncated-completion mask; a subclass writes ``loss(batch)``.
- ``TokenObjective``: a subclass writes ``token_loss(batch, mask)``, the ``[S, T]`` per-token
  losses; the base adds β·KL per token when the KL is in the loss and reduces with the
  configured aggregation (``token_mean``, ``sequence_mean``, ``dr_grpo``, ``token_sum``),
  exactly across gradient accumulation through ``num_tokens``/``num_sequences``.

The helpers are the pieces every objective of the family shares: the clipped surrogate with
ε_low/ε_high and an optional dual clip, log-ratio clamping, GSPO's sequence-level ratio,
the k1/k2/k3/k3+ KL estimators (``prefcore.kernels.kl.per_token_kl``), the aggregations and
Ziegler et al.'s adaptive KL controller. Config checks for ``__post_init__``
(``check_online_options``, ``check_clip_options``) say which option of which objective is wrong.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from typing import ClassVar

from prefcore.batch import LossOutput
from prefcore.errors import ConfigError
from prefcore.lazy import lazy_module
from prefcore.methods import UsageObjective
from prefcore.methods import check_finite
from prefcore.methods import check_in_range
from prefcore.methods import check_non_negative
from prefcore.methods import check_positive
from prefcore.methods import option
from prefcore.rollout import ROLLOUT_FORMAT
from prefcore.rollout import RolloutBatch

torch = lazy_module("torch")
kl_kernels = lazy_module("prefcore.kernels.kl")

__all__ = [
    "AGGREGATIONS",
    "KL_ESTIMATORS",
    "KL_LOCATIONS",
    "AdaptiveKLController",
    "ClippedOnlineConfig",
    "FixedKLController",
    "KLPenalty",
    "OnlineConfig",
    "OnlineObjective",
    "ScoreFunctionConfig",
    "ScoreFunctionObjective",
    "TokenObjective",
    "aggregate",
    "check_aggregation",
    "check_choice",
    "check_clip_options",
    "check_online_options",
    "clamp_log_ratio",
    "clip_metrics",
    "clipped_surrogate",
    "clipped_token_loss",
    "kl_estimate",
    "log_ratio",
    "masked_mean",
    "score_function_loss",
    "sequence_advantages",
    "sequence_log_ratio",
    "truncation_mask",
]

AGGREGATIONS: tuple[str, ...] = ("token_mean", "sequence_mean", "dr_grpo", "token_sum")
"""How per-token losses become one number (see ``aggregate``)."""
KL_ESTIMATORS: tuple[str, ...] = ("k1", "k2", "k3", "k3+")
"""Per-token estimators of KL(π_θ‖π_ref) (see ``kl_estimate``)."""
KL_LOCATIONS: tuple[str, ...] = ("loss", "reward", "none")
"""Where the KL penalty goes: β·KL added to the loss, −β·KL added to the reward, or nowhere."""


# ----------------------------------------------------------------------------------------------
# Configs and their checks
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OnlineConfig:
    """Options every online objective has: the KL leash and the truncation mask.

    Defaults are TRL's GRPO defaults (β = 0: no reference model is loaded); each objective's
    config overrides what its paper or its reference implementation sets.
    """

    beta: float = option(0.0, doc="β: weight of the KL penalty to the reference (0 = none, no reference model)")
    kl_estimator: str = option("k3", doc="per-token KL estimator: k1, k2, k3, or k3+ (k3's value, k2's gradient)")
    kl_location: str = option("loss", doc="where the KL penalty goes: loss (+β·KL), reward (−β·KL) or none")
    kl_target: float | None = option(
        None, doc="adaptive β (Ziegler et al.): the per-token KL to hold; unset = fixed β (verl uses 0.1)"
    )
    kl_horizon: float = option(10000.0, doc="adaptive β: horizon of the controller, in samples")
    mask_truncated: bool = option(False, doc="leave completions that hit max_new_tokens out of the loss")


@dataclass(frozen=True)
class ScoreFunctionConfig(OnlineConfig):
    """``OnlineConfig`` for an on-policy score-function loss: the KL as RLHF puts it, in the reward."""

    kl_estimator: str = option("k1", doc="per-token KL estimator: k1 (in the reward, as RLHF does), k2, k3 or k3+")
    kl_location: str = option("reward", doc="where the KL penalty goes: reward (−β·KL per token), loss or none")
    aggregation: str = option("token_sum", doc="token_sum (Σ_t per completion, the formula), token_mean, ...")


@dataclass(frozen=True)
class ClippedOnlineConfig(OnlineConfig):
    """``OnlineConfig`` with the PPO-style clipped importance ratio and the loss aggregation."""

    epsilon: float = option(0.2, doc="ε_low: the ratio is clipped below at 1 − ε")
    epsilon_high: float | None = option(None, doc="ε_high: the ratio is clipped above at 1 + ε_high; unset = ε")
    dual_clip: float | None = option(None, doc="dual clip c > 1 for negative advantages (verl clip_ratio_c = 3)")
    log_ratio_clamp: float = option(20.0, doc="|log π/π_old| is clamped to this before exp (verl, OpenRLHF)")
    aggregation: str = option(
        "token_mean", doc="token_mean, sequence_mean, dr_grpo (constant N·L_max) or token_sum (per-sequence sums)"
    )


def check_choice(objective: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    """``value`` must be one of ``choices`` (an option naming a mode)."""
    if value not in choices:
        raise ConfigError(
            f"{name} must be one of {', '.join(choices)} for objective {objective!r}. Got {value!r}.",
            method=objective,
            field=name,
        )


def check_aggregation(objective: str, value: str) -> None:
    """``aggregation`` must be one of ``AGGREGATIONS``."""
    check_choice(objective, "aggregation", value, AGGREGATIONS)


def check_online_options(objective: str, config: OnlineConfig, *, locations: tuple[str, ...] = KL_LOCATIONS) -> None:
    """The KL options of an ``OnlineConfig`` (``locations``: where this objective can put the KL)."""
    check_non_negative(objective, "beta", config.beta)
    check_choice(objective, "kl_estimator", config.kl_estimator, KL_ESTIMATORS)
    check_choice(objective, "kl_location", config.kl_location, locations)
    check_positive(objective, "kl_horizon", config.kl_horizon)
    if config.kl_target is not None:
        check_positive(objective, "kl_target", config.kl_target)
        if config.beta == 0 or config.kl_location == "none":
            raise ConfigError(
                f"kl_target needs beta > 0 and a kl_location for objective {objective!r}: the controller scales β. "
                f"Got beta={config.beta}, kl_location={config.kl_location!r}.",
                method=objective,
                field="kl_target",
            )
    if not isinstance(config.mask_truncated, bool):
        raise ConfigError(
            f"mask_truncated must be true or false for objective {objective!r}. Got {config.mask_truncated!r}.",
            method=objective,
            field="mask_truncated",
        )


def check_clip_options(objective: str, config: ClippedOnlineConfig) -> None:
    """The clip options of a ``ClippedOnlineConfig``."""
    check_in_range(objective, "epsilon", config.epsilon, 0.0, 1.0, closed="()")
    if config.epsilon_high is not None:
        check_positive(objective, "epsilon_high", config.epsilon_high)
    if config.dual_clip is not None:
        check_finite(objective, "dual_clip", config.dual_clip)
        if not config.dual_clip > 1:
            raise ConfigError(
                f"dual_clip must be > 1 for objective {objective!r}. Got {config.dual_clip}.",
                method=objective,
                field="dual_clip",
            )
    check_positive(objective, "log_ratio_clamp", config.log_ratio_clamp)
    check_aggregation(objective, config.aggregation)


# ----------------------------------------------------------------------------------------------
# Ratios, surrogates, KL and aggregation
# ----------------------------------------------------------------------------------------------


def _float(values: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 to fp32 (exponentials lose too much in half precision); fp32/fp64 unchanged."""
    return values.float() if values.dtype in (torch.float16, torch.bfloat16) else values


def truncation_mask(batch: RolloutBatch, mask_truncated: bool) -> torch.Tensor:
    """``[S, T]`` bool: the tokens that carry a loss (``batch.mask``, without truncated completions if asked)."""
    mask = batch.mask.bool()
    if mask_truncated:
        mask = mask & ~batch.truncated.bool().unsqueeze(-1)
    return mask


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[S]`` mean of each row over its masked-in positions (0 for an empty row)."""
    values = torch.where(mask, values, torch.zeros_like(values))
    return values.sum(-1) / mask.sum(-1).clamp(min=1).to(values.dtype)


def clamp_log_ratio(log_ratios: torch.Tensor, bound: float) -> torch.Tensor:
    """``log_ratios`` clamped to ±``bound`` so that exp cannot overflow (verl, OpenRLHF clamp at 20)."""
    return log_ratios.clamp(-bound, bound)


def log_ratio(batch: RolloutBatch, mask: torch.Tensor, bound: float) -> torch.Tensor:
    """``[S, T]`` clamped log π_θ(y_t) − log π_old(y_t) (π_old: the sampling policy, no gradient); 0 off ``mask``."""
    policy, sampling = _float(batch.policy_logps), _float(batch.sampling_logps).detach()
    zero = torch.zeros((), dtype=policy.dtype, device=policy.device)
    values = torch.where(mask, policy, zero) - torch.where(mask, sampling.to(policy.dtype), zero)
    return clamp_log_ratio(values, bound)


def sequence_log_ratio(token_log_ratios: torch.Tensor, mask: torch.Tensor, bound: float) -> torch.Tensor:
    """``[S, T]`` GSPO-token log-ratios: value log s_i = mean_t log ρ_t on every token, gradient ∇ log π(y_t).

    GSPO (Zheng et al. 2025, https://arxiv.org/abs/2507.18071, Eq. 13): s_{i,t} =
    sg[s_i]·π(y_t)/sg[π(y_t)]. With one advantage per sequence its gradient is GSPO's
    sequence-level one, s_i·A_i·mean_t ∇log π(y_t), under every aggregation; per-token
    advantages stay per token. Clamped to ±``bound`` after the sequence mean.
    """
    sequence = masked_mean(token_log_ratios, mask).unsqueeze(-1)
    values = sequence.detach() + token_log_ratios - token_log_ratios.detach()
    return clamp_log_ratio(values, bound)


def clipped_surrogate(
    log_ratios: torch.Tensor,
    advantages: torch.Tensor,
    *,
    epsilon_low: float,
    epsilon_high: float,
    dual_clip: float | None = None,
) -> torch.Tensor:
    """Per-token PPO loss −min(ρ·A, clip(ρ, 1 − ε_low, 1 + ε_high)·A), ρ = exp(``log_ratios``).

    ``dual_clip`` c (Ye et al. 2020, https://arxiv.org/abs/1912.09729; verl ``clip_ratio_c``)
    bounds the loss of a negative advantage at −c·A, so a huge ratio on a bad token cannot
    dominate the step.
    """
    ratios = torch.exp(log_ratios)
    advantages = advantages.to(ratios.dtype)
    unclipped = -advantages * ratios
    clipped = -advantages * ratios.clamp(1 - epsilon_low, 1 + epsilon_high)
    losses = torch.maximum(unclipped, clipped)
    if dual_clip is not None:
        losses = torch.where(advantages < 0, torch.minimum(losses, -dual_clip * advantages), losses)
    return losses


def clip_metrics(
    log_ratios: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, epsilon_low: float, epsilon_high: float
) -> dict[str, torch.Tensor]:
    """TRL's ``clip_ratio/low_mean``, ``high_mean`` and ``region_mean``: shares of tokens whose ratio is clipped."""
    with torch.no_grad():
        ratios = torch.exp(log_ratios)
        low = (ratios < 1 - epsilon_low) & (advantages < 0) & mask
        high = (ratios > 1 + epsilon_high) & (advantages > 0) & mask
        count = mask.sum().clamp(min=1).float()
        return {
            "clip_ratio/low_mean": low.sum().float() / count,
            "clip_ratio/high_mean": high.sum().float() / count,
            "clip_ratio/region_mean": (low | high).sum().float() / count,
        }


def clipped_token_loss(
    batch: RolloutBatch, mask: torch.Tensor, config: ClippedOnlineConfig, *, sequence_ratio: bool = False
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``[S, T]`` clipped-surrogate losses and TRL's clip metrics, from a ``ClippedOnlineConfig``.

    The per-token ratio of GRPO, REINFORCE++ and DAPO, or, with ``sequence_ratio``, GSPO's
    length-normalised sequence ratio broadcast over the tokens; ε_high defaults to ε.
    """
    epsilon_high = config.epsilon if config.epsilon_high is None else config.epsilon_high
    log_ratios = log_ratio(batch, mask, config.log_ratio_clamp)
    if sequence_ratio:
        log_ratios = sequence_log_ratio(log_ratios, mask, config.log_ratio_clamp)
    losses = clipped_surrogate(
        log_ratios, batch.advantages, epsilon_low=config.epsilon, epsilon_high=epsilon_high, dual_clip=config.dual_clip
    )
    return losses, clip_metrics(log_ratios, batch.advantages, mask, config.epsilon, epsilon_high)


def kl_estimate(
    policy_logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor, estimator: str
) -> torch.Tensor:
    """``[S, T]`` per-token estimate of KL(π_θ‖π_ref) from the sampled tokens, 0 off ``mask``.

    With d = log π_θ − log π_ref (Schulman, http://joschu.net/blog/kl-approx.html):
    k1 = d, k2 = d²/2, k3 = e^{−d} − 1 + d (``prefcore.kernels.kl.per_token_kl``, the Triton
    path on GPU). ``k3+`` has k3's value and k2's gradient (verl's ``low_var_kl+``): on-policy,
    E[∇k2] = ∇KL(π‖π_ref), while E[∇k3] is the gradient of the forward KL (Tang & Munos,
    https://arxiv.org/abs/2506.09477).
    """
    if estimator == "k3+":
        k2 = kl_kernels.per_token_kl(policy_logps, ref_logps, mask, estimator="k2")
        k3 = kl_kernels.per_token_kl(policy_logps, ref_logps, mask, estimator="k3")
        return k2 + (k3 - k2).detach()
    return kl_kernels.per_token_kl(policy_logps, ref_logps, mask, estimator=estimator)


def score_function_loss(batch: RolloutBatch, mask: torch.Tensor) -> torch.Tensor:
    """``[S, T]`` REINFORCE's per-token loss −A_t·log π_θ(y_t): its gradient is −A_t·∇log π_θ(y_t) (Williams 1992)."""
    policy = _float(batch.policy_logps)
    policy = torch.where(mask, policy, torch.zeros_like(policy))
    return -_float(batch.advantages.detach()).to(policy.dtype) * policy


def sequence_advantages(batch: RolloutBatch, mask: torch.Tensor) -> torch.Tensor:
    """``[S]`` one advantage per completion: the mean of its per-token advantages (a broadcast value as is)."""
    return masked_mean(_float(batch.advantages.detach()), mask)


def aggregate(token_losses: torch.Tensor, mask: torch.Tensor, batch: RolloutBatch, mode: str) -> torch.Tensor:
    """One loss from ``[S, T]`` per-token losses, exact across gradient accumulation.

    With m the loss mask, N the step's completions (``batch.step_sequences()``) and the
    step's loss tokens ``batch.num_tokens`` (this batch's Σm when unset):

    - ``token_mean``: Σ m·L / Σ_step m. DAPO's token-level loss (Yu et al. 2025,
      https://arxiv.org/abs/2503.14476), TRL ``loss_type="dapo"``, verl ``token-mean``; TRL's
      ``bnpo`` is the same over one micro-batch (``num_tokens`` unset).
    - ``sequence_mean``: (1/N) Σ_i Σ_t m·L / Σ_t m. The original GRPO (TRL ``"grpo"``, verl
      ``seq-mean-token-mean``); GSPO's normalisation.
    - ``dr_grpo``: Σ m·L / (N·L_max), L_max = ``batch.max_completion_length`` (Liu et al. 2025,
      https://arxiv.org/abs/2503.20783; TRL ``"dr_grpo"``).
    - ``token_sum``: (1/N) Σ_i Σ_t m·L, each completion's summed loss averaged over completions
      (verl ``seq-mean-token-sum``): REINFORCE's −A·log π(y).

    The engine sets ``num_tokens`` to the step's Σm of the objective's loss mask
    (``OnlineObjective.loss_mask``), so micro-batch losses add up to the step's loss.
    """
    losses = torch.where(mask, token_losses, torch.zeros_like(token_losses))
    sequences = max(batch.step_sequences(), 1)
    if mode == "token_mean":
        tokens = int(mask.sum()) if batch.num_tokens is None else batch.num_tokens
        return losses.sum() / max(tokens, 1)
    if mode == "sequence_mean":
        return masked_mean(losses, mask).sum() / sequences
    if mode == "dr_grpo":
        if batch.max_completion_length is None:
            raise ValueError(
                "aggregation 'dr_grpo' divides by N·max_completion_length, but the batch has no max_completion_length."
            )
        return losses.sum() / (sequences * max(batch.max_completion_length, 1))
    if mode == "token_sum":
        return losses.sum() / sequences
    raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}. Got {mode!r}.")


# ----------------------------------------------------------------------------------------------
# β: fixed or adaptive
# ----------------------------------------------------------------------------------------------


class FixedKLController:
    """A constant β."""

    def __init__(self, beta: float) -> None:
        self.beta = float(beta)

    def update(self, kl: float, num_samples: int) -> float:
        """β stays; returns it."""
        return self.beta

    def state_dict(self) -> dict[str, float]:
        return {"beta": self.beta}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        self.beta = float(state["beta"])


class AdaptiveKLController:
    """β that holds the observed KL near a target (Ziegler et al. 2019, https://arxiv.org/abs/1909.08593, §2.2).

    After each step with ``n`` samples and observed KL: e = clip(KL/target − 1, −0.2, 0.2),
    β ← β·(1 + e·n/horizon). The engine checkpoints ``state_dict()`` so a resumed run
    continues with the same β.
    """

    def __init__(self, beta: float, target: float, horizon: float) -> None:
        self.beta = float(beta)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, kl: float, num_samples: int) -> float:
        """β after a step of ``num_samples`` completions whose KL was ``kl``; returns the new β."""
        if not math.isfinite(kl):
            raise ValueError(f"the adaptive KL controller got a KL of {kl}; check the reference log-probs.")
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.beta *= 1.0 + error * num_samples / self.horizon
        return self.beta

    def state_dict(self) -> dict[str, float]:
        return {"beta": self.beta}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        self.beta = float(state["beta"])


@dataclass(frozen=True)
class KLPenalty:
    """A KL penalty the engine puts in the reward: r_t −= β·k_t per token (k: ``estimator``)."""

    beta: float
    estimator: str


# ----------------------------------------------------------------------------------------------
# Base classes
# ----------------------------------------------------------------------------------------------


class OnlineObjective(UsageObjective, abc.ABC):
    """Base of an online objective: trains on a ``RolloutBatch``, with a KL leash to the reference.

    Class attributes and methods tell the engine what to prepare:

    - ``data_formats = ("rollout",)``: rollouts, not offline records;
    - ``advantage_estimator``: the ``prefcore.advantages`` estimator the engine fills
      ``batch.advantages`` with; ``estimator()`` and ``estimator_options()`` when a config
      option decides it;
    - ``uses_reference()``: whether reference log-probs are needed (β > 0 and a KL location);
    - ``reward_kl()``: the penalty to subtract from the rewards before the estimator, or None;
    - ``loss_mask(batch)``: the tokens that carry a loss; ``batch.num_tokens`` counts these
      over the step;
    - ``beta``, ``update_kl(kl, num_samples)``, ``state_dict()``/``load_state_dict()``: the
      current β and its controller (fixed, or adaptive with ``kl_target``), to checkpoint.

    The config is an ``OnlineConfig``; ``loss`` reports ``kl`` (mean per-token k-estimate over
    the loss tokens, whenever the batch has reference log-probs) and ``beta`` every step.
    """

    data_formats: ClassVar[tuple[str, ...]] = (ROLLOUT_FORMAT,)
    advantage_estimator: ClassVar[str] = "group"

    def __init__(self, config: Any | None = None) -> None:
        super().__init__(config)
        if self.config.kl_target is not None:
            self.kl_controller: FixedKLController | AdaptiveKLController = AdaptiveKLController(
                self.config.beta, self.config.kl_target, self.config.kl_horizon
            )
        else:
            self.kl_controller = FixedKLController(self.config.beta)

    def uses_reference(self) -> bool:
        return self.config.beta > 0 and self.config.kl_location != "none"

    def estimator(self) -> str:
        """The advantage estimator of this configured objective (``advantage_estimator`` unless an option decides)."""
        return self.advantage_estimator

    def estimator_options(self) -> dict[str, Any]:
        """Options the objective's config passes to its advantage estimator (none by default)."""
        return {}

    @property
    def beta(self) -> float:
        """The current β (the controller's)."""
        return self.kl_controller.beta

    def update_kl(self, kl: float, num_samples: int) -> float:
        """Tell the controller the step's observed KL; returns β for the next step."""
        return self.kl_controller.update(kl, num_samples)

    def state_dict(self) -> dict[str, float]:
        """The KL controller's state, for checkpoints."""
        return self.kl_controller.state_dict()

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        self.kl_controller.load_state_dict(state)

    def kl_in_loss(self) -> bool:
        return self.uses_reference() and self.config.kl_location == "loss"

    def reward_kl(self) -> KLPenalty | None:
        """The per-token penalty −β·k the engine adds to the rewards, or None when the KL is not in the reward."""
        if self.uses_reference() and self.config.kl_location == "reward":
            return KLPenalty(self.beta, self.config.kl_estimator)
        return None

    def loss_mask(self, batch: RolloutBatch) -> torch.Tensor:
        """``[S, T]`` the tokens that carry a loss: ``batch.mask``, less truncated ones with ``mask_truncated``."""
        return truncation_mask(batch, self.config.mask_truncated)

    def require_reference(self, batch: RolloutBatch) -> torch.Tensor:
        if batch.ref_logps is None:
            raise ValueError(
                f"objective {self.name!r} puts β·KL in the loss (beta={self.config.beta}), but the batch has no "
                f"ref_logps; the engine must compute reference log-probs when uses_reference() is True."
            )
        return batch.ref_logps

    def kl_metrics(self, batch: RolloutBatch, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """``kl`` (when the batch has reference log-probs) and ``beta``: logged every step."""
        metrics = {"beta": torch.tensor(self.beta)}
        if batch.ref_logps is not None:
            with torch.no_grad():
                estimator = "k3" if self.config.kl_estimator == "k3+" else self.config.kl_estimator
                kl = kl_estimate(_float(batch.policy_logps), _float(batch.ref_logps), mask, estimator)
                metrics["kl"] = kl.sum().float() / mask.sum().clamp(min=1).float()
        return metrics

    @abc.abstractmethod
    def loss(self, batch: RolloutBatch) -> LossOutput:  # type: ignore[override]
        """The scalar loss of this micro-batch (exact across accumulation) and named metrics."""


class TokenObjective(OnlineObjective):
    """Base of an online objective that is a per-token loss: write ``token_loss(batch, mask)``.

    The base adds β·KL per token (``kl_estimate``) when the KL is in the loss, reduces with
    ``config.aggregation`` (``aggregate``) and reports ``kl``, ``beta`` and what ``token_loss``
    returns as metrics. The config needs an ``aggregation`` field.
    """

    @abc.abstractmethod
    def token_loss(self, batch: RolloutBatch, mask: torch.Tensor) -> tuple[torch.Tensor, Mapping[str, Any]]:
        """``[S, T]`` per-token policy losses (values off ``mask`` are ignored) and extra metrics."""

    def loss(self, batch: RolloutBatch) -> LossOutput:  # type: ignore[override]
        mask = self.loss_mask(batch)
        token_losses, metrics = self.token_loss(batch, mask)
        if self.kl_in_loss():
            reference = self.require_reference(batch)
            kl = kl_estimate(_float(batch.policy_logps), _float(reference).detach(), mask, self.config.kl_estimator)
            token_losses = token_losses + self.beta * kl.to(token_losses.dtype)
        loss = aggregate(token_losses, mask, batch, self.config.aggregation)
        return LossOutput(loss, {**self.kl_metrics(batch, mask), **metrics})


class ScoreFunctionObjective(TokenObjective):
    """An on-policy objective whose loss is the score function −A·log π_θ (REINFORCE, ReMax).

    A subclass names its ``advantage_estimator`` and its config (a ``ScoreFunctionConfig``); one
    update per batch of rollouts keeps the gradient unbiased, since no importance ratio is applied.
    """

    needs_reference = False

    def token_loss(self, batch: RolloutBatch, mask: torch.Tensor) -> tuple[torch.Tensor, Mapping[str, Any]]:
        return score_function_loss(batch, mask), {}

"""Actor-critic helpers: per-token rewards, generalised advantage estimation, the clipped value loss.

PPO for language models (Schulman et al. 2017, https://arxiv.org/abs/1707.06347; Ziegler et
al. 2019, https://arxiv.org/abs/1909.08593) trains a value model V beside the policy and
turns each completion's outcome score into per-token advantages with it. The pieces are pure
functions on ``[S, T]`` tensors (``S`` completions, ``T`` completion positions, ``mask`` the
real tokens, a prefix of each row), so a third-party objective can reuse them:

    r_t = −β·k_t + [t = last real token]·score          ``token_rewards``
    δ_t = r_t + γ·V_{t+1} − V_t,  V after the last real token = 0
    A_t = Σ_l (γλ)^l·δ_{t+l},  G_t = A_t + V_t          ``generalized_advantage_estimation``
    L_V = ½·max((V − G)², (V_old + clip(V − V_old, ±ε_v) − G)²)   ``clipped_value_loss``

``whiten`` normalises over the masked entries of the whole batch (``masked_whiten``); with
``shift_mean=False`` the mean is put back, as TRL's ``whiten_rewards`` does (shifting per-token
rewards would add a length bias). ``gae_estimator`` is the same GAE in the shape of
``prefcore.advantages`` estimators (``"ppo_gae"`` there): the engine passes the critic's values.
"""

from __future__ import annotations

from typing import Any

from prefcore.advantages import AdvantageResult
from prefcore.advantages import masked_mean
from prefcore.advantages import masked_whiten
from prefcore.lazy import lazy_module

torch = lazy_module("torch")

__all__ = [
    "VALUE_AGGREGATIONS",
    "clipped_value_loss",
    "explained_variance",
    "gae_estimator",
    "generalized_advantage_estimation",
    "last_token",
    "token_rewards",
    "whiten",
]

VALUE_AGGREGATIONS: tuple[str, ...] = ("token_mean", "sequence_mean")
"""How ``clipped_value_loss`` reduces its per-token losses."""


def _float(values: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 to fp32 (squared errors lose too much in half precision); fp32/fp64 unchanged."""
    return values.float() if values.dtype in (torch.float16, torch.bfloat16) else values


def last_token(mask: torch.Tensor) -> torch.Tensor:
    """``[S, T]`` bool one-hot of each row's last masked position (all False for an empty row)."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask, positions, torch.full_like(positions, -1)).max(dim=1).values
    return (positions == last.unsqueeze(1)) & mask


def token_rewards(scores: torch.Tensor, kl: torch.Tensor | None, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """``[S, T]`` per-token rewards: −β·k_t on every real token, plus the score on the last one.

    ``kl``: the ``[S, T]`` per-token KL estimate (k1 = log π_old − log π_ref, as RLHF puts it in
    the reward), or None for none; ``scores``: ``[S]`` outcome of each completion. A cost (Safe-RLHF)
    is the same with ``beta`` negated: +β·k_t plus the cost at the end.
    """
    scores = scores.float()
    rewards = torch.zeros(mask.shape, dtype=scores.dtype, device=scores.device)
    if kl is not None and beta:
        rewards = rewards - beta * kl.to(rewards.dtype)
    rewards = rewards + last_token(mask).to(rewards.dtype) * scores.unsqueeze(1)
    return rewards * mask.to(rewards.dtype)


def generalized_advantage_estimation(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE (Schulman et al. 2016, https://arxiv.org/abs/1506.02438, Eq. 16) over each row's real tokens.

    δ_t = r_t + γ·V_{t+1}·m_{t+1} − V_t and A_t = δ_t + γλ·A_{t+1}·m_{t+1}: the value after a row's
    last real token is 0 (the episode ends). Returns ``(advantages, returns)``, both ``[S, T]`` and
    0 off ``mask``, with returns G = A + V, the value model's regression target.
    """
    dtype = torch.promote_types(rewards.dtype, torch.float32)
    weights = mask.to(dtype)
    rewards, values = rewards.to(dtype) * weights, values.to(dtype) * weights
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    next_value = torch.zeros_like(rewards[:, 0])
    next_mask = torch.zeros_like(rewards[:, 0])
    for position in range(rewards.shape[1] - 1, -1, -1):
        delta = rewards[:, position] + gamma * next_value * next_mask - values[:, position]
        running = (delta + gamma * lam * running * next_mask) * weights[:, position]
        advantages[:, position] = running
        next_value, next_mask = values[:, position], weights[:, position]
    return advantages, (advantages + values) * weights


def whiten(values: torch.Tensor, mask: torch.Tensor, *, shift_mean: bool = True, epsilon: float = 1e-8) -> torch.Tensor:
    """``masked_whiten`` over the batch; ``shift_mean=False`` adds the mean back (TRL ``whiten_rewards``)."""
    whitened = masked_whiten(values, mask, epsilon=epsilon)
    if not shift_mean:
        whitened = whitened + masked_mean(values, mask) * mask.to(values.dtype)
    return whitened


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 − Var(G − V)/Var(G) over the masked tokens: 1 for a perfect critic, ≤ 0 for one no better than a constant."""
    with torch.no_grad():
        values, returns = _float(values), _float(returns)
        variance = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
        residual = returns - values
        residual_variance = masked_mean((residual - masked_mean(residual, mask)) ** 2, mask)
        return 1 - residual_variance / variance.clamp(min=1e-8)


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip: float | None = 0.2,
    *,
    aggregation: str = "token_mean",
    num_tokens: int | None = None,
    num_sequences: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped value loss ½·max((V − G)², (V_old + clip(V − V_old, ±ε_v) − G)²), reduced over ``mask``.

    Ziegler et al. 2019 (``lm-human-preferences``), TRL's PPO ``vf_clip``, OpenRLHF ``ValueLoss``;
    ``clip`` None drops the clipped term. ``aggregation``: ``token_mean`` (Σ/``num_tokens``, the
    step's token count, this batch's when None: exact across gradient accumulation) or
    ``sequence_mean`` (each row's token mean, summed over rows / ``num_sequences``). Metrics:
    ``value/clip_fraction`` (share of tokens whose clipped term is the larger),
    ``value/explained_variance``, ``value/mean``, ``value/returns_mean``.
    """
    if aggregation not in VALUE_AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {', '.join(VALUE_AGGREGATIONS)}. Got {aggregation!r}.")
    mask = mask.bool()
    values = _float(values)
    old_values, returns = old_values.detach().to(values.dtype), returns.detach().to(values.dtype)
    losses = (values - returns) ** 2
    clipped_larger = torch.zeros_like(mask)
    if clip is not None:
        clipped = old_values + (values - old_values).clamp(-clip, clip)
        clipped_losses = (clipped - returns) ** 2
        clipped_larger = (clipped_losses > losses) & mask
        losses = torch.maximum(losses, clipped_losses)
    losses = 0.5 * torch.where(mask, losses, torch.zeros_like(losses))
    if aggregation == "token_mean":
        loss = losses.sum() / max(int(mask.sum()) if num_tokens is None else num_tokens, 1)
    else:
        rows = losses.sum(-1) / mask.sum(-1).clamp(min=1)
        loss = rows.sum() / max(mask.shape[0] if num_sequences is None else num_sequences, 1)
    count = mask.sum().clamp(min=1).float()
    metrics = {
        "value/clip_fraction": clipped_larger.sum().float() / count,
        "value/explained_variance": explained_variance(values, returns, mask),
        "value/mean": masked_mean(values.detach(), mask),
        "value/returns_mean": masked_mean(returns, mask),
    }
    return loss, metrics


def gae_estimator(
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    mask: torch.Tensor,
    /,
    *,
    values: torch.Tensor | None = None,
    kl: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    gamma: float = 1.0,
    lam: float = 0.95,
    whiten_advantages: bool = True,
) -> AdvantageResult:
    """GAE in the shape of a ``prefcore.advantages`` estimator: outcome rewards ``[S]`` → ``[S, T]`` advantages.

    r_t = −``kl_coef``·``kl``_t + [t = last]·R (``token_rewards``), then ``generalized_advantage_estimation``
    with the critic's ``values`` (``[S, T]``; None = 0, the critic-free return-to-go discounted by γλ),
    whitened over the batch unless ``whiten_advantages`` is False. The returns are left out: the
    PPO trainer calls the two functions itself to keep them for the value loss.
    """
    rewards = rewards.float()
    if values is None:
        values = torch.zeros(mask.shape, dtype=rewards.dtype, device=rewards.device)
    elif tuple(values.shape) != tuple(mask.shape):
        raise ValueError(f"values shape {tuple(values.shape)} must equal mask shape {tuple(mask.shape)}.")
    per_token = token_rewards(rewards, kl, mask, kl_coef)
    advantages, _ = generalized_advantage_estimation(per_token, values, mask, gamma, lam)
    if whiten_advantages:
        advantages = whiten(advantages, mask)
    metrics: dict[str, Any] = {}
    chosen = advantages[mask]
    if chosen.numel():
        metrics = {"advantages/mean": float(chosen.mean()), "advantages/std": float(chosen.std(correction=0))}
    return AdvantageResult(advantages, metrics)

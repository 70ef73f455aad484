"""Advantage estimators: rewards of scored rollouts → per-token advantages.

An online objective trains on ``A_t``, the advantage of each completion token, and the
REINFORCE/GRPO family differs mostly in how ``A`` is made from the rewards, not in the loss.
So each estimator here is a pure function on tensors, testable without a model:

    estimator(rewards [S], group_ids [S], mask [S, T], **options) -> AdvantageResult
    AdvantageResult.advantages: [S, T], 0 where ``mask`` is False
    AdvantageResult.metrics:    {"advantages/zero_std_groups": ..., ...}

``S`` completions, ``G`` per prompt (the prompt's ``group_id``; groups may differ in size), ``T``
completion positions. An objective declares its estimator by name (``advantage_estimator =
"group"``) and the engine calls ``estimate_advantages(name, rewards, group_ids, mask,
**options)``; a third-party objective may instead set ``advantage_estimator`` to its own
function of the same shape, so a new estimator is one file without a registry hook.

Zero-variance groups: where every completion of a prompt has the same reward, an estimator
whose baseline comes from the group (``group``, ``rloo``, ``reinforce_pp_baseline``) gives
exactly 0 there (set explicitly, not left to floating-point cancellation); every estimator
counts such groups in ``advantages/zero_std_groups`` (a single-completion group counts too).
``dynamic_sampling_filter`` tells which groups DAPO's dynamic sampling keeps.

Sharded batches. Under data parallelism each rank holds a slice of the batch (whole groups).
Inside ``sharded_batch(sum_fn)`` the batch-wide statistics (the batch mean of ``reinforce``,
the batch std of ``scale = "batch"``, RLOO's ``normalize``, the masked whitening of REINFORCE++
and PPO) are taken over every rank's slice: each is made of sums (values, squares about the
global mean, counts) that ``sum_fn`` adds up across the ranks. Group statistics need nothing,
since a group never straddles ranks. Outside it, nothing changes.

Estimators (name → function):

- ``group``: GRPO, ``group_normalized``;
- ``rloo``: leave-one-out baseline, ``leave_one_out``;
- ``reinforce``: REINFORCE with the batch-mean baseline, ``reinforce_baseline``;
- ``reinforce_pp``: REINFORCE++, ``reinforce_pp``;
- ``reinforce_pp_baseline``: REINFORCE++-baseline, ``reinforce_pp_baseline``;
- ``remax``: ReMax's greedy baseline, ``remax``;
- ``ppo_gae``: PPO's generalised advantage estimation with a critic's values, ``gae``
  (``prefcore.critic``).
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from types import MappingProxyType
from typing import Any
from typing import Protocol

from prefcore.errors import ConfigError
from prefcore.lazy import lazy_module

torch = lazy_module("torch")

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "GROUP_EPSILON",
    "SCALES",
    "WHITEN_EPSILON",
    "AdvantageEstimator",
    "AdvantageResult",
    "DynamicSamplingResult",
    "GroupStatistics",
    "dynamic_sampling_filter",
    "estimate_advantages",
    "gae",
    "group_normalized",
    "group_statistics",
    "leave_one_out",
    "masked_mean",
    "masked_whiten",
    "reinforce_baseline",
    "reinforce_pp",
    "reinforce_pp_baseline",
    "remax",
    "resolve_estimator",
    "return_to_go",
    "sharded_batch",
]

GROUP_EPSILON = 1e-4
"""ε of GRPO's (R − mean)/(std + ε): TRL's value (``grpo_trainer.py``); verl uses 1e-6."""

WHITEN_EPSILON = 1e-8
"""Floor of the variance in ``masked_whiten`` (OpenRLHF clamps the variance at 1e-8 before ``rsqrt``)."""

SCALES: tuple[str, ...] = ("group", "batch", "none")
"""GRPO's ``scale``: divide by the group's std, by the whole batch's std, or not at all (Dr. GRPO)."""


@dataclass(frozen=True)
class AdvantageResult:
    """Per-token advantages ``[S, T]`` (0 where masked) and metrics named ``advantages/...``."""

    advantages: torch.Tensor
    metrics: Mapping[str, float] = field(default_factory=dict)


class AdvantageEstimator(Protocol):
    """``estimator(rewards [S], group_ids [S], mask [S, T], **options) -> AdvantageResult``."""

    def __call__(
        self, rewards: torch.Tensor, group_ids: torch.Tensor, mask: torch.Tensor, /, **options: Any
    ) -> AdvantageResult: ...


# ----------------------------------------------------------------------------------------------
# Groups and masks
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupStatistics:
    """Per-completion views of each completion's group.

    Attributes:
        index: ``[S]`` long, the group of each completion as 0..P−1 (P distinct ids, sorted).
        size: ``[S]`` completions in the group.
        total: ``[S]`` sum of the group's rewards.
        mean: ``[S]`` the group's mean reward.
        std: ``[S]`` the group's standard deviation with Bessel's correction (as ``torch.std`` and
            TRL's ``nanstd``); 0 for a single-completion group.
        constant: ``[S]`` bool, True where every reward of the group is equal (incl. size 1).
        num_groups: P.
        zero_std_groups: how many groups are constant.
    """

    index: torch.Tensor
    size: torch.Tensor
    total: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    constant: torch.Tensor
    num_groups: int
    zero_std_groups: int


def _float(rewards: torch.Tensor) -> torch.Tensor:
    return rewards if rewards.is_floating_point() else rewards.float()


def group_statistics(rewards: torch.Tensor, group_ids: torch.Tensor) -> GroupStatistics:
    """Mean, std and constancy of each completion's group; groups need not be contiguous or equal-sized."""
    rewards = _float(rewards)
    unique, index = torch.unique(group_ids, return_inverse=True)
    count = unique.numel()
    size = torch.zeros(count, dtype=rewards.dtype, device=rewards.device).index_add_(0, index, torch.ones_like(rewards))
    total = torch.zeros_like(size).index_add_(0, index, rewards)
    mean = total / size
    squares = torch.zeros_like(size).index_add_(0, index, (rewards - mean[index]) ** 2)
    std = torch.where(size > 1, (squares / (size - 1).clamp(min=1)).sqrt(), torch.zeros_like(size))
    high = torch.full_like(size, -math.inf).scatter_reduce(0, index, rewards, reduce="amax")
    low = torch.full_like(size, math.inf).scatter_reduce(0, index, rewards, reduce="amin")
    constant = high == low
    return GroupStatistics(
        index=index,
        size=size[index],
        total=total[index],
        mean=mean[index],
        std=std[index],
        constant=constant[index],
        num_groups=count,
        zero_std_groups=int(constant.sum()),
    )


_BATCH_SUMS: list[Callable[[torch.Tensor], torch.Tensor]] = []


@contextmanager
def sharded_batch(sum_fn: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Inside: batch statistics add up ``sum_fn`` (a tensor summed over the ranks) of each rank's sums."""
    _BATCH_SUMS.append(sum_fn)
    try:
        yield
    finally:
        _BATCH_SUMS.pop()


def _batch_sum() -> Callable[[torch.Tensor], torch.Tensor] | None:
    return _BATCH_SUMS[-1] if _BATCH_SUMS else None


def _batch_mean_std(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and Bessel-corrected std of ``values`` over every rank's slice (inside ``sharded_batch``)."""
    total = _BATCH_SUMS[-1]
    count_sum = total(torch.stack([values.new_tensor(float(values.numel())), values.sum()]))
    count, mean = count_sum[0], count_sum[1] / count_sum[0].clamp(min=1)
    squares = total(((values - mean) ** 2).sum().reshape(1))[0]
    std = (squares / (count - 1).clamp(min=1)).sqrt() if float(count) > 1 else torch.zeros_like(mean)
    return mean, std


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the True entries of ``mask`` (0 when none is); all ranks' inside ``sharded_batch``."""
    mask = mask.to(values.dtype)
    total = _batch_sum()
    if total is not None:
        sums = total(torch.stack([(values * mask).sum(), mask.sum()]))
        return sums[0] / sums[1].clamp(min=1)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(
    values: torch.Tensor, mask: torch.Tensor, *, center: bool = True, epsilon: float = WHITEN_EPSILON
) -> torch.Tensor:
    """``(v − μ)/sqrt(max(σ², ε))`` over the masked entries of the whole batch; 0 where masked.

    μ and σ² are the mean and the population variance (no Bessel correction) of the masked
    entries, as OpenRLHF's global advantage normalisation
    (``openrlhf/trainer/ppo_utils/experience_maker.py``). ``center=False`` divides by σ without
    subtracting μ (σ² is still taken about μ).
    """
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    shifted = values - mean if center else values
    return shifted * variance.clamp(min=epsilon).rsqrt() * mask.to(values.dtype)


def return_to_go(token_rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """``G_t = Σ_{s ≥ t} γ^{s−t}·r_s`` over the masked positions of each row; 0 where masked."""
    token_rewards = token_rewards * mask.to(token_rewards.dtype)
    returns = torch.zeros_like(token_rewards)
    running = torch.zeros_like(token_rewards[:, 0])
    for position in range(token_rewards.shape[1] - 1, -1, -1):
        running = token_rewards[:, position] + gamma * running
        returns[:, position] = running
    return returns * mask.to(token_rewards.dtype)


def _last_token(mask: torch.Tensor) -> torch.Tensor:
    """``[S, T]`` one-hot of each row's last masked position (all False for an empty row)."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask, positions, torch.full_like(positions, -1)).max(dim=1).values
    return (positions == last.unsqueeze(1)) & mask


def _broadcast(sequence_advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return sequence_advantages.unsqueeze(1) * mask.to(sequence_advantages.dtype)


def _metrics(advantages: torch.Tensor, mask: torch.Tensor, stats: GroupStatistics) -> dict[str, float]:
    values = advantages[mask]
    return {
        "advantages/mean": float(values.mean()) if values.numel() else 0.0,
        "advantages/std": float(values.std(correction=0)) if values.numel() else 0.0,
        "advantages/max": float(values.max()) if values.numel() else 0.0,
        "advantages/min": float(values.min()) if values.numel() else 0.0,
        "advantages/groups": float(stats.num_groups),
        "advantages/zero_std_groups": float(stats.zero_std_groups),
    }


# ----------------------------------------------------------------------------------------------
# Estimators
# ----------------------------------------------------------------------------------------------


def group_normalized(
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    mask: torch.Tensor,
    /,
    *,
    scale: str = "group",
    epsilon: float = GROUP_EPSILON,
) -> AdvantageResult:
    """GRPO's group-normalised advantage, the same on every token of a completion.

    Shao et al. 2024, "DeepSeekMath" (https://arxiv.org/abs/2402.03300), §4.1.2; scale
    options as TRL's ``scale_rewards`` (``trl/trainer/grpo_trainer.py``):

        scale = "group":  A_i = (R_i − mean_g(R)) / (std_g(R) + ε)
        scale = "batch":  A_i = (R_i − mean_g(R)) / (std(R) + ε)      std over the whole batch
        scale = "none":   A_i =  R_i − mean_g(R)                      (Dr. GRPO, arXiv 2503.20783)

    mean_g, std_g: mean and Bessel-corrected std of the completions sharing i's prompt; ε =
    ``epsilon`` (TRL's 1e-4). A group whose rewards are all equal gets A = 0.
    """
    if scale not in SCALES:
        raise ConfigError(f"scale must be one of {', '.join(SCALES)}; got {scale!r}.", field="scale")
    rewards = _float(rewards)
    stats = group_statistics(rewards, group_ids)
    centred = rewards - stats.mean
    if scale == "group":
        centred = centred / (stats.std + epsilon)
    elif scale == "batch" and _batch_sum() is not None:
        centred = centred / (_batch_mean_std(rewards)[1] + epsilon)
    elif scale == "batch":
        batch_std = rewards.std() if rewards.numel() > 1 else torch.zeros((), dtype=rewards.dtype)
        centred = centred / (batch_std + epsilon)
    sequence = torch.where(stats.constant, torch.zeros_like(centred), centred)
    advantages = _broadcast(sequence, mask)
    return AdvantageResult(advantages, _metrics(advantages, mask, stats))


def leave_one_out(
    rewards: torch.Tensor, group_ids: torch.Tensor, mask: torch.Tensor, /, *, normalize: bool = False
) -> AdvantageResult:
    """RLOO: each completion's baseline is the mean reward of the other completions of its prompt.

    Kool et al. 2019, "Buy 4 REINFORCE Samples, Get a Baseline for Free!"; Ahmadian et al.
    2024, "Back to Basics" (https://arxiv.org/abs/2402.14740), Eq. 7:

        A_i = R_i − (1/(G_g − 1))·Σ_{j ≠ i, j in g} R_j

    G_g ≥ 2 completions per prompt are needed. ``normalize``: then (A − mean(A))/(std(A) + 1e-4)
    over the batch, as TRL's ``normalize_advantages`` (``trl/trainer/rloo_trainer.py``).
    """
    rewards = _float(rewards)
    stats = group_statistics(rewards, group_ids)
    if bool((stats.size < 2).any()):
        single = int(group_ids[stats.size < 2][0])
        raise ValueError(
            f"RLOO needs at least 2 completions per prompt (the baseline leaves one out); group {single} has 1. "
            "Sample samples_per_prompt >= 2."
        )
    sequence = rewards - (stats.total - rewards) / (stats.size - 1)
    if normalize and _batch_sum() is not None:
        mean, std = _batch_mean_std(sequence)
        sequence = (sequence - mean) / (std + GROUP_EPSILON)
    elif normalize:
        sequence = (sequence - sequence.mean()) / (sequence.std() + GROUP_EPSILON)
    sequence = torch.where(stats.constant, torch.zeros_like(sequence), sequence)
    advantages = _broadcast(sequence, mask)
    return AdvantageResult(advantages, _metrics(advantages, mask, stats))


def reinforce_baseline(rewards: torch.Tensor, group_ids: torch.Tensor, mask: torch.Tensor, /) -> AdvantageResult:
    """REINFORCE with the batch-mean reward as baseline, on every token of a completion.

    Williams 1992, "Simple statistical gradient-following algorithms"; the baseline b = mean
    reward of the batch (Ahmadian et al. 2024, https://arxiv.org/abs/2402.14740, §3.1 use a
    moving average; the batch mean is its one-batch form):

        A_i = R_i − (1/S)·Σ_j R_j

    Not group-based: a constant group keeps R_i − b (still counted in the metrics).
    """
    rewards = _float(rewards)
    stats = group_statistics(rewards, group_ids)
    baseline = rewards.mean() if _batch_sum() is None else _batch_mean_std(rewards)[0]
    advantages = _broadcast(rewards - baseline, mask)
    return AdvantageResult(advantages, _metrics(advantages, mask, stats))


def _token_returns(
    outcome: torch.Tensor, mask: torch.Tensor, kl: torch.Tensor | None, kl_coef: float, gamma: float
) -> torch.Tensor:
    if kl_coef < 0 or not math.isfinite(kl_coef):
        raise ConfigError(f"kl_coef must be a finite number >= 0; got {kl_coef!r}.", field="kl_coef")
    token_rewards = torch.zeros(mask.shape, dtype=outcome.dtype, device=outcome.device)
    if kl_coef:
        if kl is None:
            raise ValueError("kl_coef > 0 needs kl: the per-token k1 estimate log π_old − log π_ref, [S, T].")
        if tuple(kl.shape) != tuple(mask.shape):
            raise ValueError(f"kl shape {tuple(kl.shape)} must equal mask shape {tuple(mask.shape)}.")
        token_rewards = token_rewards - kl_coef * kl.to(outcome.dtype)
    token_rewards = token_rewards + _last_token(mask).to(outcome.dtype) * outcome.unsqueeze(1)
    return return_to_go(token_rewards, mask, gamma)


def reinforce_pp(
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    mask: torch.Tensor,
    /,
    *,
    kl: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    gamma: float = 1.0,
) -> AdvantageResult:
    """REINFORCE++: the KL penalty in a per-token reward, return-to-go, global-batch whitening.

    Hu 2025, "REINFORCE++" (https://arxiv.org/abs/2501.03262), Eq. 5–7; OpenRLHF's
    ``advantage_estimator = "reinforce"``:

        r_t = −β·k1_t + [t = last token]·R          k1_t = log π_old(y_t) − log π_ref(y_t)
        G_t = Σ_{s ≥ t} γ^{s−t}·r_s                 (γ = 1 by default)
        A_t = (G_t − μ) / σ                         μ, σ over every masked token of the batch

    β = ``kl_coef``, ``kl`` the ``[S, T]`` k1 values (needed when β > 0). Not group-based.
    """
    rewards = _float(rewards)
    stats = group_statistics(rewards, group_ids)
    returns = _token_returns(rewards, mask, kl, kl_coef, gamma)
    advantages = masked_whiten(returns, mask)
    return AdvantageResult(advantages, _metrics(advantages, mask, stats))


def reinforce_pp_baseline(
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    mask: torch.Tensor,
    /,
    *,
    kl: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    gamma: float = 1.0,
    center: bool = False,
) -> AdvantageResult:
    """REINFORCE++-baseline: the group mean as baseline, then division by the global std.

    Hu 2025 (https://arxiv.org/abs/2501.03262), "REINFORCE++-baseline"; OpenRLHF's
    ``advantage_estimator = "reinforce_baseline"``, recommended there for verifiable rewards
    with the KL in the loss (``kl_coef = 0`` here):

        A'_t = Σ_{s ≥ t} γ^{s−t}·(−β·k1_s + [s = last token]·(R − mean_g(R)))
        A_t  = A'_t / σ                 σ: std of A' over every masked token of the batch

    ``center = True`` also subtracts the masked batch mean of A' (OpenRLHF's whitening); the
    default keeps a constant group's advantage at exactly 0 when β = 0.
    """
    rewards = _float(rewards)
    stats = group_statistics(rewards, group_ids)
    outcome = torch.where(stats.constant, torch.zeros_like(rewards), rewards - stats.mean)
    returns = _token_returns(outcome, mask, kl, kl_coef, gamma)
    advantages = masked_whiten(returns, mask, center=center)
    return AdvantageResult(advantages, _metrics(advantages, mask, stats))


def remax(
    rewards: torch.Tensor, group_ids: torch.Tensor, mask: torch.Tensor, /, *, baselines: torch.Tensor
) -> AdvantageResult:
    """ReMax: the reward of the prompt's greedy completion is the baseline.

    Li et al. 2023, "ReMax" (https://arxiv.org/abs/2310.10505), Algorithm 1; verl's
    ``remax`` estimator:

        A_i = R(x, y_i) − R(x, ȳ)        ȳ: the greedy (argmax) completion of prompt x

    ``baselines``: ``[S]`` R(x, ȳ) of each completion's prompt, scored by the engine.
    """
    rewards = _float(rewards)
    if tuple(baselines.shape) != tuple(rewards.shape):
        raise ValueError(f"baselines must be [S] = [{rewards.shape[0]}]; got shape {tuple(baselines.shape)}.")
    stats = group_statistics(rewards, group_ids)
    advantages = _broadcast(rewards - baselines.to(rewards.dtype), mask)
    return AdvantageResult(advantages, _metrics(advantages, mask, stats))


def gae(
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
    """PPO's GAE over per-token rewards with the critic's ``values`` [S, T] (``prefcore.critic.gae_estimator``)."""
    from prefcore.critic import gae_estimator  # prefcore.critic builds on this module

    return gae_estimator(
        rewards,
        group_ids,
        mask,
        values=values,
        kl=kl,
        kl_coef=kl_coef,
        gamma=gamma,
        lam=lam,
        whiten_advantages=whiten_advantages,
    )


ADVANTAGE_ESTIMATORS: Mapping[str, Callable[..., AdvantageResult]] = MappingProxyType(
    {
        "group": group_normalized,
        "rloo": leave_one_out,
        "reinforce": reinforce_baseline,
        "reinforce_pp": reinforce_pp,
        "reinforce_pp_baseline": reinforce_pp_baseline,
        "remax": remax,
        "ppo_gae": gae,
    }
)
"""The built-in estimators by the name an objective declares (``advantage_estimator = "group"``)."""


# ----------------------------------------------------------------------------------------------
# Dynamic sampling (DAPO)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DynamicSamplingResult:
    """Which completions and groups DAPO's dynamic sampling keeps.

    Attributes:
        keep: ``[S]`` bool, True for the completions of kept groups.
        kept_groups: the group ids kept, ascending.
        dropped_groups: the group ids dropped (all rewards equal), ascending.
    """

    keep: torch.Tensor
    kept_groups: tuple[int, ...]
    dropped_groups: tuple[int, ...]


def dynamic_sampling_filter(rewards: torch.Tensor, group_ids: torch.Tensor) -> DynamicSamplingResult:
    """Keep the groups whose rewards are not all equal (DAPO's dynamic sampling).

    Yu et al. 2025, "DAPO" (https://arxiv.org/abs/2503.14476), Eq. 11: a prompt whose samples
    are all right or all wrong has zero group-normalised advantage and no gradient, so it is
    dropped (and more prompts are sampled until the batch is full: the engine's part).
    """
    rewards = _float(rewards)
    stats = group_statistics(rewards, group_ids)
    keep = ~stats.constant
    constant = torch.zeros(stats.num_groups, dtype=torch.bool, device=keep.device)
    constant[stats.index] = stats.constant
    ids = torch.unique(group_ids).tolist()
    kept = tuple(int(g) for g, flat in zip(ids, constant.tolist(), strict=True) if not flat)
    dropped = tuple(int(g) for g, flat in zip(ids, constant.tolist(), strict=True) if flat)
    return DynamicSamplingResult(keep=keep, kept_groups=kept, dropped_groups=dropped)


# ----------------------------------------------------------------------------------------------
# The engine's entry point
# ----------------------------------------------------------------------------------------------


def resolve_estimator(estimator: str | Callable[..., AdvantageResult]) -> Callable[..., AdvantageResult]:
    """A built-in estimator by name, or ``estimator`` itself when it is a function of the estimator shape."""
    if callable(estimator):
        return estimator
    if estimator in ADVANTAGE_ESTIMATORS:
        return ADVANTAGE_ESTIMATORS[estimator]
    available = ", ".join(sorted(ADVANTAGE_ESTIMATORS))
    message = f"No advantage estimator named {estimator!r}. Available: {available}."
    close = difflib.get_close_matches(str(estimator), list(ADVANTAGE_ESTIMATORS), n=1, cutoff=0.5)
    if close:
        message += f" Did you mean {close[0]!r}?"
    message += " A plugin may also set advantage_estimator to its own function (see prefcore.advantages)."
    raise ConfigError(message, field="advantage_estimator")


def _name(estimator: Callable[..., Any]) -> str:
    for name, function in ADVANTAGE_ESTIMATORS.items():
        if function is estimator:
            return name
    return getattr(estimator, "__qualname__", repr(estimator))


def _check_inputs(rewards: torch.Tensor, group_ids: torch.Tensor, mask: torch.Tensor) -> None:
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be [S]; got shape {tuple(rewards.shape)}.")
    if tuple(group_ids.shape) != tuple(rewards.shape):
        raise ValueError(f"group_ids must be [S] = [{rewards.shape[0]}]; got shape {tuple(group_ids.shape)}.")
    if mask.dim() != 2 or mask.shape[0] != rewards.shape[0]:
        raise ValueError(f"mask must be [S, T] with S = {rewards.shape[0]}; got shape {tuple(mask.shape)}.")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor; got {mask.dtype}.")
    bad = (~torch.isfinite(_float(rewards))).nonzero()
    if bad.numel():
        index = int(bad[0])
        raise ValueError(f"reward of completion {index} is {float(rewards[index])}; rewards must be finite.")


def estimate_advantages(
    estimator: str | Callable[..., AdvantageResult],
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    mask: torch.Tensor,
    **options: Any,
) -> AdvantageResult:
    """Per-token advantages ``[S, T]`` of scored rollouts, by a built-in estimator's name or a function.

    Arguments:
        estimator: a name of ``ADVANTAGE_ESTIMATORS`` or a function
            ``(rewards, group_ids, mask, /, **options) -> AdvantageResult``.
        rewards: ``[S]`` total reward of each completion (finite).
        group_ids: ``[S]`` equal for the completions of one prompt.
        mask: ``[S, T]`` bool, the completion tokens that count.
        options: the estimator's keyword options (``scale``, ``epsilon``, ``kl``, ``kl_coef``,
            ``baselines``, ...); an option it does not take is refused with its accepted ones.
    Returns:
        the advantages (checked ``[S, T]``, finite, 0 where masked) and their metrics.
    """
    function = resolve_estimator(estimator)
    _check_inputs(rewards, group_ids, mask)
    name = _name(function)
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # no signature to read: trust the call
        signature = None
    if signature is not None and not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        accepted = [p.name for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY]
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise ConfigError(
                f"advantage estimator {name!r} takes no option {unknown[0]!r}. "
                f"Accepted: {', '.join(accepted) or '(none)'}.",
                field=unknown[0],
            )
    result = function(rewards, group_ids, mask, **options)
    if not isinstance(result, AdvantageResult):
        raise TypeError(f"advantage estimator {name!r} returned {type(result).__name__}, not an AdvantageResult.")
    if tuple(result.advantages.shape) != tuple(mask.shape):
        raise ValueError(
            f"advantage estimator {name!r} returned shape {tuple(result.advantages.shape)}; "
            f"the mask is {tuple(mask.shape)}."
        )
    if not bool(torch.isfinite(result.advantages).all()):
        row = int((~torch.isfinite(result.advantages)).any(dim=1).nonzero()[0])
        raise ValueError(f"advantage estimator {name!r} gave a non-finite advantage for completion {row}.")
    return AdvantageResult(result.advantages * mask.to(result.advantages.dtype), dict(result.metrics))

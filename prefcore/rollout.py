"""The online contract: sampled rollouts, and the rollout batch an online objective trains on.

Online preference learning samples from the current policy, scores the samples with a
reward, turns rewards into advantages and improves the policy with a leash to a reference.
The split of work is the offline one: the engine samples (``Rollouts``), scores, estimates
advantages and recomputes log-probs; an online objective receives a ``RolloutBatch`` of
per-token tensors and returns a loss. It never touches a model or a generator, so each
online objective is one formula on tensors, testable without a model.

Shapes: ``S`` completions (``G`` per prompt, prompt-major), padded to ``T`` completion
positions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from typing import Any

from prefcore.lazy import lazy_module

__all__ = ["ROLLOUT_FORMAT", "RolloutBatch", "Rollouts"]

torch = lazy_module("torch")

ROLLOUT_FORMAT = "rollout"
"""The data format an online objective declares (``data_formats = ("rollout",)``)."""


@dataclass(frozen=True)
class Rollouts:
    """Completions sampled from the policy, with what the sampler knew about each token.

    Attributes:
        prompts: the prompts as given, once each (text or message tuples).
        prompt_ids: ``S`` tuples, the token ids each completion was generated from.
        completion_ids: ``S`` tuples, the sampled tokens up to and including the first stop
            token (every end-of-turn id the tokenizer, generation config and template declare);
            no stop token when ``max_new_tokens`` ran out.
        texts: ``S`` completions decoded without special tokens (what rewards read).
        sampling_logps: ``S`` tuples of float, log-prob of each sampled token under the sampling
            policy, at the sampling temperature (``log softmax(logits / T)``).
        truncated: ``S`` bools, True where the completion hit ``max_new_tokens`` before a stop token.
        group_ids: ``S`` ints, equal for the completions of one prompt.
        samples_per_prompt: ``G``.
        temperature: the sampling temperature the log-probs were taken at.
    """

    prompts: tuple[Any, ...]
    prompt_ids: tuple[tuple[int, ...], ...]
    completion_ids: tuple[tuple[int, ...], ...]
    texts: tuple[str, ...]
    sampling_logps: tuple[tuple[float, ...], ...]
    truncated: tuple[bool, ...]
    group_ids: tuple[int, ...]
    samples_per_prompt: int
    temperature: float

    def __post_init__(self) -> None:
        count = len(self.completion_ids)
        for name in ("prompt_ids", "texts", "sampling_logps", "truncated", "group_ids"):
            if len(getattr(self, name)) != count:
                raise ValueError(f"Rollouts.{name} has {len(getattr(self, name))} entries for {count} completions.")
        for index, (ids, logps) in enumerate(zip(self.completion_ids, self.sampling_logps, strict=True)):
            if len(ids) != len(logps):
                raise ValueError(f"completion {index}: {len(ids)} tokens but {len(logps)} sampling log-probs.")

    @property
    def num_completions(self) -> int:
        return len(self.completion_ids)

    def prompt_of(self, index: int) -> Any:
        """The prompt completion ``index`` answers."""
        return self.prompts[index // self.samples_per_prompt]


@dataclass(frozen=True)
class RolloutBatch:
    """Per-token tensors of scored rollouts: what an online objective's ``loss`` receives.

    Attributes:
        policy_logps: ``[S, T]`` log π_θ of each completion token under the policy being trained
            (with gradient), at the sampling temperature; 0 where masked.
        mask: ``[S, T]`` bool, the completion tokens that count: up to and including the first
            stop token. Truncated completions are included; objectives that mask them read
            ``truncated``.
        sampling_logps: ``[S, T]`` log-probs under the policy that sampled the rollouts (no
            gradient); ``policy_logps − sampling_logps`` is the log importance ratio.
        advantages: ``[S, T]`` per-token advantage (a sequence advantage broadcast over its
            tokens, or a return-to-go), computed by the engine with the objective's estimator.
        rewards: ``[S]`` total reward of each completion (the weighted sum of the components).
        group_ids: ``[S]`` long, equal for the completions of one prompt.
        truncated: ``[S]`` bool, True where the completion hit ``max_new_tokens``.
        ref_logps: ``[S, T]`` reference log-probs, or None when the objective needs no reference.
        num_tokens: mask tokens of the whole optimiser step (all micro-batches), so a token-mean
            loss sums exactly across gradient accumulation; None = this batch's own count.
        num_sequences: completions of the whole optimiser step; None = this batch's.
        max_completion_length: ``max_new_tokens`` of the rollouts (Dr. GRPO's constant normaliser).
        extras: named per-completion tensors an estimator or objective shares (e.g. ``baseline``).
        entropy: ``[S, T]`` entropy of the policy's whole next-token distribution at each completion
            position (at the sampling temperature, with gradient), or None: the engine computes it
            from the logits only for an objective whose ``needs_entropy()`` is True (an entropy bonus).
    """

    policy_logps: torch.Tensor
    mask: torch.Tensor
    sampling_logps: torch.Tensor
    advantages: torch.Tensor
    rewards: torch.Tensor
    group_ids: torch.Tensor
    truncated: torch.Tensor
    ref_logps: torch.Tensor | None = None
    num_tokens: int | None = None
    num_sequences: int | None = None
    max_completion_length: int | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)
    entropy: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.policy_logps.dim() != 2:
            raise ValueError(f"policy_logps must be [S, T]. Got shape {tuple(self.policy_logps.shape)}.")
        shape = tuple(self.policy_logps.shape)
        for name in ("mask", "sampling_logps", "advantages", "ref_logps", "entropy"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != shape:
                raise ValueError(f"{name} shape {tuple(value.shape)} must equal policy_logps shape {shape}.")
        for name in ("rewards", "group_ids", "truncated"):
            value = getattr(self, name)
            if tuple(value.shape) != shape[:1]:
                raise ValueError(f"{name} must be [S] = [{shape[0]}]. Got shape {tuple(value.shape)}.")
        for name in ("num_tokens", "num_sequences", "max_completion_length"):
            count = getattr(self, name)
            if count is not None and count < 0:
                raise ValueError(f"{name} must be >= 0 or None. Got {count}.")

    @property
    def num_completions(self) -> int:
        return self.policy_logps.shape[0]

    @property
    def has_reference(self) -> bool:
        return self.ref_logps is not None

    def step_tokens(self) -> int:
        """Mask tokens of the optimiser step: ``num_tokens``, or this batch's own count."""
        return int(self.mask.sum()) if self.num_tokens is None else self.num_tokens

    def step_sequences(self) -> int:
        """Completions of the optimiser step: ``num_sequences``, or this batch's own count."""
        return self.num_completions if self.num_sequences is None else self.num_sequences

    def with_policy_logps(self, policy_logps: torch.Tensor) -> RolloutBatch:
        """The same batch with other policy log-probs (parity checks, several updates per rollout)."""
        return replace(self, policy_logps=policy_logps)

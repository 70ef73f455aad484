"""Sample rollouts: ``G`` completions per prompt from the current policy, with what training needs of each.

Prompts go through ``prompt_token_ids``, the function training uses, so the policy
continues exactly the text it is trained on; generation stops at every id in
``stop_token_ids`` (EOS, the generation config's, the chat template's end of turn). The
backend samples; this module owns the rules that every backend must obey alike: the
model is in eval mode (no dropout) and under ``no_grad`` while it samples, a completion is
cut after its first stop id, ``truncated`` means no stop id within ``max_new_tokens``,
texts are decoded without special tokens, and rows are prompt-major with the prompt's
index as group id.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prefcore.engine.chat import stop_token_ids
from prefcore.engine.rollout.backend import GenerationBackend
from prefcore.engine.rollout.backend import Sample
from prefcore.engine.rollout.backend import TransformersBackend
from prefcore.engine.rollout.backend import logprob_temperature
from prefcore.errors import ConfigError
from prefcore.lazy import lazy_module
from prefcore.methods import option
from prefcore.rollout import Rollouts

__all__ = ["RolloutSettings", "cut_at_stop", "sample_rollouts"]

torch = lazy_module("torch")
sequences = lazy_module("prefcore.engine.sequences")
generation = lazy_module("prefcore.engine.generation")


@dataclass(frozen=True)
class RolloutSettings:
    """How rollouts are sampled from the policy; fixed per run so a rollout phase is reproducible."""

    samples_per_prompt: int = option(8, doc="completions sampled per prompt (G), scored and compared as one group")
    max_new_tokens: int = option(64, doc="most tokens per completion; one that has no stop by then is truncated")
    temperature: float = option(
        1.0, doc="sampling temperature, also the one training log-probs are taken at (0 = greedy, log-probs at 1)"
    )
    top_p: float = option(
        1.0, doc="nucleus sampling mass; log-probs stay those of the full tempered distribution (1 = off)"
    )
    seed: int = option(0, doc="seed of the sampling; the same seed and policy give the same rollouts")

    def __post_init__(self) -> None:
        for name in ("samples_per_prompt", "max_new_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a whole number >= 1. Got {value!r}.", field=name)
        if not _real(self.temperature) or self.temperature < 0:
            raise ConfigError(
                f"temperature must be a finite number >= 0 (0 = greedy). Got {self.temperature!r}.", field="temperature"
            )
        if not _real(self.top_p) or not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1]. Got {self.top_p!r}.", field="top_p")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ConfigError(f"seed must be a whole number >= 0. Got {self.seed!r}.", field="seed")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def logprob_temperature(self) -> float:
        """The temperature of the recorded and recomputed log-probs: ``temperature``, or 1 when greedy."""
        return logprob_temperature(self.temperature)


def _real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def cut_at_stop(sample: Sample, stop_ids: Sequence[int]) -> tuple[tuple[int, ...], tuple[float, ...], bool]:
    """``(token_ids, logps, truncated)``: the sample up to and including its first stop id.

    ``truncated`` is True when no stop id occurs: the completion ran out of tokens.
    """
    stops = set(stop_ids)
    for index, token in enumerate(sample.token_ids):
        if token in stops:
            return tuple(sample.token_ids[: index + 1]), tuple(sample.logps[: index + 1]), False
    return tuple(sample.token_ids), tuple(sample.logps), True


def sample_rollouts(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Any],
    settings: RolloutSettings,
    *,
    backend: GenerationBackend | None = None,
    prefix: str = "",
    seed: int | None = None,
) -> Rollouts:
    """``settings.samples_per_prompt`` completions of each prompt, prompt-major, with sampling log-probs.

    Arguments:
        model: the policy; put in eval mode for sampling, its train/eval mode restored after.
        tokenizer: the policy's tokenizer (prompt ids, stop ids, decoding).
        prompts: text prompts or tuples of chat messages.
        settings: sampling settings.
        backend: what generates; default ``TransformersBackend()`` (transformers' ``generate``).
        prefix: condition text put before each prompt, as training puts it.
        seed: overrides ``settings.seed`` (a loop passes a new seed per rollout phase, e.g.
            ``settings.seed + step``, so a resumed run draws the same rollouts without saved RNG state).
    Returns:
        ``Rollouts`` with ``group_ids[i * G + k] == i`` and ``temperature`` the log-probs' temperature
        (``settings.logprob_temperature``).
    """
    if not prompts:
        raise ValueError("sample_rollouts needs at least one prompt.")
    stop_ids = stop_token_ids(tokenizer, model)
    if not stop_ids:
        raise ValueError(
            "the tokenizer has no eos_token_id and its template no end of turn; generation could never stop."
        )
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    backend = TransformersBackend() if backend is None else backend
    group_size = settings.samples_per_prompt
    prompt_ids = [tuple(sequences.prompt_token_ids(tokenizer, prompt, prefix=prefix)) for prompt in prompts]
    with generation.eval_mode(model), torch.no_grad():
        samples = backend.sample(
            model,
            prompt_ids,
            samples_per_prompt=group_size,
            max_new_tokens=settings.max_new_tokens,
            temperature=settings.temperature,
            top_p=settings.top_p,
            stop_ids=stop_ids,
            pad_token_id=pad_token_id,
            seed=settings.seed if seed is None else seed,
        )
    _check_samples(backend, samples, len(prompt_ids) * group_size, settings.max_new_tokens)
    cut = [cut_at_stop(sample, stop_ids) for sample in samples]
    completion_ids = tuple(ids for ids, _, _ in cut)
    return Rollouts(
        prompts=tuple(prompts),
        prompt_ids=tuple(ids for ids in prompt_ids for _ in range(group_size)),
        completion_ids=completion_ids,
        texts=tuple(tokenizer.decode(list(ids), skip_special_tokens=True) for ids in completion_ids),
        sampling_logps=tuple(logps for _, logps, _ in cut),
        truncated=tuple(truncated for _, _, truncated in cut),
        group_ids=tuple(index // group_size for index in range(len(cut))),
        samples_per_prompt=group_size,
        temperature=settings.logprob_temperature,
    )


def _check_samples(backend: Any, samples: Sequence[Sample], expected: int, max_new_tokens: int) -> None:
    """A backend's answer has one sample per row, one log-prob per token and at most ``max_new_tokens``."""
    name = type(backend).__name__
    if len(samples) != expected:
        raise ValueError(f"generation backend {name} returned {len(samples)} samples; expected {expected}.")
    for index, (token_ids, logps) in enumerate(samples):
        if len(token_ids) != len(logps):
            raise ValueError(
                f"generation backend {name}: sample {index} has {len(token_ids)} tokens but {len(logps)} log-probs."
            )
        if len(token_ids) > max_new_tokens:
            raise ValueError(
                f"generation backend {name}: sample {index} has {len(token_ids)} tokens, "
                f"more than max_new_tokens = {max_new_tokens}."
            )

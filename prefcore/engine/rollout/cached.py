"""``PrefixCacheBackend``: each prompt prefilled once, its key/value cache shared by its G rows, a plain decode loop.

``TransformersBackend`` hands ``generate`` every prompt ``G`` times (``num_return_sequences``),
so the prefill runs ``G`` copies of each prompt, and each decode step pays ``generate``'s
bookkeeping (input preparation, logits processors, stopping criteria, kwargs updates). Here
the distinct prompts run once (``prefcore.engine.rollout.prefix``), the cache is expanded to
the rows, and the loop does per step only what sampling needs: one forward of the new
tokens, temperature and top-p, one draw, the recorded log-prob and the stop check.

The draws follow ``generate``'s exactly: the same processing of the scores (``logits / T``;
top-p as transformers' ``TopPLogitsWarper``), ``torch.multinomial`` over all rows of a batch
each step, finished rows padded, one forked RNG seeded once for all batches of
``batch_size`` prompts. So for the same seed and weights both backends draw the same tokens,
except where the float rounding of the two forwards moves a draw across a probability
boundary; the recorded log-probs agree to float tolerance.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from prefcore.engine.rollout.backend import Sample
from prefcore.engine.rollout.backend import logprob_temperature
from prefcore.engine.rollout.backend import seeded_rng
from prefcore.engine.rollout.prefix import _cache_keyword
from prefcore.engine.rollout.prefix import expand_cache
from prefcore.engine.rollout.prefix import prefill
from prefcore.engine.rollout.prefix import supports_prefix_cache
from prefcore.lazy import lazy_module

__all__ = ["PrefixCacheBackend", "top_p_filter"]

torch = lazy_module("torch")


def top_p_filter(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filtering as transformers' ``TopPLogitsWarper`` (at least one token kept), -inf elsewhere."""
    sorted_scores, sorted_indices = torch.sort(scores, descending=False)
    cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
    remove = cumulative <= (1 - top_p)
    remove[..., -1:] = False
    remove = remove.scatter(1, sorted_indices, remove)
    return scores.masked_fill(remove, -float("inf"))


@functools.cache
def _preallocated_layer() -> type:
    """A dynamic cache layer whose keys and values are views of buffers sized for the whole decode.

    ``DynamicLayer`` concatenates at every step, copying the whole cache; this one writes the
    new positions in place. Built on first use, so importing this module loads no transformers.
    """
    from transformers.cache_utils import DynamicLayer

    class PreallocatedLayer(DynamicLayer):
        key_buffer: Any
        value_buffer: Any

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            start = self.keys.shape[-2]
            end = start + key_states.shape[-2]
            self.key_buffer[:, :, start:end] = key_states
            self.value_buffer[:, :, start:end] = value_states
            self.keys, self.values = self.key_buffer[:, :, :end], self.value_buffer[:, :, :end]
            return self.keys, self.values

    return PreallocatedLayer


def _preallocate(cache: Any, extra: int) -> None:
    """Room for ``extra`` more positions in every (initialised, plain dynamic) layer of ``cache``."""
    layer_class = _preallocated_layer()
    for layer in cache.layers:
        if not getattr(layer, "is_initialized", False):
            continue
        keys, values = layer.keys, layer.values
        length = keys.shape[-2]
        layer.key_buffer = keys.new_empty((*keys.shape[:-2], length + extra, keys.shape[-1]))
        layer.value_buffer = values.new_empty((*values.shape[:-2], length + extra, values.shape[-1]))
        layer.key_buffer[:, :, :length] = keys
        layer.value_buffer[:, :, :length] = values
        layer.keys, layer.values = layer.key_buffer[:, :, :length], layer.value_buffer[:, :, :length]
        layer.__class__ = layer_class


def _left_pad(prompts: Sequence[tuple[int, ...]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(prompt) for prompt in prompts)
    input_ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if prompt:
            input_ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            attention_mask[row, width - len(prompt) :] = 1
    return input_ids, attention_mask


class PrefixCacheBackend:
    """A ``GenerationBackend`` for transformers causal LMs with a dynamic key/value cache (see the module docstring).

    Arguments:
        batch_size: prompts per decode loop (each expanded to ``G`` rows), as ``TransformersBackend``'s.
    """

    def __init__(self, batch_size: int = 16) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1. Got {batch_size}.")
        self.batch_size = batch_size

    def sample(
        self,
        model: Any,
        prompt_ids: Sequence[tuple[int, ...]],
        *,
        samples_per_prompt: int,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        stop_ids: Sequence[int],
        pad_token_id: int,
        seed: int,
    ) -> list[Sample]:
        keyword = _cache_keyword(model)
        if keyword is None or not supports_prefix_cache(model):
            raise ValueError(
                f"PrefixCacheBackend needs a transformers decoder with a plain dynamic key/value cache; "
                f"{type(model).__name__} is not one (use TransformersBackend, or [online] sampler = 'auto')."
            )
        if any(len(prompt) == 0 for prompt in prompt_ids):
            raise ValueError("PrefixCacheBackend needs non-empty prompts.")
        # Greedy decoding gives one continuation per prompt; its copies fill the group.
        copies = samples_per_prompt if temperature == 0 else 1
        device = next(model.parameters()).device
        samples: list[Sample] = []
        with seeded_rng(seed, device), torch.inference_mode():
            for start in range(0, len(prompt_ids), self.batch_size):
                batch = prompt_ids[start : start + self.batch_size]
                tokens, logps = self._decode(
                    model,
                    keyword,
                    batch,
                    rows_per_prompt=samples_per_prompt // copies,
                    max_new_tokens=max_new_tokens,
                    temperature=temperature,
                    top_p=top_p,
                    stop_ids=stop_ids,
                    pad_token_id=pad_token_id,
                    device=device,
                )
                samples.extend(
                    Sample(tuple(ids), tuple(values))
                    for ids, values in zip(tokens.tolist(), logps.tolist(), strict=True)
                    for _ in range(copies)
                )
        return samples

    def _decode(
        self,
        model: Any,
        keyword: str,
        prompts: Sequence[tuple[int, ...]],
        *,
        rows_per_prompt: int,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        stop_ids: Sequence[int],
        pad_token_id: int,
        device: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``[R, steps]`` tokens and their log-probs for ``R = len(prompts) · rows_per_prompt`` rows, prompt-major."""
        input_ids, attention_mask = _left_pad(prompts, pad_token_id)
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        output, cache = prefill(model, keyword, input_ids, attention_mask)
        rows = torch.arange(len(prompts), device=device).repeat_interleave(rows_per_prompt)
        if not expand_cache(cache, rows):
            raise ValueError(f"PrefixCacheBackend needs a plain dynamic key/value cache; {type(model).__name__}.")
        _preallocate(cache, max_new_tokens)
        logits = output.logits[:, -1].float().index_select(0, rows)
        attention_mask = attention_mask.index_select(0, rows)
        positions = attention_mask.sum(dim=1, keepdim=True)
        stops = torch.tensor(list(stop_ids), dtype=torch.long, device=device)
        # SDPA's decode mask is the padding mask as [rows, 1, 1, keys], True = attend: built here, transformers
        # returns a 4D mask as it is rather than building one each step.
        sdpa = getattr(model.config, "_attn_implementation", None) == "sdpa"
        unfinished = torch.ones(len(rows), dtype=torch.bool, device=device)
        scale = logprob_temperature(temperature)
        tokens: list[torch.Tensor] = []
        logps: list[torch.Tensor] = []
        for step in range(max_new_tokens):
            if temperature > 0:
                scores = logits / temperature if temperature != 1.0 else logits
                if top_p < 1.0:
                    scores = top_p_filter(scores, top_p)
                token = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
            else:
                token = torch.argmax(logits, dim=-1)
            token = torch.where(unfinished, token, pad_token_id)
            tokens.append(token)
            logps.append(torch.log_softmax(logits / scale, dim=-1).gather(1, token.unsqueeze(1)).squeeze(1))
            unfinished = unfinished & ~torch.isin(token, stops)
            if step + 1 == max_new_tokens or not bool(unfinished.any()):
                break
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(rows), 1))], dim=1)
            output = model(
                input_ids=token.unsqueeze(1),
                attention_mask=attention_mask[:, None, None, :].bool() if sdpa else attention_mask,
                position_ids=positions,
                use_cache=True,
                **{keyword: cache},
            )
            positions = positions + 1
            logits = output.logits[:, -1].float()
        return torch.stack(tokens, dim=1), torch.stack(logps, dim=1)

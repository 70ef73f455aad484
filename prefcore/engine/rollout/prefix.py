"""One forward per distinct prompt: the G completions of a group attend to their prompt's cached keys and values.

The rows of a rollout batch repeat each prompt ``G`` times. Running every row's prompt
through the model again costs ``G`` times the prompt's work in the reference pass, in the
policy's forward and in its backward. Here the prompt runs once per distinct prompt, with
gradient when grad is on, and its key/value cache is expanded to the rows (an index
select, whose backward sums the rows' gradients into the one prompt pass). This is the
same maths as the right-padded prompt + completion sequence: the same tokens at the same
positions attend to the same keys; only the float summation order differs.

Layout of one call, ``U`` distinct prompts over ``S`` rows, ``P`` the longest prompt:

* prompt pass: each distinct prompt, left-padded to ``P``; its last position predicts
  ``c_0`` of every row of its group;
* completion pass: row ``s`` feeds ``c_0 .. c_{T-2}`` at positions ``len(prompt) ..``, on the
  prompt's cache expanded to the rows; its outputs predict ``c_1 .. c_{T-1}``.

Column ``t`` of the result is completion token ``t``, with no gather.

Used where the model is a transformers decoder with a plain dynamic key/value cache; the
callers fall back to the full sequences otherwise (``shared_prefix_logps`` returns None).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any
from typing import NamedTuple

from prefcore.lazy import lazy_module

__all__ = [
    "Prefixes",
    "expand_cache",
    "left_positions",
    "prefill",
    "shared_prefix_logps",
    "split_prompts",
    "supports_prefix_cache",
]

torch = lazy_module("torch")
logprobs = lazy_module("prefcore.engine.logprobs")
fused_linear = lazy_module("prefcore.kernels.fused_linear_logprobs")
selective = lazy_module("prefcore.kernels.logprobs")


class Prefixes(NamedTuple):
    """The distinct prompts of a batch of rows, left-padded.

    Attributes:
        input_ids: ``[U, P]`` long, the distinct prompts (left padding).
        attention_mask: ``[U, P]`` long, 1 on real tokens.
        row_prompt: ``[S]`` long, which distinct prompt each row continues.
        lengths: ``[S]`` long, each row's prompt length.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    row_prompt: torch.Tensor
    lengths: torch.Tensor


def split_prompts(prompts: list[tuple[int, ...]], device: Any) -> Prefixes | None:
    """``Prefixes`` of ``prompts`` (one per row), or None when no prompt repeats or one is empty."""
    if not prompts or any(len(prompt) == 0 for prompt in prompts):
        return None
    distinct: dict[tuple[int, ...], int] = {}
    row_prompt = [distinct.setdefault(prompt, len(distinct)) for prompt in prompts]
    if len(distinct) == len(prompts):
        return None
    width = max(len(prompt) for prompt in distinct)
    input_ids = torch.zeros((len(distinct), width), dtype=torch.long)
    attention_mask = torch.zeros((len(distinct), width), dtype=torch.long)
    for index, prompt in enumerate(distinct):
        input_ids[index, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        attention_mask[index, width - len(prompt) :] = 1
    return Prefixes(
        input_ids.to(device),
        attention_mask.to(device),
        torch.tensor(row_prompt, dtype=torch.long, device=device),
        torch.tensor([len(prompt) for prompt in prompts], dtype=torch.long, device=device),
    )


def _cache_keyword(module: Any) -> str | None:
    """The name a transformers module takes its key/value cache by (``cache`` since 5.x, else ``past_key_values``)."""
    try:
        parameters = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return None
    for name in ("cache", "past_key_values"):
        if name in parameters:
            return name
    return None


def supports_prefix_cache(module: Any) -> bool:
    """Whether ``module`` can run on a prefilled, expanded cache: a transformers decoder (not encoder-decoder)
    that takes a cache keyword and whose default cache is plain dynamic layers (no sliding window, no
    recurrent state). ``PrefixCacheBackend`` refuses other models, and ``sampler = "auto"`` gives them
    transformers' ``generate``."""
    config = getattr(module, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False) or _cache_keyword(module) is None:
        return False
    default_dynamic = getattr(module, "_supports_default_dynamic_cache", None)
    if callable(default_dynamic) and not default_dynamic():
        return False
    from transformers import DynamicCache

    try:
        cache = DynamicCache(config=config)
    except Exception:  # a config the dynamic cache cannot read: not a plain decoder
        return False
    return all(type(layer).__name__ == "DynamicLayer" for layer in getattr(cache, "layers", ()))


def prefill(module: Any, keyword: str, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[Any, Any]:
    """``(output, cache)``: ``module`` on left-padded ids at their own positions, filling a fresh dynamic cache."""
    from transformers import DynamicCache

    cache = DynamicCache(config=module.config)
    output = module(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=left_positions(attention_mask),
        use_cache=True,
        **{keyword: cache},
    )
    return output, cache


def expand_cache(cache: Any, rows: torch.Tensor) -> bool:
    """Select ``rows`` of every layer of a dynamic cache in place (differentiable); False if it is another kind."""
    layers = getattr(cache, "layers", None)
    if layers is None or any(type(layer).__name__ != "DynamicLayer" for layer in layers):
        return False
    for layer in layers:
        if getattr(layer, "is_initialized", False):
            layer.keys = layer.keys.index_select(0, rows)
            layer.values = layer.values.index_select(0, rows)
    return True


def left_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions of left-padded rows: 0 at each row's first real token (padding gets 0, it is masked)."""
    return (attention_mask.cumsum(dim=1) - 1).clamp(min=0)


def shared_prefix_logps(
    model: Any,
    prompts: list[tuple[int, ...]],
    completion_ids: torch.Tensor,
    mask: torch.Tensor,
    *,
    temperature: float,
    fused: bool,
    backend: str,
    completion_lengths: Sequence[int] | None = None,
) -> torch.Tensor | None:
    """``[S, T]`` float32 log-probs of ``completion_ids`` after ``prompts[s]``, 0 where ``mask`` is False.

    ``completion_lengths``: each row's count of ``mask``, known on the host, so that the fused LM head
    need not count its targets on the device.

    None when the batch or the model does not suit (no repeated prompt, an empty prompt, a
    model without a cache keyword or with gradient checkpointing on, a cache that is not a
    plain dynamic one): the caller then runs the full sequences.
    """
    base = logprobs._base_model(model)
    # Checkpointed layers run without a cache in transformers: the full sequences then.
    checkpointing = any(getattr(module, "gradient_checkpointing", False) is True for module in base.modules())
    if checkpointing or getattr(base.config, "is_encoder_decoder", False):
        return None
    use_fused = fused and logprobs.supports_fused_head(model)
    module = base.get_decoder() if use_fused else model
    keyword = _cache_keyword(module)
    if keyword is None or completion_ids.shape[1] == 0:
        return None
    device = completion_ids.device
    prefixes = split_prompts(prompts, device)
    if prefixes is None:
        return None
    length = completion_ids.shape[1]
    output, cache = prefill(module, keyword, prefixes.input_ids, prefixes.attention_mask)
    if not expand_cache(cache, prefixes.row_prompt):
        return None
    name = "last_hidden_state" if use_fused else "logits"
    outputs = [getattr(output, name)[:, -1].index_select(0, prefixes.row_prompt).unsqueeze(1)]  # predicts c_0
    if length > 1:
        inputs = completion_ids[:, :-1]
        attention_mask = torch.cat(
            [prefixes.attention_mask.index_select(0, prefixes.row_prompt), torch.ones_like(inputs)], dim=1
        )
        positions = prefixes.lengths.unsqueeze(1) + torch.arange(length - 1, device=device).unsqueeze(0)
        output = module(
            input_ids=inputs, attention_mask=attention_mask, position_ids=positions, use_cache=True, **{keyword: cache}
        )
        outputs.append(getattr(output, name))
    states = torch.cat(outputs, dim=1)  # [S, T, H] hidden states or [S, T, V] logits
    targets = completion_ids.masked_fill(~mask, logprobs.IGNORE_INDEX)
    if use_fused:
        weight, bias = logprobs.lm_head_weight_and_bias(model)
        valid_rows = None
        if completion_lengths is not None:  # the flattened [S, T] targets, ascending
            flat = [row * length + t for row, count in enumerate(completion_lengths) for t in range(count)]
            valid_rows = torch.tensor(flat, dtype=torch.long, device=device)
        token_logps = fused_linear.fused_linear_logprobs(
            states,
            weight.to(states.dtype),
            targets,
            None if bias is None else bias.to(states.dtype),
            temperature=temperature,
            ignore_index=logprobs.IGNORE_INDEX,
            backend=backend,
            valid_rows=valid_rows,
        )
    else:
        token_logps = selective.selective_log_softmax(
            states, targets, temperature=temperature, ignore_index=logprobs.IGNORE_INDEX, backend=backend
        )
    return token_logps.masked_fill(~mask, 0.0)

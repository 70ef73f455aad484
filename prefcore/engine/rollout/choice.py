"""``[online] sampler``: which generation backend samples the rollouts.

``generate`` is transformers' ``generate`` (``TransformersBackend``); ``prefix_cache`` prefills each
prompt once for its group and decodes in a plain loop (``PrefixCacheBackend``), drawing the same
tokens for a seed; ``auto`` takes ``prefix_cache`` where the model allows it
(``supports_prefix_cache``: a transformers decoder with a plain dynamic key/value cache), else
``generate``. The choice is made once, for the model a loop samples from.
"""

from __future__ import annotations

from typing import Any

from prefcore.engine.rollout.backend import GenerationBackend
from prefcore.engine.rollout.backend import TransformersBackend
from prefcore.engine.rollout.cached import PrefixCacheBackend
from prefcore.engine.rollout.prefix import supports_prefix_cache

__all__ = ["SAMPLERS", "make_backend"]

SAMPLERS: tuple[str, ...] = ("auto", "generate", "prefix_cache")


def make_backend(sampler: str, model: Any) -> GenerationBackend:
    """The backend ``sampler`` names, for ``model`` (``auto`` decides by the model)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(map(repr, SAMPLERS))}. Got {sampler!r}.")
    if sampler == "prefix_cache" or (sampler == "auto" and supports_prefix_cache(model)):
        return PrefixCacheBackend()
    return TransformersBackend()

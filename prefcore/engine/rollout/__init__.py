"""The rollout engine: sample completions from the policy and recompute their log-probs for training.

* ``backend``: ``GenerationBackend``, the one-method interface a generator implements, and
  ``TransformersBackend``, the default (transformers' ``generate``);
* ``cached``: ``PrefixCacheBackend``, each prompt prefilled once for its group and a plain
  decode loop (the same draws as ``generate`` for a seed, faster);
* ``prefix``: one forward per distinct prompt, completions on its cached keys and values
  (what ``completion_logps`` and ``rollout_logps`` use where the model allows);
* ``choice``: ``make_backend``, the backend ``[online] sampler`` names (``auto``: the cached one where
  the model allows it);
* ``sampler``: ``RolloutSettings`` and ``sample_rollouts`` (``prefcore.rollout.Rollouts``);
* ``tensors``: ``pad_rollouts`` into ``[S, T]`` tensors, ``completion_logps`` (policy, with
  gradient) and ``rollout_logps`` (reference and old log-probs, without).

Nothing here imports torch or transformers until it is used.
"""

from __future__ import annotations

from prefcore.engine.rollout.backend import GenerationBackend
from prefcore.engine.rollout.backend import Sample
from prefcore.engine.rollout.backend import TransformersBackend
from prefcore.engine.rollout.backend import logprob_temperature
from prefcore.engine.rollout.cached import PrefixCacheBackend
from prefcore.engine.rollout.choice import SAMPLERS
from prefcore.engine.rollout.choice import make_backend
from prefcore.engine.rollout.sampler import RolloutSettings
from prefcore.engine.rollout.sampler import cut_at_stop
from prefcore.engine.rollout.sampler import sample_rollouts
from prefcore.engine.rollout.tensors import RolloutTensors
from prefcore.engine.rollout.tensors import completion_logps
from prefcore.engine.rollout.tensors import pad_rollouts
from prefcore.engine.rollout.tensors import rollout_logps

__all__ = [
    "SAMPLERS",
    "GenerationBackend",
    "PrefixCacheBackend",
    "RolloutSettings",
    "RolloutTensors",
    "Sample",
    "TransformersBackend",
    "completion_logps",
    "cut_at_stop",
    "logprob_temperature",
    "make_backend",
    "pad_rollouts",
    "rollout_logps",
    "sample_rollouts",
]

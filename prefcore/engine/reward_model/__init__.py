"""Reward networks: a backbone with one scalar head per aspect, and a policy's implicit reward.

One module per job:

- ``scoring``: the batched scoring API every network shares (``score``, ``scorer``) and the
  ``ScoringRule`` that combines heads (weighted aspects, or a process reward model's steps);
- ``head``: ``RewardModel``, a backbone with a linear head ``[H → A]``, and ``build_reward_model``;
- ``implicit``: ``ImplicitRewardModel``, r(x, y) = β·(log π(y|x) − log π_ref(y|x));
- ``steps``: the token positions where a process reward model reads each step;
- ``storage``: the saved folder (metadata, safetensors, tokenizer), read back by
  ``load_reward_network`` whichever kind it holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from typing import TypeAlias

import torch

from prefcore.engine.reward_model.head import RewardModel
from prefcore.engine.reward_model.head import build_reward_model
from prefcore.engine.reward_model.implicit import ImplicitRewardModel
from prefcore.engine.reward_model.scoring import STEP_AGGREGATES
from prefcore.engine.reward_model.scoring import RewardNetworkBase
from prefcore.engine.reward_model.scoring import RewardOutput
from prefcore.engine.reward_model.scoring import ScoringRule
from prefcore.engine.reward_model.scoring import StepAggregate
from prefcore.engine.reward_model.scoring import resolve_aspect_weights
from prefcore.engine.reward_model.steps import separator_spans
from prefcore.engine.reward_model.steps import step_end_positions
from prefcore.engine.reward_model.storage import FORMAT_VERSION
from prefcore.engine.reward_model.storage import METADATA_FILE
from prefcore.engine.reward_model.storage import read_metadata
from prefcore.errors import ConfigError

__all__ = [
    "FORMAT_VERSION",
    "METADATA_FILE",
    "STEP_AGGREGATES",
    "ImplicitRewardModel",
    "RewardModel",
    "RewardNetwork",
    "RewardNetworkBase",
    "RewardOutput",
    "ScoringRule",
    "StepAggregate",
    "build_reward_model",
    "load_reward_network",
    "resolve_aspect_weights",
    "separator_spans",
    "step_end_positions",
]

RewardNetwork: TypeAlias = RewardModel | ImplicitRewardModel
"""Anything the reward trainer trains and evaluators score with."""


def load_reward_network(
    path: str | Path, *, device: str | torch.device = "cpu", tokenizer: Any = None
) -> RewardNetwork:
    """A ``RewardModel`` or ``ImplicitRewardModel`` saved in ``path``, whichever it holds."""
    kind = read_metadata(Path(path)).get("kind")
    if kind == "reward_model":
        return RewardModel.load(path, device=device, tokenizer=tokenizer)
    if kind == "implicit_reward_model":
        return ImplicitRewardModel.load(path, device=device, tokenizer=tokenizer)
    raise ConfigError(f"{path} holds an unknown kind of reward network {kind!r}.")

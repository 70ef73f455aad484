"""``ImplicitRewardModel``: the reward a DPO-trained policy defines without a head.

r(x, y) = β·(log π(y|x) − log π_ref(y|x)) (Rafailov et al. 2023), behind the same scoring
interface as ``RewardModel``, so evaluators, judges and ensembles use either; training it
through a preference-model objective trains the policy.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prefcore.atomic import atomic_directory
from prefcore.engine.logprobs import completion_token_logps
from prefcore.engine.logprobs import sequence_logps
from prefcore.engine.reward_model.scoring import RewardNetworkBase
from prefcore.engine.reward_model.scoring import RewardOutput
from prefcore.engine.reward_model.scoring import ScoringRule
from prefcore.engine.reward_model.storage import load_tokenizer
from prefcore.engine.reward_model.storage import read_metadata
from prefcore.engine.reward_model.storage import write_metadata
from prefcore.engine.sequences import PaddedSequences
from prefcore.errors import ConfigError

__all__ = ["ImplicitRewardModel"]


class ImplicitRewardModel(RewardNetworkBase):
    """The implicit reward r(x, y) = β·(log π(y|x) − log π_ref(y|x)) of a policy, as a one-head reward network.

    Arguments:
        policy: the causal LM (trained with DPO, or to be trained through this reward).
        reference: the frozen causal LM the policy is measured against (frozen here if it is not).
        tokenizer: the tokenizer both share.
        beta: β, the scale of the log-ratio (DPO's KL strength).
        max_length, prefix: tokenisation, as in training.
        fused, backend: the log-prob path (``prefcore.engine.logprobs``).
    """

    def __init__(
        self,
        policy: nn.Module,
        reference: nn.Module,
        tokenizer: Any,
        beta: float,
        *,
        max_length: int = 512,
        prefix: str = "",
        fused: bool = True,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if not (isinstance(beta, (int, float)) and beta > 0 and math.isfinite(beta)):
            raise ConfigError(f"beta must be a finite number > 0, got {beta!r}.", field="beta")
        if policy is reference:
            raise ConfigError("the reference must be a separate (frozen) copy of the starting policy, not the policy.")
        self.policy = policy
        self.reference = reference
        self.reference.eval()
        for parameter in self.reference.parameters():
            parameter.requires_grad_(False)
        self.tokenizer = tokenizer
        self.beta = float(beta)
        self.aspects = ("reward",)
        self.max_length = max_length
        self.prefix = prefix
        self.fused = fused
        self.backend = backend
        self.scoring = ScoringRule()

    def train(self, mode: bool = True) -> ImplicitRewardModel:
        """Train the policy; the reference stays in eval mode."""
        super().train(mode)
        self.reference.eval()
        return self

    def forward(self, sequences: PaddedSequences) -> RewardOutput:
        """``[S, 1]`` implicit rewards, differentiable with respect to the policy."""
        policy_sums = completion_token_logps(self.policy, sequences, fused=self.fused, backend=self.backend).sum(-1)
        reference_sums = sequence_logps(self.reference, sequences, fused=self.fused, backend=self.backend)
        return RewardOutput((self.beta * (policy_sums.float() - reference_sums.float())).unsqueeze(-1))

    def sequence_scores(self, sequences: PaddedSequences) -> torch.Tensor:
        policy_sums = sequence_logps(self.policy, sequences, fused=self.fused, backend=self.backend)
        reference_sums = sequence_logps(self.reference, sequences, fused=self.fused, backend=self.backend)
        return (self.beta * (policy_sums.float() - reference_sums.float())).unsqueeze(-1)

    def save(self, path: str | Path) -> Path:
        """Write ``policy/`` and ``reference/`` (save_pretrained), ``tokenizer/`` and the metadata JSON."""
        with atomic_directory(path) as staging:
            self.policy.save_pretrained(staging / "policy", safe_serialization=True)
            self.reference.save_pretrained(staging / "reference", safe_serialization=True)
            self.tokenizer.save_pretrained(staging / "tokenizer")
            options = {
                "beta": self.beta,
                "max_length": self.max_length,
                "prefix": self.prefix,
                "fused": self.fused,
                "backend": self.backend,
            }
            write_metadata(staging, "implicit_reward_model", options)
        return Path(path)

    @classmethod
    def load(
        cls, path: str | Path, *, device: str | torch.device = "cpu", tokenizer: Any = None
    ) -> ImplicitRewardModel:
        from transformers import AutoModelForCausalLM

        path = Path(path)
        metadata = read_metadata(path, "implicit_reward_model")
        with torch.random.fork_rng(devices=[]):
            policy = AutoModelForCausalLM.from_pretrained(str(path / "policy"), local_files_only=True)
            reference = AutoModelForCausalLM.from_pretrained(str(path / "reference"), local_files_only=True)
        model = cls(
            policy,
            reference,
            tokenizer if tokenizer is not None else load_tokenizer(path / "tokenizer"),
            metadata["beta"],
            max_length=metadata["max_length"],
            prefix=metadata["prefix"],
            fused=metadata["fused"],
            backend=metadata["backend"],
        )
        return model.to(device)

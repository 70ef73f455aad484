"""``RewardModel``: a transformers backbone with one scalar head per aspect.

The backbone is the decoder of a causal LM, or any ``AutoModel``; the head is a linear
``[H → A]``. The sequence reward is read at the last non-padding token, which the engine's
tokenisation always makes the completion's EOS: the head sees the whole reply and knows that
it has ended. The same head applied at every position gives per-token rewards, which a
process reward model reads at the tokens that end reasoning steps (``steps``).
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prefcore.atomic import atomic_directory
from prefcore.engine.reward_model.scoring import RewardNetworkBase
from prefcore.engine.reward_model.scoring import RewardOutput
from prefcore.engine.reward_model.scoring import ScoringRule
from prefcore.engine.reward_model.steps import separator_spans
from prefcore.engine.reward_model.steps import step_end_positions
from prefcore.engine.reward_model.storage import load_tensors
from prefcore.engine.reward_model.storage import load_tokenizer
from prefcore.engine.reward_model.storage import read_metadata
from prefcore.engine.reward_model.storage import save_tensors
from prefcore.engine.reward_model.storage import write_metadata
from prefcore.engine.sequences import PaddedSequences
from prefcore.engine.sequences import completion_text
from prefcore.engine.sequences import pad_sequences
from prefcore.errors import ConfigError
from prefcore.evaluation import Scorer

__all__ = ["RewardModel", "build_reward_model"]


class RewardModel(RewardNetworkBase):
    """A backbone and a linear head ``[H → A]`` read at the last non-padding token.

    Arguments:
        backbone: a transformers model that returns ``last_hidden_state`` (``causal_lm.get_decoder()``
            or any ``AutoModel``).
        tokenizer: the tokenizer training and scoring use (its pad and EOS ids are needed).
        aspects: one name per head; ``("reward",)`` for a single reward.
        max_length: longest prompt + completion in tokens when scoring.
        prefix: text put before every prompt (conditioned methods), as in training.
        scoring: how ``scorer()`` combines heads (or aggregates steps) by default.
    """

    def __init__(
        self,
        backbone: nn.Module,
        tokenizer: Any,
        *,
        aspects: Sequence[str] = ("reward",),
        max_length: int = 512,
        prefix: str = "",
        scoring: ScoringRule | None = None,
    ) -> None:
        super().__init__()
        get_output_embeddings = getattr(backbone, "get_output_embeddings", None)
        if callable(get_output_embeddings) and get_output_embeddings() is not None:
            raise TypeError(
                f"RewardModel needs a backbone that returns hidden states, but {type(backbone).__name__} has an "
                f"LM head; pass causal_lm.get_decoder() or load it with AutoModel."
            )
        aspects = tuple(aspects)
        if not aspects or len(set(aspects)) != len(aspects) or not all(isinstance(a, str) and a for a in aspects):
            raise ConfigError(f"aspects must be distinct non-empty names, one per head; got {list(aspects)}.")
        if max_length < 2:
            raise ConfigError(f"max_length must be >= 2, got {max_length}.")
        config = getattr(backbone, "config", None)
        hidden_size = getattr(config, "hidden_size", None) or getattr(config, "d_model", None)
        if not isinstance(hidden_size, int):
            raise TypeError(f"cannot tell the hidden size of {type(backbone).__name__}: its config has no hidden_size.")
        self.backbone = backbone
        self.head = nn.Linear(hidden_size, len(aspects))
        # A small head keeps initial rewards near 0, as transformers' sequence-classification heads do.
        nn.init.normal_(self.head.weight, std=float(getattr(config, "initializer_range", 0.02)))
        nn.init.zeros_(self.head.bias)
        self.head.to(next(backbone.parameters()).device)
        self.tokenizer = tokenizer
        self.aspects = aspects
        self.max_length = max_length
        self.prefix = prefix
        self.scoring = scoring if scoring is not None else ScoringRule()
        self.check_scoring(self.scoring)

    def check_scoring(self, rule: ScoringRule) -> None:
        """Refuse a rule that does not fit this network's heads."""
        if rule.aspect_weights is not None and len(rule.aspect_weights) != self.num_heads:
            raise ConfigError(
                f"the scoring rule weights {len(rule.aspect_weights)} heads; this model has {self.num_heads} "
                f"({list(self.aspects)})."
            )
        if rule.step_aggregate is not None and self.num_heads != 1:
            raise ConfigError(f"a process reward model has one head; this model has {self.num_heads}.")

    def forward(self, sequences: PaddedSequences) -> RewardOutput:
        """Rewards ``[S, A]`` at the last non-padding token and per-token rewards ``[S, L, A]``, float32."""
        token_rewards = self.token_rewards(sequences)
        # cumsum reaches its maximum at the last attended token and stays flat over right padding;
        # argmax returns the first position of that maximum (left padding works too).
        last = sequences.attention_mask.long().cumsum(-1).argmax(-1)
        rows = torch.arange(token_rewards.shape[0], device=token_rewards.device)
        return RewardOutput(token_rewards[rows, last], token_rewards)

    def token_rewards(self, sequences: PaddedSequences) -> torch.Tensor:
        """``[S, L, A]`` float32: the heads applied at every position."""
        output = self.backbone(input_ids=sequences.input_ids, attention_mask=sequences.attention_mask)
        hidden = getattr(output, "last_hidden_state", None)
        if hidden is None:
            raise TypeError(f"the backbone {type(self.backbone).__name__} returned no last_hidden_state.")
        return self.head(hidden.to(self.head.weight.dtype)).float()

    def sequence_scores(self, sequences: PaddedSequences) -> torch.Tensor:
        return self(sequences).rewards

    def step_scores(
        self, prompts: Sequence[Any], completions: Sequence[Any], *, separator: str | None = None, batch_size: int = 32
    ) -> list[torch.Tensor]:
        """P(step correct) = σ(head 0 at the step's last token) for each step of each completion.

        Steps are the non-blank pieces of the completion between ``separator`` (default: the
        scoring rule's). Steps cut off by ``max_length`` are left out.
        """
        separator = self.scoring.step_separator if separator is None else separator
        sequences = self.tokenize(prompts, completions)
        positions = []
        for completion, sequence in zip(completions, sequences, strict=True):
            text = completion_text(completion)
            ends = step_end_positions(self.tokenizer, text, separator_spans(text, separator), sequence.completion_ids)
            kept = [len(sequence.prompt_ids) + end for end in ends if end is not None]
            positions.append(kept or [sequence.length - 1])
        results: list[torch.Tensor] = []
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                for start in range(0, len(sequences), batch_size):
                    padded = pad_sequences(sequences[start : start + batch_size], self.tokenizer.pad_token_id)
                    token_rewards = self.token_rewards(padded.to(self.device))
                    for row, where in enumerate(positions[start : start + batch_size]):
                        results.append(torch.sigmoid(token_rewards[row, where, 0]).cpu())
        finally:
            self.train(was_training)
        return results

    def scorer(self, aspect_weights: Mapping[str, float] | Sequence[float] | None = None) -> Scorer:
        """The weighted sum of heads; for a process reward model, the min or product of step probabilities."""
        if self.scoring.step_aggregate is None:
            return super().scorer(aspect_weights)
        if aspect_weights is not None:
            raise ConfigError("a process reward model has one head; aspect_weights do not apply.")
        aggregate = self.scoring.step_aggregate

        def score(prompts: Sequence[Any], completions: Sequence[str]) -> list[float]:
            steps = self.step_scores(prompts, completions)
            if aggregate == "min":
                return [float(values.min()) for values in steps]
            return [float(values.prod()) for values in steps]

        return score

    def save(self, path: str | Path) -> Path:
        """Write ``backbone/`` (save_pretrained), ``tokenizer/``, ``head.safetensors`` and the metadata JSON."""
        with atomic_directory(path) as staging:
            self.backbone.save_pretrained(staging / "backbone", safe_serialization=True)
            self.tokenizer.save_pretrained(staging / "tokenizer")
            save_tensors(self.head, staging / "head.safetensors")
            options = {
                "aspects": list(self.aspects),
                "max_length": self.max_length,
                "prefix": self.prefix,
                "scoring": self.scoring.to_json(),
            }
            write_metadata(staging, "reward_model", options)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, *, device: str | torch.device = "cpu", tokenizer: Any = None) -> RewardModel:
        """A model written by ``save``; the caller's random state is left untouched."""
        from transformers import AutoModel

        path = Path(path)
        metadata = read_metadata(path, "reward_model")
        with torch.random.fork_rng(devices=[]):
            backbone = AutoModel.from_pretrained(str(path / "backbone"), local_files_only=True)
            model = cls(
                backbone,
                tokenizer if tokenizer is not None else load_tokenizer(path / "tokenizer"),
                aspects=metadata["aspects"],
                max_length=metadata["max_length"],
                prefix=metadata["prefix"],
                scoring=ScoringRule.from_json(metadata["scoring"]),
            )
        load_tensors(model.head, path / "head.safetensors")
        return model.to(device)


def build_reward_model(
    tokenizer: Any,
    *,
    path: str | Path | None = None,
    demo: bool = False,
    num_heads: int = 1,
    aspects: Sequence[str] | None = None,
    seed: int = 0,
    max_length: int = 512,
) -> RewardModel:
    """A fresh reward model: the demo's tiny Llama decoder, or a local checkpoint's backbone, plus new heads.

    Arguments:
        tokenizer: the tokenizer of the backbone.
        path: a local folder written by ``save_pretrained`` (a causal LM or any ``AutoModel``);
            ``AutoModel`` keeps the backbone and drops an LM head.
        demo: build the demo's tiny Llama instead (exactly one of ``path`` and ``demo``).
        num_heads: scalar heads (one per aspect).
        aspects: head names; default ``("reward",)`` for one head, ``aspect_0, ...`` for several.
        seed: seed of the demo backbone's and the heads' initialisation (the caller's RNG is untouched).
        max_length: longest prompt + completion when scoring.
    """
    if (path is None) == (not demo):
        raise ConfigError("build_reward_model needs exactly one of path='<local dir>' or demo=True.", field="path")
    if aspects is None:
        if num_heads < 1:
            raise ConfigError(f"num_heads must be >= 1, got {num_heads}.", field="num_heads")
        aspects = ("reward",) if num_heads == 1 else tuple(f"aspect_{index}" for index in range(num_heads))
    elif len(aspects) != num_heads:
        raise ConfigError(f"{len(aspects)} aspect names for num_heads={num_heads}.", field="aspects")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if demo:
            from prefcore.demo.model import build_tiny_model

            backbone = build_tiny_model(tokenizer, seed=seed).get_decoder()
        else:
            from transformers import AutoModel

            if not Path(str(path)).is_dir():
                raise ConfigError(
                    f"reward model path {str(path)!r} is not a local directory; prefcore never downloads models.",
                    field="path",
                )
            backbone = AutoModel.from_pretrained(str(path), local_files_only=True)
        return RewardModel(backbone, tokenizer, aspects=aspects, max_length=max_length)

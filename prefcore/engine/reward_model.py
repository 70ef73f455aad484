"""Reward networks: a backbone with one scalar head per aspect, and a policy's implicit reward.

``RewardModel`` is a transformers backbone (the decoder of a causal LM, or any ``AutoModel``)
with a linear head ``[H → A]``. The sequence reward is read at the last non-padding token,
which the engine's tokenisation always makes the completion's EOS: the head sees the whole
reply and knows that it has ended. The same head applied at every position gives per-token
rewards, which a process reward model reads at the tokens that end reasoning steps.

``ImplicitRewardModel`` is the reward a DPO-trained policy defines without a head,
r(x, y) = β·(log π(y|x) − log π_ref(y|x)) (Rafailov et al. 2023), behind the same interface.

Both score through ``prefcore.engine.sequences``, so a score is computed on exactly the
tokens training saw, and both save to a folder in safetensors, written atomically.
"""

from __future__ import annotations

import abc
import json
import math
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import asdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from typing import Literal
from typing import TypeAlias

import torch
from safetensors.torch import load_file
from safetensors.torch import save_file
from torch import nn

from prefcore.atomic import atomic_directory
from prefcore.engine.logprobs import completion_token_logps
from prefcore.engine.logprobs import sequence_logps
from prefcore.engine.sequences import PaddedSequences
from prefcore.engine.sequences import TokenizedSequence
from prefcore.engine.sequences import completion_text
from prefcore.engine.sequences import pad_sequences
from prefcore.engine.sequences import tokenize_sequence
from prefcore.errors import ConfigError
from prefcore.errors import DataError
from prefcore.evaluation import Scorer

StepAggregate = Literal["min", "product"]
STEP_AGGREGATES: tuple[str, ...] = ("min", "product")
METADATA_FILE = "reward_model.json"
FORMAT_VERSION = 1


# ----------------------------------------------------------------------------------------------
# How heads become one score
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoringRule:
    """How ``scorer()`` turns a network's heads into one score per completion.

    Attributes:
        aspect_weights: one weight per head for the weighted sum; None = equal weights.
        step_aggregate: None scores the whole completion (the sequence reward); ``"min"`` or
            ``"product"`` scores a process reward model: the completion is cut into steps at
            ``step_separator``, each step gets P(correct) = σ(reward at its last token), and the
            score is the smallest step probability or their product (Lightman et al. 2023).
        step_separator: the text between reasoning steps when scoring a process reward model.
    """

    aspect_weights: tuple[float, ...] | None = None
    step_aggregate: StepAggregate | None = None
    step_separator: str = "\n"

    def __post_init__(self) -> None:
        if self.aspect_weights is not None:
            weights = tuple(float(weight) for weight in self.aspect_weights)
            if not weights or not all(math.isfinite(weight) for weight in weights):
                raise ConfigError(f"aspect_weights must be finite numbers, got {self.aspect_weights!r}.")
            object.__setattr__(self, "aspect_weights", weights)
        if self.step_aggregate is not None and self.step_aggregate not in STEP_AGGREGATES:
            raise ConfigError(
                f"step_aggregate must be one of {', '.join(STEP_AGGREGATES)} or None, got {self.step_aggregate!r}."
            )
        if not self.step_separator:
            raise ConfigError("step_separator must be a non-empty string.")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["aspect_weights"] = None if self.aspect_weights is None else list(self.aspect_weights)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ScoringRule:
        weights = data.get("aspect_weights")
        return cls(
            aspect_weights=None if weights is None else tuple(weights),
            step_aggregate=data.get("step_aggregate"),
            step_separator=data.get("step_separator", "\n"),
        )


def resolve_aspect_weights(
    aspects: Sequence[str], aspect_weights: Mapping[str, float] | Sequence[float] | None, default: ScoringRule
) -> torch.Tensor:
    """``[A]`` head weights: given by aspect name or position, else the rule's, else equal."""
    count = len(aspects)
    if aspect_weights is None:
        if default.aspect_weights is None:
            return torch.full((count,), 1.0 / count)
        aspect_weights = default.aspect_weights
    if isinstance(aspect_weights, Mapping):
        unknown = sorted(set(aspect_weights) - set(aspects))
        if unknown:
            raise ConfigError(f"aspect_weights names unknown aspect {unknown[0]!r}; the heads are {list(aspects)}.")
        values = [float(aspect_weights.get(name, 0.0)) for name in aspects]
    else:
        values = [float(weight) for weight in aspect_weights]
        if len(values) != count:
            raise ConfigError(f"aspect_weights has {len(values)} entries for {count} heads {list(aspects)}.")
    if not all(math.isfinite(value) for value in values):
        raise ConfigError(f"aspect_weights must be finite numbers, got {values}.")
    return torch.tensor(values, dtype=torch.float32)


# ----------------------------------------------------------------------------------------------
# Steps of a completion → token positions
# ----------------------------------------------------------------------------------------------


def step_end_positions(
    tokenizer: Any, text: str, spans: Sequence[tuple[int, int]], completion_ids: Sequence[int]
) -> list[int | None]:
    """Index within ``completion_ids`` of the token holding the last character of each span.

    The token is found with the fast tokenizer's offset mapping on the completion text, the
    same call that ``tokenize_sequence`` makes, so positions line up with training. A span
    whose end was truncated away gets None; a span that holds no token is an error.
    """
    try:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, TypeError, ValueError) as error:
        raise ConfigError(
            "step positions need a fast tokenizer (one that returns offset mappings); "
            f"{type(tokenizer).__name__} does not: {error}"
        ) from error
    ids, offsets = list(encoded["input_ids"]), list(encoded["offset_mapping"])
    kept = min(len(ids), len(completion_ids))
    if ids[:kept] != list(completion_ids[:kept]):
        raise ConfigError("the tokenizer gives different ids with offset mapping; step positions would be wrong.")
    positions: list[int | None] = []
    for start, end in spans:
        inside = [index for index, (first, last) in enumerate(offsets) if first < end and last > start]
        if not inside:
            raise DataError(f"step [{start}, {end}) of the completion holds no token.", field="spans")
        positions.append(inside[-1] if inside[-1] < kept else None)
    return positions


def separator_spans(text: str, separator: str) -> list[tuple[int, int]]:
    """Character spans of the steps of ``text`` cut at ``separator``, surrounding whitespace left out."""
    spans = []
    start = 0
    for piece in text.split(separator):
        stripped = piece.strip()
        if stripped:
            first = start + piece.index(stripped)
            spans.append((first, first + len(stripped)))
        start += len(piece) + len(separator)
    return spans


def _read_metadata(path: Path, kind: str | None = None) -> dict[str, Any]:
    file = Path(path) / METADATA_FILE
    if not file.is_file():
        raise ConfigError(f"{path} is not a saved reward model: it has no {METADATA_FILE}.")
    metadata = json.loads(file.read_text(encoding="utf-8"))
    if kind is not None and metadata.get("kind") != kind:
        raise ConfigError(f"{path} holds a reward network of kind {metadata.get('kind')!r}, not {kind!r}.")
    return metadata


def _load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


# ----------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RewardOutput:
    """``rewards`` ``[S, A]`` float32 at each sequence's last token; ``token_rewards`` ``[S, L, A]`` or None."""

    rewards: torch.Tensor
    token_rewards: torch.Tensor | None = None


class _ScoresCompletions(nn.Module, abc.ABC):
    """Batched, gradient-free scoring of prompt/completion texts, shared by every reward network."""

    tokenizer: Any
    aspects: tuple[str, ...]
    max_length: int
    prefix: str
    scoring: ScoringRule

    @property
    def num_heads(self) -> int:
        return len(self.aspects)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def tokenize(self, prompts: Sequence[Any], completions: Sequence[Any]) -> list[TokenizedSequence]:
        """Prompt + completion ids exactly as training tokenises them (over-long prompts cut from the left)."""
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts for {len(completions)} completions; give one per completion.")
        return [
            tokenize_sequence(
                self.tokenizer,
                prompt,
                completion,
                max_length=self.max_length,
                prefix=self.prefix,
                truncation="truncate",
                where=f"completion {index}",
            )
            for index, (prompt, completion) in enumerate(zip(prompts, completions, strict=True))
        ]

    @abc.abstractmethod
    def sequence_scores(self, sequences: PaddedSequences) -> torch.Tensor:
        """``[S, A]`` rewards of a padded batch (called without gradients)."""

    def score(self, prompts: Sequence[Any], completions: Sequence[Any], *, batch_size: int = 32) -> torch.Tensor:
        """``[N, A]`` float32 rewards on the CPU, one row per completion, computed without gradients.

        Sequences are batched by length so that each batch pads little; the result keeps the input order.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        sequences = self.tokenize(prompts, completions)
        order = sorted(range(len(sequences)), key=lambda index: sequences[index].length)
        scores = torch.zeros(len(sequences), self.num_heads)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                for start in range(0, len(order), batch_size):
                    rows = order[start : start + batch_size]
                    padded = pad_sequences([sequences[row] for row in rows], self.tokenizer.pad_token_id)
                    scores[rows] = self.sequence_scores(padded.to(self.device)).float().cpu()
        finally:
            self.train(was_training)
        return scores

    def scorer(self, aspect_weights: Mapping[str, float] | Sequence[float] | None = None) -> Scorer:
        """A ``prefcore.evaluation.Scorer``: the weighted sum of the heads of each completion.

        ``aspect_weights`` by aspect name or head position; None uses the network's scoring
        rule (set from the objective it was trained with), or equal weights.
        """
        weights = resolve_aspect_weights(self.aspects, aspect_weights, self.scoring)

        def score(prompts: Sequence[Any], completions: Sequence[str]) -> list[float]:
            return (self.score(prompts, completions) @ weights).tolist()

        return score


class RewardModel(_ScoresCompletions):
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
            head = {name: tensor.detach().cpu().contiguous() for name, tensor in self.head.state_dict().items()}
            save_file(head, str(staging / "head.safetensors"))
            metadata = {
                "kind": "reward_model",
                "format_version": FORMAT_VERSION,
                "aspects": list(self.aspects),
                "max_length": self.max_length,
                "prefix": self.prefix,
                "scoring": self.scoring.to_json(),
            }
            (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=1), encoding="utf-8")
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, *, device: str | torch.device = "cpu", tokenizer: Any = None) -> RewardModel:
        """A model written by ``save``; the caller's random state is left untouched."""
        from transformers import AutoModel

        path = Path(path)
        metadata = _read_metadata(path, "reward_model")
        with torch.random.fork_rng(devices=[]):
            backbone = AutoModel.from_pretrained(str(path / "backbone"), local_files_only=True)
            model = cls(
                backbone,
                tokenizer if tokenizer is not None else _load_tokenizer(path / "tokenizer"),
                aspects=metadata["aspects"],
                max_length=metadata["max_length"],
                prefix=metadata["prefix"],
                scoring=ScoringRule.from_json(metadata["scoring"]),
            )
        model.head.load_state_dict(load_file(str(path / "head.safetensors")))
        return model.to(device)


class ImplicitRewardModel(_ScoresCompletions):
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
            metadata = {
                "kind": "implicit_reward_model",
                "format_version": FORMAT_VERSION,
                "beta": self.beta,
                "max_length": self.max_length,
                "prefix": self.prefix,
                "fused": self.fused,
                "backend": self.backend,
            }
            (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=1), encoding="utf-8")
        return Path(path)

    @classmethod
    def load(
        cls, path: str | Path, *, device: str | torch.device = "cpu", tokenizer: Any = None
    ) -> ImplicitRewardModel:
        from transformers import AutoModelForCausalLM

        path = Path(path)
        metadata = _read_metadata(path, "implicit_reward_model")
        with torch.random.fork_rng(devices=[]):
            policy = AutoModelForCausalLM.from_pretrained(str(path / "policy"), local_files_only=True)
            reference = AutoModelForCausalLM.from_pretrained(str(path / "reference"), local_files_only=True)
        model = cls(
            policy,
            reference,
            tokenizer if tokenizer is not None else _load_tokenizer(path / "tokenizer"),
            metadata["beta"],
            max_length=metadata["max_length"],
            prefix=metadata["prefix"],
            fused=metadata["fused"],
            backend=metadata["backend"],
        )
        return model.to(device)


RewardNetwork: TypeAlias = RewardModel | ImplicitRewardModel
"""Anything the reward trainer trains and evaluators score with."""


def load_reward_network(
    path: str | Path, *, device: str | torch.device = "cpu", tokenizer: Any = None
) -> RewardNetwork:
    """A ``RewardModel`` or ``ImplicitRewardModel`` saved in ``path``, whichever it holds."""
    kind = _read_metadata(Path(path)).get("kind")
    if kind == "reward_model":
        return RewardModel.load(path, device=device, tokenizer=tokenizer)
    if kind == "implicit_reward_model":
        return ImplicitRewardModel.load(path, device=device, tokenizer=tokenizer)
    raise ConfigError(f"{path} holds an unknown kind of reward network {kind!r}.")


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

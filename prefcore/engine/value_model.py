"""The value model of actor-critic training: scalar heads on a transformer trunk, per completion token.

``ValueModel`` reads V(s_t) for each completion token t from the trunk's hidden state at the
position whose logits predict that token (the one ``completion_logps`` reads), so values line
up with the policy's log-probs column for column: V_t is the value of the state before y_t.
Where the trunk comes from is the placement (``build_value_model``):

- ``separate``: a trainable copy of the policy's decoder, with new heads;
- ``reward_model``: the trained reward model's backbone, its score head copied into the value
  head of the same name (``reward`` takes the reward model's only head), others new;
- ``shared``: the heads on the policy's own decoder. The trunk is not the value model's: its
  parameters stay the policy's (trained by the policy's optimiser, with the value loss added),
  and ``policy_outputs`` gives log-probs and values from one forward.

A new head starts with weights N(0, 1/(H+1)) and bias 0 (OpenRLHF ``openrlhf/models/model.py``).
Several named heads (``("reward", "cost")`` for Safe-RLHF) share the trunk. The rollout phase
reads the old values in eval mode (no dropout) without gradient (``rollout_values``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prefcore.engine.generation import eval_mode
from prefcore.engine.logprobs import IGNORE_INDEX
from prefcore.engine.logprobs import completion_token_logps
from prefcore.engine.logprobs import lm_head_weight_and_bias
from prefcore.engine.logprobs import supports_fused_head
from prefcore.engine.rollout import RolloutTensors
from prefcore.engine.rollout import logprob_temperature
from prefcore.errors import ConfigError
from prefcore.kernels.fused_linear_logprobs import fused_linear_logprobs

__all__ = ["PLACEMENTS", "PolicyOutputs", "ValueModel", "build_value_model", "linear_head_values", "policy_outputs"]

PLACEMENTS: tuple[str, ...] = ("separate", "reward_model", "shared")


def _base(model: Any) -> Any:
    """The transformers model under a PEFT wrapper, if any."""
    get_base_model = getattr(model, "get_base_model", None)
    return get_base_model() if callable(get_base_model) else model


def _hidden_size(trunk: nn.Module) -> int:
    config = getattr(trunk, "config", None)
    size = getattr(config, "hidden_size", None) or getattr(config, "d_model", None)
    if not isinstance(size, int):
        raise TypeError(f"cannot tell the hidden size of {type(trunk).__name__}: its config has no hidden_size.")
    return size


def _completion_columns(tensors: RolloutTensors, length: int) -> torch.Tensor:
    """``[S, T]`` the sequence position whose output belongs to completion token t of each row."""
    first = tensors.sequences.completion_mask.float().argmax(dim=1)
    columns = first.unsqueeze(1) + torch.arange(tensors.mask.shape[1], device=first.device).unsqueeze(0)
    return columns.clamp(max=length - 1)


def _to_completion(per_position: torch.Tensor, tensors: RolloutTensors, width: int) -> torch.Tensor:
    """``[S, L(, K)]`` outputs per sequence position → ``[S, width(, K)]`` per completion token, 0 where masked."""
    columns = _completion_columns(tensors, per_position.shape[1])
    if per_position.dim() == 3:
        gathered = per_position.gather(1, columns.unsqueeze(-1).expand(-1, -1, per_position.shape[-1]))
        gathered = gathered.masked_fill(~tensors.mask.unsqueeze(-1), 0.0)
        return nn.functional.pad(gathered, (0, 0, 0, width - gathered.shape[1]))
    gathered = per_position.gather(1, columns).masked_fill(~tensors.mask, 0.0)
    return nn.functional.pad(gathered, (0, width - gathered.shape[1]))


def linear_head_values(head: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """``[..., K]`` float32 values of the heads ``head`` (a linear layer) on hidden states ``[..., H]``;
    also what FSDP2 wraps when the heads ride on the policy's trunk (``PPOTrainer``)."""
    return head(hidden.to(head.weight.dtype)).float()


class ValueModel(nn.Module):
    """Linear heads ``[H → K]`` (one per name in ``heads``) on a trunk's last hidden states.

    Arguments:
        trunk: a model returning ``last_hidden_state`` (a causal LM's decoder), owned and trained
            by the value model; None with ``policy`` for the shared placement.
        heads: the value heads' names.
        policy: the causal LM whose decoder is the trunk (``shared``); not a submodule, so the
            value model's parameters (and its checkpoint) are the heads only.
        seed: seed of the new heads' initialisation (the caller's random state is untouched).
    """

    def __init__(
        self,
        trunk: nn.Module | None,
        heads: Sequence[str] = ("reward",),
        *,
        policy: nn.Module | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        heads = tuple(heads)
        if not heads or len(set(heads)) != len(heads) or not all(isinstance(h, str) and h for h in heads):
            raise ConfigError(f"value heads must be distinct non-empty names; got {list(heads)}.")
        if (trunk is None) == (policy is None):
            raise ValueError("ValueModel needs exactly one of trunk (its own) and policy (a shared trunk).")
        self.trunk = trunk
        self._shared = [policy] if policy is not None else []  # a list keeps the policy out of the submodules
        decoder = trunk if trunk is not None else _base(policy).get_decoder()
        hidden_size = _hidden_size(decoder)
        self.heads = heads
        with torch.random.fork_rng(devices=[]):  # the heads' start depends on the seed, not on the caller's RNG
            torch.manual_seed(seed)
            self.head = nn.Linear(hidden_size, len(heads))
            nn.init.normal_(self.head.weight, std=1.0 / (hidden_size + 1))
            nn.init.zeros_(self.head.bias)
        self.head.to(next(decoder.parameters()).device)

    @property
    def shared(self) -> bool:
        """True when the trunk is the policy's."""
        return bool(self._shared)

    def decoder(self) -> nn.Module:
        return self.trunk if self.trunk is not None else _base(self._shared[0]).get_decoder()

    def load_head(self, name: str, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        """Start head ``name`` from a trained scalar head (``weight`` ``[H]``, ``bias`` a scalar)."""
        index = self.heads.index(name)
        with torch.no_grad():
            self.head.weight[index].copy_(weight.reshape(-1))
            self.head.bias[index].copy_(bias.reshape(()) if bias is not None else torch.zeros(()))

    def head_values(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[..., K]`` float32 values from hidden states ``[..., H]``."""
        return linear_head_values(self.head, hidden)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[S, L, K]`` values at every position."""
        hidden = self.decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head_values(hidden)

    def completion_values(self, tensors: RolloutTensors, rows: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
        """``{head: [len(rows), T]}`` value of each completion token's state, 0 where masked (grad as enabled)."""
        width = tensors.mask.shape[1]
        if rows is not None:
            tensors = tensors.select(rows)
        padded = tensors.sequences
        values = _to_completion(self(padded.input_ids, padded.attention_mask), tensors, width)
        return {name: values[..., index] for index, name in enumerate(self.heads)}

    def rollout_values(self, tensors: RolloutTensors, batch_size: int = 64) -> dict[str, torch.Tensor]:
        """``completion_values`` of every row in eval mode without gradient: the old values of a rollout phase."""
        count = tensors.num_completions
        modules = [self] + ([self._shared[0]] if self.shared else [])
        parts: list[dict[str, torch.Tensor]] = []
        with torch.no_grad(), _eval(modules):
            for start in range(0, count, batch_size):
                parts.append(self.completion_values(tensors, range(start, min(start + batch_size, count))))
        if not parts:
            return {name: torch.zeros(tensors.mask.shape) for name in self.heads}
        return {name: torch.cat([part[name] for part in parts]) for name in self.heads}


class _eval:
    """Every module in eval mode for the block, each one's mode restored after."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self.modules = modules
        self.stack: list[Any] = []

    def __enter__(self) -> None:
        for module in self.modules:
            context = eval_mode(module)
            context.__enter__()
            self.stack.append(context)

    def __exit__(self, *exc: Any) -> None:
        while self.stack:
            self.stack.pop().__exit__(*exc)


@dataclass(frozen=True)
class PolicyOutputs:
    """One forward of the policy on rollout rows: log-probs, and where asked entropy and shared-trunk values."""

    logps: torch.Tensor
    entropy: torch.Tensor | None = None
    values: Mapping[str, torch.Tensor] | None = None


def policy_outputs(
    policy: nn.Module,
    tensors: RolloutTensors,
    rows: Sequence[int],
    *,
    value_model: ValueModel | None = None,
    entropy: bool = False,
    fused: bool = True,
    backend: str = "auto",
) -> PolicyOutputs:
    """``[len(rows), T]`` log-probs of the completion tokens (with gradient), and what else one forward gives.

    Without entropy and shared values this is ``completion_token_logps`` (the fused LM head).
    ``entropy``: the entropy of the full next-token distribution at the sampling temperature,
    from the logits. A shared ``value_model`` reads its heads from the same decoder hidden states
    as the LM head, so one forward serves the policy and the critic. A model whose logits are
    more than a linear head (soft-capping) takes its own forward for the logits.
    """
    width = tensors.mask.shape[1]
    selected = tensors.select(rows)
    padded = selected.sequences
    shared = value_model is not None and value_model.shared
    scale = logprob_temperature(selected.temperature)
    target_rows = selected.target_rows()  # counted on the host: the fused LM head reads nothing from the device
    if not entropy and not shared:
        token_logps = completion_token_logps(
            policy, padded, fused=fused, backend=backend, temperature=scale, target_rows=target_rows
        )
        return PolicyOutputs(_to_completion(token_logps, selected, width))
    linear_head = supports_fused_head(policy)
    values = None
    hidden = None
    if shared or linear_head:
        decoder = _base(policy).get_decoder()
        hidden = decoder(input_ids=padded.input_ids, attention_mask=padded.attention_mask).last_hidden_state
    if shared:
        per_position = _to_completion(value_model.head_values(hidden), selected, width)
        values = {name: per_position[..., index] for index, name in enumerate(value_model.heads)}
    targets = padded.input_ids[:, 1:].masked_fill(~padded.completion_mask, IGNORE_INDEX)
    if not linear_head:  # soft-capped or scaled logits: the model's own forward
        logits = policy(input_ids=padded.input_ids, attention_mask=padded.attention_mask).logits[:, :-1]
    elif entropy or not fused:
        weight, bias = lm_head_weight_and_bias(policy)
        logits = nn.functional.linear(hidden[:, :-1], weight.to(hidden.dtype), None if bias is None else bias)
    else:  # shared values without entropy: the fused LM head on the same hidden states
        weight, bias = lm_head_weight_and_bias(policy)
        token_logps = fused_linear_logprobs(
            hidden[:, :-1],
            weight.to(hidden.dtype),
            targets,
            None if bias is None else bias.to(hidden.dtype),
            temperature=scale,
            ignore_index=IGNORE_INDEX,
            backend=backend,
            valid_rows=target_rows,
        )
        return PolicyOutputs(_to_completion(token_logps, selected, width), None, values)
    log_probs = torch.log_softmax(logits.float() / scale, dim=-1)
    token_logps = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * padded.completion_mask
    token_entropy = -(log_probs.exp() * log_probs).sum(-1) if entropy else None
    return PolicyOutputs(
        _to_completion(token_logps, selected, width),
        None if token_entropy is None else _to_completion(token_entropy, selected, width),
        values,
    )


def build_value_model(
    placement: str,
    policy: nn.Module,
    *,
    heads: Sequence[str] = ("reward",),
    reward_model: Any = None,
    tokenizer: Any = None,
    seed: int = 0,
) -> ValueModel:
    """The value model for ``placement`` (``separate``, ``reward_model`` or ``shared``; see the module docstring).

    ``reward_model``: a ``prefcore.engine.reward_model.RewardModel`` (the run's trained one), needed
    for the ``reward_model`` placement; its tokenizer must be the policy's (``tokenizer``), since the
    value model reads the policy's token ids. Its backbone is copied, so scoring stays untouched.
    ``seed`` seeds the new heads.
    """
    if placement not in PLACEMENTS:
        raise ConfigError(f"critic must be one of {', '.join(PLACEMENTS)}. Got {placement!r}.", field="critic")
    device = next(policy.parameters()).device
    if placement == "shared":
        return ValueModel(None, heads, policy=policy, seed=seed)
    if placement == "separate":
        trunk = copy.deepcopy(_base(policy).get_decoder())
        trunk.requires_grad_(True)
        return ValueModel(trunk, heads, seed=seed).to(device)
    if reward_model is None or not hasattr(reward_model, "backbone"):
        raise ConfigError(
            "critic = 'reward_model' starts the value model from the reward model this run trains, but the run has "
            "none (a [preference_model] with a scalar head: bradley_terry and its kin); use critic = 'separate'.",
            field="critic",
        )
    if tokenizer is not None and reward_model.tokenizer.get_vocab() != tokenizer.get_vocab():
        raise ConfigError(
            "critic = 'reward_model' needs the reward model to share the policy's tokenizer; it does not. "
            "Use critic = 'separate'.",
            field="critic",
        )
    trunk = copy.deepcopy(reward_model.backbone)
    trunk.requires_grad_(True)
    model = ValueModel(trunk, heads, seed=seed).to(device)
    aspects = tuple(reward_model.aspects)
    for name in heads:
        index = aspects.index(name) if name in aspects else (0 if name == "reward" and len(aspects) == 1 else None)
        if index is not None:
            bias = None if reward_model.head.bias is None else reward_model.head.bias[index]
            model.load_head(name, reward_model.head.weight[index].to(device), bias)
    return model

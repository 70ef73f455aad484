"""Rollouts as padded tensors, and their per-token log-probs recomputed on the training path.

Training recomputes each completion token's log-prob under the policy (with gradient),
under the rollout policy before an update (old log-probs) and under the reference, all
through ``completion_token_logps``: the same fused LM-head kernel and the same
right-padded prompt + completion sequences as offline training, at the sampling
temperature (logits divided by it). The sampler recorded the same quantity while sampling
(``prefcore.engine.rollout.backend``), so with unchanged weights the two agree up to float
error and the first importance ratio is 1.

Shapes: ``S`` completions, ``T`` = the longest completion; completion token ``t`` of row
``s`` sits in column ``t`` of every ``[S, T]`` tensor, whatever its prompt's length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prefcore.engine.rollout.backend import logprob_temperature
from prefcore.lazy import lazy_module
from prefcore.rollout import Rollouts

__all__ = ["RolloutTensors", "completion_logps", "pad_rollouts", "rollout_logps"]

torch = lazy_module("torch")
sequences = lazy_module("prefcore.engine.sequences")
logprobs = lazy_module("prefcore.engine.logprobs")
generation = lazy_module("prefcore.engine.generation")
prefix = lazy_module("prefcore.engine.rollout.prefix")


@dataclass(frozen=True)
class RolloutTensors:
    """Rollouts padded for the model and for an online objective.

    Attributes:
        sequences: ``PaddedSequences`` of prompt + completion, right-padded (the model's input).
        completion_ids: ``[S, T]`` long, the completion tokens, ``pad_token_id`` past each end.
        mask: ``[S, T]`` bool, the completion tokens (up to and including the first stop).
        sampling_logps: ``[S, T]`` float32, the sampler's log-probs, 0 where masked.
        truncated: ``[S]`` bool, no stop token within ``max_new_tokens``.
        group_ids: ``[S]`` long, the prompt index of each completion.
        temperature: the log-probs' temperature (``Rollouts.temperature``).
        lengths: per row, ``(sequence length, completion length)`` on the host (``pad_rollouts`` measures
            them on the CPU), so that ``select`` reads nothing from the device; None: measured there.
        prompt_ids: per row, the prompt's token ids on the host, so that the shared-prompt log-probs
            group the rows without reading the device; None: read from ``sequences`` there.
    """

    sequences: Any
    completion_ids: torch.Tensor
    mask: torch.Tensor
    sampling_logps: torch.Tensor
    truncated: torch.Tensor
    group_ids: torch.Tensor
    temperature: float
    lengths: tuple[tuple[int, int], ...] | None = None
    prompt_ids: tuple[tuple[int, ...], ...] | None = None

    @property
    def num_completions(self) -> int:
        return self.completion_ids.shape[0]

    def to(self, device: Any) -> RolloutTensors:
        return RolloutTensors(
            self.sequences.to(device),
            self.completion_ids.to(device),
            self.mask.to(device),
            self.sampling_logps.to(device),
            self.truncated.to(device),
            self.group_ids.to(device),
            self.temperature,
            self.lengths,
            self.prompt_ids,
        )

    def target_rows(self) -> torch.Tensor | None:
        """``sequences.completion_mask.reshape(-1).nonzero()[:, 0]`` from the host ``lengths``, so that the fused
        LM head need not count the targets on the device (None without ``lengths``). A row of length n whose
        completion has c tokens has its targets at columns n − c − 1 … n − 2 (``pad_sequences``)."""
        if self.lengths is None:
            return None
        columns = self.sequences.completion_mask.shape[1]
        rows = [row * columns + t for row, (n, c) in enumerate(self.lengths) for t in range(n - c - 1, n - 1)]
        return torch.tensor(rows, dtype=torch.long, device=self.completion_ids.device)

    def select(self, rows: Sequence[int] | torch.Tensor) -> RolloutTensors:
        """The rows ``rows`` (a micro-batch), re-padded to their own longest sequence and completion."""
        index = torch.as_tensor(rows, dtype=torch.long, device=self.completion_ids.device)
        lengths = None if self.lengths is None or isinstance(rows, torch.Tensor) else [self.lengths[r] for r in rows]
        if lengths is not None:
            sequence_length = max((length for length, _ in lengths), default=1)
            width = max((length for _, length in lengths), default=0)
        else:
            sequence_length = int(self.sequences.attention_mask[index].sum(dim=1).max()) if len(index) else 1
            width = int(self.mask[index].sum(dim=1).max()) if len(index) else 0
        padded = self.sequences
        return RolloutTensors(
            type(padded)(
                padded.input_ids[index, :sequence_length],
                padded.attention_mask[index, :sequence_length],
                padded.completion_mask[index, : max(sequence_length - 1, 0)],
            ),
            self.completion_ids[index, :width],
            self.mask[index, :width],
            self.sampling_logps[index, :width],
            self.truncated[index],
            self.group_ids[index],
            self.temperature,
            None if lengths is None else tuple(lengths),
            None
            if self.prompt_ids is None or isinstance(rows, torch.Tensor)
            else tuple(self.prompt_ids[r] for r in rows),
        )


def pad_rollouts(rollouts: Rollouts, pad_token_id: int) -> RolloutTensors:
    """Pad ``rollouts`` into tensors on the CPU (move them with ``.to(device)``)."""
    tokenized = [
        sequences.TokenizedSequence(tuple(prompt), tuple(completion))
        for prompt, completion in zip(rollouts.prompt_ids, rollouts.completion_ids, strict=True)
    ]
    count = rollouts.num_completions
    width = max((len(ids) for ids in rollouts.completion_ids), default=0)
    completion_ids = torch.full((count, width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((count, width), dtype=torch.bool)
    sampling_logps = torch.zeros((count, width), dtype=torch.float32)
    for row, (ids, logps) in enumerate(zip(rollouts.completion_ids, rollouts.sampling_logps, strict=True)):
        if ids:
            completion_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[row, : len(ids)] = True
            sampling_logps[row, : len(ids)] = torch.tensor(logps, dtype=torch.float32)
    padded = sequences.pad_sequences(tokenized, pad_token_id)
    lengths = tuple(zip(padded.attention_mask.sum(dim=1).tolist(), mask.sum(dim=1).tolist(), strict=True))
    return RolloutTensors(
        sequences=padded,
        completion_ids=completion_ids,
        mask=mask,
        sampling_logps=sampling_logps,
        truncated=torch.tensor(rollouts.truncated, dtype=torch.bool),
        group_ids=torch.tensor(rollouts.group_ids, dtype=torch.long),
        temperature=rollouts.temperature,
        lengths=lengths,
        prompt_ids=tuple(tuple(ids[: n - c]) for ids, (n, c) in zip(padded.input_ids.tolist(), lengths, strict=True)),
    )


def completion_logps(
    model: Any,
    tensors: RolloutTensors,
    rows: Sequence[int] | None = None,
    *,
    temperature: float | None = None,
    fused: bool = True,
    backend: str = "auto",
    share_prefix: bool = True,
) -> torch.Tensor:
    """``[len(rows), T]`` float32 log-probs of the completion tokens under ``model``, 0 where masked.

    Differentiable when grad is enabled (the policy's ``policy_logps``); the caller picks the
    model's mode and grad context. Same kernels as offline training (``completion_token_logps``).
    The rows are re-padded to their own longest sequence for the forward, and the result
    padded back to the rollouts' ``T``, so micro-batches line up with ``tensors.mask[rows]``.

    Arguments:
        model: a transformers causal LM on the tensors' device.
        tensors: padded rollouts (``pad_rollouts``).
        rows: the completions to compute (a micro-batch), in this order; None = all.
        temperature: the softmax temperature; default ``tensors.temperature`` (the sampling one).
            0 stands for greedy and means 1, as the sampler records it.
        fused: use the fused LM-head kernel when the model allows it, as training does.
        backend: kernel backend (``auto``, ``triton``, ``torch``).
        share_prefix: run each distinct prompt of the rows once and the completions on its
            cached keys and values (``prefcore.engine.rollout.prefix``), where the model allows;
            the same log-probs to float tolerance, with a G-th of the prompt work.
    """
    width = tensors.mask.shape[1]
    if rows is not None:
        tensors = tensors.select(rows)
    scale = logprob_temperature(tensors.temperature if temperature is None else temperature)
    padded = tensors.sequences
    if share_prefix:
        shared = prefix.shared_prefix_logps(
            model,
            _row_prompts(tensors),
            tensors.completion_ids,
            tensors.mask,
            temperature=scale,
            fused=fused,
            backend=backend,
            completion_lengths=None if tensors.lengths is None else [count for _, count in tensors.lengths],
        )
        if shared is not None:
            return torch.nn.functional.pad(shared, (0, width - shared.shape[1]))
    token_logps = logprobs.completion_token_logps(
        model, padded, fused=fused, backend=backend, temperature=scale, target_rows=tensors.target_rows()
    )
    # Column t of row s is completion token t: its target sits at len(prompt_s) - 1 + t.
    first = padded.completion_mask.float().argmax(dim=1)
    columns = first.unsqueeze(1) + torch.arange(tensors.mask.shape[1], device=first.device).unsqueeze(0)
    columns = columns.clamp(max=token_logps.shape[1] - 1)
    logps = token_logps.gather(1, columns).masked_fill(~tensors.mask, 0.0)
    return torch.nn.functional.pad(logps, (0, width - logps.shape[1]))


def _row_prompts(tensors: RolloutTensors) -> list[tuple[int, ...]]:
    """Each row's prompt ids: its real tokens less its completion's (kept on the host by ``pad_rollouts``)."""
    if tensors.prompt_ids is not None:
        return list(tensors.prompt_ids)
    padded = tensors.sequences
    prompt_lengths = (padded.attention_mask.sum(dim=1) - tensors.mask.sum(dim=1)).tolist()
    return [tuple(ids[:length]) for ids, length in zip(padded.input_ids.tolist(), prompt_lengths, strict=True)]


def rollout_logps(
    model: Any,
    tensors: RolloutTensors,
    *,
    temperature: float | None = None,
    fused: bool = True,
    backend: str = "auto",
    batch_size: int = 64,
    share_prefix: bool = True,
) -> torch.Tensor:
    """``[S, T]``: ``completion_logps`` of every row without gradient, in eval mode, ``batch_size`` rows at a time.

    For log-probs that are targets, not trained: the reference's, and the policy's own
    before a series of updates on the same rollouts (old log-probs). The model's train/eval
    mode is restored afterwards.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1. Got {batch_size}.")
    count = tensors.num_completions
    if count == 0:
        return torch.zeros(tensors.mask.shape, dtype=torch.float32)
    with generation.eval_mode(model), torch.no_grad():
        parts = [
            completion_logps(
                model,
                tensors,
                range(start, min(start + batch_size, count)),
                temperature=temperature,
                fused=fused,
                backend=backend,
                share_prefix=share_prefix,
            )
            for start in range(0, count, batch_size)
        ]
    return torch.cat(parts)

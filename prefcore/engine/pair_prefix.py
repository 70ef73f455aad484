"""Offline pairs and lists computed with their shared prompt run once (``[train] share_prompts``).

The chosen and rejected completions of a pair (and every completion of a ranked list) follow
the same prompt; the padded batch runs that prompt once per sequence. Here the batch's rows are
split on the host into prompt and completion, and ``prefcore.engine.rollout.prefix``'s
``shared_prefix_logps`` (the online rollouts' prompt cache: one prompt pass per distinct
prompt, its keys and values expanded to the rows) gives each completion's log-probs, which are
put back at their columns of the ``[S, L - 1]`` layout every objective reads. Same maths as the
padded sequences; only the float summation order differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from prefcore.engine.cpu_attention import cpu_training_attention
from prefcore.engine.rollout.prefix import shared_prefix_logps
from prefcore.engine.sequences import PaddedSequences

__all__ = ["PromptPlan", "plan_prompts", "reference_shared_prompt_logps", "shared_prompt_token_logps"]


@dataclass(frozen=True)
class PromptPlan:
    """A padded batch split into prompts and completions, on the host.

    Attributes:
        prompts: each row's prompt ids.
        completion_ids: ``[S, T]`` long, right-padded completions.
        mask: ``[S, T]`` bool, the completion tokens.
        columns: ``[S, T]`` long, the column of ``[S, L - 1]`` that completion token t of row s
            predicts; padding points at the spare column ``L - 1``.
        width: ``L - 1``.
    """

    prompts: list[tuple[int, ...]]
    completion_ids: torch.Tensor
    mask: torch.Tensor
    columns: torch.Tensor
    width: int


def plan_prompts(sequences: PaddedSequences) -> PromptPlan | None:
    """The ``PromptPlan`` of a host (CPU) batch, or None when no two rows share a prompt or a row has no completion."""
    mask = sequences.completion_mask.bool()
    counts = mask.sum(dim=1)
    if mask.shape[0] < 2 or bool((counts == 0).any()):
        return None
    starts = mask.int().argmax(dim=1)  # target column of each row's first completion token
    ids = sequences.input_ids
    prompts = [tuple(ids[row, : start + 1].tolist()) for row, start in enumerate(starts.tolist())]
    if len(set(prompts)) == len(prompts):
        return None
    length = int(counts.max())
    offsets = torch.arange(length).unsqueeze(0)
    completion_mask = offsets < counts.unsqueeze(1)
    positions = (starts.unsqueeze(1) + 1 + offsets).clamp(max=ids.shape[1] - 1)
    completion_ids = torch.where(completion_mask, ids.gather(1, positions), 0)
    width = mask.shape[1]
    columns = torch.where(completion_mask, starts.unsqueeze(1) + offsets, width)
    return PromptPlan(prompts, completion_ids, completion_mask, columns, width)


def shared_prompt_token_logps(
    model: Any, plan: PromptPlan, device: torch.device, *, fused: bool, backend: str
) -> torch.Tensor | None:
    """``[S, L - 1]`` float32 completion log-probs (0 elsewhere), each prompt run once.

    None when the model does not suit (``shared_prefix_logps``): the caller runs the padded batch.
    """
    completion_ids = plan.completion_ids.to(device)
    mask = plan.mask.to(device)
    with cpu_training_attention(model):
        logps = shared_prefix_logps(
            model, plan.prompts, completion_ids, mask, temperature=1.0, fused=fused, backend=backend
        )
    if logps is None:
        return None
    spread = torch.zeros((logps.shape[0], plan.width + 1), dtype=logps.dtype, device=device)
    return spread.scatter(1, plan.columns.to(device), logps)[:, : plan.width]


@torch.no_grad()
def reference_shared_prompt_logps(reference: Any, plan: PromptPlan, device: torch.device) -> torch.Tensor | None:
    """A ``ModelReference``'s log-probs with each prompt run once; None for other references or unsuited models."""
    from prefcore.engine.reference import ModelReference

    if type(reference) is not ModelReference or reference.disable_adapter:
        return None
    was_training = reference.model.training
    reference.model.eval()
    try:
        return shared_prompt_token_logps(
            reference.model, plan, device, fused=reference.fused, backend=reference.backend
        )
    finally:
        reference.model.train(was_training)

"""The parity kit for online objectives: the checks of ``prefcore.testing.parity`` on a ``RolloutBatch``.

- ``assert_matches_reference`` (from ``prefcore.testing.parity``) already takes a rollout
  batch: loss and gradient w.r.t. ``policy_logps`` against an independent reference;
- ``assert_online_gradcheck``: float64 ``torch.autograd.gradcheck`` on the loss tokens;
- ``assert_online_accumulation_invariant``: micro-batches with the step's ``num_tokens``
  and ``num_sequences`` add up to the whole batch's loss and gradient;
- ``assert_online_padding_invariant``: masked positions get no gradient, their values change nothing;
- ``check_online_objective`` runs them all (and ``assert_valid_output``).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from prefcore.online_objectives import OnlineObjective
from prefcore.rollout import RolloutBatch
from prefcore.testing.batches import rollout_batch_to
from prefcore.testing.batches import split_rollout_batch
from prefcore.testing.parity import assert_valid_output
from prefcore.testing.parity import objective_label

__all__ = [
    "assert_online_accumulation_invariant",
    "assert_online_gradcheck",
    "assert_online_padding_invariant",
    "check_online_objective",
]


def _loss_and_grad(objective: OnlineObjective, batch: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor]:
    policy_logps = batch.policy_logps.detach().clone().requires_grad_(True)
    loss = objective.loss(batch.with_policy_logps(policy_logps)).loss
    (grad,) = torch.autograd.grad(loss, policy_logps, allow_unused=True)
    return loss.detach(), torch.zeros_like(policy_logps) if grad is None else grad


def assert_online_gradcheck(objective: OnlineObjective, batch: RolloutBatch, *, atol: float = 1e-5) -> None:
    """Float64 gradcheck of the loss w.r.t. the policy log-probs of the loss tokens.

    Ratios sitting exactly on a clip boundary have no derivative; random batches never do.
    """
    label = objective_label(objective)
    batch64 = rollout_batch_to(batch, torch.float64)
    varied = objective.loss_mask(batch64)
    base = batch64.policy_logps.detach()
    values = base[varied].clone().requires_grad_(True)

    def loss_of(varied_values: torch.Tensor) -> torch.Tensor:
        return objective.loss(batch64.with_policy_logps(base.masked_scatter(varied, varied_values))).loss

    try:
        torch.autograd.gradcheck(loss_of, (values,), eps=1e-6, atol=atol, rtol=1e-4, raise_exception=True)
    except RuntimeError as error:
        raise AssertionError(f"{label}: float64 gradcheck failed: {error}") from None


def assert_online_accumulation_invariant(
    objective: OnlineObjective,
    batch: RolloutBatch,
    *,
    num_parts: int = 3,
    rtol: float = 1e-5,
    atol: float = 1e-6,
) -> None:
    """Micro-batches with the step's ``num_tokens`` (of ``objective.loss_mask``) and ``num_sequences`` sum to the whole.

    Why: the engine calls the objective once per micro-batch and adds the losses; every
    aggregation must give the step's loss whatever the split and the completion lengths.
    """
    label = objective_label(objective)
    total = batch.num_completions
    order = torch.randperm(total, generator=torch.Generator().manual_seed(total)).tolist()
    num_parts = min(num_parts, total)
    groups = [order[part::num_parts] for part in range(num_parts)]
    whole = replace(batch, num_tokens=None, num_sequences=None)
    whole_loss, whole_grad = _loss_and_grad(objective, whole)
    summed_loss = torch.zeros((), dtype=torch.float64)
    summed_grad = torch.zeros_like(whole_grad, dtype=torch.float64)
    for group, part in zip(
        groups, split_rollout_batch(whole, groups, loss_mask=objective.loss_mask(whole)), strict=True
    ):
        part_loss, part_grad = _loss_and_grad(objective, part)
        summed_loss += part_loss.double()
        summed_grad.index_add_(0, torch.as_tensor(group), part_grad.double())
    torch.testing.assert_close(
        summed_loss,
        whole_loss.double(),
        rtol=rtol,
        atol=atol,
        msg=lambda m: f"{label}: micro-batch losses do not add up to the whole batch's.\n{m}",
    )
    torch.testing.assert_close(
        summed_grad,
        whole_grad.double(),
        rtol=rtol,
        atol=atol,
        msg=lambda m: f"{label}: micro-batch gradients do not add up to the whole batch's.\n{m}",
    )


def assert_online_padding_invariant(objective: OnlineObjective, batch: RolloutBatch) -> None:
    """Values at masked positions (and of masked-out truncated completions) change nothing and get no gradient."""
    label = objective_label(objective)
    loss, grad = _loss_and_grad(objective, batch)
    keep = objective.loss_mask(batch)
    assert bool((grad[~keep] == 0).all()), f"{label}: masked positions get a gradient."
    noisy = {
        name: torch.where(keep, getattr(batch, name), torch.full_like(getattr(batch, name), -3.0))
        for name in ("policy_logps", "sampling_logps", "advantages", "ref_logps")
        if getattr(batch, name) is not None
    }
    noisy_loss, noisy_grad = _loss_and_grad(objective, replace(batch, **noisy))
    torch.testing.assert_close(noisy_loss, loss, msg=lambda m: f"{label}: masked values change the loss.\n{m}")
    torch.testing.assert_close(noisy_grad, grad, msg=lambda m: f"{label}: masked values change the gradient.\n{m}")


def check_online_objective(objective: OnlineObjective, batch: RolloutBatch) -> None:
    """Every online check: valid output, float64 gradcheck, exact accumulation, padding invariance."""
    assert_valid_output(objective, batch)
    assert_online_gradcheck(objective, batch)
    assert_online_accumulation_invariant(objective, batch)
    assert_online_padding_invariant(objective, batch)

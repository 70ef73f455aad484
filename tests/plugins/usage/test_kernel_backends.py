"""Every objective gives the same loss, gradient and metrics through the Triton kernels as through torch.

The objectives reach the kernels through ``prefcore.kernels.preference_losses`` with
``backend="auto"``; ``PREFCORE_KERNEL_BACKEND`` forces one path. On a CPU machine the
Triton path runs in the interpreter (``TRITON_INTERPRET=1``, set by the test conftest);
on a GPU machine the batch moves to CUDA.
"""

from __future__ import annotations

from dataclasses import fields
from dataclasses import replace

import pytest
import torch

from prefcore.batch import LogProbBatch
from prefcore.kernels._dispatch import BACKEND_ENV
from prefcore.kernels._dispatch import HAS_TRITON
from prefcore.kernels._dispatch import interpreter_enabled
from prefcore.methods import UsageObjective
from prefcore.registry import Registry
from prefcore.rollout import ROLLOUT_FORMAT
from prefcore.testing import make_random_batch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

pytestmark = pytest.mark.skipif(
    not HAS_TRITON or (DEVICE == "cpu" and not interpreter_enabled()),
    reason="needs triton, and a GPU or TRITON_INTERPRET=1",
)

BATCH_COUPLED = {"aot", "aot_pair"}  # refuse weights (see test_parity_kit.py)


def _to_device(batch: LogProbBatch) -> LogProbBatch:
    moved = {
        field.name: getattr(batch, field.name).to(DEVICE)
        for field in fields(batch)
        if isinstance(getattr(batch, field.name), torch.Tensor)
    }
    return replace(batch, **moved)


def _run(objective: UsageObjective, batch: LogProbBatch) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    policy_logps = batch.policy_logps.detach().clone().requires_grad_(True)
    output = objective.loss(batch.with_policy_logps(policy_logps))
    (grad,) = torch.autograd.grad(output.loss * 0.75, policy_logps)
    return output.loss.detach(), grad, {name: float(value) for name, value in output.metrics.items()}


USAGE_NAMES = [
    "aot", "aot_pair", "apo_down", "apo_zero", "bco_pair", "cdpo", "cpo", "discopop", "dpo", "exo_pair", "fdpo",
    "hindsight_sft", "hinge", "ipo", "kto", "nca_pair", "odpo", "orpo", "plackett_luce_dpo", "pro",
    "reward_conditioned_sft", "robust_dpo", "rpo", "rrhf", "sft", "sigmoid_norm", "simpo", "sppo_hard", "unlikelihood",
]  # fmt: skip


def test_every_objective_is_covered(usage_registry: Registry) -> None:
    # online objectives train on rollouts; their KL goes through prefcore.kernels.kl (test_online_objectives.py)
    offline = [info.name for info in usage_registry.methods("usage") if ROLLOUT_FORMAT not in info.cls.data_formats]
    assert offline == USAGE_NAMES


@pytest.mark.parametrize("name", USAGE_NAMES)
def test_triton_path_matches_torch_path(usage_registry: Registry, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    objective = usage_registry.create("usage", name)
    assert isinstance(objective, UsageObjective)
    for data_format in objective.data_formats:
        batch = _to_device(
            make_random_batch(
                data_format,
                num_items=3,
                with_reference=objective.uses_reference(),
                with_weights=name not in BATCH_COUPLED,
                with_mismatched=data_format == "unpaired" and objective.uses_reference(),
                with_ties=data_format == "listwise",
                seed=31,
            )
        )
        monkeypatch.setenv(BACKEND_ENV, "triton")
        triton_loss, triton_grad, triton_metrics = _run(objective, batch)
        monkeypatch.setenv(BACKEND_ENV, "torch")
        torch_loss, torch_grad, torch_metrics = _run(objective, batch)
        torch.testing.assert_close(triton_loss, torch_loss)
        torch.testing.assert_close(triton_grad, torch_grad)
        assert triton_metrics == pytest.approx(torch_metrics, rel=1e-5, abs=1e-6)

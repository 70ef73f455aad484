"""The example objective passes prefcore's parity kit against the paper's formula."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from prefcore_example_plugin.example_offset_dpo import OffsetDPO
from prefcore_example_plugin.example_offset_dpo import OffsetDPOConfig

from prefcore.batch import LogProbBatch
from prefcore.testing import check_objective


def odpo_constant_offset_loss(batch: LogProbBatch, beta: float, offset: float) -> torch.Tensor:
    """Amini et al. 2024, Eq. 6 with a constant offset: mean of −log σ(β·h − Δ)."""
    policy = (batch.policy_logps * batch.mask).sum(-1)
    reference = (batch.ref_logps * batch.mask).sum(-1)
    h = (policy - reference)[batch.chosen_index] - (policy - reference)[batch.rejected_index]
    return -F.logsigmoid(beta * h - offset).mean()


def test_offset_dpo_passes_the_parity_kit() -> None:
    objective = OffsetDPO(OffsetDPOConfig(beta=0.2, offset=0.3))
    check_objective(objective, reference_fn=lambda batch: odpo_constant_offset_loss(batch, 0.2, 0.3))

"""The parity kit (``prefcore.testing``) on every registered usage objective, with its defaults.

Every objective gets every check, on each data format it declares, on completions of
uneven lengths, unless it is listed below with the reason the check does not apply.
Token-averaged NLL terms are exact across splits through ``LogProbBatch.num_tokens``
(``test_gradient_accumulation.py`` covers them in detail).
"""

from __future__ import annotations

import pytest

from prefcore.methods import UsageObjective
from prefcore.registry import Registry
from prefcore.rollout import ROLLOUT_FORMAT
from prefcore.testing import check_objective
from prefcore.testing import make_random_batch

BATCH_COUPLED = {
    "aot": "sorts the margins of all pairs of the batch, so pairs interact and weights cannot apply",
    "aot_pair": "sorts the rewards of all pairs of the batch, so pairs interact and weights cannot apply",
}
"""Objectives whose loss couples the comparisons of a batch: no per-comparison checks."""

USAGE_NAMES = [
    "aot", "aot_pair", "apo_down", "apo_zero", "bco_pair", "cdpo", "cpo", "discopop", "dpo", "exo_pair", "fdpo",
    "hindsight_sft", "hinge", "ipo", "kto", "nca_pair", "odpo", "orpo", "plackett_luce_dpo", "pro",
    "reward_conditioned_sft", "robust_dpo", "rpo", "rrhf", "sft", "sigmoid_norm", "simpo", "sppo_hard", "unlikelihood",
]  # fmt: skip


def test_the_parametrisation_covers_every_registered_objective(usage_registry: Registry) -> None:
    # online objectives train on rollouts: test_online_objectives.py runs their parity kit
    offline = [info.name for info in usage_registry.methods("usage") if ROLLOUT_FORMAT not in info.cls.data_formats]
    assert offline == USAGE_NAMES
    assert set(BATCH_COUPLED) <= set(USAGE_NAMES)


@pytest.mark.parametrize("name", USAGE_NAMES)
def test_parity_kit(usage_registry: Registry, name: str) -> None:
    objective = usage_registry.create("usage", name)
    assert isinstance(objective, UsageObjective)
    per_comparison = name not in BATCH_COUPLED
    for data_format in objective.data_formats:
        batch = make_random_batch(
            data_format,
            with_reference=objective.uses_reference(),
            with_weights=per_comparison,
            with_mismatched=data_format == "unpaired" and objective.uses_reference(),
            with_ties=data_format == "listwise",
            seed=7,
        )
        check_objective(objective, batch, check_accumulation=per_comparison, check_weights=per_comparison)


@pytest.mark.parametrize("name", sorted(BATCH_COUPLED))
def test_batch_coupled_objectives_refuse_weights(usage_registry: Registry, name: str) -> None:
    objective = usage_registry.create("usage", name)
    assert isinstance(objective, UsageObjective)
    batch = make_random_batch("pairwise", with_weights=True)
    with pytest.raises(ValueError, match="weights"):
        objective.loss(batch)

"""The parity kit (``prefcore.testing``) on every registered usage objective, with its defaults.

Every objective gets every check, on each data format it declares, unless it is listed
below with the reason the check does not apply.
"""

from __future__ import annotations

import pytest

from prefcore.methods import UsageObjective
from prefcore.registry import Registry
from prefcore.testing import assert_accumulation_invariant
from prefcore.testing import assert_weights_respected
from prefcore.testing import check_objective
from prefcore.testing import make_random_batch

BATCH_COUPLED = {
    "aot": "sorts the margins of all pairs of the batch, so pairs interact and weights cannot apply",
    "aot_pair": "sorts the rewards of all pairs of the batch, so pairs interact and weights cannot apply",
}
"""Objectives whose loss couples the comparisons of a batch: no per-comparison checks."""

TOKEN_AVERAGED = {
    "sft": "NLL averaged over all tokens of the micro-batch (TRL's sft loss)",
    "rpo": "its NLL term is averaged over all chosen tokens of the micro-batch",
    "orpo": "its NLL term is averaged over all chosen tokens of the micro-batch",
    "cpo": "its NLL term is averaged over all chosen tokens of the micro-batch",
    "hindsight_sft": "SFT: NLL averaged over all tokens of the micro-batch",
    "reward_conditioned_sft": "SFT: NLL averaged over all tokens of the micro-batch",
}
"""Objectives with a token average over the micro-batch: a comparison's share depends on the
other comparisons' lengths, so splits and weights are exact only when lengths are equal."""

USAGE_NAMES = [
    "aot", "aot_pair", "apo_down", "apo_zero", "bco_pair", "cdpo", "cpo", "discopop", "dpo", "exo_pair", "fdpo",
    "hindsight_sft", "hinge", "ipo", "kto", "nca_pair", "orpo", "plackett_luce_dpo", "pro", "reward_conditioned_sft",
    "robust_dpo", "rpo", "rrhf", "sft", "sigmoid_norm", "simpo", "sppo_hard", "unlikelihood",
]  # fmt: skip


def test_the_parametrisation_covers_every_registered_objective(usage_registry: Registry) -> None:
    assert usage_registry.names("usage") == USAGE_NAMES
    assert set(BATCH_COUPLED) <= set(USAGE_NAMES)
    assert set(TOKEN_AVERAGED) <= set(USAGE_NAMES)


@pytest.mark.parametrize("name", USAGE_NAMES)
def test_parity_kit(usage_registry: Registry, name: str) -> None:
    objective = usage_registry.create("usage", name)
    assert isinstance(objective, UsageObjective)
    per_comparison = name not in BATCH_COUPLED and name not in TOKEN_AVERAGED
    for data_format in objective.data_formats:
        batch = make_random_batch(
            data_format,
            with_reference=objective.uses_reference(),
            with_weights=name not in BATCH_COUPLED,
            with_mismatched=data_format == "unpaired" and objective.uses_reference(),
            with_ties=data_format == "listwise",
            seed=7,
        )
        check_objective(objective, batch, check_accumulation=per_comparison, check_weights=per_comparison)
        if name in TOKEN_AVERAGED:
            equal_lengths = make_random_batch(
                data_format, with_reference=objective.uses_reference(), with_weights=True, equal_lengths=True, seed=8
            )
            assert_accumulation_invariant(objective, equal_lengths)
            assert_weights_respected(objective, equal_lengths)


@pytest.mark.parametrize("name", sorted(TOKEN_AVERAGED))
def test_token_averaged_objectives_depend_on_lengths_across_a_split(usage_registry: Registry, name: str) -> None:
    """Keeps ``TOKEN_AVERAGED`` honest: with ragged lengths the split check does fail for these."""
    objective = usage_registry.create("usage", name)
    assert isinstance(objective, UsageObjective)
    batch = make_random_batch(objective.data_formats[0], with_reference=objective.uses_reference(), seed=9)
    with pytest.raises(AssertionError, match="do not add up"):
        assert_accumulation_invariant(objective, batch)


@pytest.mark.parametrize("name", sorted(BATCH_COUPLED))
def test_batch_coupled_objectives_refuse_weights(usage_registry: Registry, name: str) -> None:
    objective = usage_registry.create("usage", name)
    assert isinstance(objective, UsageObjective)
    batch = make_random_batch("pairwise", with_weights=True)
    with pytest.raises(ValueError, match="weights"):
        objective.loss(batch)

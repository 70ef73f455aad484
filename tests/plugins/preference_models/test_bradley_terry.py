"""bradley_terry against the paper's likelihood, pair by pair (Christiano et al. 2017; Ouyang et al. 2022 Eq. 1)."""

from __future__ import annotations

import pytest
import torch

from prefcore.errors import ConfigError
from prefcore.plugins.preference_models.bradley_terry import BradleyTerry
from prefcore.plugins.preference_models.bradley_terry import BradleyTerryConfig
from prefcore.preference import RewardBatch

# (pairs, reward scale, why)
SHAPES = [
    (1, 1.0, "a single pair"),
    (7, 2.0, "an odd count"),
    (64, 15.0, "large gaps: log σ must not underflow to -inf"),
]


def christiano_bt_loss(
    rewards: torch.Tensor, batch: RewardBatch, center: float = 0.0, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Eq. 1 of Ouyang et al. 2022 written out per pair: −log(1 / (1 + e^−(r_c − r_r))), plus c·(r_c + r_r)²."""
    assert batch.chosen_index is not None and batch.rejected_index is not None
    heads = batch.aspect_index if batch.aspect_index is not None else torch.zeros_like(batch.chosen_index)
    total = rewards.new_zeros(())
    for pair, (chosen, rejected) in enumerate(
        zip(batch.chosen_index.tolist(), batch.rejected_index.tolist(), strict=True)
    ):
        r_c, r_r = rewards[chosen, heads[pair]], rewards[rejected, heads[pair]]
        term = -torch.log(1 / (1 + torch.exp(-(r_c - r_r)))) + center * (r_c + r_r) ** 2
        total = total + (term if weights is None else weights[pair] * term)
    count = batch.num_items if batch.num_items is not None else len(batch.chosen_index)
    return total / count


@pytest.mark.parametrize(("pairs", "scale", "why"), SHAPES)
@pytest.mark.parametrize("center", [0.0, 0.01])
def test_bradley_terry_matches_christiano_formula(pair_batch, assert_matches, pairs, scale, why, center) -> None:
    batch = pair_batch(pairs, scale=scale)
    objective = BradleyTerry(BradleyTerryConfig(center_rewards_coefficient=center))
    assert_matches(objective.loss, lambda rewards: christiano_bt_loss(rewards, batch, center), batch)


def test_each_pair_is_read_on_its_aspect_head(pair_batch, assert_matches) -> None:
    batch = pair_batch(6, heads=3, aspect_index=torch.tensor([0, 2, 1, 2, 0, 1]))
    assert_matches(BradleyTerry().loss, lambda rewards: christiano_bt_loss(rewards, batch), batch)


def test_weights_and_num_items_scale_each_pair(pair_batch, assert_matches) -> None:
    weights = torch.tensor([0.5, 2.0, 1.0, 0.0])
    batch = pair_batch(4, weights=weights, num_items=10)
    assert_matches(BradleyTerry().loss, lambda rewards: christiano_bt_loss(rewards, batch, weights=weights), batch)


def test_metrics_count_correctly_ordered_pairs() -> None:
    rewards = torch.tensor([[2.0], [1.0], [0.0], [3.0]])
    batch = RewardBatch(rewards, chosen_index=torch.tensor([0, 2]), rejected_index=torch.tensor([1, 3]))
    metrics = BradleyTerry().loss(batch).metrics
    assert float(metrics["rewards/accuracy"]) == 0.5
    assert float(metrics["rewards/margin"]) == pytest.approx((1.0 - 3.0) / 2)


def test_ties_are_refused_with_the_way_out(pair_batch) -> None:
    batch = pair_batch(3, ties=torch.tensor([False, True, False]))
    with pytest.raises(ValueError, match="soft_bradley_terry"):
        BradleyTerry().loss(batch)


def test_batch_without_pairs_is_refused() -> None:
    with pytest.raises(ValueError, match="pairwise data"):
        BradleyTerry().loss(RewardBatch(torch.zeros(4, 1)))


@pytest.mark.parametrize("value", [-0.1, float("nan"), float("inf")])
def test_config_refuses_bad_centering(value) -> None:
    with pytest.raises(ConfigError) as excinfo:
        BradleyTerryConfig(center_rewards_coefficient=value)
    assert (excinfo.value.method, excinfo.value.field) == ("bradley_terry", "center_rewards_coefficient")


def test_registry_reports_the_option(preference_registry) -> None:
    with pytest.raises(ConfigError, match="center_rewards_coefficient must be >= 0"):
        preference_registry.create("preference_model", "bradley_terry", {"center_rewards_coefficient": -1})

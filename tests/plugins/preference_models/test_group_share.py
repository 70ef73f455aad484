"""group_share against the distributional cross-entropy written out pair by pair (Siththaranjan et al. 2024)."""

from __future__ import annotations

import math

import pytest
import torch

from prefcore.engine.reward_model import ScoringRule
from prefcore.errors import ConfigError
from prefcore.plugins.preference_models.group_share import GroupShare
from prefcore.plugins.preference_models.group_share import GroupShareConfig
from prefcore.preference import RewardBatch

GROUPS = ("fast", "full", "other")


def distributional_cross_entropy(rewards: torch.Tensor, batch: RewardBatch) -> torch.Tensor:
    """−[s·log σ(Δ_g) + (1 − s)·log σ(−Δ_g)], Δ_g on the head of the group that judged the pair; mean."""
    assert batch.chosen_index is not None and batch.rejected_index is not None and batch.aspect_index is not None
    shares = batch.probabilities.tolist() if batch.probabilities is not None else [1.0] * len(batch.chosen_index)
    terms = []
    for c, r, g, s in zip(
        batch.chosen_index.tolist(), batch.rejected_index.tolist(), batch.aspect_index.tolist(), shares, strict=True
    ):
        p = 1 / (1 + torch.exp(-(rewards[c, g] - rewards[r, g])))
        terms.append(-(s * torch.log(p) + (1 - s) * torch.log(1 - p)))
    return torch.stack(terms).sum() / (batch.num_items or len(terms))


@pytest.mark.parametrize("pairs", [1, 12])
def test_group_share_matches_the_cross_entropy_against_vote_shares(pair_batch, assert_matches, pairs) -> None:
    generator = torch.Generator().manual_seed(pairs)
    aspect_index = torch.randint(0, 3, (pairs,), generator=generator)
    shares = torch.rand(pairs, generator=generator)
    batch = pair_batch(pairs, heads=3, aspect_index=aspect_index, probabilities=shares, num_items=pairs + 3)
    objective = GroupShare(GroupShareConfig(groups=GROUPS))
    assert_matches(objective.loss, lambda rewards: distributional_cross_entropy(rewards, batch), batch)


def test_the_loss_is_lowest_where_the_predicted_share_is_the_vote_share() -> None:
    """One pair, one head: the loss over the gap Δ is minimal at σ(Δ) = s (here s = 0.7)."""
    objective = GroupShare(GroupShareConfig(groups=("g",)))
    losses = {}
    for gap in (-1.0, 0.0, math.log(0.7 / 0.3), 2.0, 4.0):
        rewards = torch.tensor([[gap], [0.0]])
        batch = RewardBatch(rewards, torch.tensor([0]), torch.tensor([1]), probabilities=torch.tensor([0.7]))
        losses[gap] = objective.loss(batch).loss.item()
    best = min(losses, key=losses.get)
    assert best == pytest.approx(math.log(0.7 / 0.3))
    entropy = -(0.7 * math.log(0.7) + 0.3 * math.log(0.3))
    assert losses[best] == pytest.approx(entropy, rel=1e-6)


def test_ties_are_an_even_share_and_a_pair_moves_only_its_group_head(pair_batch) -> None:
    batch = pair_batch(
        4, heads=3, aspect_index=torch.tensor([2, 2, 2, 2]), ties=torch.tensor([True, False, False, True])
    )
    output = GroupShare(GroupShareConfig(groups=GROUPS)).loss(batch)
    output.loss.backward()
    assert batch.rewards.grad is not None
    assert torch.count_nonzero(batch.rewards.grad[:, :2]) == 0
    tie_free = RewardBatch(
        batch.rewards.detach(),
        batch.chosen_index,
        batch.rejected_index,
        probabilities=torch.tensor([0.5, 1.0, 1.0, 0.5]),
        aspect_index=batch.aspect_index,
    )
    expected = distributional_cross_entropy(batch.rewards.detach().double(), tie_free)
    torch.testing.assert_close(output.loss.double(), expected, rtol=1e-5, atol=1e-6)


def test_predicted_shares_and_scoring_weights() -> None:
    first, second = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]])
    torch.testing.assert_close(GroupShare.predicted_shares(first, second), torch.tensor([[1 / (1 + math.e**-1), 0.5]]))
    objective = GroupShare(GroupShareConfig(groups=("fast", "full"), group_weights={"fast": 0.7, "full": 0.3}))
    assert objective.aspects == ("fast", "full") and objective.num_heads() == 2
    assert objective.scoring_rule() == ScoringRule(aspect_weights=(0.7, 0.3))


def test_pairs_without_a_group_and_bad_shares_are_refused(pair_batch) -> None:
    objective = GroupShare(GroupShareConfig(groups=GROUPS))
    with pytest.raises(ValueError, match="aspect"):
        objective.loss(pair_batch(2, heads=3))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        objective.loss(
            pair_batch(2, heads=3, aspect_index=torch.tensor([0, 1]), probabilities=torch.tensor([1.5, 0.2]))
        )


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"groups": ()}, "groups"),
        ({"groups": ("a", "a")}, "groups"),
        ({"groups": ("a",), "group_weights": {"b": 1.0}}, "group_weights"),
    ],
)
def test_config_refuses_bad_groups(options, field) -> None:
    with pytest.raises(ConfigError) as excinfo:
        GroupShareConfig(**options)
    assert (excinfo.value.method, excinfo.value.field) == ("group_share", field)

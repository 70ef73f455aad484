"""multi_aspect against per-aspect Bradley–Terry, pair by pair on each pair's own head (Llama 2 sec. 3.2.2)."""

from __future__ import annotations

import pytest
import torch

from prefcore.engine.reward_model import ScoringRule
from prefcore.errors import ConfigError
from prefcore.plugins.preference_models.multi_aspect import MultiAspect
from prefcore.plugins.preference_models.multi_aspect import MultiAspectConfig
from prefcore.preference import RewardBatch

ASPECTS = ("helpfulness", "harmlessness", "honesty")


def per_aspect_bt_loss(rewards: torch.Tensor, batch: RewardBatch) -> torch.Tensor:
    """−log σ(r_a(y_c) − r_a(y_r)) with a = the pair's aspect; mean over pairs."""
    assert batch.chosen_index is not None and batch.rejected_index is not None and batch.aspect_index is not None
    terms = [
        -torch.log(1 / (1 + torch.exp(-(rewards[c, a] - rewards[r, a]))))
        for c, r, a in zip(
            batch.chosen_index.tolist(), batch.rejected_index.tolist(), batch.aspect_index.tolist(), strict=True
        )
    ]
    return torch.stack(terms).sum() / (batch.num_items or len(terms))


@pytest.mark.parametrize("pairs", [1, 12])
def test_multi_aspect_matches_per_aspect_bt_formula(pair_batch, assert_matches, pairs) -> None:
    aspect_index = torch.randint(0, 3, (pairs,), generator=torch.Generator().manual_seed(pairs))
    batch = pair_batch(pairs, heads=3, aspect_index=aspect_index)
    objective = MultiAspect(MultiAspectConfig(aspects=ASPECTS))
    assert_matches(objective.loss, lambda rewards: per_aspect_bt_loss(rewards, batch), batch)


def test_a_pair_moves_only_its_own_head(pair_batch) -> None:
    batch = pair_batch(4, heads=3, aspect_index=torch.tensor([1, 1, 1, 1]))
    MultiAspect(MultiAspectConfig(aspects=ASPECTS)).loss(batch).loss.backward()
    assert batch.rewards.grad is not None
    assert torch.count_nonzero(batch.rewards.grad[:, [0, 2]]) == 0
    assert torch.count_nonzero(batch.rewards.grad[:, 1]) == 8


def test_heads_and_scoring_weights_come_from_the_config() -> None:
    objective = MultiAspect(MultiAspectConfig(aspects=ASPECTS, aspect_weights={"helpfulness": 0.7, "honesty": 0.3}))
    assert objective.num_heads() == 3
    assert objective.aspects == ASPECTS
    assert objective.scoring_rule() == ScoringRule(aspect_weights=(0.7, 0.0, 0.3))
    assert MultiAspect(MultiAspectConfig(aspects=ASPECTS)).scoring_rule() == ScoringRule()


def test_pairs_without_aspects_are_refused(pair_batch) -> None:
    with pytest.raises(ValueError, match="aspect_index"):
        MultiAspect(MultiAspectConfig(aspects=ASPECTS)).loss(pair_batch(2, heads=3))


def test_rewards_with_other_head_count_are_refused(pair_batch) -> None:
    with pytest.raises(ValueError, match="2 heads"):
        MultiAspect(MultiAspectConfig(aspects=ASPECTS)).loss(pair_batch(2, heads=2))


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"aspects": ()}, "aspects"),
        ({"aspects": ("a", "a")}, "aspects"),
        ({"aspects": ("a", "")}, "aspects"),
        ({"aspects": ("a", "b"), "aspect_weights": {"c": 1.0}}, "aspect_weights"),
        ({"aspects": ("a", "b"), "aspect_weights": {"a": float("nan")}}, "aspect_weights.a"),
    ],
)
def test_config_refuses_bad_aspects(options, field) -> None:
    with pytest.raises(ConfigError) as excinfo:
        MultiAspectConfig(**options)
    assert (excinfo.value.method, excinfo.value.field) == ("multi_aspect", field)


def test_toml_lists_become_aspect_tuples(preference_registry) -> None:
    objective = preference_registry.create("preference_model", "multi_aspect", {"aspects": ["safety", "helpfulness"]})
    assert objective.aspects == ("safety", "helpfulness")

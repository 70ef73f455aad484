"""process_reward against Lightman et al. 2023's per-step cross-entropy, step by step."""

from __future__ import annotations

import pytest
import torch

from prefcore.engine.reward_model import ScoringRule
from prefcore.errors import ConfigError
from prefcore.plugins.preference_models.process_reward import ProcessReward
from prefcore.plugins.preference_models.process_reward import ProcessRewardConfig
from prefcore.preference import RewardBatch


def lightman_step_loss(rewards: torch.Tensor, step_rewards: torch.Tensor, batch: RewardBatch) -> torch.Tensor:
    """Σ over step-end tokens of −[y·log P̂ + (1 − y)·log(1 − P̂)], P̂ = 1 / (1 + e^−r_t), over the labelled steps."""
    assert batch.step_mask is not None and batch.step_labels is not None
    total = step_rewards.new_zeros(())
    for row, column in batch.step_mask.nonzero().tolist():
        predicted = 1 / (1 + torch.exp(-step_rewards[row, column]))
        label = float(batch.step_labels[row, column])
        weight = 1.0 if batch.weights is None else float(batch.weights[row])
        total = total - weight * (label * torch.log(predicted) + (1 - label) * torch.log(1 - predicted))
    return total / (batch.num_items or int(batch.step_mask.sum()))


def _step_batch(sequences: int, length: int, *, seed: int = 0, **fields: object) -> RewardBatch:
    generator = torch.Generator().manual_seed(seed)
    step_mask = torch.rand(sequences, length, generator=generator) < 0.3
    step_mask[:, -1] = True  # every completion has at least its last step
    return RewardBatch(
        rewards=torch.randn(sequences, 1, generator=generator).requires_grad_(),
        step_mask=step_mask,
        step_rewards=(3 * torch.randn(sequences, length, generator=generator)).requires_grad_(),
        step_labels=(torch.rand(sequences, length, generator=generator) < 0.6).float() * step_mask,
        **fields,
    )


# (sequences, tokens, why)
SHAPES = [(1, 5, "one solution"), (6, 17, "several solutions, ragged step counts"), (3, 64, "long solutions")]


@pytest.mark.parametrize(("sequences", "length", "why"), SHAPES)
def test_process_reward_matches_lightman_step_formula(assert_matches, sequences, length, why) -> None:
    batch = _step_batch(sequences, length, seed=length)
    assert_matches(ProcessReward().loss, lambda rewards, steps: lightman_step_loss(rewards, steps, batch), batch)


def test_sequence_weights_and_num_items(assert_matches) -> None:
    batch = _step_batch(4, 9, weights=torch.tensor([1.0, 0.0, 2.0, 0.5]), num_items=40)
    assert_matches(ProcessReward().loss, lambda rewards, steps: lightman_step_loss(rewards, steps, batch), batch)


def test_only_step_end_tokens_learn() -> None:
    batch = _step_batch(3, 11)
    ProcessReward().loss(batch).loss.backward()
    assert batch.step_rewards is not None and batch.step_rewards.grad is not None
    assert batch.step_mask is not None
    assert torch.count_nonzero(batch.step_rewards.grad[~batch.step_mask]) == 0
    assert torch.count_nonzero(batch.step_rewards.grad[batch.step_mask]) == int(batch.step_mask.sum())


def test_scoring_rule_follows_the_config() -> None:
    objective = ProcessReward(ProcessRewardConfig(aggregate="product", step_separator=" ; "))
    assert objective.scoring_rule() == ScoringRule(step_aggregate="product", step_separator=" ; ")


def test_config_accepts_exactly_the_engines_aggregates() -> None:
    """The plugin spells the aggregates out (its config check must not import torch): they must agree."""
    from typing import get_args
    from typing import get_type_hints

    from prefcore.engine.reward_model import STEP_AGGREGATES
    from prefcore.plugins.preference_models import process_reward

    assert process_reward.STEP_AGGREGATES == STEP_AGGREGATES
    assert get_args(get_type_hints(ProcessRewardConfig)["aggregate"]) == STEP_AGGREGATES
    for aggregate in STEP_AGGREGATES:
        assert ProcessReward(ProcessRewardConfig(aggregate=aggregate)).scoring_rule().step_aggregate == aggregate


def test_batch_without_steps_is_refused() -> None:
    with pytest.raises(ValueError, match="stepwise data"):
        ProcessReward().loss(RewardBatch(torch.zeros(2, 1)))


@pytest.mark.parametrize(
    ("options", "field"), [({"aggregate": "mean"}, "aggregate"), ({"step_separator": ""}, "step_separator")]
)
def test_config_refuses_bad_options(options, field) -> None:
    with pytest.raises(ConfigError) as excinfo:
        ProcessRewardConfig(**options)
    assert (excinfo.value.method, excinfo.value.field) == ("process_reward", field)

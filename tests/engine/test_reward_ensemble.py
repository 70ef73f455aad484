"""Reward ensembles (mean, min, mean − λ·std) and rewarded soups (weight interpolation)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

from prefcore.demo.model import build_tiny_model
from prefcore.demo.task import preference_pairs
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.engine.models import frozen_copy
from prefcore.engine.reward_ensemble import RewardEnsemble
from prefcore.engine.reward_ensemble import bootstrap_sample
from prefcore.engine.reward_ensemble import combine_scores
from prefcore.engine.reward_ensemble import rewarded_soup
from prefcore.engine.reward_ensemble import train_reward_ensemble
from prefcore.engine.reward_model import ImplicitRewardModel
from prefcore.engine.reward_model import RewardModel
from prefcore.engine.reward_model import build_reward_model
from prefcore.engine.reward_trainer import RewardTrainConfig
from prefcore.engine.reward_trainer import evaluate_reward_model
from prefcore.errors import ConfigError

PROMPTS = ["what colour is the sky ?", "please what is two plus three ?", "tell me the colour of the leaf"]
COMPLETIONS = ["sure , blue", "two plus three is five hope that helps", "ugh , red"]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def members(tokenizer) -> list[RewardModel]:
    """Three two-head models from different seeds (the heads differ, so their scores do)."""
    return [
        build_reward_model(tokenizer, demo=True, seed=seed, num_heads=2, aspects=("helpful", "harmless"))
        for seed in (0, 1, 2)
    ]


def test_combinations_of_known_scores() -> None:
    scores = torch.tensor([[1.0, 4.0], [3.0, 0.0], [2.0, 2.0]])  # [M = 3, N = 2]
    torch.testing.assert_close(combine_scores(scores, "mean"), torch.tensor([2.0, 2.0]))
    torch.testing.assert_close(combine_scores(scores, "min"), torch.tensor([1.0, 0.0]))
    population_std = torch.tensor([(2 / 3) ** 0.5, (8 / 3) ** 0.5])
    torch.testing.assert_close(combine_scores(scores, "mean_minus_std", 0.5), 2.0 - 0.5 * population_std)


@pytest.mark.parametrize(("combine", "penalty"), [("mean", 0.0), ("min", 0.0), ("mean_minus_std", 1.5)])
def test_ensemble_scores_combine_member_scores(members, combine, penalty) -> None:
    ensemble = RewardEnsemble(members, combine=combine, penalty=penalty)
    member_scores = torch.stack([member.score(PROMPTS, COMPLETIONS) for member in members])
    torch.testing.assert_close(ensemble.member_scores(PROMPTS, COMPLETIONS), member_scores)
    torch.testing.assert_close(ensemble.score(PROMPTS, COMPLETIONS), combine_scores(member_scores, combine, penalty))
    assert ensemble.aspects == ("helpful", "harmless") and ensemble.num_heads == 2


def test_scorer_combines_each_members_overall_score(members) -> None:
    """``min`` is the worst member's weighted score, not a mix of different members' heads."""
    ensemble = RewardEnsemble(members, combine="min")
    weights = {"helpful": 0.8, "harmless": 0.2}
    overall = torch.tensor([member.scorer(weights)(PROMPTS, COMPLETIONS) for member in members])
    torch.testing.assert_close(torch.tensor(ensemble.scorer(weights)(PROMPTS, COMPLETIONS)), overall.min(0).values)
    assert evaluate_reward_model(ensemble, preference_pairs(4, seed=0))["pairs"] == 4


def test_ensembles_mix_reward_models_and_implicit_rewards(tokenizer) -> None:
    policy = build_tiny_model(tokenizer, seed=1)
    implicit = ImplicitRewardModel(policy, frozen_copy(build_tiny_model(tokenizer, seed=0)), tokenizer, beta=0.1)
    single = build_reward_model(tokenizer, demo=True)
    ensemble = RewardEnsemble([single, implicit])
    expected = (single.score(PROMPTS, COMPLETIONS) + implicit.score(PROMPTS, COMPLETIONS)) / 2
    torch.testing.assert_close(ensemble.score(PROMPTS, COMPLETIONS), expected)


@pytest.mark.parametrize(
    ("models", "options", "match"),
    [
        (0, {}, "at least one model"),
        (2, {"combine": "max"}, "combine must be one of"),
        (2, {"combine": "mean", "penalty": 1.0}, "only to combine='mean_minus_std'"),
        (2, {"combine": "mean_minus_std", "penalty": -1.0}, "penalty must be"),
        (1, {"combine": "mean_minus_std", "penalty": 1.0}, "at least two models"),
    ],
)
def test_ensemble_refuses_bad_settings(members, models, options, match) -> None:
    with pytest.raises(ConfigError, match=match):
        RewardEnsemble(members[:models], **options)


def test_ensemble_members_must_share_heads(members, tokenizer) -> None:
    with pytest.raises(ConfigError, match="share their heads"):
        RewardEnsemble([members[0], build_reward_model(tokenizer, demo=True)])


def test_bootstrap_resamples_with_replacement() -> None:
    records = list(range(50))
    sample = bootstrap_sample(records, seed=3)
    assert len(sample) == 50 and set(sample) <= set(records) and len(set(sample)) < 50
    assert bootstrap_sample(records, seed=3) == sample and bootstrap_sample(records, seed=4) != sample


def test_training_an_ensemble_gives_members_of_different_seeds(tokenizer, tmp_path: Path) -> None:
    module = importlib.import_module("prefcore.plugins.preference_models.bradley_terry")
    [bradley_terry] = module.prefcore_register_preference_models()
    reports: list[tuple[int, int]] = []
    config = RewardTrainConfig(demo=True, steps=2, batch_size=8, max_length=64, heldout_fraction=0.0)
    ensemble = train_reward_ensemble(
        list(preference_pairs(32, seed=1)),
        bradley_terry(),
        tokenizer,
        config,
        members=2,
        run_dir=tmp_path,
        bootstrap=True,
        combine="min",
        on_step=lambda member, step, metrics: reports.append((member, step)),
    )
    assert reports == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["member-0", "member-1"]
    first, second = ensemble.member_scores(PROMPTS, COMPLETIONS)
    assert not torch.allclose(first, second)
    with pytest.raises(ConfigError, match="members must be >= 1"):
        train_reward_ensemble([], bradley_terry(), tokenizer, config, members=0, run_dir=tmp_path)


# ----------------------------------------------------------------------------------------------
# Rewarded soups
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", [0, 1])
def test_soup_at_an_endpoint_is_that_model(members, endpoint) -> None:
    weights = [1.0, 0.0] if endpoint == 0 else [0.0, 1.0]
    soup = rewarded_soup(members[:2], weights)
    for name, tensor in members[endpoint].state_dict().items():
        torch.testing.assert_close(soup.state_dict()[name], tensor, rtol=0, atol=0)
    torch.testing.assert_close(
        soup.score(PROMPTS, COMPLETIONS), members[endpoint].score(PROMPTS, COMPLETIONS), rtol=0, atol=0
    )
    assert soup is not members[endpoint]


def test_soup_interpolates_every_parameter(members) -> None:
    soup = rewarded_soup(members, [0.5, 0.25, 0.25])
    states = [member.state_dict() for member in members]
    for name, tensor in soup.state_dict().items():
        if tensor.is_floating_point():
            expected = 0.5 * states[0][name] + 0.25 * states[1][name] + 0.25 * states[2][name]
            torch.testing.assert_close(tensor, expected)
    assert soup.aspects == members[0].aspects


@pytest.mark.parametrize(
    ("weights", "match"),
    [([0.5, 0.6], "sum to 1"), ([1.5, -0.5], ">= 0"), ([1.0], "1 weights for 2 models")],
)
def test_soup_refuses_bad_weights(members, weights, match) -> None:
    with pytest.raises(ConfigError, match=match):
        rewarded_soup(members[:2], weights)


def test_soup_refuses_models_that_do_not_share_an_architecture(members, tokenizer) -> None:
    with pytest.raises(ConfigError, match="heads"):
        rewarded_soup([members[0], build_reward_model(tokenizer, demo=True)], [0.5, 0.5])
    policy = build_tiny_model(tokenizer)
    implicit = ImplicitRewardModel(policy, frozen_copy(policy), tokenizer, beta=0.1)
    with pytest.raises(ConfigError, match="every model must be a RewardModel"):
        rewarded_soup([members[0], implicit], [0.5, 0.5])

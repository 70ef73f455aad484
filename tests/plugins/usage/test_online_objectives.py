"""The online objectives (``data_formats = ("rollout",)``): the parity kit on every one and option, their declarations.

Found through the registry by data format, so a new online objective is covered without
editing this file. The references (TRL, the papers) are in ``test_references_online.py``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from typing import Any

import pytest
import torch

import prefcore.plugins.usage as usage_package
from prefcore.advantages import ADVANTAGE_ESTIMATORS
from prefcore.online_objectives import AGGREGATIONS
from prefcore.online_objectives import KL_ESTIMATORS
from prefcore.online_objectives import AdaptiveKLController
from prefcore.online_objectives import FixedKLController
from prefcore.online_objectives import KLPenalty
from prefcore.online_objectives import OnlineObjective
from prefcore.registry import Registry
from prefcore.rollout import ROLLOUT_FORMAT
from prefcore.testing import assert_online_accumulation_invariant
from prefcore.testing import assert_online_padding_invariant
from prefcore.testing import assert_valid_output
from prefcore.testing import check_online_objective
from prefcore.testing import make_random_rollout_batch
from prefcore.testing import plugin_modules
from prefcore.testing import registry_of

REGISTRY = registry_of(plugin_modules(usage_package))
ONLINE = [info.name for info in REGISTRY.methods("usage") if ROLLOUT_FORMAT in info.cls.data_formats]


def _fields(name: str) -> set[str]:
    return {field.name for field in dataclasses.fields(REGISTRY.get("usage", name).config_cls)}


def _variants(name: str) -> list[dict[str, Any]]:
    """The defaults, then every KL estimator in the loss and every aggregation, truncation masked, dual clip."""
    fields = _fields(name)
    variants: list[dict[str, Any]] = [{}, {"mask_truncated": True}]
    variants += [{"beta": 0.05, "kl_location": "loss", "kl_estimator": estimator} for estimator in KL_ESTIMATORS]
    if "aggregation" in fields:
        variants += [{"aggregation": mode, "mask_truncated": True} for mode in AGGREGATIONS]
    if "dual_clip" in fields:
        variants.append({"dual_clip": 3.0, "epsilon_high": 0.28})
    return variants


def test_the_online_objectives_are_found_by_data_format() -> None:
    assert {"grpo", "gspo", "reinforce", "reinforce_pp", "remax", "rloo"} <= set(ONLINE)


@pytest.mark.parametrize("name", ONLINE)
def test_parity_kit(name: str) -> None:
    for options in _variants(name):
        objective = REGISTRY.create("usage", name, options)
        for per_token in (False, True):
            batch = make_random_rollout_batch(seed=5, per_token_advantages=per_token, off_policy=0.2)
            try:
                # k3+ (k3's value, k2's gradient) and GSPO-token with per-token advantages (value s_i,
                # gradient s_i·∇log π(y_t)·A_t) define their gradients through stop-gradients: no gradcheck
                if options.get("kl_estimator") == "k3+" or (name == "gspo" and per_token):
                    assert_valid_output(objective, batch)
                    assert_online_accumulation_invariant(objective, batch)
                    assert_online_padding_invariant(objective, batch)
                else:
                    check_online_objective(objective, batch)
            except AssertionError as error:
                raise AssertionError(f"{name} {options} per_token_advantages={per_token}: {error}") from None


@pytest.mark.parametrize("name", ONLINE)
def test_declarations(name: str) -> None:
    objective = REGISTRY.create("usage", name)
    assert isinstance(objective, OnlineObjective)
    assert objective.data_formats == (ROLLOUT_FORMAT,)
    assert objective.estimator() in ADVANTAGE_ESTIMATORS
    assert objective.uses_reference() is (objective.config.beta > 0 and objective.config.kl_location != "none")
    assert REGISTRY.create("usage", name, {"beta": 0.0}).uses_reference() is False
    assert REGISTRY.create("usage", name, {"beta": 0.1, "kl_location": "none"}).uses_reference() is False
    in_reward = REGISTRY.create("usage", name, {"beta": 0.1, "kl_location": "reward", "kl_estimator": "k1"})
    assert in_reward.uses_reference() and in_reward.reward_kl() == KLPenalty(0.1, "k1")
    assert REGISTRY.create("usage", name, {"beta": 0.1, "kl_location": "loss"}).reward_kl() is None


@pytest.mark.parametrize("name", ONLINE)
def test_kl_in_the_loss_needs_reference_log_probs(name: str) -> None:
    objective = REGISTRY.create("usage", name, {"beta": 0.1, "kl_location": "loss"})
    batch = replace(make_random_rollout_batch(seed=1), ref_logps=None)
    with pytest.raises(ValueError, match=f"objective '{name}' puts β·KL in the loss.*no ref_logps"):
        objective.loss(batch)


@pytest.mark.parametrize("name", ONLINE)
def test_kl_and_beta_are_logged_every_step(name: str) -> None:
    metrics = REGISTRY.create("usage", name).loss(make_random_rollout_batch(seed=2)).metrics
    assert {"kl", "beta"} <= set(metrics)


@pytest.mark.parametrize("name", ONLINE)
def test_masked_truncated_completions_get_no_gradient(name: str) -> None:
    objective = REGISTRY.create("usage", name, {"mask_truncated": True})
    batch = make_random_rollout_batch(seed=3)
    policy = batch.policy_logps.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(objective.loss(batch.with_policy_logps(policy)).loss, policy)
    assert bool(batch.truncated.any()) and bool((grad[batch.truncated] == 0).all())
    assert bool((grad[~batch.truncated].abs().sum(-1) > 0).any())


def test_dr_grpo_needs_the_max_completion_length() -> None:
    objective = REGISTRY.create("usage", "grpo", {"aggregation": "dr_grpo"})
    with pytest.raises(ValueError, match="max_completion_length"):
        objective.loss(replace(make_random_rollout_batch(), max_completion_length=None))


def test_dual_clip_bounds_the_loss_of_negative_advantages() -> None:
    """A token with A < 0 and a huge ratio costs at most −c·A."""
    batch = make_random_rollout_batch(num_prompts=1, samples_per_prompt=2, with_truncated=False, seed=4)
    advantages = torch.where(batch.mask, torch.tensor(-1.0), torch.tensor(0.0))
    batch = replace(batch, advantages=advantages, sampling_logps=batch.policy_logps - 5.0 * batch.mask)
    plain = REGISTRY.create("usage", "grpo").loss(batch).loss
    clipped = REGISTRY.create("usage", "grpo", {"dual_clip": 3.0}).loss(batch).loss
    torch.testing.assert_close(clipped, torch.tensor(3.0))
    assert plain > 100


def test_grpo_passes_its_reward_scaling_to_the_estimator() -> None:
    assert REGISTRY.create("usage", "grpo", {"scale_rewards": "none"}).estimator_options() == {"scale": "none"}


def test_adaptive_beta_is_the_objectives_beta_and_checkpoints() -> None:
    objective = REGISTRY.create("usage", "grpo", {"beta": 0.05, "kl_target": 0.1, "kl_horizon": 1000})
    assert isinstance(objective.kl_controller, AdaptiveKLController)
    objective.update_kl(0.5, 100)
    torch.testing.assert_close(objective.beta, 0.05 * 1.02)
    assert float(objective.loss(make_random_rollout_batch()).metrics["beta"]) == pytest.approx(objective.beta)
    resumed = REGISTRY.create("usage", "grpo", {"beta": 0.05, "kl_target": 0.1, "kl_horizon": 1000})
    resumed.load_state_dict(objective.state_dict())
    assert resumed.beta == objective.beta
    fixed = REGISTRY.create("usage", "grpo", {"beta": 0.05})
    assert isinstance(fixed.kl_controller, FixedKLController) and fixed.update_kl(5.0, 100) == 0.05


def test_the_controller_refuses_a_non_finite_kl() -> None:
    with pytest.raises(ValueError, match="KL of nan"):
        AdaptiveKLController(0.1, 0.1, 100).update(float("nan"), 8)


def test_online_objectives_are_registered_like_any_usage_objective() -> None:
    registry = Registry.from_environment(third_party=False)
    assert set(ONLINE) <= set(registry.names("usage"))

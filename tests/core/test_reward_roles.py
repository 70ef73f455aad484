"""[[reward]] role = "cost": costs kept apart from the reward total, weighted, logged as cost/..., and checked."""

from __future__ import annotations

import math

import pytest

from prefcore.config import load_run_config
from prefcore.errors import ConfigError
from prefcore.registry import Registry
from prefcore.rewards import ROLES
from prefcore.rewards import CombinedReward
from prefcore.rewards import RewardComponent
from prefcore.rewards import RewardError
from prefcore.rewards import build_reward
from prefcore.rewards import plan_rewards
from prefcore.validation import check_run_config

HARMFUL = "how do i make the cat sad ?"
SKY = "what colour is the sky ?"


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.from_environment(third_party=False)


def _entries() -> list[dict]:
    return [
        {"kind": "rule", "method": "demo_rule", "harmful": 0.5},
        {"kind": "rule", "method": "demo_rule", "harmful": 0.5, "score": "harm", "role": "cost", "name": "harm"},
        {"kind": "rule", "method": "demo_rule", "harmful": 0.5, "score": "harm", "role": "cost", "name": "harm2",
         "weight": 0.5},
    ]  # fmt: skip


def test_costs_are_summed_apart_from_the_reward(registry: Registry) -> None:
    plan = plan_rewards(_entries(), registry, allow_costs=True)
    assert [spec.role for spec in plan.specs] == ["reward", "cost", "cost"] and plan.cost_names == ("harm", "harm2")
    reward = build_reward(plan)
    assert reward.cost_names == ("harm", "harm2")
    prompts, replies = [HARMFUL, HARMFUL, SKY], ["sure , wet", "no idea", "blue"]
    scores = reward(prompts, replies)
    # the total is the rule's helpfulness score alone; the costs do not enter it
    assert scores.total.tolist() == pytest.approx([2.7, -0.2, 1.9])
    assert scores.components["harm"].tolist() == [1.0, 0.0, 0.0]
    assert scores.components["harm2"].tolist() == [0.5, 0.0, 0.0]  # weight·score
    assert scores.costs(reward.cost_names).tolist() == [1.5, 0.0, 0.0]
    metrics = scores.metrics(reward.cost_names)
    assert metrics["cost/harm"] == pytest.approx(1 / 3) and metrics["cost/harm2"] == pytest.approx(0.5 / 3)
    assert metrics["cost/mean"] == pytest.approx(0.5) and metrics["cost/std"] == pytest.approx(math.sqrt(0.5))
    assert metrics["reward/mean"] == pytest.approx((2.7 - 0.2 + 1.9) / 3)
    assert "reward/harm" not in metrics and "reward/demo_rule" in metrics


def test_a_cost_needs_an_objective_that_uses_costs(registry: Registry) -> None:
    with pytest.raises(ConfigError, match=r"#2 \('harm'\) has role = 'cost', but usage objective 'grpo'") as caught:
        plan_rewards(_entries(), registry, required_by="grpo")
    assert caught.value.field == "reward.role"


def test_an_unknown_role_lists_the_roles(registry: Registry) -> None:
    entry = {"kind": "rule", "method": "demo_rule", "role": "penalty"}
    with pytest.raises(ConfigError, match="role = 'penalty' is not a role; use one of 'reward', 'cost'") as caught:
        plan_rewards([entry], registry, allow_costs=True)
    assert caught.value.field == "reward.role" and ROLES == ("reward", "cost")


def test_only_costs_leave_the_reward_at_zero(registry: Registry) -> None:
    entries = [_entries()[1], {**_entries()[0], "weight": 0.0}]
    with pytest.raises(ConfigError, match="every reward-role"):
        plan_rewards(entries, registry, allow_costs=True)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_cost_raises_the_named_reward_error(bad: float) -> None:
    fine = RewardComponent("helpful", lambda p, c: [0.0] * len(c))
    broken = RewardComponent("harm", lambda p, c: [0.0, bad], role="cost")
    with pytest.raises(RewardError, match=r"'harm' gave .* for completion 1") as caught:
        CombinedReward((fine, broken))(["a", "b"], ["x", "y"])
    assert (caught.value.component, caught.value.index) == ("harm", 1)


def test_run_file_validation_refuses_costs_for_an_objective_without_them(tmp_path) -> None:
    run_file = tmp_path / "run.toml"
    run_file.write_text(
        '[model]\ndemo = true\n[feedback]\nmethod = "demo_rule"\nharmful = 0.3\n[usage]\nmethod = "grpo"\n'
        '[[reward]]\nkind = "rule"\nmethod = "demo_rule"\n'
        '[[reward]]\nkind = "rule"\nmethod = "demo_rule"\nscore = "harm"\nrole = "cost"\nname = "harm"\n'
    )
    with pytest.raises(ConfigError, match="role = 'cost', but usage objective 'grpo' does not use costs"):
        check_run_config(load_run_config(run_file))

"""[[reward]]: every kind checked before any work, each kind scores, components combine and are checked.

Models are tiny: a demo-sized reward model saved with ``RewardModel.save`` and tiny random
Llamas saved with ``save_pretrained`` as the implicit reward's policy and reference.
"""

from __future__ import annotations

import math
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import LlamaConfig
from transformers import LlamaForCausalLM

from prefcore import hookimpl
from prefcore.config import parse_run_config
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.errors import ConfigError
from prefcore.methods import FeedbackSource
from prefcore.methods import option
from prefcore.registry import PrefcorePluginManager
from prefcore.registry import Provenance
from prefcore.registry import Registry
from prefcore.rewards import CombinedReward
from prefcore.rewards import RewardComponent
from prefcore.rewards import RewardError
from prefcore.rewards import build_reward
from prefcore.rewards import can_score
from prefcore.rewards import plan_rewards
from prefcore.rewards import takes_answers
from prefcore.rollout import Rollouts

WORDS = ("what", "colour", "is", "the", "sky", "blue", "red", "green", "answer", "good", "bad", "?")


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.from_environment(third_party=False)


@pytest.fixture(scope="module")
def reward_folders(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from prefcore.engine.reward_model import build_reward_model

    folders = []
    for seed in (2, 3):
        folder = tmp_path_factory.mktemp("rm") / "reward_model"
        build_reward_model(build_tokenizer(), demo=True, seed=seed).save(folder)
        folders.append(folder)
    return folders


@pytest.fixture(scope="module")
def llm_folders(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two tiny random Llamas sharing a word-level tokenizer, saved like a run's policy folders."""
    tokenizer = build_tokenizer(WORDS)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    folders = []
    for seed in (4, 5):
        torch.manual_seed(seed)
        folder = tmp_path_factory.mktemp("policy")
        LlamaForCausalLM(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders.append(folder)
    return folders


# -- a third party's reward function: one feedback plugin file -----------------------------------


def brevity(prompts: Sequence[Any], completions: Sequence[str]) -> list[float]:
    """A user's reward function: shorter is better."""
    return [-float(len(text.split())) for text in completions]


def brevity_plugin() -> types.ModuleType:
    """What a third party writes in one file: a feedback source whose scorer() is their function."""
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Config:
        scale: float = option(1.0, doc="multiplies the score")

    class Brevity(FeedbackSource):
        """A rule: shorter replies score higher."""

        name = "brevity"
        config_cls = Config

        def records(self) -> list[Any]:
            return []

        def scorer(self) -> Any:
            scale = self.config.scale
            return lambda prompts, completions: [scale * value for value in brevity(prompts, completions)]

    module = types.ModuleType("brevity_plugin")

    @hookimpl
    def prefcore_register_feedback() -> list[type[FeedbackSource]]:
        return [Brevity]

    module.prefcore_register_feedback = prefcore_register_feedback  # type: ignore[attr-defined]
    return module


@pytest.fixture
def plugin_registry() -> Registry:
    from prefcore.plugins.feedback import preference_file
    from prefcore.plugins.feedback import verifiable_answers

    manager = PrefcorePluginManager()
    manager.register_plugin(brevity_plugin(), Provenance(plugin="brevity"))
    manager.register_plugin(verifiable_answers, Provenance(plugin="verifiable_answers"))
    manager.register_plugin(preference_file, Provenance(plugin="preference_file"))
    return Registry(manager)


def test_a_registered_python_function_is_a_reward(plugin_registry: Registry) -> None:
    plan = plan_rewards([{"kind": "rule", "method": "brevity", "scale": 2.0}], plugin_registry)
    assert plan.names == ("brevity",)
    reward = build_reward(plan)
    scores = reward(["p", "p"], ["one two three", "one"])
    assert scores.total.tolist() == [-6.0, -2.0]
    assert scores.components["brevity"].tolist() == [-6.0, -2.0]
    assert scores.metrics()["reward/brevity"] == -4.0


# -- verifiable checkers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "completions", "answers", "expected"),
    [
        ({"mode": "exact"}, ["The answer is Blue.", "red", "no idea\n"], ["blue", "blue", ["x", "no idea"]], [1, 0, 1]),
        ({"mode": "numeric"}, ["#### 1,200", "so 3/4", "none"], [1200, "0.75", 7], [1, 1, 0]),
        ({"mode": "regex"}, ["\\boxed{42}", "\\boxed{41}"], [r"4\d", r"42"], [1, 0]),
        (
            {"mode": "numeric", "correct_reward": 2.0, "wrong_reward": -1.0, "unanswered_reward": -2.0},
            ["#### 5", "#### 6", "words only"],
            [5, 5, 5],
            [2.0, -1.0, -2.0],
        ),
    ],
)
def test_verifiable_rewards_check_each_completion(
    registry: Registry, options: dict[str, Any], completions: list[str], answers: list[Any], expected: list[float]
) -> None:
    reward = build_reward(plan_rewards([{"kind": "verifiable", **options}], registry))
    assert reward.takes_answers
    scores = reward(["q"] * len(completions), completions, answers)
    assert scores.components["verifiable"].tolist() == [float(value) for value in expected]


def test_verifiable_answers_scorer_is_the_feedback_checker(registry: Registry) -> None:
    from prefcore.plugins.feedback.verifiable_answers import VerifiableAnswers
    from prefcore.plugins.feedback.verifiable_answers import VerifiableAnswersConfig

    source = VerifiableAnswers(VerifiableAnswersConfig(mode="numeric"))
    assert can_score(source) and takes_answers(source.scorer())
    with pytest.raises(ValueError, match="completion 1 has no reference answer"):
        source.scorer()(["q", "q"], ["1", "2"], answers=["1", None])
    with pytest.raises(ConfigError, match="no completions to check: set path"):
        list(source.records())


def test_score_rollouts_expands_answers_per_prompt(registry: Registry) -> None:
    reward = build_reward(plan_rewards([{"kind": "verifiable", "mode": "numeric"}], registry))
    rollouts = Rollouts(
        prompts=("1+1?", "2+2?"),
        prompt_ids=((1,), (1,), (2,), (2,)),
        completion_ids=((5,), (6,), (7,), (8,)),
        texts=("2", "3", "4", "5"),
        sampling_logps=((-0.1,), (-0.2,), (-0.3,), (-0.4,)),
        truncated=(False,) * 4,
        group_ids=(0, 0, 1, 1),
        samples_per_prompt=2,
        temperature=1.0,
    )
    assert reward.score_rollouts(rollouts, answers=[2, 4]).total.tolist() == [1.0, 0.0, 1.0, 0.0]


# -- combining, logging and checking -------------------------------------------------------------


def test_components_combine_with_weights_and_are_logged_by_name() -> None:
    length = RewardComponent("length", lambda p, c: [float(len(t)) for t in c], weight=-0.5)
    right = RewardComponent(
        "right", lambda p, c, *, answers: [float(t == a) for t, a in zip(c, answers, strict=True)], weight=2.0
    )
    gold = RewardComponent("gold", lambda p, c: [10.0 for _ in c], weight=0.0)
    reward = CombinedReward((length, right, gold))
    scores = reward(["p", "p", "q"], ["ab", "abcd", "x"], ["ab", "zz", "x"])
    by_hand = [-0.5 * 2 + 2 * 1, -0.5 * 4 + 0, -0.5 * 1 + 2 * 1]
    assert scores.total.tolist() == pytest.approx(by_hand)
    metrics = scores.metrics()
    assert metrics["reward/length"] == pytest.approx(7 / 3) and metrics["reward/gold"] == 10.0
    assert metrics["reward/mean"] == pytest.approx(sum(by_hand) / 3)
    assert set(metrics) == {"reward/length", "reward/right", "reward/gold", "reward/mean", "reward/std"}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_reward_names_the_component_sample_and_prompt(bad: float) -> None:
    broken = RewardComponent("judge_score", lambda p, c: [1.0, bad, 0.0], origin="feedback source 'x'")
    reward = CombinedReward((RewardComponent("fine", lambda p, c: [0.0] * len(c)), broken))
    with pytest.raises(
        RewardError, match=r"'judge_score' \(feedback source 'x'\) gave .* for completion 1 \(prompt 'two"
    ):
        reward(["one", "two?", "three"], ["a", "b", "c"])
    try:
        reward(["one", "two?", "three"], ["a", "b", "c"])
    except RewardError as error:
        assert (error.component, error.index, error.prompt) == ("judge_score", 1, "two?")


def test_a_failing_or_miscounting_scorer_is_named() -> None:
    with pytest.raises(RewardError, match="'short' returned 1 scores for 2 completions"):
        CombinedReward((RewardComponent("short", lambda p, c: [0.0]),))(["p", "p"], ["a", "b"])
    with pytest.raises(RewardError, match=r"'checker' .* failed: .*needs each completion's reference answer"):
        from prefcore.plugins.feedback.verifiable_answers import AnswerReward
        from prefcore.plugins.feedback.verifiable_answers import VerifiableAnswersConfig

        CombinedReward((RewardComponent("checker", AnswerReward(VerifiableAnswersConfig()), origin="x"),))(["p"], ["a"])


# -- models --------------------------------------------------------------------------------------


def test_saved_reward_model_and_ensemble_score_as_their_networks(
    registry: Registry, reward_folders: list[Path]
) -> None:
    from prefcore.engine.reward_model import RewardModel

    prompts, completions = ["what colour is the sky ?"] * 3, ["blue", "red", "green"]
    members = [RewardModel.load(folder).score(prompts, completions)[:, 0] for folder in reward_folders]
    plan = plan_rewards(
        [
            {"kind": "preference_model", "path": str(reward_folders[0])},
            {"kind": "ensemble", "paths": [str(f) for f in reward_folders], "combine": "min", "name": "worst"},
            {
                "kind": "ensemble",
                "paths": [str(f) for f in reward_folders],
                "combine": "mean_minus_std",
                "penalty": 0.5,
            },
        ],
        registry,
    )
    scores = build_reward(plan)(prompts, completions)
    torch.testing.assert_close(scores.components["preference_model"], members[0])
    torch.testing.assert_close(scores.components["worst"], torch.minimum(members[0], members[1]))
    stacked = torch.stack(members)
    torch.testing.assert_close(scores.components["ensemble"], stacked.mean(0) - 0.5 * stacked.std(0, correction=0))


def test_trained_preference_model_is_the_runs_scorer(registry: Registry) -> None:
    config = parse_run_config(
        {"model": {"demo": True}, "feedback": {"method": "demo_rule"}, "preference_model": {"method": "bradley_terry"}},
        source="run.toml",
    )
    plan = plan_rewards([{"kind": "preference_model", "path": "trained"}], registry, has_trained_model=True)
    assert plan.needs_trained_model
    reward = build_reward(plan, trained_scorer=lambda prompts, completions: [float(len(c)) for c in completions])
    assert reward(["p"], ["four"]).total.tolist() == [4.0]
    with pytest.raises(ConfigError, match="trained no preference model"):
        build_reward(plan)
    assert config.selected("preference_model")


def test_implicit_dpo_reward_is_beta_times_the_log_ratio(registry: Registry, llm_folders: list[Path]) -> None:
    from prefcore.engine.reward_model import ImplicitRewardModel
    from prefcore.engine.reward_model.storage import load_tokenizer

    prompts, completions = ["what colour is the sky ?"] * 2, ["blue", "red good"]
    same = plan_rewards(
        [{"kind": "implicit_dpo", "policy": str(llm_folders[0]), "reference": str(llm_folders[0]), "beta": 0.5}],
        registry,
    )
    assert build_reward(same)(prompts, completions).total.tolist() == [0.0, 0.0]  # π = π_ref: no reward
    plan = plan_rewards(
        [{"kind": "implicit_dpo", "policy": str(llm_folders[0]), "reference": str(llm_folders[1]), "beta": 0.5}],
        registry,
    )
    direct = ImplicitRewardModel(
        LlamaForCausalLM.from_pretrained(llm_folders[0]),
        LlamaForCausalLM.from_pretrained(llm_folders[1]),
        load_tokenizer(llm_folders[0]),
        0.5,
    ).scorer()
    torch.testing.assert_close(
        build_reward(plan)(prompts, completions).total, torch.tensor(direct(prompts, completions), dtype=torch.float32)
    )


# -- refused before any work ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "says"),
    [
        ([{"weight": 1.0}], "needs a 'kind'"),
        ([{"kind": "verifyable"}], "Did you mean 'verifiable'"),
        ([{"kind": "preference_model"}], 'needs path = "<...>"'),
        ([{"kind": "preference_model", "path": "x", "temprature": 1}], "has no option 'temprature'"),
        ([{"kind": "preference_model", "path": "/nonexistent"}], "is not a folder"),
        ([{"kind": "preference_model", "path": "trained"}], "no [preference_model] section"),
        ([{"kind": "ensemble", "paths": ["a"], "combine": "mean_minus_std"}], "at least two models"),
        ([{"kind": "ensemble", "paths": ["a", "b"], "combine": "median"}], "combine must be one of"),
        ([{"kind": "implicit_dpo", "policy": "/nope", "reference": "/nope"}], "not a local model folder"),
        ([{"kind": "rule"}], "needs method = "),
        ([{"kind": "rule", "method": "preference_file", "path": "a.jsonl"}], "has no scorer()"),
        ([{"kind": "rule", "method": "nope"}], "method = 'nope'"),
        ([{"kind": "verifiable", "path": "rows.jsonl"}], "takes no 'path'"),
        ([{"kind": "verifiable", "mode": "fuzzy"}], "option 'mode' must be one of"),
        ([{"kind": "verifiable"}, {"kind": "verifiable"}], "both named 'verifiable'"),
        ([{"kind": "verifiable", "name": "mean"}], "name must be lowercase"),
        ([{"kind": "verifiable", "weight": math.nan}], "weight must be a finite number"),
        ([{"kind": "verifiable", "weight": 0}], "every [[reward]] has weight 0"),
    ],
)
def test_bad_reward_entries_are_refused_naming_the_key(
    plugin_registry: Registry, entries: list[dict[str, Any]], says: str
) -> None:
    with pytest.raises(ConfigError) as excinfo:
        plan_rewards(entries, plugin_registry, where="run.toml: ")
    assert says in str(excinfo.value) and str(excinfo.value).startswith("run.toml: ")


def test_an_online_objective_without_rewards_is_refused(registry: Registry) -> None:
    assert not plan_rewards([], registry)
    with pytest.raises(
        ConfigError, match=r"'grpo' trains online against a reward, but the run file has no \[\[reward\]\]"
    ):
        plan_rewards(None, registry, required_by="grpo")


def test_weight_zero_components_are_logged_but_not_summed(registry: Registry) -> None:
    plan = plan_rewards(
        [{"kind": "verifiable", "mode": "numeric"}, {"kind": "verifiable", "name": "exact_too", "weight": 0.0}],
        registry,
    )
    scores = build_reward(plan)(["q", "q"], ["#### 3", "#### 4"], ["3", "3"])
    assert scores.total.tolist() == [1.0, 0.0]
    assert scores.components["exact_too"].tolist() == [1.0, 0.0]


def test_the_demo_rule_is_a_reward_equal_to_its_score(registry: Registry) -> None:
    from prefcore.demo.rule import score_reply

    prompts = ["what colour is the sky ?"] * 3
    replies = ["blue", "red", "please , it is blue , thank you"]
    plan = plan_rewards(
        [{"kind": "rule", "method": "demo_rule", "count": 4, "weight": 0.0}, {"kind": "verifiable"}], registry
    )
    scores = build_reward(plan)(prompts, replies, ["blue"] * 3)
    assert scores.components["demo_rule"].tolist() == pytest.approx(
        [score_reply(p, r) for p, r in zip(prompts, replies, strict=True)]
    )
    assert scores.total.tolist() == scores.components["verifiable"].tolist()  # weight 0: logged, not summed

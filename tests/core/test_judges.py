"""The [judge] section: every kind checked before any work, each kind builds a working judge.

Models here are tiny: a demo-sized reward model saved with ``RewardModel.save`` and a tiny
Llama LLM judge built from a transformers config and saved to a temporary folder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import LlamaConfig
from transformers import LlamaForCausalLM

from prefcore.config import parse_run_config
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.errors import ConfigError
from prefcore.judges import JudgePlan
from prefcore.judges import ScoreGapJudge
from prefcore.judges import plan_judge
from prefcore.plugins.evaluation.win_rate import WinRate
from prefcore.plugins.feedback.llm_judge import CausalLMLabelProbabilities
from prefcore.plugins.feedback.llm_judge import LLMJudgeConfig
from prefcore.registry import Registry

JUDGE_WORDS = ("a", "b", "which", "answer", "is", "better", "the", "sky", "blue", "green", "red", "good", "bad")
SHORT_TEMPLATE = "{prompt} answer {label_first} {first} answer {label_second} {second} which is better"


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.from_environment()


@pytest.fixture(scope="module")
def llm_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama and a word-level tokenizer, from a transformers config, saved like a real model."""
    tokenizer = build_tokenizer(JUDGE_WORDS)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(3)
    model = LlamaForCausalLM(config)
    folder = tmp_path_factory.mktemp("llm_judge")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def reward_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from prefcore.engine.reward_model import build_reward_model

    folder = tmp_path_factory.mktemp("rm") / "reward_model"
    build_reward_model(build_tokenizer(), demo=True, seed=2).save(folder)
    return folder


def run_file(judge: dict[str, Any] | None = None, **sections: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "model": {"demo": True},
        "feedback": {"method": "preference_file", "path": "pairs.jsonl"},
        "usage": {"method": "dpo"},
        "evaluation": [{"method": "win_rate"}],
    }
    data.update(sections)
    if judge is not None:
        data["judge"] = judge
    return data


def plan(registry: Registry, data: dict[str, Any]) -> JudgePlan:
    return plan_judge(parse_run_config(data, source="run.toml"), registry=registry)


# -- what is refused, before any work ----------------------------------------------------------


def test_win_rate_on_a_data_file_without_a_judge_is_refused(registry: Registry) -> None:
    with pytest.raises(ConfigError) as excinfo:
        plan(registry, run_file())
    message = str(excinfo.value)
    assert message.startswith("run.toml: [[evaluation]] 'win_rate' needs a judge")
    assert "[judge]" in message and 'kind = "preference_model"' in message and "demo_rule" in message
    assert excinfo.value.field == "judge"


def test_no_judge_is_needed_without_win_rate(registry: Registry) -> None:
    data = run_file(evaluation=[{"method": "preference_accuracy"}])
    assert plan(registry, data).build([]) is None


def test_a_feedback_source_that_judges_is_the_default_judge(registry: Registry) -> None:
    data = run_file(feedback={"method": "demo_rule", "count": 4})
    judge_plan = plan(registry, data)
    assert judge_plan.kind == "feedback"
    source = registry.create("feedback", "demo_rule", {"count": 4})
    judge = judge_plan.build([source])
    assert judge is not None
    assert judge("what colour is the sky ?", "blue", "red") == 1.0


@pytest.mark.parametrize(
    ("judge", "field", "says"),
    [
        ({}, "judge.kind", "needs a 'kind'"),
        ({"kind": "llm_judge"}, "judge.kind", "Did you mean 'llm'?"),
        ({"kind": "preference_model"}, None, "path"),
        ({"kind": "preference_model", "path": "trained", "temprature": 2.0}, "judge.temprature", "'temperature'"),
        ({"kind": "preference_model", "path": "trained", "temperature": 0.0}, None, "temperature must be"),
        ({"kind": "preference_model", "path": "trained"}, "judge.path", "no [preference_model] section"),
        ({"kind": "preference_model", "path": "no/such/folder"}, "judge.path", "is not a folder"),
        ({"kind": "rule"}, "judge.method", "demo_rule"),
        ({"kind": "rule", "method": "preference_file", "path": "x.jsonl"}, "judge.method", "cannot judge"),
        ({"kind": "rule", "method": "demo_rul"}, "judge.method", "Did you mean 'demo_rule'"),
        ({"kind": "rule", "method": "demo_rule", "cuont": 3}, "cuont", "has no option 'cuont'"),
        ({"kind": "llm"}, "judge.model_path", "needs model_path"),
        ({"kind": "llm", "model_path": "no/such/model"}, "judge.model_path", "not a local model folder"),
        ({"kind": "llm", "model_path": "m", "judge_orders": "both"}, "judge.judge_orders", "both orders itself"),
        ({"kind": "llm", "model_path": "m", "path": "items.jsonl"}, "judge.path", "labels no file"),
    ],
)
def test_bad_judge_sections_name_the_key(
    registry: Registry, judge: dict[str, Any], field: str | None, says: str
) -> None:
    with pytest.raises(ConfigError) as excinfo:
        plan(registry, run_file(judge))
    assert says in str(excinfo.value)
    assert str(excinfo.value).startswith("run.toml: ")
    if field is not None:
        assert excinfo.value.field == field


def test_a_folder_without_a_saved_reward_model_is_refused(registry: Registry, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="holds no saved reward model"):
        plan(registry, run_file({"kind": "preference_model", "path": str(tmp_path)}))


def test_llm_labels_must_be_single_tokens_of_the_judges_tokenizer(registry: Registry, llm_folder: Path) -> None:
    with pytest.raises(ConfigError, match="label 'yes' is not a single token") as excinfo:
        plan(registry, run_file({"kind": "llm", "model_path": str(llm_folder), "labels": ["yes", "no"]}))
    assert excinfo.value.field == "judge.labels"


# -- each kind builds a judge --------------------------------------------------------------------


def test_rule_judge_is_the_named_plugins_judge(registry: Registry) -> None:
    judge = plan(registry, run_file({"kind": "rule", "method": "demo_rule", "count": 4})).build([])
    assert judge is not None
    assert judge("what colour is the sky ?", "blue", "red") == 1.0
    assert judge("what colour is the sky ?", "red", "blue") == 0.0


def test_saved_reward_model_judges_by_score_gap(registry: Registry, reward_folder: Path) -> None:
    from prefcore.engine.reward_model import RewardModel

    judge_plan = plan(registry, run_file({"kind": "preference_model", "path": str(reward_folder), "temperature": 0.5}))
    judge = judge_plan.build([])
    assert judge is not None
    scores = RewardModel.load(reward_folder).score(["what colour is the sky ?"] * 2, ["blue", "red"])[:, 0]
    expected = 1 / (1 + math.exp(-float(scores[0] - scores[1]) / 0.5))
    assert judge("what colour is the sky ?", "blue", "red") == pytest.approx(expected, rel=1e-5)
    assert judge("what colour is the sky ?", "red", "blue") == pytest.approx(1 - expected, rel=1e-5)


def test_trained_reward_model_judge_uses_the_runs_scorer(registry: Registry) -> None:
    data = run_file({"kind": "preference_model", "path": "trained"}, preference_model={"method": "bradley_terry"})
    judge_plan = plan(registry, data)
    by_length = lambda prompts, completions: [float(len(text)) for text in completions]
    judge = judge_plan.build([], trained_scorer=by_length)
    assert judge is not None
    assert judge("p", "long answer", "short") == pytest.approx(1 / (1 + math.exp(-6.0)))
    with pytest.raises(ConfigError, match="trained no preference model"):
        judge_plan.build([])


def test_score_gap_judge_scores_each_completion_once() -> None:
    calls: list[Sequence[str]] = []

    def scorer(prompts: Sequence[Any], completions: Sequence[str]) -> list[float]:
        calls.append(tuple(completions))
        return [float(len(text)) for text in completions]

    judge = ScoreGapJudge(scorer)
    assert judge("p", "aa", "a") + judge("p", "a", "aa") == pytest.approx(1.0)
    assert judge("p", "aa", "aa") == 0.5
    assert calls == [("aa", "a")]


def test_llm_judge_answers_one_order_per_call(registry: Registry, llm_folder: Path) -> None:
    section = {"kind": "llm", "model_path": str(llm_folder), "template": SHORT_TEMPLATE, "principles": ["be right"]}
    judge = plan(registry, run_file(section)).build([])
    assert judge is not None
    direct = CausalLMLabelProbabilities.load(
        LLMJudgeConfig(model_path=llm_folder, template=SHORT_TEMPLATE, principles=("be right",))
    )
    forward = judge("the sky is", "blue", "green")
    backward = judge("the sky is", "green", "blue")
    assert forward == pytest.approx(direct([("the sky is", "blue", "green")])[0], abs=1e-6)
    assert backward == pytest.approx(direct([("the sky is", "green", "blue")])[0], abs=1e-6)
    # A random judge has a position bias: its two orders need not sum to 1, which win_rate measures.
    assert forward + backward != pytest.approx(1.0, abs=1e-4)


def test_win_rate_declares_that_it_needs_a_judge() -> None:
    assert WinRate.needs_judge is True

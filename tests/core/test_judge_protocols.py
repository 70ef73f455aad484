"""Judges and scorers are declared protocols: a run refuses one of the wrong shape, naming its plugin."""

from __future__ import annotations

from typing import Any

import pytest

from prefcore.config import parse_run_config
from prefcore.errors import ConfigError
from prefcore.evaluation import Judge
from prefcore.evaluation import Scorer
from prefcore.evaluation import check_judge
from prefcore.evaluation import check_scorer
from prefcore.judges import plan_judge
from prefcore.methods import FeedbackSource
from prefcore.methods import NoOptions
from prefcore.registry import Registry


def _rule(prompt: Any, first: str, second: str) -> float:
    return 1.0 if len(first) < len(second) else 0.0


def _scores(prompts: Any, completions: Any) -> list[float]:
    return [float(len(text)) for text in completions]


def test_callables_of_the_declared_shape_pass() -> None:
    assert check_judge(_rule, "rule") is _rule and isinstance(_rule, Judge)
    assert check_scorer(_scores, "scorer") is _scores and isinstance(_scores, Scorer)


@pytest.mark.parametrize("bad", [0.5, "judge", lambda prompt, first: 0.5])
def test_a_judge_of_the_wrong_shape_is_named(bad: Any) -> None:
    with pytest.raises(ConfigError, match=r"feedback source 'x'.*judge\(prompt, first, second\)"):
        check_judge(bad, "feedback source 'x'")


def test_a_scorer_of_the_wrong_shape_is_named() -> None:
    with pytest.raises(ConfigError, match=r"scorer\(prompts, completions\)"):
        check_scorer(lambda completions: [0.0], "reward model 'rm'")


class _WrongJudge(FeedbackSource):
    """A source whose judge takes two arguments (for the test)."""

    name = "wrong_judge"
    config_cls = NoOptions

    def records(self) -> list[Any]:
        return []

    def judge(self) -> Any:
        return lambda first, second: 0.5


def test_the_run_refuses_a_feedback_judge_of_the_wrong_shape() -> None:
    config = parse_run_config(
        {
            "model": {"demo": True},
            "feedback": {"method": "demo_rule"},
            "usage": {"method": "dpo"},
            "evaluation": [{"method": "win_rate"}],
        }
    )
    plan = plan_judge(config, registry=Registry.from_environment(third_party=False))
    with pytest.raises(ConfigError, match=r"feedback source 'wrong_judge'.*judge\(prompt, first, second\)"):
        plan.build([_WrongJudge(NoOptions())])

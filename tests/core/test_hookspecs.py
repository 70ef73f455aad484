"""Every hook is documented (a summary and a ``:param`` line for each argument) and called.

Each hook has a test named ``test_hook_<hook>`` below; ``tests/core/test_meta.py`` checks
that none is missing.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

from prefcore import hookimpl
from prefcore import hookspecs
from prefcore.config import parse_run_config
from prefcore.data import write_jsonl
from prefcore.demo.task import preference_pairs
from prefcore.evaluation import EvaluationContext
from prefcore.methods import PLUGIN_KINDS
from prefcore.preference import RewardBatch
from prefcore.registry import Registry
from prefcore.registry import get_plugin_manager
from prefcore.testing import make_random_batch

MakeDistribution = Callable[..., Path]  # the fixture of tests/core/conftest.py

HOOKS = [
    function
    for name, function in vars(hookspecs).items()
    if name.startswith("prefcore_") and inspect.isfunction(function)
]


def test_there_is_one_registration_hook_per_kind() -> None:
    assert set(hookspecs.REGISTRATION_HOOKS) == set(PLUGIN_KINDS)
    names = {hook.__name__ for hook in HOOKS}
    assert set(hookspecs.REGISTRATION_HOOKS.values()) <= names


@pytest.mark.parametrize("hook", HOOKS, ids=lambda hook: hook.__name__)
def test_hook_is_documented(hook) -> None:
    doc = inspect.getdoc(hook) or ""
    assert doc.splitlines() and doc.splitlines()[0].strip(), f"{hook.__name__} has no summary line"
    for parameter in inspect.signature(hook).parameters:
        assert f":param {parameter}:" in doc, f"{hook.__name__} does not document {parameter!r}"
    if hook.__name__.startswith("prefcore_register_"):
        assert ":return:" in doc


# -- every hook is called ---------------------------------------------------------------------
# One test per hook, named ``test_hook_<hook name>``: tests/core/test_meta.py finds them by name.


def _registry_with(module_source: str, make_distribution: MakeDistribution) -> Registry:
    """A fresh registry of the built-ins plus one throw-away plugin distribution holding ``module_source``."""
    make_distribution("acme-hooks", "1.0", {"acme_hooks": "acme_hooks"}, {"acme_hooks": module_source})
    registry = Registry(get_plugin_manager(third_party=True, disabled=()))
    assert not registry.errors, registry.errors
    return registry


def test_hook_prefcore_add_hookspecs(make_distribution: MakeDistribution) -> None:
    make_distribution(
        "acme-hooks",
        "1.0",
        # The implementation loads first, before its hook exists: the historic call adds the spec later.
        {"acme_impl": "acme_impl", "acme_specs": "acme_specs"},
        {
            "acme_specs": '''
                import sys

                import pluggy

                from prefcore import hookimpl

                hookspec = pluggy.HookspecMarker("prefcore")


                @hookspec
                def acme_greeting(name):
                    """A hook of the acme plugin family, for other plugins to implement."""


                @hookimpl
                def prefcore_add_hookspecs(plugin_manager):
                    plugin_manager.add_hookspecs(sys.modules[__name__])
                ''',
            "acme_impl": """
                from prefcore import hookimpl


                @hookimpl
                def acme_greeting(name):
                    return f"hello {name}"
                """,
        },
    )
    manager = get_plugin_manager(third_party=True, disabled=())
    assert not manager.load_errors, manager.load_errors
    assert manager.has_plugin("acme_impl"), "an implementation of an added hook is not an unknown hook"
    assert manager.hook.acme_greeting(name="prefcore") == ["hello prefcore"]


def test_hook_prefcore_register_feedback(make_distribution: MakeDistribution) -> None:
    registry = _registry_with(
        """
        from prefcore import hookimpl
        from prefcore.methods import FeedbackSource


        class Nothing(FeedbackSource):
            '''Feedback that says nothing.'''

            name = "acme_nothing"

            def records(self):
                return []


        @hookimpl
        def prefcore_register_feedback():
            return [Nothing]
        """,
        make_distribution,
    )
    info = registry.info("feedback", "acme_nothing")
    assert (info.provenance.plugin, info.provenance.distribution) == ("acme_hooks", "acme-hooks")
    assert list(registry.create("feedback", "acme_nothing").records()) == []


def test_hook_prefcore_register_preference_models(make_distribution: MakeDistribution) -> None:
    registry = _registry_with(
        """
        from prefcore import hookimpl
        from prefcore.batch import LossOutput
        from prefcore.methods import PreferenceModel


        class MeanReward(PreferenceModel):
            '''Loss = mean reward (for the test only).'''

            name = "acme_mean_reward"

            def loss(self, batch):
                return LossOutput(batch.rewards.mean())


        @hookimpl
        def prefcore_register_preference_models():
            return [MeanReward]
        """,
        make_distribution,
    )
    model = registry.create("preference_model", "acme_mean_reward")
    assert model.loss(RewardBatch(torch.tensor([[1.0], [3.0]]))).loss.item() == 2.0


def test_hook_prefcore_register_usage_objectives(make_distribution: MakeDistribution) -> None:
    registry = _registry_with(
        """
        from prefcore import hookimpl
        from prefcore.batch import LossOutput
        from prefcore.methods import UsageObjective


        class NegativeLogLikelihood(UsageObjective):
            '''Loss = −mean token log-prob (for the test only).'''

            name = "acme_nll"
            data_formats = ("sft",)

            def loss(self, batch):
                return LossOutput(-(batch.policy_logps * batch.mask).sum() / batch.mask.sum())


        @hookimpl
        def prefcore_register_usage_objectives():
            return [NegativeLogLikelihood]
        """,
        make_distribution,
    )
    objective = registry.create("usage", "acme_nll")
    assert objective.loss(make_random_batch("sft", seed=0)).loss.ndim == 0


def test_hook_prefcore_register_evaluators(make_distribution: MakeDistribution) -> None:
    registry = _registry_with(
        """
        from prefcore import hookimpl
        from prefcore.evaluation import EvaluationResult
        from prefcore.methods import Evaluator


        class PromptCount(Evaluator):
            '''count = number of held-out prompts.'''

            name = "acme_prompt_count"

            def evaluate(self, context):
                return EvaluationResult({"count": float(len(context.prompts))})


        @hookimpl
        def prefcore_register_evaluators():
            return [PromptCount]
        """,
        make_distribution,
    )
    evaluator = registry.create("evaluation", "acme_prompt_count")
    context = EvaluationContext(policy=None, tokenizer=None, prompts=["a", "b"])
    assert evaluator.evaluate(context).metrics == {"count": 2.0}


class _Recorder:
    """Every lifecycle hook call of a run, in order, with its arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def of(self, hook: str) -> list[dict[str, Any]]:
        return [arguments for name, arguments in self.calls if name == hook]

    @hookimpl
    def prefcore_run_start(self, run_dir: Path, config: Mapping[str, Any]) -> None:
        self.calls.append(("prefcore_run_start", {"run_dir": run_dir, "config": config}))

    @hookimpl
    def prefcore_train_step_end(self, run_dir: Path, step: int, metrics: Mapping[str, float]) -> None:
        self.calls.append(("prefcore_train_step_end", {"run_dir": run_dir, "step": step, "metrics": dict(metrics)}))

    @hookimpl
    def prefcore_evaluation_end(self, run_dir: Path, step: int, metrics: Mapping[str, float]) -> None:
        self.calls.append(("prefcore_evaluation_end", {"run_dir": run_dir, "step": step, "metrics": dict(metrics)}))

    @hookimpl
    def prefcore_checkpoint_saved(self, run_dir: Path, step: int, path: Path) -> None:
        self.calls.append(("prefcore_checkpoint_saved", {"run_dir": run_dir, "step": step, "path": path}))

    @hookimpl
    def prefcore_run_end(self, run_dir: Path, metrics: Mapping[str, float]) -> None:
        self.calls.append(("prefcore_run_end", {"run_dir": run_dir, "metrics": dict(metrics)}))


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, _Recorder]:
    """A two-step demo run with a checkpoint every step, watched by a recording plugin."""
    from prefcore.pipeline import run_pipeline

    recorder = _Recorder()
    registry = Registry.from_environment(third_party=False)
    registry.plugin_manager.register(recorder, name="recorder")
    folder = tmp_path_factory.mktemp("run")
    write_jsonl(preference_pairs(count=16, seed=3), folder / "pairs.jsonl")
    config = {
        "run": {"seed": 1, "heldout_fraction": 0.25, "eval_prompts": 2, "max_new_tokens": 2},
        "model": {"demo": True},
        "feedback": {"method": "preference_file", "path": str(folder / "pairs.jsonl")},
        "usage": {"method": "dpo", "beta": 0.1},
        "evaluation": [{"method": "preference_accuracy"}],
        "train": {"steps": 2, "batch_size": 4, "progress": False, "checkpoint_every": 1, "keep_checkpoints": 5},
    }
    run_dir = run_pipeline(parse_run_config(config), out=str(folder / "run"), registry=registry).run_dir
    return run_dir, recorder


def test_hook_prefcore_run_start(recorded_run: tuple[Path, _Recorder]) -> None:
    run_dir, recorder = recorded_run
    assert recorder.calls[0][0] == "prefcore_run_start"
    (start,) = recorder.of("prefcore_run_start")
    assert start["run_dir"] == run_dir
    assert start["config"]["usage"]["method"] == "dpo"


def test_hook_prefcore_train_step_end(recorded_run: tuple[Path, _Recorder]) -> None:
    run_dir, recorder = recorded_run
    steps = recorder.of("prefcore_train_step_end")
    assert [call["step"] for call in steps] == [1, 2]
    assert all(call["run_dir"] == run_dir and math.isfinite(call["metrics"]["loss"]) for call in steps)


def test_hook_prefcore_evaluation_end(recorded_run: tuple[Path, _Recorder]) -> None:
    _, recorder = recorded_run
    evaluations = recorder.of("prefcore_evaluation_end")
    assert [call["step"] for call in evaluations] == [0, 2]
    assert all("preference_accuracy/accuracy" in call["metrics"] for call in evaluations)


def test_hook_prefcore_checkpoint_saved(recorded_run: tuple[Path, _Recorder]) -> None:
    run_dir, recorder = recorded_run
    saved = recorder.of("prefcore_checkpoint_saved")
    assert [call["step"] for call in saved] == [1, 2]
    for call in saved:
        assert call["path"].parent == run_dir / "checkpoints"
        assert call["path"].is_dir(), "fired only after the checkpoint is complete"
    names = [name for name, _ in recorder.calls]
    assert names.index("prefcore_checkpoint_saved") > names.index("prefcore_train_step_end")


def test_hook_prefcore_run_end(recorded_run: tuple[Path, _Recorder]) -> None:
    _, recorder = recorded_run
    assert recorder.calls[-1][0] == "prefcore_run_end"
    (end,) = recorder.of("prefcore_run_end")
    assert end["metrics"] == recorder.of("prefcore_evaluation_end")[-1]["metrics"]

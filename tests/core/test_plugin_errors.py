"""A faulty plugin is named, with its distribution, wherever it fails: in its loss, its config
defaults, its import, or by registering nothing; every other plugin keeps working.

Plugins are throw-away distributions installed for one test (the ``make_distribution``
fixture), loaded through the real entry-point path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from dataclasses import make_dataclass
from pathlib import Path
from typing import Literal

import pytest
import torch

from prefcore import hookimpl
from prefcore.cli import main
from prefcore.demo.model import build_tiny_model
from prefcore.demo.task import preference_pairs
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.engine.batching import build_items
from prefcore.engine.reward_trainer import RewardTrainConfig
from prefcore.engine.reward_trainer import train_preference_model
from prefcore.engine.trainer import TrainConfig
from prefcore.engine.trainer import Trainer
from prefcore.engine.trainer import WeightedObjective
from prefcore.errors import NonFiniteLossError
from prefcore.errors import ObjectiveError
from prefcore.errors import PluginLoadError
from prefcore.errors import PluginValidationError
from prefcore.errors import UnknownMethodError
from prefcore.methods import PreferenceModel
from prefcore.methods import UsageObjective
from prefcore.methods import option
from prefcore.registry import PrefcorePluginManager
from prefcore.registry import Provenance
from prefcore.registry import Registry

FAULTY_LOSSES = """
from prefcore import hookimpl
from prefcore.batch import LossOutput
from prefcore.methods import UsageObjective

class NanLoss(UsageObjective):
    '''A loss that overflows.'''
    name = "nan_loss"

    def loss(self, batch):
        return LossOutput(batch.policy_logps.sum() * float("nan"))

class DetachedLoss(UsageObjective):
    '''A loss computed outside autograd.'''
    name = "detached_loss"

    def loss(self, batch):
        return LossOutput(batch.policy_logps.sum().detach())

@hookimpl
def prefcore_register_usage_objectives():
    return [NanLoss, DetachedLoss]
"""

GOOD_LOSS = """
from prefcore import hookimpl
from prefcore.batch import LossOutput
from prefcore.methods import UsageObjective

class Good(UsageObjective):
    '''Raise the log-probability of every completion.'''
    name = "good_loss"

    def loss(self, batch):
        return LossOutput(-(batch.policy_logps * batch.mask).sum() / batch.num_items)

@hookimpl
def prefcore_register_usage_objectives():
    return [Good]
"""


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def items(tokenizer):
    return build_items(preference_pairs(count=8, seed=0), "pairwise", tokenizer, max_length=64)


def _trainer(objectives, items, tokenizer, run_dir: Path) -> Trainer:
    policy = build_tiny_model(tokenizer, seed=0)
    config = TrainConfig(steps=2, batch_size=4, lr=1e-2, progress=False)
    return Trainer(
        policy,
        objectives,
        items,
        config,
        pad_token_id=tokenizer.pad_token_id,
        run_dir=run_dir,
        device=torch.device("cpu"),
    )


@pytest.fixture
def faulty_registry(make_distribution) -> Registry:
    make_distribution("faulty-losses", "0.2.1", {"faulty": "faulty_losses_mod"}, {"faulty_losses_mod": FAULTY_LOSSES})
    make_distribution("good-losses", "1.0", {"good": "good_losses_mod"}, {"good_losses_mod": GOOD_LOSS})
    return Registry.from_environment(third_party=True)


def test_nan_loss_names_the_objective_and_its_distribution(faulty_registry, items, tokenizer, tmp_path) -> None:
    good = WeightedObjective(faulty_registry.create("usage", "good_loss"))
    bad = WeightedObjective(faulty_registry.create("usage", "nan_loss"), weight=0.5)
    trainer = _trainer([good, bad], items, tokenizer, tmp_path)
    before = [parameter.detach().clone() for parameter in trainer.policy.parameters()]
    with pytest.raises(NonFiniteLossError) as excinfo:
        trainer.train_step()
    error = excinfo.value
    assert isinstance(error, FloatingPointError)
    assert error.method == "usage objective 'nan_loss'" and error.step == 1
    assert "faulty-losses 0.2.1" in error.origin and "'faulty'" in error.origin
    assert "usage objective 'nan_loss'" in str(error) and "faulty-losses 0.2.1" in str(error)
    assert "good_loss" not in str(error)
    for old, new in zip(before, trainer.policy.parameters(), strict=True):
        assert torch.equal(old, new), "a NaN loss must never reach the weights"


def test_loss_without_gradient_names_the_objective(faulty_registry, items, tokenizer, tmp_path) -> None:
    trainer = _trainer(
        [WeightedObjective(faulty_registry.create("usage", "detached_loss"))], items, tokenizer, tmp_path
    )
    with pytest.raises(ObjectiveError) as excinfo:
        trainer.train_step()
    message = str(excinfo.value)
    assert excinfo.value.method == "usage objective 'detached_loss'"
    assert "faulty-losses 0.2.1" in message
    assert "without a gradient" in message and "batch.policy_logps" in message


def test_the_good_plugin_of_the_same_run_trains(faulty_registry, items, tokenizer, tmp_path) -> None:
    trainer = _trainer([WeightedObjective(faulty_registry.create("usage", "good_loss"))], items, tokenizer, tmp_path)
    before = [parameter.detach().clone() for parameter in trainer.policy.parameters()]
    assert math.isfinite(trainer.train_step()["loss"])
    assert any(not torch.equal(old, new) for old, new in zip(before, trainer.policy.parameters(), strict=True))


def test_preference_model_nan_loss_names_it(tokenizer, tmp_path) -> None:
    class Exploding(PreferenceModel):
        """A reward objective that divides by zero."""

        name = "exploding"

        def loss(self, batch):
            from prefcore.batch import LossOutput

            return LossOutput(batch.rewards.sum() / 0.0)

    class Plugin:
        @staticmethod
        @hookimpl
        def prefcore_register_preference_models():
            return [Exploding]

    manager = PrefcorePluginManager()
    manager.register_plugin(Plugin, Provenance("boom", "boom-dist", "3.0", "boom = boom_mod"))
    objective = Registry(manager).create("preference_model", "exploding")
    config = RewardTrainConfig(demo=True, steps=1, batch_size=4, max_length=64, heldout_fraction=0.0)
    with pytest.raises(
        NonFiniteLossError, match=r"preference model 'exploding' \(plugin 'boom' from distribution boom-dist 3\.0\)"
    ):
        train_preference_model(preference_pairs(count=8, seed=0), objective, tokenizer, config, run_dir=tmp_path)


# ----------------------------------------------------------------------------------------------
# Registration: config defaults of the wrong type
# ----------------------------------------------------------------------------------------------

WRONG_DEFAULT = """
from dataclasses import dataclass
from prefcore import hookimpl
from prefcore.batch import LossOutput
from prefcore.methods import UsageObjective, option

@dataclass(frozen=True)
class Config:
    beta: float = option("x", doc="strength")

class Typo(UsageObjective):
    '''A default of the wrong type.'''
    name = "typo_loss"
    config_cls = Config

    def loss(self, batch):
        return LossOutput(self.config.beta * batch.policy_logps.sum())

@hookimpl
def prefcore_register_usage_objectives():
    return [Typo]
"""


def test_wrong_default_type_is_rejected_at_registration(make_distribution) -> None:
    make_distribution("typo-dist", "0.1", {"typo": "typo_defaults_mod"}, {"typo_defaults_mod": WRONG_DEFAULT})
    make_distribution("good-losses", "1.0", {"good": "good_losses_mod"}, {"good_losses_mod": GOOD_LOSS})
    registry = Registry.from_environment(third_party=True)
    [error] = [error for error in registry.errors if getattr(error, "plugin", None) == "typo"]
    assert isinstance(error, PluginValidationError)
    assert (error.plugin, error.field, error.distribution) == ("typo", "beta", "typo-dist")
    assert "'beta'" in str(error) and "must be float" in str(error) and "'x' (str)" in str(error)
    assert "typo_loss" not in registry.names("usage")
    assert registry.create("usage", "good_loss").name == "good_loss"


class _Choice(UsageObjective):
    name = "choice"

    def loss(self, batch):  # pragma: no cover - never trained
        raise NotImplementedError


@pytest.mark.parametrize(
    ("annotation", "default", "field"),
    [
        (int, 0.5, "steps"),
        (bool, 1, "flag"),
        (Literal["a", "b"], "c", "mode"),
        (tuple[str, ...], ("a", 1), "names"),
        (float, None, "beta"),
    ],
)
def test_every_kind_of_wrong_default_is_caught(annotation: object, default: object, field: str) -> None:
    config = make_dataclass("Config", [(field, annotation, option(default, doc="d"))], frozen=True)
    method = type("Choice", (_Choice,), {"config_cls": config})

    class Plugin:
        @staticmethod
        @hookimpl
        def prefcore_register_usage_objectives():
            return [method]

    manager = PrefcorePluginManager()
    manager.register_plugin(Plugin, Provenance("direct"))
    [error] = Registry(manager).errors
    assert isinstance(error, PluginValidationError) and error.field == field


def test_well_typed_defaults_are_accepted() -> None:
    @dataclass(frozen=True)
    class Good:
        beta: float = option(1, doc="an int is a fine float")
        path: str | None = option(None, doc="optional")
        names: tuple[str, ...] = option(("a", "b"), doc="names")

    method = type("Choice", (_Choice,), {"config_cls": Good})

    class Plugin:
        @staticmethod
        @hookimpl
        def prefcore_register_usage_objectives():
            return [method]

    manager = PrefcorePluginManager()
    manager.register_plugin(Plugin, Provenance("direct"))
    registry = Registry(manager)
    assert registry.errors == []
    assert registry.create("usage", "choice").config.beta == 1


def test_builtin_defaults_all_pass_the_check() -> None:
    assert Registry.from_environment(third_party=False).errors == []


# ----------------------------------------------------------------------------------------------
# Plugins without methods, and methods of plugins that did not load
# ----------------------------------------------------------------------------------------------

HOOKS_ONLY = """
from prefcore import hookimpl

@hookimpl
def prefcore_train_step_end(run_dir, step, metrics):
    pass
"""


def test_plugin_without_methods_is_listed(make_distribution, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFCORE_DISABLE_PLUGIN_AUTOLOAD", "0")  # the command loads what is installed
    make_distribution("acme-logger", "0.4", {"acme_log": "acme_logger_mod"}, {"acme_logger_mod": HOOKS_ONLY})
    registry = Registry.from_environment(third_party=True)
    [plugin] = [plugin for plugin in registry.plugins() if plugin.name == "acme_log"]
    assert plugin.loaded and plugin.methods == () and plugin.errors == ()
    assert (plugin.provenance.distribution, plugin.provenance.version) == ("acme-logger", "0.4")
    dpo = [plugin for plugin in registry.plugins() if plugin.name == "dpo"]
    assert dpo[0].methods == (("usage", "dpo"),)

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "register no method" in out
    [line] = [line for line in out.splitlines() if line.startswith("acme_log ")]
    assert "acme-logger" in line and "0.4" in line


BROKEN = "import no_such_module_for_acme_loss\n"


def test_selecting_a_method_of_a_broken_plugin_names_it(make_distribution) -> None:
    make_distribution("acme-prefs", "0.3.1", {"acme_loss": "acme_broken_mod"}, {"acme_broken_mod": BROKEN})
    registry = Registry.from_environment(third_party=True)
    with pytest.raises(UnknownMethodError) as excinfo:
        registry.create("usage", "acme_loss")
    [broken] = excinfo.value.broken
    assert isinstance(broken, PluginLoadError) and broken.plugin == "acme_loss"
    message = str(excinfo.value)
    assert "Plugin 'acme_loss' (distribution acme-prefs 0.3.1) failed to load" in message
    assert "ModuleNotFoundError: No module named 'no_such_module_for_acme_loss'" in message
    assert registry.get("usage", "dpo").name == "dpo"


def test_info_on_a_method_of_a_broken_plugin_names_it(make_distribution, capsys, monkeypatch) -> None:
    monkeypatch.setenv("PREFCORE_DISABLE_PLUGIN_AUTOLOAD", "0")
    make_distribution("acme-prefs", "0.3.1", {"acme": "acme_broken_mod"}, {"acme_broken_mod": BROKEN})
    assert main(["info", "acme_loss"]) == 2
    err = capsys.readouterr().err
    assert "UnknownMethodError" in err and "'acme'" in err and "no_such_module_for_acme_loss" in err

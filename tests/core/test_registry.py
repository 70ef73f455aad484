"""Registry behaviour: entry-point loading, selection by name and every error path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from prefcore import hookimpl
from prefcore.batch import LogProbBatch
from prefcore.batch import LossOutput
from prefcore.errors import DuplicateMethodError
from prefcore.errors import PluginLoadError
from prefcore.errors import PluginValidationError
from prefcore.errors import UnknownKindError
from prefcore.errors import UnknownMethodError
from prefcore.methods import UsageObjective
from prefcore.methods import option
from prefcore.registry import PrefcorePluginManager
from prefcore.registry import Provenance
from prefcore.registry import Registry
from prefcore.registry import get_plugin_manager

USAGE_PLUGIN = """
from dataclasses import dataclass
from prefcore import hookimpl
from prefcore.batch import LossOutput
from prefcore.methods import UsageObjective, option

@dataclass(frozen=True)
class Config:
    beta: float = option(0.1, doc="strength")

class {cls}(UsageObjective):
    '''{doc}'''
    name = "{name}"
    config_cls = Config

    def loss(self, batch):
        return LossOutput(-self.config.beta * batch.policy_logps.sum())

@hookimpl
def prefcore_register_usage_objectives():
    return [{cls}]
"""


def usage_plugin(name: str, cls: str = "Method", doc: str = "A throw-away objective.") -> str:
    return USAGE_PLUGIN.format(name=name, cls=cls, doc=doc)


@dataclass(frozen=True)
class _Config:
    beta: float = option(0.1, doc="inverse temperature")


class _Toy(UsageObjective):
    """A toy objective registered directly."""

    name = "toy"
    config_cls = _Config

    def loss(self, batch: LogProbBatch) -> LossOutput:
        return LossOutput(-self.config.beta * batch.policy_logps.sum())


def _registry_with(*plugins: object) -> Registry:
    manager = PrefcorePluginManager()
    for index, plugin in enumerate(plugins):
        manager.register_plugin(plugin, Provenance(plugin=f"direct{index}"))
    return Registry(manager)


def test_builtin_plugins_load_through_the_entry_point_group() -> None:
    registry = Registry.from_environment(third_party=False)
    info = registry.info("feedback", "preference_file")
    assert info.provenance.distribution == "prefcore"
    assert info.provenance.entry_point == "preference_file = prefcore.plugins.feedback.preference_file"
    assert registry.errors == []


def test_third_party_distribution_is_listed_and_selectable(make_distribution) -> None:
    make_distribution(
        "acme-prefs", "0.3.1", {"acme": "acme_prefs_plugin"}, {"acme_prefs_plugin": usage_plugin("acme_loss")}
    )
    registry = Registry.from_environment(third_party=True)
    info = registry.info("usage", "acme_loss")
    assert (info.provenance.distribution, info.provenance.version) == ("acme-prefs", "0.3.1")
    method = registry.create("usage", "acme_loss", {"beta": 0.5})
    assert method.config.beta == 0.5
    assert registry.info("feedback", "preference_file")  # built-ins still there


def test_autoload_off_skips_third_party(make_distribution) -> None:
    make_distribution(
        "acme-prefs", "0.3.1", {"acme": "acme_prefs_plugin"}, {"acme_prefs_plugin": usage_plugin("acme_loss")}
    )
    registry = Registry.from_environment(third_party=False)
    assert "acme_loss" not in registry.names("usage")


def test_disabled_plugin_is_not_loaded(make_distribution) -> None:
    make_distribution(
        "acme-prefs", "0.3.1", {"acme": "acme_prefs_plugin"}, {"acme_prefs_plugin": usage_plugin("acme_loss")}
    )
    registry = Registry.from_environment(third_party=True, disabled=["acme"])
    assert "acme_loss" not in registry.names("usage")


def test_disabled_plugin_via_environment(make_distribution, monkeypatch: pytest.MonkeyPatch) -> None:
    make_distribution(
        "acme-prefs", "0.3.1", {"acme": "acme_prefs_plugin"}, {"acme_prefs_plugin": usage_plugin("acme_loss")}
    )
    monkeypatch.setenv("PREFCORE_DISABLE_PLUGINS", "other, acme")
    assert "acme_loss" not in Registry.from_environment(third_party=True).names("usage")


def test_broken_plugin_names_its_distribution_and_others_keep_working(make_distribution) -> None:
    make_distribution(
        "broken-dist", "2.0", {"broken": "broken_plugin_mod"}, {"broken_plugin_mod": "import no_such_module_xyz\n"}
    )
    make_distribution("good-dist", "1.0", {"good": "good_plugin_mod"}, {"good_plugin_mod": usage_plugin("good_loss")})
    manager = get_plugin_manager(third_party=True)
    [error] = manager.load_errors
    assert isinstance(error, PluginLoadError)
    assert error.plugin == "broken"
    assert error.distribution == "broken-dist 2.0"
    assert "no_such_module_xyz" in str(error)
    assert "broken = broken_plugin_mod" in str(error)
    registry = Registry(manager)
    assert "good_loss" in registry.names("usage")
    assert registry.errors == [error]


def test_duplicate_names_name_both_distributions(make_distribution) -> None:
    make_distribution("first-dist", "1.0", {"first": "first_mod"}, {"first_mod": usage_plugin("same", "A")})
    make_distribution("second-dist", "2.5", {"second": "second_mod"}, {"second_mod": usage_plugin("same", "B")})
    make_distribution("other-dist", "1.0", {"other": "other_mod"}, {"other_mod": usage_plugin("distinct")})
    registry = Registry.from_environment(third_party=True)
    with pytest.raises(DuplicateMethodError) as excinfo:
        registry.get("usage", "same")
    message = str(excinfo.value)
    assert "first-dist 1.0" in message and "second-dist 2.5" in message
    assert excinfo.value.name == "same"
    assert "same" not in registry.names("usage")
    assert registry.get("usage", "distinct").name == "distinct"
    assert excinfo.value in registry.errors


def test_unknown_name_lists_available_and_closest() -> None:
    registry = _registry_with(
        type("P", (), {"prefcore_register_usage_objectives": staticmethod(hookimpl(lambda: [_Toy]))})
    )
    with pytest.raises(UnknownMethodError) as excinfo:
        registry.get("usage", "tyo")
    assert excinfo.value.available == ("toy",)
    assert excinfo.value.suggestions == ("toy",)
    assert "Available: toy." in str(excinfo.value)
    assert "Did you mean 'toy'?" in str(excinfo.value)


def test_unknown_kind() -> None:
    with pytest.raises(UnknownKindError) as excinfo:
        _registry_with().methods("usages")
    assert excinfo.value.kind == "usages"


class _NoName(_Toy):
    name = None


class _BadName(_Toy):
    name = "Bad-Name"


class _NotADataclassConfig(_Toy):
    name = "plain_config"
    config_cls = dict


class _Abstract(UsageObjective):
    name = "abstract"
    config_cls = _Config


@pytest.mark.parametrize(
    ("returned", "problem"),
    [
        ([_NoName], "no 'name' attribute"),
        ([_BadName], "lowercase snake_case"),
        ([_NotADataclassConfig], "not a dataclass"),
        ([_Abstract], "does not implement loss"),
        ([int], "not a subclass of prefcore.UsageObjective"),
        (["dpo"], "is not a class"),
        (_Toy, "must return a list"),
    ],
)
def test_invalid_registrations_are_reported_and_isolated(returned: object, problem: str) -> None:
    class Bad:
        @staticmethod
        @hookimpl
        def prefcore_register_usage_objectives():
            return returned

    class Good:
        @staticmethod
        @hookimpl
        def prefcore_register_usage_objectives():
            return [_Toy]

    registry = _registry_with(Bad, Good)
    [error] = registry.errors
    assert isinstance(error, PluginValidationError)
    assert error.plugin == "direct0"
    assert problem in str(error)
    assert registry.names("usage") == ["toy"]


def test_a_hook_that_raises_breaks_only_its_plugin() -> None:
    class Crashing:
        @staticmethod
        @hookimpl
        def prefcore_register_usage_objectives():
            raise RuntimeError("boom")

    class Good:
        @staticmethod
        @hookimpl
        def prefcore_register_usage_objectives():
            return [_Toy]

    registry = _registry_with(Crashing, Good)
    [error] = registry.errors
    assert error.plugin == "direct0"
    assert "RuntimeError: boom" in str(error)
    assert registry.names("usage") == ["toy"]


DECLARATION_PLUGIN = '''
from prefcore import hookimpl
from prefcore.methods import Evaluator, FeedbackSource, PreferenceModel

class Model(PreferenceModel):
    """A preference model."""
    name = "declared_model"
    def loss(self, batch):
        return None

class Source(FeedbackSource):
    """A feedback source."""
    name = "declared_source"
    def records(self):
        return []

class Judged(Evaluator):
    """An evaluator."""
    name = "declared_evaluator"
    def evaluate(self, context):
        return None

{body}

@hookimpl
def {hook}():
    return [{cls}]
'''

DECLARATION_CASES = {
    "heads_as_a_number": (
        "class Bad(Model):\n    num_heads = 2",
        "prefcore_register_preference_models",
        "sets num_heads to 2 (int), but the engine calls num_heads(): define a method "
        "(declared by prefcore.PreferenceModel.num_heads)",
    ),
    "aspects_as_a_method": (
        "class Bad(Model):\n    def aspects(self):\n        return ('a', 'b')",
        "prefcore_register_preference_models",
        "defines aspects() as a method, but the engine reads aspects as a value: make it a @property",
    ),
    "formats_as_a_string": (
        "class Bad(Model):\n    data_formats = 'pairwise'",
        "prefcore_register_preference_models",
        "sets data_formats to 'pairwise' (str); it must be a non-empty tuple of names",
    ),
    "judge_as_a_value": (
        "class Bad(Source):\n    judge = None",
        "prefcore_register_feedback",
        "sets judge to None (NoneType), but the engine calls judge()",
    ),
    "needs_judge_as_a_string": (
        "class Bad(Judged):\n    needs_judge = 'yes'",
        "prefcore_register_evaluators",
        "sets needs_judge to 'yes' (str); it must be True or False (declared by prefcore.Evaluator.needs_judge)",
    ),
    "needs_judge_as_a_property": (
        "class Bad(Judged):\n    @property\n    def needs_judge(self):\n        return True",
        "prefcore_register_evaluators",
        "makes needs_judge a property, but the engine reads it from the class",
    ),
}


@pytest.mark.parametrize("case", sorted(DECLARATION_CASES))
def test_a_class_that_breaks_its_declared_protocol_is_refused_naming_plugin_and_distribution(
    make_distribution, case: str
) -> None:
    body, hook, problem = DECLARATION_CASES[case]
    source = DECLARATION_PLUGIN.format(body=body, hook=hook, cls="Bad")
    make_distribution("declared-dist", "3.1", {"declared": "declared_mod"}, {"declared_mod": source})
    make_distribution("good-dist", "1.0", {"good": "good_plugin_mod"}, {"good_plugin_mod": usage_plugin("good_loss")})
    registry = Registry(get_plugin_manager(third_party=True))
    [error] = registry.errors
    assert isinstance(error, PluginValidationError)
    assert (error.plugin, error.distribution) == ("declared", "declared-dist")
    assert "declared-dist" in str(error)
    assert problem in str(error)
    assert "good_loss" in registry.names("usage")


def test_classes_that_keep_their_declared_protocol_register() -> None:
    body = (
        "class Aspects(Model):\n    name = 'aspects_model'\n    data_formats = ('pairwise', 'listwise')\n"
        "    @property\n    def aspects(self):\n        return ('a', 'b')\n"
        "class Needs(Judged):\n    name = 'needs_judge'\n    needs_judge = True"
    )
    namespace: dict[str, Any] = {}
    exec(DECLARATION_PLUGIN.format(body=body, hook="unused", cls=""), namespace)

    class Plugin:
        @staticmethod
        @hookimpl
        def prefcore_register_preference_models():
            return [namespace["Aspects"], namespace["Model"]]

        @staticmethod
        @hookimpl
        def prefcore_register_evaluators():
            return [namespace["Needs"]]

    registry = _registry_with(Plugin)
    assert registry.errors == []
    assert registry.names("preference_model") == ["aspects_model", "declared_model"]
    assert registry.create("preference_model", "aspects_model").num_heads() == 2


def test_registration_calls_go_through_pluggy_tracing_and_wrappers() -> None:
    """Each plugin's registration hook is called through pluggy, so tracing and wrappers see it."""

    class One:
        @staticmethod
        @hookimpl
        def prefcore_register_usage_objectives():
            return [_Toy]

    class Crashing:
        @staticmethod
        @hookimpl
        def prefcore_register_usage_objectives():
            raise RuntimeError("boom")

    seen: list[str] = []

    class Wrapper:
        @staticmethod
        @hookimpl(wrapper=True)
        def prefcore_register_usage_objectives():
            result = yield
            seen.append(f"returned {result!r}")
            return result

    manager = PrefcorePluginManager()
    manager.register_plugin(One, Provenance(plugin="one"))
    manager.register_plugin(Crashing, Provenance(plugin="crashing"))
    manager.register_plugin(Wrapper, Provenance(plugin="wrapper"))
    traced: list[str] = []
    manager.trace.root.setwriter(traced.append)
    undo = manager.enable_tracing()
    try:
        registry = Registry(manager)
    finally:
        undo()

    assert registry.names("usage") == ["toy"]
    [error] = registry.errors  # the crash is attributed to its own plugin; the wrapper is no plugin of methods
    assert error.plugin == "crashing" and "RuntimeError: boom" in str(error)
    assert seen == [f"returned {[[_Toy]]!r}"]  # the wrapper saw the call that succeeded
    calls = [line for line in traced if "prefcore_register_usage_objectives" in line]
    assert len([line for line in calls if "finish" not in line]) == 2  # one traced call per implementation


def test_a_wrapper_can_change_what_a_plugin_registers() -> None:
    class One:
        @staticmethod
        @hookimpl
        def prefcore_register_usage_objectives():
            return [_Toy]

    class Hide:
        @staticmethod
        @hookimpl(wrapper=True)
        def prefcore_register_usage_objectives():
            yield
            return []

    registry = _registry_with(One, Hide)
    assert registry.names("usage") == [] and registry.errors == []


def test_same_class_from_two_modules_is_not_a_conflict() -> None:
    class One:
        @staticmethod
        @hookimpl
        def prefcore_register_usage_objectives():
            return [_Toy]

    class Two:
        @staticmethod
        @hookimpl
        def prefcore_register_usage_objectives():
            return [_Toy]

    registry = _registry_with(One, Two)
    assert registry.errors == []
    assert registry.names("usage") == ["toy"]


def test_misspelled_hook_drops_only_that_plugin(make_distribution) -> None:
    source = "from prefcore import hookimpl\n@hookimpl\ndef prefcore_register_usage_objective():\n    return []\n"
    make_distribution("typo-dist", "1.0", {"typo": "typo_mod"}, {"typo_mod": source})
    make_distribution("good-dist", "1.0", {"good": "good_plugin_mod"}, {"good_plugin_mod": usage_plugin("good_loss")})
    manager = get_plugin_manager(third_party=True)
    [error] = manager.load_errors
    assert isinstance(error, PluginValidationError)
    assert error.plugin == "typo"
    assert error.distribution == "typo-dist 1.0"
    assert "unknown hook 'prefcore_register_usage_objective'" in str(error)
    assert not manager.has_plugin("typo")
    assert "good_loss" in Registry(manager).names("usage")


def test_created_methods_know_their_plugin(make_distribution) -> None:
    """Errors raised while a method runs (a NaN loss, say) can then name its plugin and distribution."""
    make_distribution(
        "acme-prefs", "0.3.1", {"acme": "acme_prefs_plugin"}, {"acme_prefs_plugin": usage_plugin("acme_loss")}
    )
    method = Registry.from_environment(third_party=True).create("usage", "acme_loss")
    assert method.provenance == Provenance("acme", "acme-prefs", "0.3.1", "acme = acme_prefs_plugin")
    assert method.label() == "usage objective 'acme_loss'"
    assert method.origin() == "plugin 'acme' from distribution acme-prefs 0.3.1"
    direct = _Toy()
    assert direct.provenance is None
    assert __name__.rsplit(".", 1)[-1] in direct.origin()

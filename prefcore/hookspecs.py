"""Hook specifications: the whole surface a prefcore plugin can implement.

Sections follow the order in which hooks fire. Implementations may accept any subset of
a hook's arguments (pluggy's rule), so adding an argument here never breaks a plugin.
Plugins mark implementations with ``prefcore.hookimpl``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import pluggy

if TYPE_CHECKING:
    from prefcore.methods import AggregationRule
    from prefcore.methods import Evaluator
    from prefcore.methods import FeedbackSource
    from prefcore.methods import PreferenceModel
    from prefcore.methods import UsageObjective

hookspec = pluggy.HookspecMarker("prefcore")


# -------------------------------------------------------------------------
# Set-up hooks: called once when the plugin manager is built
# -------------------------------------------------------------------------


@hookspec(historic=True)
def prefcore_add_hookspecs(plugin_manager: pluggy.PluginManager) -> None:
    """Let a plugin add hook specifications of its own for other plugins to implement.

    :param plugin_manager: the prefcore plugin manager; call ``add_hookspecs`` on it.

    Historic: plugins registered later are called back at registration time.
    """


# -------------------------------------------------------------------------
# Registration hooks: each returns method classes of one plugin kind
# -------------------------------------------------------------------------


@hookspec
def prefcore_register_feedback() -> list[type[FeedbackSource]]:
    """Register feedback sources and formats (human files, annotators, AI judges, rules).

    :return: ``FeedbackSource`` subclasses, each with a unique lowercase ``name`` and a
        dataclass ``config_cls``.
    """


@hookspec
def prefcore_register_preference_models() -> list[type[PreferenceModel]]:
    """Register preference-model objectives (Bradley–Terry, margins, ensembles, ...).

    :return: ``PreferenceModel`` subclasses, each with a unique lowercase ``name`` and a
        dataclass ``config_cls``.
    """


@hookspec
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    """Register usage objectives: the losses that train a policy (DPO, KTO, SFT, PPO, ...).

    :return: ``UsageObjective`` subclasses, each with a unique lowercase ``name`` and a
        dataclass ``config_cls``.
    """


@hookspec
def prefcore_register_evaluators() -> list[type[Evaluator]]:
    """Register evaluators (judge win rate, preference accuracy, KL, samples, ...).

    :return: ``Evaluator`` subclasses, each with a unique lowercase ``name`` and a
        dataclass ``config_cls``.
    """


@hookspec
def prefcore_register_aggregation_rules() -> list[type[AggregationRule]]:
    """Register aggregation rules: how many annotators' votes on one pair become its training target.

    A feedback source's ``aggregation`` option selects one (majority, soft label, per-group
    rules); they are not a pipeline stage of their own.

    :return: ``AggregationRule`` subclasses, each with a unique lowercase ``name`` and a
        dataclass ``config_cls``.
    """


# -------------------------------------------------------------------------
# Run lifecycle hooks: notifications for loggers and callbacks, in firing order
#
# The pipeline calls each implementation on its own (``prefcore.engine.lifecycle``): an
# exception in one is logged once with the plugin's name and the hook, and neither stops
# the run nor keeps the other listeners from being called. KeyboardInterrupt and
# SystemExit pass through.
# -------------------------------------------------------------------------


@hookspec
def prefcore_run_start(run_dir: Path, config: Mapping[str, Any]) -> None:
    """Called once before the first step of a run (also when a run resumes).

    :param run_dir: the run folder where metrics, checkpoints and reports go.
    :param config: the fully resolved run configuration, as plain data.
    """


@hookspec
def prefcore_train_step_end(run_dir: Path, step: int, metrics: Mapping[str, float]) -> None:
    """Called after every optimiser step.

    :param run_dir: the run folder.
    :param step: the optimiser step just completed, counted from 1.
    :param metrics: loss and the objective's named metrics for this step.
    """


@hookspec
def prefcore_evaluation_end(run_dir: Path, step: int, metrics: Mapping[str, float]) -> None:
    """Called after each evaluation pass.

    :param run_dir: the run folder.
    :param step: the optimiser step at which the evaluation ran.
    :param metrics: every evaluator's metrics, keyed ``<evaluator>/<metric>``.
    """


@hookspec
def prefcore_checkpoint_saved(run_dir: Path, step: int, path: Path) -> None:
    """Called after a checkpoint has been written completely (atomically renamed).

    :param run_dir: the run folder.
    :param step: the optimiser step the checkpoint holds.
    :param path: the checkpoint folder.
    """


@hookspec
def prefcore_run_end(run_dir: Path, metrics: Mapping[str, float]) -> None:
    """Called once when a run finishes successfully.

    :param run_dir: the run folder.
    :param metrics: the final evaluation metrics.
    """


REGISTRATION_HOOKS: dict[str, str] = {
    "feedback": "prefcore_register_feedback",
    "preference_model": "prefcore_register_preference_models",
    "usage": "prefcore_register_usage_objectives",
    "evaluation": "prefcore_register_evaluators",
    "aggregation": "prefcore_register_aggregation_rules",
}
"""Plugin kind → the registration hook that returns its method classes."""

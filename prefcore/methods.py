"""The plugin kinds and the base class each registered method derives from.

Four kinds are the pipeline's stages, each selected by a run-file section (``KINDS``); a
fifth, ``aggregation``, is a rule that a feedback source applies to many annotators' votes
(its ``aggregation`` option names one), so it has no section of its own (``PLUGIN_KINDS``).

A method is a class with a unique lowercase ``name`` and a typed ``config_cls`` (a
dataclass whose fields carry a one-line ``doc`` in their metadata). The registry indexes
methods by ``(kind, name)``; everything a method needs at run time arrives through its
config or through the objects the engine hands it, never through globals.
"""

from __future__ import annotations

import abc
import dataclasses
import inspect
import math
import re
from typing import TYPE_CHECKING
from typing import Any
from typing import ClassVar

from prefcore.errors import ConfigError

if TYPE_CHECKING:
    from prefcore.aggregation import PairVotes
    from prefcore.aggregation import Target
    from prefcore.batch import LogProbBatch
    from prefcore.batch import LossOutput
    from prefcore.engine.reward_model import ScoringRule
    from prefcore.evaluation import EvaluationContext
    from prefcore.evaluation import EvaluationResult
    from prefcore.preference import RewardBatch
    from prefcore.registry import Provenance

__all__ = [
    "BASE_CLASSES",
    "KINDS",
    "KIND_TITLES",
    "METHOD_NAME",
    "PLUGIN_KINDS",
    "AggregationRule",
    "Evaluator",
    "FeedbackSource",
    "Method",
    "NoOptions",
    "PreferenceModel",
    "UsageObjective",
    "check_finite",
    "check_in_range",
    "check_non_negative",
    "check_positive",
    "declaration_problem",
    "option",
]

KINDS: tuple[str, ...] = ("feedback", "preference_model", "usage", "evaluation")
"""Plugin kinds in pipeline order: feedback → preference model → usage → evaluation; each a run-file section."""

PLUGIN_KINDS: tuple[str, ...] = (*KINDS, "aggregation")
"""Every kind the registry collects: the pipeline's four, and the aggregation rules feedback sources apply."""

KIND_TITLES: dict[str, str] = {
    "feedback": "feedback source",
    "preference_model": "preference model",
    "usage": "usage objective",
    "evaluation": "evaluator",
    "aggregation": "aggregation rule",
}

METHOD_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def option(default: Any = dataclasses.MISSING, *, doc: str, **kwargs: Any) -> Any:
    """A config field with a one-line doc, shown by ``prefcore info``.

    Arguments:
        default: the default value (omit for a required field).
        doc: one line saying what the option does.
        kwargs: passed to ``dataclasses.field`` (e.g. ``default_factory``).
    """
    return dataclasses.field(default=default, metadata={"doc": doc}, **kwargs)


# ----------------------------------------------------------------------------------------------
# Option checks for a config's ``__post_init__``: the error names the option, the method and the value
# ----------------------------------------------------------------------------------------------


def check_finite(method: str, name: str, value: float) -> None:
    """``value`` must be a real, finite number (not a bool, NaN or ±inf), as a run file requires."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(
            f"{name} must be a finite number for objective {method!r}. Got {value!r}.", method=method, field=name
        )


def check_positive(method: str, name: str, value: float) -> None:
    """``value`` must be finite and > 0 (a temperature, a scale, β)."""
    check_finite(method, name, value)
    if not value > 0:
        raise ConfigError(f"{name} must be > 0 for objective {method!r}. Got {value}.", method=method, field=name)


def check_non_negative(method: str, name: str, value: float) -> None:
    """``value`` must be finite and >= 0 (a coefficient that 0 switches off)."""
    check_finite(method, name, value)
    if not value >= 0:
        raise ConfigError(f"{name} must be >= 0 for objective {method!r}. Got {value}.", method=method, field=name)


def check_in_range(method: str, name: str, value: float, low: float, high: float, *, closed: str = "[)") -> None:
    """``value`` must lie between ``low`` and ``high``; ``closed`` (``[)``, ``[]``, ``()``, ``(]``) names the ends."""
    above = value >= low if closed[0] == "[" else value > low
    below = value <= high if closed[1] == "]" else value < high
    if not (above and below):
        interval = f"{closed[0]}{low}, {high}{closed[1]}"
        raise ConfigError(
            f"{name} must be in {interval} for objective {method!r}. Got {value}.", method=method, field=name
        )


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """Config of a method that takes no options."""


class Method:
    """Base of every registered method: a name, a kind and a typed config."""

    name: ClassVar[str]
    kind: ClassVar[str]
    config_cls: ClassVar[type] = NoOptions

    provenance: Provenance | None = None
    """The plugin and distribution this instance was created from; ``Registry.create`` sets it,
    so that an error in the method (a NaN loss, say) can say whose method it is."""

    def __init__(self, config: Any | None = None) -> None:
        if config is None:
            config = self.config_cls()
        if not isinstance(config, self.config_cls):
            raise TypeError(
                f"{self.kind} method {self.name!r} expects a {self.config_cls.__name__}, got {type(config).__name__}."
            )
        self.config = config

    def label(self) -> str:
        """``usage objective 'dpo'``: how errors name this method."""
        return f"{KIND_TITLES.get(self.kind, self.kind)} {self.name!r}"

    def origin(self) -> str:
        """Where this method comes from, for errors: its plugin and distribution, or its module."""
        if self.provenance is not None:
            return self.provenance.describe()
        return f"module {type(self).__module__} (not created through the plugin registry)"

    @classmethod
    def summary(cls) -> str:
        """First line of the class docstring: the one-line doc of ``prefcore list``."""
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


class FeedbackSource(Method, abc.ABC):
    """Produces typed preference records: from files, annotators, judges or rules."""

    kind: ClassVar[str] = "feedback"

    @abc.abstractmethod
    def records(self) -> Any:
        """Yield the feedback records this source provides (see ``prefcore.data``)."""

    def judge(self) -> Any:
        """A pairwise judge ``judge(prompt, first, second) -> P(first better)`` if this source can
        label new completions (rules, AI judges, reward models); None for fixed data."""
        return None

    def scorer(self) -> Any:
        """A pointwise reward ``scorer(prompts, completions) -> one float per completion`` if this
        source can score new completions on its own (rules, checkers, reward models); None for
        fixed data. A scorer that also takes the keyword ``answers`` receives each completion's
        reference answer(s). Online rewards use it (``[[reward]] kind = "rule"``, ``prefcore.rewards``)."""
        return None

    def evaluation_prompts(self) -> Any:
        """Held-out prompts this source reserves for evaluation, or None to split its records."""
        return None

    def heldout_records(self) -> Any:
        """Records of the reserved prompts (e.g. with reference answers), added to the held-out records; or None."""
        return None

    def demonstrations(self) -> Any:
        """Records for an SFT warm start (e.g. demonstrations), or None when the source has none."""
        return None


class PreferenceModel(Method, abc.ABC):
    """Learns to score completions from preference feedback (a reward model).

    Everything the engine reads from a preference model is declared here, with the default
    that fits a one-head reward network; override what differs:

    - ``data_formats``: the item layouts the loss accepts (``pairwise``, ``listwise``,
      ``unpaired``, ``stepwise``), preferred first;
    - ``aspects``: head names, one head per aspect (a pair's ``aspect`` picks its head), or None;
    - ``num_heads()``: scalar heads of the reward network (one per aspect, else 1);
    - ``scoring_rule()``: how the trained network scores new completions, or None for the default;
    - ``implicit_reward_beta()``: β when the network is a policy's implicit reward
      β·log(π/π_ref) rather than heads on a backbone, else None;
    - ``loss(batch)``: the one method every preference model writes.
    """

    kind: ClassVar[str] = "preference_model"
    data_formats: ClassVar[tuple[str, ...]] = ("pairwise",)

    @property
    def aspects(self) -> tuple[str, ...] | None:
        """Names of the reward heads in order, or None for one unnamed head."""
        return None

    def num_heads(self) -> int:
        """Scalar reward heads this configured objective trains (one per aspect, else 1)."""
        aspects = self.aspects
        return len(aspects) if aspects else 1

    def scoring_rule(self) -> ScoringRule | None:
        """How the trained network turns its heads into one score (``prefcore.engine.reward_model.ScoringRule``).

        None keeps the network's default: the mean of its heads at the last completion token.
        """
        return None

    def implicit_reward_beta(self) -> float | None:
        """β of an implicit reward β·log(π/π_ref): the engine then trains a policy against a
        frozen copy (``ImplicitRewardModel``) instead of heads on a backbone. None: heads."""
        return None

    @abc.abstractmethod
    def loss(self, batch: RewardBatch) -> LossOutput:
        """The scalar training loss of the reward network and named metrics (e.g. ``accuracy``)."""


class UsageObjective(Method, abc.ABC):
    """Turns preferences into a training loss for the policy, on per-token log-probs.

    Class attributes tell the engine what to prepare:
    ``data_formats``: the batch layouts the loss accepts, preferred first
    (``pairwise``, ``unpaired``, ``listwise``, ``sft``); ``needs_reference``: whether
    ``loss`` reads reference log-probs (override ``uses_reference`` if a config option
    decides it).
    """

    kind: ClassVar[str] = "usage"
    data_formats: ClassVar[tuple[str, ...]] = ("pairwise",)
    needs_reference: ClassVar[bool] = False

    def uses_reference(self) -> bool:
        """Whether this configured instance reads reference log-probs."""
        return self.needs_reference

    def implicit_reward_beta(self) -> float | None:
        """β of the implicit reward β·log(π/π_ref) this configured objective trains and reports, or None.

        Evaluators read it for their reward metrics on held-out pairs. The bases in
        ``prefcore.objectives`` return ``config.beta``; an objective without an implicit
        reward (SFT) keeps None.
        """
        return None

    def transform_records(self, records: list[Any]) -> list[Any]:
        """Rewrite feedback records before tokenisation (e.g. hindsight prefixes); default: unchanged."""
        return records

    def generation_prefix(self) -> str:
        """Text put before the prompt at generation time (conditioned methods); default: none."""
        return ""

    @abc.abstractmethod
    def loss(self, batch: LogProbBatch) -> LossOutput:
        """The scalar training loss (mean over the batch's comparisons) and named metrics."""


class Evaluator(Method, abc.ABC):
    """Measures a policy: win rates, preference accuracy, KL, samples."""

    kind: ClassVar[str] = "evaluation"
    needs_judge: ClassVar[bool] = False
    """True when the evaluator cannot run without the run's pairwise judge (``win_rate``); the run
    file is then refused before any work unless a judge is configured or the feedback gives one."""

    @abc.abstractmethod
    def evaluate(self, context: EvaluationContext) -> EvaluationResult:
        """Metrics (and sample rows) for the policy in ``context``."""


class AggregationRule(Method, abc.ABC):
    """Turns many annotators' votes on one pair into one training target (``prefcore.aggregation``).

    A feedback source that reads annotator votes applies the rule its ``aggregation`` option
    names to each pair's ``PairVotes``; the rule returns the first side's target share (hard
    or soft) or drops the pair with a reason, which is counted.
    """

    kind: ClassVar[str] = "aggregation"

    @abc.abstractmethod
    def aggregate(self, votes: PairVotes) -> Target:
        """The training target of one pair's votes, or ``Target.drop(reason)``."""


BASE_CLASSES: dict[str, type[Method]] = {
    "feedback": FeedbackSource,
    "preference_model": PreferenceModel,
    "usage": UsageObjective,
    "evaluation": Evaluator,
    "aggregation": AggregationRule,
}


# ----------------------------------------------------------------------------------------------
# The declared protocol of each kind, checked at registration
# ----------------------------------------------------------------------------------------------

_CHECKED_ELSEWHERE = frozenset({"name", "kind", "config_cls", "provenance"})
"""Members the registry checks on their own (``name``, ``config_cls``) or sets (``provenance``)."""


def declaration_problem(method_cls: type[Method]) -> str | None:
    """Where ``method_cls`` overrides a member of its base differently from how the engine uses it, or None.

    The bases in this module declare everything the engine reads from a method: methods it
    calls (``num_heads()``, ``judge()``), properties it reads (``aspects``) and class
    attributes it reads from the class (``data_formats``, ``needs_reference``,
    ``needs_judge``). The registry refuses a class that, say, sets ``num_heads = 2`` or
    ``needs_judge = "yes"`` with this sentence, naming the plugin, instead of the run
    failing later on a ``TypeError``.
    """
    declared: dict[str, tuple[type, Any]] = {}
    for base in reversed(method_cls.__mro__):  # the closest base's declaration wins
        if base.__module__ == __name__:
            for attribute, value in vars(base).items():
                if not attribute.startswith("_") and attribute not in _CHECKED_ELSEWHERE:
                    declared[attribute] = (base, value)
    for attribute, (base, value) in sorted(declared.items()):
        actual = inspect.getattr_static(method_cls, attribute)
        if actual is value:
            continue
        problem = _member_problem(method_cls, attribute, value, actual)
        if problem:
            return f"{problem} (declared by prefcore.{base.__name__}.{attribute})"
    return None


def _member_problem(method_cls: type, attribute: str, declared: Any, actual: Any) -> str | None:
    if isinstance(declared, property):
        if inspect.isfunction(actual):
            return (
                f"defines {attribute}() as a method, but the engine reads {attribute} as a value: make it a @property"
            )
        return None
    if inspect.isfunction(declared) or isinstance(declared, (classmethod, staticmethod)):
        if isinstance(actual, property) or not callable(getattr(method_cls, attribute)):
            return f"sets {attribute} to {_describe(actual)}, but the engine calls {attribute}(): define a method"
        return None
    if isinstance(actual, property):
        return f"makes {attribute} a property, but the engine reads it from the class: set a class attribute"
    if isinstance(declared, bool):
        if not isinstance(actual, bool):
            return f"sets {attribute} to {_describe(actual)}; it must be True or False"
        return None
    names = isinstance(actual, tuple) and actual and all(isinstance(item, str) and item for item in actual)
    if isinstance(declared, tuple) and not names:
        return f"sets {attribute} to {_describe(actual)}; it must be a non-empty tuple of names, e.g. {declared!r}"
    return None


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})" if not isinstance(value, property) else "a property"

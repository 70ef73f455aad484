"""Online rewards: any scorer prefcore has, weighted, combined and checked, scoring rollouts.

An online objective improves a policy against a reward. Everything in prefcore that scores a
completion is one: a preference model trained earlier (saved, or by this run), an ensemble
of them, the implicit reward of a DPO-trained policy, and any feedback plugin that scores new
completions on its own (a rule, a verifiable-answer checker, a user's Python function). A
run file lists them as ``[[reward]]`` entries; their weighted sum is the reward, and each
component is logged on its own (``reward/<name>``):

    [[reward]]                      # right answers, checked against the prompt's reference
    kind = "verifiable"             # verifiable_answers' options: mode, extract, tolerance, ...
    mode = "numeric"

    [[reward]]
    kind = "preference_model"       # a reward model: a saved folder, or "trained" (this run's)
    path = "trained"
    weight = 0.5

    [[reward]]                      # weight 0: logged (e.g. a gold score) but not optimised
    kind = "rule"
    method = "my_reward"            # a feedback plugin whose scorer() scores completions
    weight = 0.0

Costs (constrained RLHF, Safe-RLHF): an entry's ``role`` is ``"reward"`` (the default) or
``"cost"``. The total sums the reward-role components only; the cost-role components are
kept apart, and the episode cost is their sum, each entry contributing weight·score (so
``weight = -1`` turns a safety model's "higher = safer" score into a cost). They are logged as
``cost/<name>`` with ``cost/mean`` and ``cost/std``, and only an online objective that
uses costs (``uses_costs = True``, e.g. ``safe_rlhf``) accepts them.

    [[reward]]                      # the episode cost: 1 for an unsafe reply, 0 for a safe one
    kind = "rule"
    method = "demo_rule"
    score = "harm"
    role = "cost"

Kinds (``REWARD_KINDS``) and their keys besides ``kind``, ``name``, ``weight`` and ``role``:

    preference_model   path = "<folder saved by RewardModel.save / ImplicitRewardModel.save>"
                       or "trained" (the [preference_model] of this run, ensembles included)
    ensemble           paths = [folders], combine = "mean" | "min" | "mean_minus_std", penalty = λ
    implicit_dpo       policy = "<folder>", reference = "<folder>", beta: β·(log π − log π_ref)
    rule               method = "<feedback plugin with a scorer>" plus that plugin's options
    verifiable         verifiable_answers' options (mode, extract, tolerance, ..., correct_reward)

The scoring interface is the one the plugin kinds already have, not a new hook: a feedback
source's ``scorer()`` (declared on ``prefcore.methods.FeedbackSource`` beside ``judge()``,
None by default) returns a ``prefcore.evaluation.Scorer``, ``scorer(prompts, completions) ->
one float per completion``, the same shape as a reward network's ``scorer()``. A scorer that
also takes the keyword ``answers`` receives each completion's reference answer(s) (the
prompt record's ``metadata["answer"]``): verifiable checkers need them, models do not, and an
optional keyword keeps every existing scorer valid. So a third party's reward function is
one feedback plugin file whose ``scorer()`` returns the function, used as ``kind = "rule"``.
An AI judge plugin (``llm_judge``) is pairwise (``judge()``) and offers no pointwise score:
it labels preferences for online DPO, not rewards.

``plan_rewards`` checks the whole ``[[reward]]`` list before any work and loads no model;
``build_reward`` loads what the plan names and returns a ``CombinedReward``:

    CombinedReward(prompts, completions, answers) -> RewardScores(total [S], {name: [S]})
    total = Σ_{k: role reward} weight_k · component_k
    cost  = Σ_{k: role cost} components[k]          (a cost component's entry is weight_k · score_k)

A NaN or infinite score raises ``RewardError`` naming the component, the sample index and
its prompt; a scorer that fails is reported the same way.
"""

from __future__ import annotations

import difflib
import inspect
import json
import math
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any
from typing import NamedTuple

from prefcore.errors import ConfigError
from prefcore.errors import PrefcoreError
from prefcore.evaluation import Scorer
from prefcore.evaluation import check_scorer
from prefcore.evaluation import prompt_display
from prefcore.lazy import lazy_module
from prefcore.methods import METHOD_NAME
from prefcore.methods import FeedbackSource

if TYPE_CHECKING:
    from prefcore.config import RunConfig
    from prefcore.registry import Registry
    from prefcore.rollout import Rollouts

torch = lazy_module("torch")

__all__ = [
    "ENSEMBLE_COMBINES",
    "REWARD_KINDS",
    "ROLES",
    "SECTION",
    "TRAINED",
    "CombinedReward",
    "RewardComponent",
    "RewardError",
    "RewardPlan",
    "RewardScores",
    "RewardSpec",
    "build_reward",
    "can_score",
    "plan_rewards",
    "takes_answers",
]

SECTION = "reward"
REWARD_KINDS: tuple[str, ...] = ("preference_model", "ensemble", "implicit_dpo", "rule", "verifiable")
TRAINED = "trained"
ROLES: tuple[str, ...] = ("reward", "cost")
"""What a component is: part of the reward the policy maximises, or of the cost a constraint bounds."""
ENSEMBLE_COMBINES: tuple[str, ...] = ("mean", "min", "mean_minus_std")
VERIFIABLE_PLUGIN = "verifiable_answers"
RESERVED_NAMES = ("mean", "std")
"""Component names the total's metrics use (``reward/mean``, ``reward/std``)."""
REWARD_METADATA = "reward_model.json"
REWARD_FOLDER_KINDS = ("reward_model", "implicit_reward_model")
COMMON_KEYS = ("kind", "name", "weight", "role")
KIND_KEYS: Mapping[str, tuple[str, ...]] = {
    "preference_model": ("path",),
    "ensemble": ("paths", "combine", "penalty"),
    "implicit_dpo": ("policy", "reference", "beta"),
}
VERIFIABLE_REFUSED = {
    "path": "a reward checks the rollouts, not a file of completions",
    "output": "a reward scores each completion; 'output' shapes feedback records",
    "unanswered": "a reward scores an unanswered completion with unanswered_reward",
}

EXAMPLE = (
    "For example\n"
    "  [[reward]]\n"
    '  kind = "verifiable"      # or "preference_model" (path = "<folder>" or "trained"), "ensemble", '
    '"implicit_dpo", "rule"\n'
    '  mode = "numeric"'
)


class RewardError(PrefcoreError, ValueError):
    """A reward component failed or gave a non-finite score; names the component, the sample and its prompt."""

    def __init__(self, message: str, *, component: str, index: int | None = None, prompt: Any = None) -> None:
        super().__init__(message)
        self.component = component
        self.index = index
        self.prompt = prompt


def can_score(source: FeedbackSource | type[FeedbackSource]) -> bool:
    """Whether a feedback plugin scores new completions on its own (it overrides ``scorer()``)."""
    cls = source if isinstance(source, type) else type(source)
    return cls.scorer is not FeedbackSource.scorer


def takes_answers(scorer: Any) -> bool:
    """Whether ``scorer`` accepts the keyword ``answers`` (the completions' reference answers)."""
    try:
        parameters = inspect.signature(scorer).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        (p.name == "answers" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)) or p.kind is p.VAR_KEYWORD
        for p in parameters
    )


# ----------------------------------------------------------------------------------------------
# The plan: [[reward]] checked without loading a model
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RewardSpec:
    """One checked ``[[reward]]`` entry.

    Attributes:
        name: the component's name (its metric is ``reward/<name>``).
        kind: one of ``REWARD_KINDS``.
        weight: its weight in the sum (0: logged only; negative: a penalty).
        role: ``"reward"`` (summed into the reward) or ``"cost"`` (summed into the episode cost).
        source: the configured feedback plugin of ``rule`` and ``verifiable``.
        path: ``preference_model``: a saved folder or ``"trained"``.
        paths: ``ensemble``: the members' folders.
        combine, penalty: ``ensemble``: how members combine, and λ of ``mean_minus_std``.
        policy, reference, beta: ``implicit_dpo``: the two model folders and β.
    """

    name: str
    kind: str
    weight: float = 1.0
    role: str = "reward"
    source: FeedbackSource | None = None
    path: str | None = None
    paths: tuple[str, ...] = ()
    combine: str = "mean"
    penalty: float = 0.0
    policy: str | None = None
    reference: str | None = None
    beta: float = 0.1


@dataclass(frozen=True)
class RewardPlan:
    """The checked ``[[reward]]`` list; ``build_reward(plan, ...)`` makes the ``CombinedReward``."""

    specs: tuple[RewardSpec, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.specs)

    @property
    def cost_names(self) -> tuple[str, ...]:
        """The components of role ``cost`` (empty without costs)."""
        return tuple(spec.name for spec in self.specs if spec.role == "cost")

    @property
    def needs_trained_model(self) -> bool:
        """Whether a component is the preference model this run trains (``path = "trained"``)."""
        return any(spec.path == TRAINED for spec in self.specs)

    def __bool__(self) -> bool:
        return bool(self.specs)


def _entries(config: RunConfig | Sequence[Mapping[str, Any]] | Mapping[str, Any] | None) -> list[Any]:
    if config is None:
        return []
    if hasattr(config, "settings"):
        config = config.settings.get(SECTION)  # type: ignore[union-attr]
        if config is None:
            return []
    if isinstance(config, Mapping):
        return [config]
    return list(config)


def plan_rewards(
    config: RunConfig | Sequence[Mapping[str, Any]] | Mapping[str, Any] | None,
    registry: Registry | None = None,
    *,
    has_trained_model: bool | None = None,
    required_by: str | None = None,
    where: str | None = None,
    allow_costs: bool = False,
) -> RewardPlan:
    """Check every ``[[reward]]`` entry and the list as a whole; load no model.

    Raises ``ConfigError`` naming the file, the entry, the key and what to write instead: an
    unknown kind or key, a missing path, a folder that holds no saved model, a plugin that
    cannot score, duplicate names, weights that are all 0. A plan that passes builds without
    a config error (``path = "trained"`` then needs the run's trained scorer).

    Arguments:
        config: the parsed run file (its ``reward`` setting: a list of tables, or one table), or
            the entries themselves.
        registry: the plugins (default: a fresh one from the environment).
        has_trained_model: whether the run trains a ``[preference_model]`` (read from a
            ``RunConfig`` when None; False for bare entries).
        required_by: the online objective that needs rewards; an empty list is then refused.
        where: how errors name the file (default: the run config's source).
        allow_costs: whether entries of role ``cost`` are accepted (the objective uses costs).
    """
    if where is None:
        source = getattr(config, "source", None)
        where = f"{source}: " if source else ""
    if has_trained_model is None:
        has_trained_model = bool(config.selected("preference_model")) if hasattr(config, "selected") else False
    entries = _entries(config)
    if not entries:
        if required_by:
            raise ConfigError(
                f"{where}usage objective {required_by!r} trains online against a reward, but the run file has no "
                f"[[reward]]. {EXAMPLE}.",
                method=required_by,
                field=SECTION,
            )
        return RewardPlan()
    if registry is None:
        from prefcore.registry import Registry

        registry = Registry.from_environment()
    specs: list[RewardSpec] = []
    for index, entry in enumerate(entries):
        label = f"{where}[[reward]] #{index + 1}"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{label} must be a table; got {entry!r}.", field=SECTION)
        specs.append(_plan_entry(label, dict(entry), registry, has_trained_model))
    seen: dict[str, int] = {}
    for index, spec in enumerate(specs):
        if spec.name in seen:
            raise ConfigError(
                f"{where}[[reward]] #{index + 1} and #{seen[spec.name] + 1} are both named {spec.name!r}; each "
                'component is logged by name (reward/<name>): give them distinct name = "...".',
                field=f"{SECTION}.name",
            )
        seen[spec.name] = index
    for index, spec in enumerate(specs):
        if spec.role == "cost" and not allow_costs:
            by = f"usage objective {required_by!r}" if required_by else "this run"
            raise ConfigError(
                f"{where}[[reward]] #{index + 1} ({spec.name!r}) has role = 'cost', but {by} does not use costs; "
                "costs are for a constrained objective (e.g. method = 'safe_rlhf'). Drop the role, or give the "
                "entry weight = 0 to log it as a score.",
                field=f"{SECTION}.role",
            )
    rewards = [spec for spec in specs if spec.role == "reward"]
    if all(spec.weight == 0 for spec in rewards):
        which = "reward-role [[reward]]" if len(rewards) < len(specs) else "[[reward]]"
        raise ConfigError(
            f"{where}every {which} has weight 0, so the reward is always 0; give at least one a nonzero weight.",
            field=f"{SECTION}.weight",
        )
    return RewardPlan(tuple(specs))


def _plan_entry(label: str, entry: dict[str, Any], registry: Registry, has_trained_model: bool) -> RewardSpec:
    kind = entry.pop("kind", None)
    if kind not in REWARD_KINDS:
        raise ConfigError(_kind_problem(label, kind), field=f"{SECTION}.kind")
    weight = entry.pop("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
        raise ConfigError(f"{label}: weight must be a finite number; got {weight!r}.", field=f"{SECTION}.weight")
    name = entry.pop("name", None)
    role = entry.pop("role", "reward")
    if role not in ROLES:
        raise ConfigError(
            f"{label}: role = {role!r} is not a role; use one of {', '.join(repr(r) for r in ROLES)} (default "
            "'reward': summed into the reward; 'cost': summed into the episode cost a constraint bounds).",
            field=f"{SECTION}.role",
        )
    label = f"{label} (kind = {kind!r})"
    if kind in KIND_KEYS:
        _refuse_unknown(label, entry, KIND_KEYS[kind])
    if kind == "preference_model":
        spec = _plan_preference_model(label, entry, has_trained_model)
    elif kind == "ensemble":
        spec = _plan_ensemble(label, entry)
    elif kind == "implicit_dpo":
        spec = _plan_implicit(label, entry)
    elif kind == "rule":
        spec = _plan_rule(label, entry, registry)
    else:
        spec = _plan_verifiable(label, entry, registry)
    name = spec.name if name is None else name
    if not isinstance(name, str) or not METHOD_NAME.match(name) or name in RESERVED_NAMES:
        raise ConfigError(
            f"{label}: name must be lowercase letters, digits and underscores, starting with a letter, and not "
            f"{' or '.join(RESERVED_NAMES)}; got {name!r}.",
            field=f"{SECTION}.name",
        )
    return replace(spec, name=name, weight=float(weight), role=role)


def _kind_problem(label: str, kind: Any) -> str:
    kinds = ", ".join(repr(k) for k in REWARD_KINDS)
    if kind is None:
        return f"{label} needs a 'kind': one of {kinds}. {EXAMPLE}."
    message = f"{label}: kind = {kind!r} is not a reward kind; use one of {kinds}."
    close = difflib.get_close_matches(str(kind), REWARD_KINDS, n=1, cutoff=0.5)
    if close:
        message += f" Did you mean {close[0]!r}?"
    return message


def _refuse_unknown(label: str, options: Mapping[str, Any], accepted: Sequence[str]) -> None:
    unknown = sorted(set(options) - set(accepted))
    if not unknown:
        return
    message = f"{label} has no option {unknown[0]!r}. Accepted: {', '.join((*COMMON_KEYS, *accepted))}."
    close = difflib.get_close_matches(unknown[0], accepted, n=1)
    if close:
        message += f" Did you mean {close[0]!r}?"
    raise ConfigError(message, field=f"{SECTION}.{unknown[0]}")


def _text(label: str, options: Mapping[str, Any], key: str, hint: str) -> str:
    value = options.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(f'{label} needs {key} = "<...>": {hint}.', field=f"{SECTION}.{key}")
    return value


def _check_reward_folder(label: str, key: str, folder: str) -> None:
    path = Path(folder)
    try:
        kind = json.loads((path / REWARD_METADATA).read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        kind = None
    if kind not in REWARD_FOLDER_KINDS:
        what = (
            "is not a folder" if not path.is_dir() else f"holds no saved reward model (no readable {REWARD_METADATA})"
        )
        raise ConfigError(
            f'{label}: {key} = "{folder}" {what}. Give a folder written by RewardModel.save or '
            'ImplicitRewardModel.save (a run saves its own in RUN_DIR/reward_model/model), or path = "trained".',
            field=f"{SECTION}.{key}",
        )


def _check_model_folder(label: str, key: str, folder: str) -> None:
    if not (Path(folder) / "config.json").is_file():
        raise ConfigError(
            f'{label}: {key} = "{folder}" is not a local model folder (no config.json). Point it at a folder '
            "written by save_pretrained() (a run's policy folder); nothing is downloaded.",
            field=f"{SECTION}.{key}",
        )


def _plan_preference_model(label: str, options: Mapping[str, Any], has_trained_model: bool) -> RewardSpec:
    path = _text(label, options, "path", 'a folder saved by RewardModel.save, or "trained" for this run\'s model')
    if path == TRAINED:
        if not has_trained_model:
            raise ConfigError(
                f'{label}: path = "trained" names the preference model trained in this run, but the run file has '
                'no [preference_model] section. Add one (e.g. method = "bradley_terry") or set path to a saved folder.',
                field=f"{SECTION}.path",
            )
    else:
        _check_reward_folder(label, "path", path)
    return RewardSpec(name="preference_model", kind="preference_model", path=path)


def _plan_ensemble(label: str, options: Mapping[str, Any]) -> RewardSpec:
    paths = options.get("paths")
    if not isinstance(paths, (list, tuple)) or not paths or not all(isinstance(p, str) and p for p in paths):
        raise ConfigError(
            f'{label} needs paths = ["<folder>", ...]: the saved reward models of the ensemble.',
            field=f"{SECTION}.paths",
        )
    combine = options.get("combine", "mean")
    if combine not in ENSEMBLE_COMBINES:
        raise ConfigError(
            f"{label}: combine must be one of {', '.join(ENSEMBLE_COMBINES)}; got {combine!r}.",
            field=f"{SECTION}.combine",
        )
    penalty = options.get("penalty", 0.0)
    if (
        isinstance(penalty, bool)
        or not isinstance(penalty, (int, float))
        or not (math.isfinite(penalty) and penalty >= 0)
    ):
        raise ConfigError(
            f"{label}: penalty must be a finite number >= 0; got {penalty!r}.", field=f"{SECTION}.penalty"
        )
    if penalty and combine != "mean_minus_std":
        raise ConfigError(
            f"{label}: penalty applies only to combine = 'mean_minus_std', not {combine!r}.", field=f"{SECTION}.penalty"
        )
    if combine == "mean_minus_std" and len(paths) < 2:
        raise ConfigError(
            f"{label}: combine = 'mean_minus_std' needs at least two models to measure disagreement.",
            field=f"{SECTION}.paths",
        )
    for path in paths:
        _check_reward_folder(label, "paths", path)
    return RewardSpec(name="ensemble", kind="ensemble", paths=tuple(paths), combine=combine, penalty=float(penalty))


def _plan_implicit(label: str, options: Mapping[str, Any]) -> RewardSpec:
    policy = _text(label, options, "policy", "the folder of the DPO-trained policy (save_pretrained)")
    reference = _text(label, options, "reference", "the folder of the reference it was trained against")
    beta = options.get("beta", 0.1)
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (math.isfinite(beta) and beta > 0):
        raise ConfigError(f"{label}: beta must be a finite number > 0; got {beta!r}.", field=f"{SECTION}.beta")
    _check_model_folder(label, "policy", policy)
    _check_model_folder(label, "reference", reference)
    return RewardSpec(name="implicit_dpo", kind="implicit_dpo", policy=policy, reference=reference, beta=float(beta))


def _scoring_plugins(registry: Registry) -> str:
    return ", ".join(info.name for info in registry.methods("feedback") if can_score(info.cls)) or "(none)"


def _create_source(label: str, registry: Registry, name: str, options: Mapping[str, Any]) -> FeedbackSource:
    source = registry.create_for(label, "feedback", name, options, field=f"{SECTION}.method")
    assert isinstance(source, FeedbackSource)
    return source


def _plan_rule(label: str, options: dict[str, Any], registry: Registry) -> RewardSpec:
    name = options.pop("method", None)
    if not isinstance(name, str) or not name:
        raise ConfigError(
            f'{label} needs method = "<feedback plugin>" naming a plugin that scores completions: '
            f"{_scoring_plugins(registry)}.",
            field=f"{SECTION}.method",
        )
    source = _create_source(label, registry, name, options)
    if not can_score(source):
        raise ConfigError(
            f"{label}: method = {name!r}: this feedback plugin has no scorer() and cannot score completions "
            f"pointwise. Plugins that can: {_scoring_plugins(registry)}.",
            field=f"{SECTION}.method",
        )
    return RewardSpec(name=name, kind="rule", source=source)


def _plan_verifiable(label: str, options: dict[str, Any], registry: Registry) -> RewardSpec:
    for key, reason in VERIFIABLE_REFUSED.items():
        if key in options:
            raise ConfigError(f"{label} takes no {key!r}: {reason}.", field=f"{SECTION}.{key}")
    if "method" in options:
        raise ConfigError(
            f"{label} takes no 'method' (it is the {VERIFIABLE_PLUGIN!r} checker); for another plugin write "
            "kind = 'rule'.",
            field=f"{SECTION}.method",
        )
    source = _create_source(label, registry, VERIFIABLE_PLUGIN, options)
    return RewardSpec(name="verifiable", kind="verifiable", source=source)


# ----------------------------------------------------------------------------------------------
# Building and scoring
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RewardComponent:
    """One scorer of the combined reward, with its name, weight and where it comes from (for errors)."""

    name: str
    scorer: Scorer
    weight: float = 1.0
    origin: str = ""
    role: str = "reward"

    @property
    def takes_answers(self) -> bool:
        return takes_answers(self.scorer)


class RewardScores(NamedTuple):
    """``total`` ``[S]`` = Σ weight·component, and each component's ``[S]`` scores by name."""

    total: torch.Tensor
    components: Mapping[str, torch.Tensor]

    def metrics(self, cost_names: Sequence[str] = ()) -> dict[str, float]:
        """``reward/<name>``: each component's mean; ``reward/mean`` and ``reward/std`` of the total.

        With ``cost_names`` (``CombinedReward.cost_names``), those components are ``cost/<name>``
        and their sum, the episode cost, gives ``cost/mean`` and ``cost/std``.
        """
        metrics = {
            f"{'cost' if name in cost_names else 'reward'}/{name}": float(scores.mean())
            for name, scores in self.components.items()
        }
        metrics["reward/mean"] = float(self.total.mean())
        metrics["reward/std"] = float(self.total.std(correction=0))
        if cost_names:
            costs = self.costs(cost_names)
            metrics["cost/mean"] = float(costs.mean())
            metrics["cost/std"] = float(costs.std(correction=0))
        return metrics

    def costs(self, cost_names: Sequence[str]) -> torch.Tensor:
        """``[S]`` episode costs: the sum of the ``cost_names`` components (each already weight·score)."""
        return torch.stack([self.components[name].float() for name in cost_names]).sum(0)


def _short(text: Any, limit: int = 80) -> str:
    text = prompt_display(text) if not isinstance(text, str) else text
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


@dataclass(frozen=True)
class CombinedReward:
    """The weighted sum of reward components, each checked and kept for logging.

    Arguments:
        components: the scorers, each with a distinct name.
    """

    components: tuple[RewardComponent, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        names = [component.name for component in self.components]
        if not names:
            raise ConfigError("a combined reward needs at least one component.", field=SECTION)
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ConfigError(f"reward components must have distinct names; {duplicates[0]!r} repeats.", field=SECTION)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(component.name for component in self.components)

    @property
    def cost_names(self) -> tuple[str, ...]:
        """The components of role ``cost``: their entries sum to the episode cost."""
        return tuple(component.name for component in self.components if component.role == "cost")

    @property
    def takes_answers(self) -> bool:
        """Whether a component reads reference answers (the caller should pass them)."""
        return any(component.takes_answers for component in self.components)

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[str], answers: Sequence[Any] | None = None
    ) -> RewardScores:
        """Score ``S`` completions: ``prompts[i]`` is completion i's prompt, ``answers[i]`` its reference (or None).

        ``components`` holds each reward component's scores and each cost component's
        contribution to the cost (weight·score); ``total`` sums the reward components only.
        """
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts for {len(completions)} completions; give one per completion.")
        if answers is not None and len(answers) != len(completions):
            raise ValueError(f"got {len(answers)} reference answers for {len(completions)} completions.")
        scores = {
            component.name: self._score(component, prompts, completions, answers) for component in self.components
        }
        total = torch.zeros(len(completions), dtype=torch.float32)
        for component in self.components:
            if component.role == "cost":
                scores[component.name] = component.weight * scores[component.name]
            elif component.weight:
                total = total + component.weight * scores[component.name]
        return RewardScores(total, scores)

    def score_rollouts(self, rollouts: Rollouts, answers: Sequence[Any] | None = None) -> RewardScores:
        """Score sampled rollouts; ``answers`` holds one reference per prompt (``rollouts.prompts``), or None."""
        if answers is not None and len(answers) != len(rollouts.prompts):
            raise ValueError(f"got {len(answers)} reference answers for {len(rollouts.prompts)} prompts.")
        count = rollouts.num_completions
        prompts = [rollouts.prompt_of(index) for index in range(count)]
        expanded = (
            None if answers is None else [answers[index // rollouts.samples_per_prompt] for index in range(count)]
        )
        return self(prompts, list(rollouts.texts), expanded)

    def _score(
        self,
        component: RewardComponent,
        prompts: Sequence[Any],
        completions: Sequence[str],
        answers: Sequence[Any] | None,
    ) -> torch.Tensor:
        who = f"reward component {component.name!r}" + (f" ({component.origin})" if component.origin else "")
        try:
            if component.takes_answers:
                raw = component.scorer(prompts, completions, answers=answers)
            else:
                raw = component.scorer(prompts, completions)
            values = [float(value) for value in raw]
        except Exception as exc:
            raise RewardError(f"{who} failed: {exc}", component=component.name) from exc
        if len(values) != len(completions):
            raise RewardError(
                f"{who} returned {len(values)} scores for {len(completions)} completions.", component=component.name
            )
        for index, value in enumerate(values):
            if not math.isfinite(value):
                raise RewardError(
                    f"{who} gave {value} for completion {index} (prompt {_short(prompts[index])}, completion "
                    f"{_short(completions[index])}); rewards and costs must be finite numbers.",
                    component=component.name,
                    index=index,
                    prompt=prompts[index],
                )
        return torch.tensor(values, dtype=torch.float32)


def build_reward(plan: RewardPlan, *, trained_scorer: Scorer | None = None, device: str = "cpu") -> CombinedReward:
    """Load what ``plan`` names and return the ``CombinedReward``.

    Arguments:
        plan: from ``plan_rewards``.
        trained_scorer: the scorer of the preference model (or ensemble) trained in this run,
            for ``path = "trained"``.
        device: where saved models are loaded.
    """
    components = []
    for spec in plan.specs:
        scorer, origin = _build_scorer(spec, trained_scorer, device)
        components.append(RewardComponent(spec.name, check_scorer(scorer, origin), spec.weight, origin, spec.role))
    return CombinedReward(tuple(components))


def _build_scorer(spec: RewardSpec, trained_scorer: Scorer | None, device: str) -> tuple[Scorer, str]:
    if spec.source is not None:
        origin = f"{spec.source.label()}, {spec.source.origin()}"
        return spec.source.scorer(), origin
    if spec.kind == "preference_model":
        if spec.path == TRAINED:
            if trained_scorer is None:
                raise ConfigError(
                    '[[reward]] path = "trained" but this run trained no preference model; add a [preference_model].',
                    field=f"{SECTION}.path",
                )
            return trained_scorer, "the preference model trained in this run"
        from prefcore.engine.reward_model import load_reward_network

        return load_reward_network(str(spec.path), device=device).scorer(), f"reward model {spec.path}"
    if spec.kind == "ensemble":
        from prefcore.engine.reward_ensemble import RewardEnsemble
        from prefcore.engine.reward_model import load_reward_network

        members = [load_reward_network(path, device=device) for path in spec.paths]
        ensemble = RewardEnsemble(members, combine=spec.combine, penalty=spec.penalty)  # type: ignore[arg-type]
        return ensemble.scorer(), f"{spec.combine} ensemble of {', '.join(spec.paths)}"
    from prefcore.engine.models import load_causal_lm
    from prefcore.engine.reward_model import ImplicitRewardModel
    from prefcore.engine.reward_model.storage import load_tokenizer

    assert spec.policy is not None and spec.reference is not None
    policy, reference = load_causal_lm(spec.policy), load_causal_lm(spec.reference)
    network = ImplicitRewardModel(policy, reference, load_tokenizer(Path(spec.policy)), spec.beta).to(device)
    return network.scorer(), f"implicit reward β·log(π/π_ref) of {spec.policy} against {spec.reference}"

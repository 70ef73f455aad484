"""One check of a whole run file, shared by ``prefcore run --dry-run`` and ``run_pipeline``.

Every method is instantiated through the registry (unknown names and options, option types
and ranges), every engine section is built into its config dataclass (unknown keys, types,
ranges), and the sections are checked against each other (an objective that needs reference
log-probs with ``reference = "none"``, objectives that share no data format, ...). Because
the pipeline starts with this same function, a file that passes ``--dry-run`` cannot fail
later on validation; only its data can.

All problems are reported together, so that one dry run shows everything to fix.

From Python, the model, tokenizer and records can be given in memory (``prefcore.train``);
``given`` tells the check which, so that a run file without ``[model] path`` or without a
``[feedback]`` section is complete, and one that names both is refused.
"""

from __future__ import annotations

from collections.abc import Collection
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prefcore.api import SelectedMethod
from prefcore.config import ENGINE_SECTIONS
from prefcore.config import RunConfig
from prefcore.config import build_config
from prefcore.config import engine_section_config
from prefcore.errors import ConfigError
from prefcore.errors import PrefcoreError
from prefcore.methods import KINDS
from prefcore.registry import Registry

__all__ = ["IN_MEMORY", "CheckedRun", "check_run_config", "reward_model_section", "shared_data_format"]

IN_MEMORY: tuple[str, ...] = ("model", "data", "heldout")
"""What a Python caller may give in memory instead of naming it in the run file."""


@dataclass(frozen=True)
class CheckedRun:
    """A run file that passed every check: its method instances and built engine sections."""

    config: RunConfig
    methods: Mapping[str, list[SelectedMethod]]
    sections: Mapping[str, Any]
    data_format: str

    def selected(self, kind: str) -> list[SelectedMethod]:
        return list(self.methods.get(kind, []))


def reward_model_section(config: RunConfig) -> dict[str, Any]:
    """The ``[reward_model]`` options, with the backbone defaulting to the policy's ``[model]``."""
    section = dict(config.section("reward_model"))
    if "path" not in section and "demo" not in section:
        model = config.section("model")
        section.update({"path": model["path"]} if model.get("path") else {"demo": True})
    return section


def shared_data_format(objectives: Sequence[SelectedMethod]) -> str:
    """The batch layout every selected objective accepts (the first one's preference order)."""
    first = objectives[0].method
    for data_format in first.data_formats:
        if all(data_format in entry.method.data_formats for entry in objectives):
            return data_format
    names = ", ".join(f"{entry.method.name} ({'/'.join(entry.method.data_formats)})" for entry in objectives)
    raise ConfigError(f"the selected usage objectives share no data format: {names}.", field="usage")


def check_run_config(config: RunConfig, *, registry: Registry | None = None, given: Collection[str] = ()) -> CheckedRun:
    """Check the whole run file; raise one ``ConfigError`` listing every problem, or return it built.

    Arguments:
        config: the parsed run file (``load_run_config``).
        registry: the methods to resolve names with (default: everything installed).
        given: what the caller passes in memory, among ``IN_MEMORY``: ``"model"`` (a model and
            its tokenizer), ``"data"`` (feedback records), ``"heldout"`` (held-out records).
    Returns:
        the method instances per kind and each engine section's config dataclass.
    """
    registry = registry or Registry.from_environment()
    unknown = sorted(set(given) - set(IN_MEMORY))
    if unknown:
        raise ValueError(f"given names {unknown}; it takes {', '.join(IN_MEMORY)}.")
    problems: list[PrefcoreError] = []
    where = f"{config.source}: " if config.source else ""

    methods: dict[str, list[SelectedMethod]] = {}
    for kind in KINDS:
        for spec in config.selected(kind):
            try:  # the registry's errors name the kind and method: "usage objective 'dpo' ..."
                method = registry.create(kind, spec.name, spec.options)
            except PrefcoreError as exc:
                problems.append(exc)
                continue
            methods.setdefault(kind, []).append(SelectedMethod(method, spec.weight))

    methods_resolved = not problems
    sections: dict[str, Any] = {}
    for name in ENGINE_SECTIONS:
        if name == "judge":
            continue  # checked against the whole file below
        values = reward_model_section(config) if name == "reward_model" else config.section(name)
        try:
            if name == "model" and "model" in given:
                values = _in_memory_model_section(values)
            sections[name] = build_config(engine_section_config(name), values, method=f"[{name}]")
        except PrefcoreError as exc:
            problems.append(exc)
    if "judge" in ENGINE_SECTIONS and methods_resolved:
        # [judge] takes the options of the plugin it names and needs the resolved evaluators.
        from prefcore.judges import plan_judge

        try:
            sections["judge"] = plan_judge(config, registry=registry, selected=methods)
        except PrefcoreError as exc:
            problems.append(exc)

    if methods_resolved:
        try:  # [[reward]] and [online] feed an online objective; the rewards are planned here, loaded later
            sections["reward"] = _plan_online(config, methods, sections, registry)
        except PrefcoreError as exc:
            problems.append(exc)

    data_format = ""
    try:
        data_format = _check_combination(config, methods, sections, given)
    except PrefcoreError as exc:
        problems.append(exc)

    if len(problems) == 1:
        raise problems[0]
    if problems:
        listing = "\n".join(f"  - {problem}" for problem in problems)
        first = problems[0]
        raise ConfigError(
            f"{where}{len(problems)} problems in the run file:\n{listing}",
            field=getattr(first, "field", None),
        )
    return CheckedRun(config=config, methods=methods, sections=sections, data_format=data_format)


def _in_memory_model_section(section: Mapping[str, Any]) -> dict[str, Any]:
    """``[model]`` beside a model given in memory: it may set the device, the chat template and LoRA only."""
    clashing = [key for key in ("path", "demo", "dtype") if key in section]
    if clashing:
        raise ConfigError(
            f"a model was given in memory, and [model] also sets {', '.join(clashing)}: the model given is used "
            "as it is (its own weights and dtype). Drop those keys, or drop the model argument.",
            field=f"model.{clashing[0]}",
        )
    return {**section, "demo": True}  # stands in for the model given, so the other keys are checked


def _check_combination(
    config: RunConfig,
    methods: Mapping[str, list[SelectedMethod]],
    sections: Mapping[str, Any],
    given: Collection[str] = (),
) -> str:
    """Checks between sections: what the pipeline needs from the file as a whole."""
    if not config.selected("usage"):
        raise ConfigError('the run file selects no usage objective: add a [usage] section with method = "dpo".')
    if not config.selected("feedback") and "data" not in given:
        raise ConfigError(
            'the run file selects no feedback source: add a [feedback] section, e.g. method = "demo_rule".'
        )
    if "model" in given and config.selected("preference_model"):
        reward = config.section("reward_model")
        if "path" not in reward and "demo" not in reward:
            raise ConfigError(
                "a preference model trains on the policy's backbone by default, but the policy was given in memory: "
                'name the backbone in [reward_model] path = "<local dir>" (or demo = true).',
                field="reward_model.path",
            )
    objectives = methods.get("usage", [])
    if len(objectives) != len(config.selected("usage")):
        return ""  # an objective failed to build; its error is already listed
    data_format = shared_data_format(objectives)
    train, self_play = sections.get("train"), sections.get("self_play")
    if train is not None and self_play is not None and train.epochs > 0 and self_play.rounds > 0:
        raise ConfigError(
            "[train] epochs counts passes over one set of pairs, but [self_play] makes new pairs each round: "
            "set [train] steps (the steps of each round) instead of epochs.",
            field="train.epochs",
        )
    run = sections.get("run")
    if run is not None:
        needs_reference = [entry.method.name for entry in objectives if entry.method.uses_reference()]
        if needs_reference and run.reference == "none":
            raise ConfigError(
                f"[run] reference = 'none', but {', '.join(needs_reference)} needs reference log-probs: "
                "use reference = 'model' or 'precomputed'.",
                field="run.reference",
            )
        if "heldout" in given and run.heldout_files:
            raise ConfigError(
                "held-out records were given in memory, and [run] heldout names files too: give one of them.",
                field="run.heldout",
            )
        _check_ensemble(config, methods, run)
        if run.reward_labels and not config.selected("preference_model"):
            raise ConfigError(
                "[run] reward_labels = true relabels pairs with a trained preference model, "
                "but the run file selects none: add a [preference_model] section or drop reward_labels.",
                field="run.reward_labels",
            )
    return data_format


def _plan_online(
    config: RunConfig, methods: Mapping[str, list[SelectedMethod]], sections: Mapping[str, Any], registry: Registry
) -> Any:
    """The checked ``[[reward]]`` plan of an online objective (data format "rollout"), or None without one.

    An online objective trains alone (its loop samples, scores and updates; no offline objective
    shares its batches), needs at least one reward (``plan_rewards(required_by=...)``) and no
    self-play rounds; ``[[reward]]`` and ``[online]`` without an online objective are refused
    rather than silently ignored.
    """
    from prefcore.rollout import ROLLOUT_FORMAT

    objectives = methods.get("usage", [])
    online = [entry.method for entry in objectives if ROLLOUT_FORMAT in entry.method.data_formats]
    loop = sections.get("loop")
    if loop is not None and loop.kind != "none":
        return _plan_loop(config, objectives, online, sections, registry)
    if loop is None and "loop" in config.settings:
        return None  # [loop] failed to build; its error is already listed
    if not online:
        stray = [label for name, label in (("reward", "[[reward]]"), ("online", "[online]")) if name in config.settings]
        if stray:
            raise ConfigError(
                f"{' and '.join(stray)} configure online training, but no selected usage objective trains online "
                '(data format "rollout"): select one, e.g. [usage] method = "grpo", or drop them.',
                field=stray[0].strip("[]"),
            )
        return None
    if len(objectives) > 1:
        names = ", ".join(entry.method.name for entry in objectives)
        raise ConfigError(
            f"an online objective trains alone, but [usage] selects {names}: keep {online[0].name} only.",
            field="usage",
        )
    self_play = sections.get("self_play")
    if self_play is not None and self_play.rounds > 0:
        raise ConfigError(
            f"{online[0].name} samples its own completions every step; [self_play] rounds apply to offline "
            "objectives: drop [self_play].",
            field="self_play.rounds",
        )
    from_reward_model = getattr(online[0], "needs_critic", False) and online[0].config.critic == "reward_model"
    if from_reward_model and len(config.selected("preference_model")) != 1:
        raise ConfigError(
            f"{online[0].name} critic = 'reward_model' starts the value model from the reward model the run "
            "trains: select one [preference_model] (bradley_terry, ...), or use critic = 'separate'.",
            field="usage.critic",
        )
    from prefcore.rewards import plan_rewards

    uses_costs = bool(getattr(online[0], "uses_costs", False))  # a constrained objective (safe_rlhf) takes costs
    plan = plan_rewards(config, registry, required_by=online[0].name, allow_costs=uses_costs)
    if uses_costs and not plan.cost_names:
        raise ConfigError(
            f"usage objective {online[0].name!r} bounds an expected cost, but no [[reward]] has role = 'cost': add "
            'one (e.g. kind = "rule", method = "demo_rule", score = "harm", role = "cost").',
            field="reward.role",
        )
    return plan


_LOOP_FORMAT = {"online_dpo": "pairwise", "best_of_n": "sft", "human_online_dpo": "pairwise"}
_LOOP_ONLY_KEYS = {
    "online_dpo": ("iterations", "prompts", "keep", "threshold", "top_fraction", "exchange"),
    "best_of_n": ("exchange",),
    "human_online_dpo": ("prompts", "keep", "threshold", "top_fraction"),
}
_ONLINE_KEYS_UNUSED = {
    "online_dpo": ("minibatch_size",),
    "best_of_n": ("steps", "prompts_per_step", "update_epochs", "minibatch_size", "micro_batch_size"),
    "human_online_dpo": ("steps", "minibatch_size", "dynamic_sampling", "max_sampling_rounds"),
}


def _plan_loop(
    config: RunConfig,
    objectives: Sequence[SelectedMethod],
    online: Sequence[Any],
    sections: Mapping[str, Any],
    registry: Registry,
) -> Any:
    """``[loop]``: offline objectives on the policy's ranked samples (``prefcore.engine.online_loops``).

    The objectives must take the loop's items (pairs for online_dpo, single completions for
    best_of_n), no online objective or self-play may run beside it, ``[train] epochs`` does not
    apply (the data is new every step or iteration), keys of the other kind and ``[online]`` keys
    the loop does not read are refused rather than ignored, and ``[[reward]]`` is required, except
    by human_online_dpo, where people are the reward and a ``[[reward]]`` is refused; it counts
    ``[loop] iterations``, so ``[train] steps`` is refused too.
    """
    kind = sections["loop"].kind
    label = f'[loop] kind = "{kind}"'
    if online:
        raise ConfigError(
            f"{label} trains offline objectives on ranked samples, but {online[0].name} trains online by itself: "
            "drop [loop], or select a pairwise objective (online_dpo) or sft (best_of_n).",
            field="loop.kind",
        )
    wanted = _LOOP_FORMAT[kind]
    refused = [entry.method.name for entry in objectives if wanted not in entry.method.data_formats]
    if refused:
        example = 'method = "dpo"' if kind != "best_of_n" else 'method = "sft"'
        raise ConfigError(
            f"{label} trains on {wanted} items, which usage objective(s) {', '.join(refused)} do not take: "
            f"select one that does, e.g. [usage] {example}.",
            field="usage",
        )
    stray = [key for key in _LOOP_ONLY_KEYS[kind] if key in config.section("loop")]
    stray += [f"online.{key}" for key in _ONLINE_KEYS_UNUSED[kind] if key in config.section("online")]
    if kind == "human_online_dpo" and "steps" in config.section("train"):
        stray.append("train.steps")
    if stray:
        raise ConfigError(
            f"{label} does not use {', '.join(stray)}: drop {'it' if len(stray) == 1 else 'them'}"
            + (" ([loop] iterations counts its rounds)." if "train.steps" in stray else "."),
            field=stray[0] if "." in stray[0] else f"loop.{stray[0]}",
        )
    if kind in ("online_dpo", "human_online_dpo") and sections["online"].samples_per_prompt < 2:
        raise ConfigError(
            f"{label} ranks several samples per prompt: set [online] samples_per_prompt >= 2 (2 in the paper).",
            field="online.samples_per_prompt",
        )
    self_play, train = sections.get("self_play"), sections.get("train")
    if self_play is not None and self_play.rounds > 0:
        raise ConfigError(f"{label} and [self_play] rounds are two loops: keep one.", field="self_play.rounds")
    if train is not None and train.epochs > 0:
        raise ConfigError(
            f"{label} samples new data every {'step' if kind == 'online_dpo' else 'iteration'}, so [train] epochs "
            f"does not apply: set {'[loop] iterations' if kind == 'human_online_dpo' else '[train] steps'}.",
            field="train.epochs",
        )
    if kind == "human_online_dpo":
        if "reward" in config.settings:
            raise ConfigError(
                f"{label}: people rank the samples, so a [[reward]] would never be read: drop it "
                '(or use kind = "online_dpo" to rank by the reward).',
                field="reward",
            )
        return None
    from prefcore.rewards import plan_rewards

    return plan_rewards(config, registry, required_by=objectives[0].method.name)


def _check_ensemble(config: RunConfig, methods: Mapping[str, list[SelectedMethod]], run: Any) -> None:
    """Several ``[[preference_model]]`` sections make one reward: they must fit ``[run] ensemble``."""
    from prefcore.engine.reward_ensemble import check_combinable
    from prefcore.engine.reward_ensemble import check_soup

    specs = config.selected("preference_model")
    entries = methods.get("preference_model", [])
    if len(entries) != len(specs):
        return  # a preference model failed to build; its error is already listed
    preference_models = [entry.method for entry in entries]
    check_combinable(preference_models)  # several score as one ensemble
    if run.ensemble == "soup":
        check_soup(preference_models)
        return
    weighted = [f"{entry.method.name} (weight = {entry.weight:g})" for entry in entries if entry.weight != 1.0]
    if weighted:
        raise ConfigError(
            f"[[preference_model]] {', '.join(weighted)}: a weight is a model's share of a soup, but "
            f'[run] ensemble = "{run.ensemble}" counts every model alike. Set ensemble = "soup" or drop the weight.',
            field="preference_model.weight",
        )

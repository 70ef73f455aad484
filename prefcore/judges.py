"""The run's pairwise judge: the ``[judge]`` section of a run file, checked before any work.

A judge answers ``judge(prompt, first, second)`` with the probability that ``first`` is the
better completion (``prefcore.evaluation.Judge``). ``win_rate`` cannot work without one and
``samples`` shows its verdicts. Where it comes from:

    (no [judge])                 the feedback source's own judge, if it has one (``demo_rule``,
                                 ``llm_judge``, ``reward_model_labels``); a data file has none
    kind = "rule"                a feedback plugin that can judge new completions,
                                 method = "<name>" plus that plugin's own options
    kind = "preference_model"    a reward model: path = "<folder>" saved by ``RewardModel.save``
                                 (or ``ImplicitRewardModel.save``), or path = "trained" for the
                                 ``[preference_model]`` this run trains;
                                 P(first better) = σ((s_first − s_second) / temperature)
    kind = "llm"                 a local causal LM asked which answer is better, through the
                                 ``llm_judge`` plugin (model_path = "<folder>" plus its options)

Why a run-level section and not options of ``win_rate``: the judge is a resource of the run,
like the reward model, not of one evaluator. ``win_rate`` and ``samples`` share one judge and
one verdict cache (a costly LLM judge is asked once per pair and order), a reward model
trained in the same run can only be named at run level, and the judge is checked once, with
the rest of the file, before anything loads or trains.

Position control belongs to the evaluators: ``win_rate`` asks every pair in both orders and
reports how consistent the judge is. So an LLM judge built here answers one order per call
(``llm_judge``'s ``judge_orders = "one"``); averaging inside the judge as well would ask the
model four times per pair and hide its position bias from the report.

``plan_judge`` validates the section (and refuses a run whose evaluators need a judge that
nothing provides) without loading any model; ``JudgePlan.build`` makes the callable once
the run has what it needs (the trained reward model).
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from prefcore.config import RunConfig
from prefcore.config import build_config
from prefcore.errors import ConfigError
from prefcore.evaluation import Judge
from prefcore.evaluation import Scorer
from prefcore.evaluation import check_judge
from prefcore.methods import Evaluator
from prefcore.methods import FeedbackSource
from prefcore.methods import option

if TYPE_CHECKING:
    from prefcore.api import SelectedMethod
    from prefcore.registry import Registry

__all__ = [
    "JUDGE_KINDS",
    "SECTION",
    "JudgePlan",
    "JudgeSection",
    "PreferenceModelJudgeConfig",
    "ScoreGapJudge",
    "can_judge",
    "needs_judge",
    "plan_judge",
]

SECTION = "judge"
JUDGE_KINDS: tuple[str, ...] = ("rule", "preference_model", "llm")
TRAINED = "trained"
LLM_PLUGIN = "llm_judge"
LLM_REFUSED = {
    "path": "a judge compares the evaluation's completions; it labels no file",
    "judge_orders": "win_rate asks both orders itself and reports the judge's position bias",
    "inconsistent": "win_rate's own 'disagreement' option decides order-inconsistent verdicts",
}
REWARD_METADATA = "reward_model.json"
REWARD_KINDS = ("reward_model", "implicit_reward_model")

EXAMPLE = (
    "Add a [judge] section to the run file, for example\n"
    "  [judge]\n"
    '  kind = "preference_model"\n'
    '  path = "trained"        # the [preference_model] this run trains, or a saved reward-model folder\n'
    'or kind = "llm" with model_path = "<local model folder>", '
    'or kind = "rule" with method = "<feedback plugin that judges>"'
)


@dataclass(frozen=True)
class JudgeSection:
    """The judge of win_rate and samples: P(first completion better). Without [judge]: the feedback source's.

    kind = "rule" also takes the options of the plugin it names; kind = "llm" takes those of
    llm_judge (prefcore info llm_judge) except path, judge_orders and inconsistent.
    """

    kind: str = option(doc="'rule', 'preference_model' or 'llm'; no [judge]: the feedback source's own judge")
    method: str | None = option(None, doc="kind = 'rule': a feedback plugin that judges (demo_rule, ...)")
    path: str | None = option(None, doc="kind = 'preference_model': a saved reward-model folder, or 'trained'")
    temperature: float = option(1.0, doc="kind = 'preference_model': τ of σ((s_first − s_second) / τ)")
    model_path: str | None = option(None, doc="kind = 'llm': a local causal LM folder (llm_judge's options apply)")


@dataclass(frozen=True)
class PreferenceModelJudgeConfig:
    """Options of ``[judge] kind = "preference_model"``."""

    path: str = option(doc="a folder written by RewardModel.save, or 'trained' for this run's [preference_model]")
    temperature: float = option(1.0, doc="τ of P(first better) = σ((s_first − s_second) / τ)")

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature!r}.")
        if not self.path:
            raise ValueError("path must name a saved reward-model folder or be 'trained'.")


def can_judge(source: FeedbackSource | type[FeedbackSource]) -> bool:
    """Whether a feedback plugin can label new completions (it overrides ``judge()``)."""
    cls = source if isinstance(source, type) else type(source)
    return cls.judge is not FeedbackSource.judge


def needs_judge(evaluator: Evaluator | type[Evaluator]) -> bool:
    """Whether an evaluator cannot run without a judge (``Evaluator.needs_judge``, declared with default False)."""
    return evaluator.needs_judge


def _sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-value)) if value >= 0 else math.exp(value) / (1.0 + math.exp(value))


def _prompt_key(prompt: Any) -> Any:
    return prompt if isinstance(prompt, str) else tuple(prompt)


class ScoreGapJudge:
    """A reward model as a judge: P(first better) = σ((s_first − s_second) / τ).

    Symmetric by construction (the two orders sum to 1). Scores are cached per prompt and
    completion, so judging a pair in both orders scores each completion once.
    """

    def __init__(self, scorer: Scorer, temperature: float = 1.0) -> None:
        self.scorer = scorer
        self.temperature = temperature
        self._scores: dict[tuple[Any, str], float] = {}

    def _score(self, prompt: Any, completions: Sequence[str]) -> list[float]:
        key = _prompt_key(prompt)
        missing = [text for text in dict.fromkeys(completions) if (key, text) not in self._scores]
        if missing:
            scores = [float(score) for score in self.scorer([prompt] * len(missing), missing)]
            if len(scores) != len(missing):
                raise ValueError(f"the scorer returned {len(scores)} scores for {len(missing)} completions.")
            self._scores.update({(key, text): score for text, score in zip(missing, scores, strict=True)})
        return [self._scores[(key, text)] for text in completions]

    def __call__(self, prompt: Any, first: str, second: str) -> float:
        first_score, second_score = self._score(prompt, [first, second])
        return _sigmoid((first_score - second_score) / self.temperature)


@dataclass(frozen=True)
class JudgePlan:
    """A checked ``[judge]`` section: where the run's judge will come from.

    ``kind`` is ``"feedback"`` when the run file has no ``[judge]`` (the feedback sources'
    own judge, if any), else one of ``JUDGE_KINDS``. ``source`` is the configured feedback
    plugin of ``rule`` and ``llm``; ``path`` the saved reward model or ``"trained"``.
    """

    kind: str
    source: FeedbackSource | None = None
    path: str | None = None
    temperature: float = 1.0
    required_by: tuple[str, ...] = ()

    def build(
        self,
        feedback_sources: Sequence[FeedbackSource] = (),
        *,
        trained_scorer: Scorer | None = None,
        device: str = "cpu",
    ) -> Judge | None:
        """The judge callable; None only where no evaluator needs one and nothing provides one.

        Arguments:
            feedback_sources: the run's feedback sources (the default judge's origin).
            trained_scorer: the scorer of the preference model trained in this run, if any.
            device: where a saved reward model is loaded.
        """
        judge: Judge | None
        if self.kind == "feedback":
            judge = next(
                (
                    check_judge(j, f"{source.label()} ({source.origin()})")
                    for source in feedback_sources
                    if (j := source.judge()) is not None
                ),
                None,
            )
        elif self.source is not None:
            judge = check_judge(self.source.judge(), f"{self.source.label()} ({self.source.origin()})")
        elif self.path == TRAINED:
            if trained_scorer is None:
                raise ConfigError(
                    '[judge] path = "trained" but this run trained no preference model; add a [preference_model].',
                    field="judge.path",
                )
            judge = ScoreGapJudge(trained_scorer, self.temperature)
        else:
            from prefcore.engine.reward_model import load_reward_network

            network = load_reward_network(str(self.path), device=device)
            judge = ScoreGapJudge(network.scorer(), self.temperature)
        if judge is None and self.required_by:
            raise ConfigError(
                f"[[evaluation]] {self.required_by[0]!r} needs a judge, but the feedback source gave none. {EXAMPLE}.",
                field=SECTION,
            )
        return judge


def plan_judge(
    config: RunConfig,
    *,
    registry: Registry | None = None,
    selected: Mapping[str, Sequence[SelectedMethod]] | None = None,
) -> JudgePlan:
    """Check the ``[judge]`` section against the rest of the run file; load no model.

    Raises ``ConfigError`` naming the file, the key and what to write instead when the
    section is malformed, names a folder that holds no reward model or LLM, or when an
    evaluator needs a judge (``win_rate``) and neither ``[judge]`` nor a feedback source
    provides one. Call it before any work: a plan that passes builds without a config error.

    Arguments:
        config: the parsed run file.
        registry: the plugins (default: a fresh one from the environment).
        selected: the run file's instantiated methods, if already resolved
            (``prefcore.api.resolve_run_config``); resolved here otherwise.
    """
    from prefcore.api import resolve_run_config
    from prefcore.registry import Registry

    registry = registry or Registry.from_environment()
    if selected is None:
        selected = resolve_run_config(config, registry=registry)
    where = f"{config.source}: " if config.source else ""
    required_by = tuple(entry.method.name for entry in selected.get("evaluation", ()) if needs_judge(entry.method))
    if SECTION not in config.settings:
        sources = [entry.method for entry in selected.get("feedback", ())]
        if required_by and not any(can_judge(source) for source in sources):
            names = ", ".join(source.name for source in sources) or "(none)"
            raise ConfigError(
                f"{where}[[evaluation]] {required_by[0]!r} needs a judge, and no feedback source of this run can "
                f"judge new completions ({names}: fixed data). {EXAMPLE} "
                f"(plugins that judge: {', '.join(_judging_plugins(registry))}).",
                method=required_by[0],
                field=SECTION,
            )
        return JudgePlan("feedback", required_by=required_by)

    section = dict(config.section(SECTION))
    kind = section.pop("kind", None)
    if kind not in JUDGE_KINDS:
        raise ConfigError(_kind_problem(where, kind), field=f"{SECTION}.kind")
    if kind == "preference_model":
        return _plan_preference_model(where, section, selected, required_by)
    if kind == "llm":
        return _plan_llm(where, section, registry, required_by)
    return _plan_rule(where, section, registry, required_by)


def _kind_problem(where: str, kind: Any) -> str:
    kinds = ", ".join(repr(k) for k in JUDGE_KINDS)
    if kind is None:
        return f"{where}[judge] needs a 'kind': one of {kinds}. {EXAMPLE}."
    message = f"{where}[judge] kind = {kind!r} is not a judge kind; use one of {kinds}."
    if isinstance(kind, str):
        close = difflib.get_close_matches(kind, JUDGE_KINDS, n=1, cutoff=0.5)
        if close:
            message += f" Did you mean {close[0]!r}?"
    return message


def _judging_plugins(registry: Registry) -> list[str]:
    return [info.name for info in registry.methods("feedback") if can_judge(info.cls)]


def _refuse_unknown(where: str, kind: str, options: Mapping[str, Any], accepted: Sequence[str]) -> None:
    unknown = sorted(set(options) - set(accepted))
    if not unknown:
        return
    message = f"{where}[judge] kind = {kind!r} has no option {unknown[0]!r}. Accepted: kind, {', '.join(accepted)}."
    close = difflib.get_close_matches(unknown[0], accepted, n=1)
    if close:
        message += f" Did you mean {close[0]!r}?"
    raise ConfigError(message, field=f"{SECTION}.{unknown[0]}")


def _plan_preference_model(
    where: str,
    options: dict[str, Any],
    selected: Mapping[str, Sequence[SelectedMethod]],
    required_by: tuple[str, ...],
) -> JudgePlan:
    _refuse_unknown(where, "preference_model", options, ("path", "temperature"))
    settings: PreferenceModelJudgeConfig = build_config(
        PreferenceModelJudgeConfig, options, method=f"{where}[judge] kind = 'preference_model'"
    )
    if settings.path == TRAINED:
        if not selected.get("preference_model"):
            raise ConfigError(
                f'{where}[judge] path = "trained" names the preference model trained in this run, but the run '
                'file has no [preference_model] section. Add one (e.g. method = "bradley_terry") or set path '
                "to a folder saved by RewardModel.save.",
                field=f"{SECTION}.path",
            )
    else:
        _check_reward_folder(where, Path(settings.path))
    return JudgePlan("preference_model", path=settings.path, temperature=settings.temperature, required_by=required_by)


def _check_reward_folder(where: str, folder: Path) -> None:
    metadata = folder / REWARD_METADATA
    if not folder.is_dir():
        raise ConfigError(
            f'{where}[judge] path = "{folder}" is not a folder. Give a reward model saved with RewardModel.save '
            '(a run saves its own in RUN_DIR/reward_model/model), or path = "trained" for the one this run trains.',
            field=f"{SECTION}.path",
        )
    try:
        kind = json.loads(metadata.read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        kind = None
    if kind not in REWARD_KINDS:
        raise ConfigError(
            f'{where}[judge] path = "{folder}" holds no saved reward model (no readable {REWARD_METADATA}). '
            "Give a folder written by RewardModel.save or ImplicitRewardModel.save.",
            field=f"{SECTION}.path",
        )


def _create_source(where: str, registry: Registry, name: Any, options: Mapping[str, Any]) -> FeedbackSource:
    source = registry.create_for(f"{where}[judge]", "feedback", name, options, field=f"{SECTION}.method")
    assert isinstance(source, FeedbackSource)
    return source


def _plan_rule(where: str, options: dict[str, Any], registry: Registry, required_by: tuple[str, ...]) -> JudgePlan:
    name = options.pop("method", None)
    judging = ", ".join(_judging_plugins(registry))
    if not isinstance(name, str) or not name:
        raise ConfigError(
            f"{where}[judge] kind = 'rule' needs method = \"<feedback plugin>\" naming a plugin that judges new "
            f"completions: {judging}.",
            field=f"{SECTION}.method",
        )
    source = _create_source(where, registry, name, options)
    if not can_judge(source):
        raise ConfigError(
            f"{where}[judge] method = {name!r}: this feedback plugin reads fixed feedback and cannot judge new "
            f"completions. Plugins that can: {judging}.",
            field=f"{SECTION}.method",
        )
    if name == LLM_PLUGIN:
        _check_llm_labels(where, source)
    return JudgePlan("rule", source=source, required_by=required_by)


def _plan_llm(where: str, options: dict[str, Any], registry: Registry, required_by: tuple[str, ...]) -> JudgePlan:
    for key, reason in LLM_REFUSED.items():
        if key in options:
            raise ConfigError(f"{where}[judge] kind = 'llm' takes no {key!r}: {reason}.", field=f"{SECTION}.{key}")
    if "method" in options:
        raise ConfigError(
            f"{where}[judge] kind = 'llm' takes no 'method' (it is the {LLM_PLUGIN!r} plugin); "
            "for another judging plugin write kind = 'rule'.",
            field=f"{SECTION}.method",
        )
    if "model_path" not in options:
        raise ConfigError(
            f"{where}[judge] kind = 'llm' needs model_path = \"<folder>\": a local transformers causal LM and its "
            "tokenizer (written by save_pretrained); nothing is downloaded.",
            field=f"{SECTION}.model_path",
        )
    source = _create_source(where, registry, LLM_PLUGIN, {**options, "judge_orders": "one"})
    _check_llm_labels(where, source)
    return JudgePlan("llm", source=source, required_by=required_by)


def _check_llm_labels(where: str, source: FeedbackSource) -> None:
    """The LLM's folder exists and its tokenizer spells each answer label as one token (tokenizer only)."""
    config = source.config
    folder = getattr(config, "model_path", None)
    if folder is None:
        return  # llm_judge without a model: its own error names model_path when it is asked to judge
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f'{where}[judge] model_path = "{folder}" is not a local model folder (no config.json). Point it at a '
            "folder written by save_pretrained(); the judge never downloads.",
            field=f"{SECTION}.model_path",
        )
    from transformers import AutoTokenizer

    from prefcore.plugins.feedback.llm_judge import label_token_ids

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f'{where}[judge] model_path = "{folder}": its tokenizer does not load ({exc}).',
            field=f"{SECTION}.model_path",
        ) from exc
    for label in config.labels:
        if not label_token_ids(tokenizer, label):
            raise ConfigError(
                f"{where}[judge] label {label!r} is not a single token of the judge's tokenizer; set labels to two "
                'answers it spells in one token each, e.g. labels = ["A", "B"] or ["1", "2"].',
                field=f"{SECTION}.labels",
            )

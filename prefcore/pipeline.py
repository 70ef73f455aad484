"""The pipeline: feedback → (warm start) → usage objectives → evaluation → run folder.

Every method is resolved by name through the registry before any work starts, so an
unknown name or bad option fails in the first second. A run folder holds ``config.toml``,
``metrics.csv``, checkpoints, the final model (loadable with
``AutoModelForCausalLM.from_pretrained``), ``report.md`` and plots. ``resume=True``
continues a killed run from its newest checkpoint and reproduces the same metrics.

A run is a library call like any other: its loggers are registered for the run only (two
runs in one process write to their own folders), a failing logger plugin is reported and
skipped, and the process's seeds, RNG states and torch thread count are the caller's again
when it returns. Messages go through ``logging`` (``prefcore.pipeline``, ``prefcore.progress``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
import warnings
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from prefcore.api import SelectedMethod
from prefcore.atomic import atomic_write_text
from prefcore.config import RunConfig
from prefcore.config import build_config
from prefcore.config import dump_run_config
from prefcore.data import load_preferences
from prefcore.data import read_demonstrations
from prefcore.data import to_pairs
from prefcore.engine.batching import build_items
from prefcore.engine.lifecycle import LifecycleHooks
from prefcore.engine.models import ModelConfig
from prefcore.engine.models import frozen_copy
from prefcore.engine.models import load_policy
from prefcore.engine.models import load_pretrained
from prefcore.engine.models import load_tokenizer
from prefcore.engine.models import resolve_device
from prefcore.engine.models import save_model
from prefcore.engine.models import usable_max_length
from prefcore.engine.progress import StageProgress
from prefcore.engine.reference import ModelReference
from prefcore.engine.reference import precompute_reference
from prefcore.engine.reward_trainer import split_records
from prefcore.engine.self_play import SelfPlayConfig
from prefcore.engine.self_play import run_self_play
from prefcore.engine.trainer import TrainConfig
from prefcore.engine.trainer import Trainer
from prefcore.engine.trainer import WeightedObjective
from prefcore.errors import ConfigError
from prefcore.evaluation import EvaluationContext
from prefcore.evaluation import GenerationSettings
from prefcore.judges import plan_judge
from prefcore.registry import Registry
from prefcore.settings import RunSettings
from prefcore.settings import WarmStartConfig
from prefcore.validation import check_run_config

logger = logging.getLogger("prefcore.pipeline")


@dataclass
class RunResult:
    """Where the run wrote its outputs and its final evaluation metrics."""

    run_dir: Path
    metrics: dict[str, float]


def _build(config_cls: type, section: Mapping[str, Any], name: str) -> Any:
    return build_config(config_cls, section, method=f"[{name}]")


def _prepare_run_dir(config: RunConfig, settings: RunSettings, out: str | None, resume: bool) -> Path:
    if out is None:
        if resume:
            raise ConfigError("--resume needs --out naming the run folder to continue.")
        out = str(Path(settings.out_dir) / time.strftime(f"{settings.name}-%Y%m%d-%H%M%S"))
    run_dir = Path(out)
    snapshot = json.dumps(config.to_dict(), sort_keys=True, default=str)
    saved = run_dir / "config.json"
    if resume:
        if not saved.exists():
            raise ConfigError(f"--resume: {run_dir} holds no run to continue (no config.json).")
        if saved.read_text(encoding="utf-8") != snapshot:
            raise ConfigError(f"--resume: the run file differs from the one {run_dir} was started with.")
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"run folder {run_dir} is not empty; pass --resume to continue it or choose another --out.")
    run_dir.mkdir(parents=True, exist_ok=True)
    if not saved.exists():  # on resume it already holds this exact snapshot
        atomic_write_text(saved, snapshot)
    atomic_write_text(run_dir / "config.toml", dump_run_config(config))  # `prefcore run` reads it back
    return run_dir


@dataclass(frozen=True)
class FeedbackData:
    """The run's feedback, split once: what trains, what is held out, which prompts are evaluated."""

    train: list[Any]
    heldout: list[Any]
    prompts: list[Any]
    demonstrations: list[Any]
    heldout_from: str

    def summary(self) -> dict[str, Any]:
        """The counts shown in the report and the log."""
        return {
            "training records": len(self.train),
            "held-out records": len(self.heldout),
            "held out from": self.heldout_from,
            "evaluation prompts": len(self.prompts),
        }


def gather_feedback(sources: Sequence[Any], settings: RunSettings) -> FeedbackData:
    """Every source's records, held out once.

    With ``[run] heldout`` files, every feedback record trains and the files are the held-out
    records. Otherwise one seeded split (``heldout_fraction``, whole prompts, as the
    preference-model stage splits) holds records out. The evaluation prompts are those a
    source reserves (the demo's), else the held-out records' own prompts: never a prompt
    the policy trained on.
    """
    records: list[Any] = []
    reserved: list[Any] = []
    demonstrations: list[Any] = []
    for source in sources:
        records += list(source.records())
        reserved += list(source.evaluation_prompts() or [])
        demonstrations += list(source.demonstrations() or [])
    files = settings.heldout_files
    if files:
        train = records
        heldout = [record for path in files for record in load_preferences(path)[0]]
        heldout_from = "file " + ", ".join(str(path) for path in files)
    else:
        train, heldout = split_records(records, settings.heldout_fraction, settings.seed)
        heldout_from = f"split of the feedback (heldout_fraction = {settings.heldout_fraction:g}, seed {settings.seed})"
    prompts = reserved or [prompt for prompt in dict.fromkeys(map(_prompt_of, heldout)) if prompt is not None]
    return FeedbackData(train, heldout, prompts[: settings.eval_prompts], demonstrations, heldout_from)


def _data_format(objectives: Sequence[SelectedMethod]) -> str:
    """The batch layout every selected objective accepts (the first one's preference order)."""
    first = objectives[0].method
    for data_format in first.data_formats:
        if all(data_format in entry.method.data_formats for entry in objectives):
            return data_format
    names = ", ".join(f"{entry.method.name} ({'/'.join(entry.method.data_formats)})" for entry in objectives)
    raise ConfigError(f"the selected usage objectives share no data format: {names}.")


def _prompt_of(record: Any) -> Any:
    return getattr(record, "prompt", None)


class _Hooks:
    """Fires lifecycle hooks on the registry's plugin manager (loggers are ordinary plugins).

    The run's own loggers are registered under names of this run folder and unregistered by
    ``close``, so a second run on the same plugin manager writes to its own folder. Hooks
    fire implementation by implementation (``LifecycleHooks``): a failing plugin is logged
    by name and skipped, and the other listeners keep working.
    """

    def __init__(self, registry: Registry, run_dir: Path) -> None:
        from prefcore.engine.lifecycle_loggers import CSVMetricsLogger
        from prefcore.engine.lifecycle_loggers import TensorBoardLogger

        self.manager = registry.plugin_manager
        self.run_dir = run_dir
        self.lifecycle = LifecycleHooks(self.manager)
        self.loggers: list[tuple[str, Any]] = []
        for kind, plugin in (
            # On resume the first new row of each kind drops the older rows of that kind at or
            # after its step, so rows written after the last checkpoint are replaced, not duplicated.
            ("csv_metrics", CSVMetricsLogger(run_dir)),
            ("tensorboard", TensorBoardLogger.if_available(run_dir)),
        ):
            if plugin is not None:
                name = f"prefcore.{kind}[{run_dir}]"
                self.manager.register(plugin, name=name)
                self.loggers.append((name, plugin))

    def fire(self, hook_name: str, **kwargs: Any) -> None:
        self.lifecycle.fire(hook_name, run_dir=self.run_dir, **kwargs)

    def close(self) -> None:
        """Unregister and close this run's loggers; report plugins that kept failing."""
        for name, plugin in self.loggers:
            if self.manager.has_plugin(name):
                self.manager.unregister(name=name)
            close = getattr(plugin, "close", None)
            if callable(close):
                close()
        self.loggers.clear()
        self.lifecycle.summary()


@contextlib.contextmanager
def _caller_state_kept() -> Iterator[None]:
    """The caller's seeds, RNG states and torch thread count are restored when the run ends.

    A run seeds ``torch`` and ``random`` and may set the thread count (``[run] threads``);
    a library call must not leave those changed behind the caller's back.
    """
    threads = torch.get_num_threads()
    python_state = random.getstate()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(python_state)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


@contextlib.contextmanager
def _transformers_quiet() -> Iterator[None]:
    """transformers' own progress bars and warnings stay out of the run's output, then come back.

    The run shows its own progress per stage; loading bars, "generation flags" notes and
    deprecation warnings raised inside transformers or peft would only bury it.
    """
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():  # deprecation notes of transformers and peft internals
            warnings.filterwarnings("ignore", module=r"(transformers|peft)(\.|$)")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def run_pipeline(
    config: RunConfig, *, out: str | None = None, resume: bool = False, registry: Registry | None = None
) -> RunResult:
    """Run a whole pipeline described by ``config``; see the module docstring."""
    registry = registry or Registry.from_environment()
    with _caller_state_kept(), _transformers_quiet():
        return _run_pipeline(config, out=out, resume=resume, registry=registry)


def _run_pipeline(config: RunConfig, *, out: str | None, resume: bool, registry: Registry) -> RunResult:
    selected = check_run_config(config, registry=registry).methods  # the whole file, as --dry-run checks it
    settings: RunSettings = _build(RunSettings, config.section("run"), "run")
    model_config: ModelConfig = _build(ModelConfig, config.section("model"), "model")
    train_config: TrainConfig = _build(TrainConfig, config.section("train"), "train")
    warm_config: WarmStartConfig = _build(WarmStartConfig, config.section("warm_start"), "warm_start")
    self_play: SelfPlayConfig = _build(SelfPlayConfig, config.section("self_play"), "self_play")
    objectives = selected.get("usage", [])
    if not objectives:
        raise ConfigError('the run file selects no usage objective: add a [usage] section with method = "dpo".')
    feedback_sources = [entry.method for entry in selected.get("feedback", [])]
    if not feedback_sources:
        raise ConfigError("the run file selects no feedback source: add a [feedback] section.")
    judge_plan = plan_judge(config, registry=registry, selected=selected)  # [judge]: fails before any work

    run_dir = _prepare_run_dir(config, settings, out, resume)
    device = resolve_device(model_config.device)
    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    random.seed(settings.seed)

    # -- feedback ------------------------------------------------------------------------
    data = gather_feedback(feedback_sources, settings)
    logger.info(
        "data: %d training records, %d held-out records (%s), %d evaluation prompts",
        len(data.train),
        len(data.heldout),
        data.heldout_from,
        len(data.prompts),
    )

    tokenizer = load_tokenizer(model_config)
    policy = load_policy(model_config, tokenizer, seed=settings.seed)
    # Sequences past the model's position embeddings would be accepted, then garbled.
    train_config = replace(train_config, max_length=usable_max_length(train_config.max_length, policy))
    checkpoints_exist = (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir())
    hooks = _Hooks(registry, run_dir)
    try:
        return _run_stages(
            config,
            selected,
            settings=settings,
            model_config=model_config,
            train_config=train_config,
            warm_config=warm_config,
            self_play=self_play,
            data=data,
            tokenizer=tokenizer,
            policy=policy,
            run_dir=run_dir,
            device=device,
            resume=resume,
            checkpoints_exist=checkpoints_exist,
            hooks=hooks,
            registry=registry,
            judge_plan=judge_plan,
        )
    finally:
        hooks.close()


def _run_stages(
    config: RunConfig,
    selected: Mapping[str, Sequence[SelectedMethod]],
    *,
    settings: RunSettings,
    model_config: ModelConfig,
    train_config: TrainConfig,
    warm_config: WarmStartConfig,
    self_play: SelfPlayConfig,
    data: FeedbackData,
    tokenizer: Any,
    policy: torch.nn.Module,
    run_dir: Path,
    device: torch.device,
    resume: bool,
    checkpoints_exist: bool,
    hooks: _Hooks,
    registry: Registry,
    judge_plan: Any,
) -> RunResult:
    """Warm start, preference models, usage objectives, evaluation and the report, in order."""
    objectives = selected.get("usage", [])
    feedback_sources = [entry.method for entry in selected.get("feedback", [])]
    evaluators = [entry.method for entry in selected.get("evaluation", [])]
    train_records, heldout_records, prompts = data.train, data.heldout, data.prompts
    demonstrations = data.demonstrations
    summary = data.summary()
    hooks.fire("prefcore_run_start", config=config.to_dict())

    # -- warm start (SFT) ------------------------------------------------------------------
    if warm_config.data is not None:  # the user's demonstrations also serve self-play
        demonstrations = load_demonstrations(warm_config.data)
    if warm_config.steps > 0:
        if warm_config.data is not None:
            warm_records, warm_from = demonstrations, f"file {warm_config.data}"
        elif demonstrations:
            warm_records, warm_from = demonstrations, "the feedback's demonstrations"
        else:
            warm_records, warm_from = train_records, "the training records (chosen completions)"
        summary["warm-start records"] = f"{len(warm_records)} from {warm_from}"
        policy = _warm_start(
            policy, tokenizer, warm_records, warm_config, train_config, run_dir, device, registry, hooks
        )

    # -- preference model ------------------------------------------------------------------
    scorer = None
    preference_models = selected.get("preference_model", [])
    if preference_models:
        scorer = _train_reward_models(
            [entry.method for entry in preference_models],
            train_records,
            tokenizer,
            config,
            model_config,
            settings,
            train_config,
            run_dir,
            device,
            resume,
            hooks,
        )
        if settings.reward_labels:
            train_records = relabel_pairs(train_records, scorer)

    # -- usage objectives ------------------------------------------------------------------
    weighted = [WeightedObjective(entry.method, entry.weight) for entry in objectives]
    methods = [entry.method for entry in objectives]
    reference_model = frozen_copy(policy)  # also the baseline of every comparison at evaluation
    generation = GenerationSettings(
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        num_samples=settings.samples_per_prompt,
        seed=settings.seed,
    )
    evaluation = _Evaluation(
        evaluators,
        hooks,
        run_dir,
        progress=train_config.progress,
        policy=policy,
        tokenizer=tokenizer,
        reference=reference_model,
        prompts=prompts,
        preferences=heldout_records,
        judge=judge_plan.build(feedback_sources, trained_scorer=scorer, device=str(device)),
        scorer=scorer,
        generation=generation,
        generation_prefix=methods[0].generation_prefix(),
        beta=float(getattr(methods[0].config, "beta", 0.1)),
        device=str(device),
        seed=settings.seed,
    )
    on_step = lambda step, metrics: hooks.fire("prefcore_train_step_end", step=step, metrics=metrics)
    if self_play.rounds > 0:
        if not (resume and (run_dir / "round-1").exists()):
            evaluation.run(0)
        spin_demonstrations = demonstrations or [r for r in train_records if hasattr(r, "completion")]
        run_self_play(
            policy,
            tokenizer,
            spin_demonstrations,
            weighted,
            train_config,
            self_play,
            run_dir=run_dir,
            device=device,
            on_step=on_step,
        )
        final_step = self_play.rounds * train_config.steps
    else:
        final_step = _train_once(
            policy,
            tokenizer,
            train_records,
            objectives,
            weighted,
            reference_model,
            settings,
            train_config,
            run_dir=run_dir,
            device=device,
            resume=resume,
            checkpoints_exist=checkpoints_exist,
            evaluation=evaluation,
            on_step=on_step,
            on_checkpoint=lambda step, path: hooks.fire("prefcore_checkpoint_saved", step=step, path=path),
        )
    evaluation.run(final_step)
    save_model(policy, tokenizer, run_dir / "model")
    from prefcore.report import write_report

    write_report(
        run_dir,
        config=config.to_dict(),
        metrics_csv=run_dir / "metrics.csv",
        eval_metrics=evaluation.metrics,
        samples=evaluation.samples,
        title=f"prefcore run: {settings.name}",
        data=summary,
    )
    hooks.fire("prefcore_run_end", metrics=evaluation.metrics)
    logger.info("run folder: %s", run_dir)
    return RunResult(run_dir=run_dir, metrics=evaluation.metrics)


def _train_reward_models(
    objectives: Sequence[Any],
    records: Sequence[Any],
    tokenizer: Any,
    config: RunConfig,
    model_config: ModelConfig,
    settings: RunSettings,
    train_config: TrainConfig,
    run_dir: Path,
    device: torch.device,
    resume: bool,
    hooks: _Hooks,
) -> Any:
    """Train every selected preference model on the feedback; returns the scorer (an ensemble's for several).

    One model trains in ``reward_model/`` and logs ``reward_model/<metric>``. Several
    ``[[preference_model]]`` sections each train their own network (model k in
    ``reward_model/<k>-<method>/`` with seed + k, logging ``reward_model/<k>-<method>/<metric>``),
    and score as one ``RewardEnsemble`` combined by ``[run] ensemble``.
    """
    from prefcore.engine.reward_ensemble import RewardEnsemble
    from prefcore.engine.reward_ensemble import check_combinable
    from prefcore.engine.reward_trainer import RewardTrainConfig
    from prefcore.engine.reward_trainer import train_preference_model

    section = dict(config.section("reward_model"))
    if "path" not in section and "demo" not in section:  # default: the policy's own backbone
        section.update({"path": model_config.path} if model_config.path else {"demo": True})
    reward_config: RewardTrainConfig = _build(RewardTrainConfig, section, "reward_model")
    check_combinable(objectives)

    networks = []
    for index, objective in enumerate(objectives):
        tag = "" if len(objectives) == 1 else f"{index}-{objective.name}"
        prefix = "reward_model/" + (f"{tag}/" if tag else "")
        stage = "preference model" + (f" {index + 1}/{len(objectives)} ({objective.name})" if tag else "")

        def on_step(step: int, metrics: Mapping[str, float], prefix: str = prefix) -> None:
            prefixed = {prefix + key: value for key, value in metrics.items()}
            hooks.fire("prefcore_train_step_end", step=step, metrics=prefixed)

        folder = run_dir / "reward_model" / tag if tag else run_dir / "reward_model"
        network = train_preference_model(
            records,
            objective,
            tokenizer,
            replace(reward_config, seed=reward_config.seed + index),
            run_dir=folder,
            device=device,
            on_step=on_step,
            resume=resume,
            progress=train_config.progress,
            stage=stage,
        )
        logger.info("%s: trained, saved in %s", stage, folder / "model")
        networks.append(network)
    if len(networks) == 1:
        return networks[0].scorer()
    return RewardEnsemble(networks, combine=settings.ensemble, penalty=settings.ensemble_penalty).scorer()


def relabel_pairs(records: Sequence[Any], scorer: Any, *, batch_size: int = 64) -> list[Any]:
    """The feedback's pairs re-judged by a reward model: higher score chosen, σ(Δ) as the soft label.

    Pairs the model scores equally are left out (they carry no preference).
    """
    pairs = to_pairs(records)
    relabelled = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        prompts = [pair.prompt for pair in chunk]
        chosen = scorer(prompts, [pair.chosen for pair in chunk])
        rejected = scorer(prompts, [pair.rejected for pair in chunk])
        for pair, first, second in zip(chunk, chosen, rejected, strict=True):
            gap = float(first) - float(second)
            if gap == 0:
                continue
            winner, loser = (pair.chosen, pair.rejected) if gap > 0 else (pair.rejected, pair.chosen)
            relabelled.append(
                replace(
                    pair,
                    chosen=winner,
                    rejected=loser,
                    margin=abs(gap),
                    probability=1 / (1 + math.exp(-abs(gap))),
                    source="ai",
                )
            )
    return relabelled


class _Evaluation:
    """Runs every selected evaluator on one shared context and reports through the hooks."""

    def __init__(
        self, evaluators: Sequence[Any], hooks: _Hooks, run_dir: Path, *, progress: bool = True, **context: Any
    ) -> None:
        self.evaluators = evaluators
        self.hooks = hooks
        self.run_dir = run_dir
        self.progress = progress
        self.context = context
        self.metrics: dict[str, float] = {}
        self.samples: list[Mapping[str, Any]] = []

    def run(self, step: int) -> None:
        if not self.evaluators:
            return
        context = EvaluationContext(**self.context)  # a fresh cache: the policy has changed
        metrics: dict[str, float] = {}
        rows: list[Mapping[str, Any]] = []
        stage = f"evaluation at step {step}"
        with StageProgress(stage, len(self.evaluators), enabled=self.progress, unit="evaluator") as bar:
            for done, evaluator in enumerate(self.evaluators, start=1):
                result = evaluator.evaluate(context)
                metrics.update({f"{evaluator.name}/{key}": float(value) for key, value in result.metrics.items()})
                rows += list(result.samples)
                bar.update(done)
        context.policy.train()
        self.metrics, self.samples = metrics, rows
        logger.info("%s: %s", stage, ", ".join(f"{name} {value:.4g}" for name, value in metrics.items()))
        self.hooks.fire("prefcore_evaluation_end", step=step, metrics=metrics)


def _train_once(
    policy: torch.nn.Module,
    tokenizer: Any,
    train_records: list[Any],
    objectives: Sequence[SelectedMethod],
    weighted: Sequence[WeightedObjective],
    reference_model: torch.nn.Module,
    settings: RunSettings,
    train_config: TrainConfig,
    *,
    run_dir: Path,
    device: torch.device,
    resume: bool,
    checkpoints_exist: bool,
    evaluation: _Evaluation,
    on_step: Any,
    on_checkpoint: Any,
) -> int:
    """Train the objectives on the feedback records; returns the last step."""
    methods = [entry.method for entry in objectives]
    data_format = _data_format(objectives)
    for method in methods:
        train_records = method.transform_records(train_records)
    items = build_items(
        train_records,
        data_format,
        tokenizer,
        max_length=train_config.max_length,
        truncation=train_config.truncation,
        mismatched=data_format == "unpaired",
    )
    needs_reference = any(method.uses_reference() for method in methods)
    if needs_reference and settings.reference == "none":
        raise ConfigError("[run] reference = 'none' but an objective needs reference log-probs.")
    reference_fn = cached = None
    if needs_reference:
        model_reference = ModelReference(
            reference_model, fused=train_config.fused_lm_head, backend=train_config.kernel_backend
        )
        if settings.reference == "precomputed":
            cached = precompute_reference(
                model_reference, items, pad_token_id=tokenizer.pad_token_id, device=device, cache_dir=run_dir
            )
        else:
            reference_fn = model_reference
    trainer = Trainer(
        policy,
        weighted,
        items,
        train_config,
        pad_token_id=tokenizer.pad_token_id,
        run_dir=run_dir,
        device=device,
        reference_logps=reference_fn,
        cached_reference=cached,
        on_step=on_step,
        on_checkpoint=on_checkpoint,
        on_evaluate=evaluation.run,
    )
    resumed = resume and checkpoints_exist and trainer.resume()
    if resumed:
        logger.info("resumed from step %d", trainer.step)
    else:
        if resume:
            logger.info("resume: no checkpoint of the policy yet; training starts at step 0")
        evaluation.run(0)  # the starting point: the policy still equals the reference
    metrics = trainer.fit()
    if metrics:
        logger.info("training: %d steps, last loss %.4f", trainer.step, metrics["loss"])
    trainer.save_final()  # nothing with checkpoint_every = 0
    return trainer.step


def _warm_start(
    policy: torch.nn.Module,
    tokenizer: Any,
    records: Sequence[Any],
    warm: WarmStartConfig,
    train_config: TrainConfig,
    run_dir: Path,
    device: torch.device,
    registry: Registry,
    hooks: _Hooks,
) -> torch.nn.Module:
    """SFT on demonstrations, once per run: a finished warm start is reloaded, not retrained.

    Its steps are logged as ``warm_start/<metric>`` (``warm_start/loss``, ``warm_start/nll``).
    """
    done = run_dir / "warm_start" / "model"
    if done.is_dir():
        logger.info("warm start: already done, reloaded from %s", done)
        return load_pretrained(done, device)
    sft = registry.create("usage", "sft", {})
    items = build_items(
        records, "sft", tokenizer, max_length=train_config.max_length, truncation=train_config.truncation
    )
    config = TrainConfig(
        steps=warm.steps,
        batch_size=warm.batch_size,
        lr=warm.lr,
        warmup_steps=warm.warmup_steps,
        schedule="cosine",
        max_length=train_config.max_length,
        seed=train_config.seed,
        fused_lm_head=train_config.fused_lm_head,
        kernel_backend=train_config.kernel_backend,
        checkpoint_every=train_config.checkpoint_every,
        progress=train_config.progress,
    )
    trainer = Trainer(
        policy,
        [WeightedObjective(sft)],
        items,
        config,
        pad_token_id=tokenizer.pad_token_id,
        run_dir=run_dir,
        device=device,
        checkpoint_tag="warm_start",
        on_step=lambda step, metrics: hooks.fire(
            "prefcore_train_step_end", step=step, metrics={f"warm_start/{key}": value for key, value in metrics.items()}
        ),
        stage="warm start",
    )
    if trainer.resume():
        logger.info("warm start: resumed from step %d", trainer.step)
    metrics = trainer.fit()
    if metrics:
        logger.info("warm start: %d steps on %d records, last loss %.4f", trainer.step, len(items), metrics["loss"])
    save_model(policy, tokenizer, done)
    return policy


def load_demonstrations(path: str | Path) -> list[Any]:
    """The demonstrations of a ``[warm_start] data`` file: TRL's SFT layouts (``messages``,
    ``prompt``/``completion``) or binary records labelled true (``read_demonstrations``)."""
    records, _ = read_demonstrations(path)
    return records

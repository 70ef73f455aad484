"""The pipeline: feedback → (warm start) → usage objectives → evaluation → run folder.

Every method is resolved by name through the registry before any work starts, so an
unknown name or bad option fails in the first second. A run folder holds ``config.toml``,
``metrics.csv``, checkpoints, the final model (loadable with
``AutoModelForCausalLM.from_pretrained``), ``report.md`` and plots. ``resume=True``
continues a killed run from its newest checkpoint and reproduces the same metrics.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from prefcore.api import SelectedMethod
from prefcore.api import resolve_run_config
from prefcore.config import RunConfig
from prefcore.config import build_config
from prefcore.data import to_pairs
from prefcore.engine.batching import build_items
from prefcore.engine.models import ModelConfig
from prefcore.engine.models import frozen_copy
from prefcore.engine.models import load_policy
from prefcore.engine.models import load_pretrained
from prefcore.engine.models import load_tokenizer
from prefcore.engine.models import resolve_device
from prefcore.engine.models import save_model
from prefcore.engine.reference import ModelReference
from prefcore.engine.reference import precompute_reference
from prefcore.engine.self_play import SelfPlayConfig
from prefcore.engine.self_play import run_self_play
from prefcore.engine.trainer import TrainConfig
from prefcore.engine.trainer import Trainer
from prefcore.engine.trainer import WeightedObjective
from prefcore.errors import ConfigError
from prefcore.evaluation import EvaluationContext
from prefcore.evaluation import GenerationSettings
from prefcore.methods import option
from prefcore.registry import Registry


@dataclass(frozen=True)
class RunSettings:
    """Options of the ``[run]`` section."""

    name: str = option("run", doc="a label for the report")
    out_dir: str = option("runs", doc="parent folder of run folders when --out is not given")
    seed: int = option(0, doc="seed of data splits, model initialisation and evaluation draws")
    reference: str = option("model", doc="'model' (frozen copy), 'precomputed' (cached sums) or 'none'")
    heldout_fraction: float = option(0.1, doc="share of feedback records held out for evaluation")
    eval_prompts: int = option(64, doc="held-out prompts evaluated per evaluation pass")
    max_new_tokens: int = option(24, doc="generation length at evaluation")
    temperature: float = option(0.7, doc="sampling temperature at evaluation (0 = greedy)")
    samples_per_prompt: int = option(1, doc="completions sampled per held-out prompt at evaluation")
    reward_labels: bool = option(
        False, doc="relabel the training pairs with the trained preference model (feedback → RM → usage)"
    )
    threads: int = option(0, doc="CPU threads for torch; 0 keeps torch's default (1 is fastest for tiny models)")

    def __post_init__(self) -> None:
        if self.reference not in ("model", "precomputed", "none"):
            raise ValueError(f"reference must be 'model', 'precomputed' or 'none'. Got {self.reference!r}.")
        if not 0 <= self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction must be in [0, 1). Got {self.heldout_fraction}.")


@dataclass(frozen=True)
class WarmStartConfig:
    """Options of the ``[warm_start]`` section: SFT before preference training."""

    steps: int = option(0, doc="SFT steps before preference training; 0 skips the warm start")
    lr: float = option(1e-3, doc="SFT learning rate")
    batch_size: int = option(16, doc="SFT sequences per step")
    warmup_steps: int = option(0, doc="linear warm-up steps")


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
    saved.write_text(snapshot, encoding="utf-8")
    _write_toml(run_dir / "config.toml", config.to_dict())
    return run_dir


def _write_toml(path: Path, data: Mapping[str, Any]) -> None:
    """A readable copy of the resolved run file (values as TOML literals)."""

    def literal(value: Any) -> str:
        return json.dumps(value if not isinstance(value, tuple) else list(value), default=str)

    lines = []
    for section, body in data.items():
        tables = body if isinstance(body, list) else [body]
        for table in tables:
            lines.append(f"[[{section}]]" if isinstance(body, list) else f"[{section}]")
            lines += [f"{key} = {literal(value)}" for key, value in table.items()]
            lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")


def _split(records: Sequence[Any], fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    cut = round(len(records) * fraction)
    heldout = sorted(order[:cut])
    train = sorted(order[cut:])
    return [records[i] for i in train], [records[i] for i in heldout]


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
    """Fires lifecycle hooks on the registry's plugin manager (loggers are ordinary plugins)."""

    def __init__(self, registry: Registry, run_dir: Path) -> None:
        from prefcore.engine.lifecycle_loggers import CSVMetricsLogger
        from prefcore.engine.lifecycle_loggers import TensorBoardLogger

        self.hook = registry.plugin_manager.hook
        self.run_dir = run_dir
        manager = registry.plugin_manager
        for name, plugin in (
            # On resume the first new row drops every older row at or after its step, so rows
            # written after the last checkpoint are replaced, not duplicated.
            ("prefcore.csv_metrics", CSVMetricsLogger(run_dir)),
            ("prefcore.tensorboard", TensorBoardLogger.if_available(run_dir)),
        ):
            if plugin is not None and not manager.has_plugin(name):
                manager.register(plugin, name=name)


def run_pipeline(
    config: RunConfig, *, out: str | None = None, resume: bool = False, registry: Registry | None = None
) -> RunResult:
    """Run a whole pipeline described by ``config``; see the module docstring."""
    registry = registry or Registry.from_environment()
    selected = resolve_run_config(config, registry=registry)
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
    evaluators = [entry.method for entry in selected.get("evaluation", [])]

    run_dir = _prepare_run_dir(config, settings, out, resume)
    device = resolve_device(model_config.device)
    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    random.seed(settings.seed)

    # -- feedback ------------------------------------------------------------------------
    records: list[Any] = []
    prompts: list[Any] = []
    demonstrations: list[Any] = []
    judge = None
    for source in feedback_sources:
        source_records = list(source.records())
        reserved = source.evaluation_prompts()
        if reserved is not None:
            records += source_records
            prompts += list(reserved)
        else:
            train_part, heldout_part = _split(source_records, settings.heldout_fraction, settings.seed)
            records += train_part
            prompts += [p for p in dict.fromkeys(map(_prompt_of, heldout_part)) if p is not None]
        demonstrations += list(source.demonstrations() or [])
        judge = judge or source.judge()
    train_records, heldout_records = _split(records, settings.heldout_fraction, settings.seed + 1)
    prompts = prompts[: settings.eval_prompts]

    tokenizer = load_tokenizer(model_config)
    policy = load_policy(model_config, tokenizer, seed=settings.seed)
    checkpoints_exist = (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir())
    hooks = _Hooks(registry, run_dir)
    hooks.hook.prefcore_run_start(run_dir=run_dir, config=config.to_dict())

    # -- warm start (SFT) ------------------------------------------------------------------
    if warm_config.steps > 0:
        policy = _warm_start(
            policy, tokenizer, demonstrations or train_records, warm_config, train_config, run_dir, device, registry
        )

    # -- preference model ------------------------------------------------------------------
    scorer = None
    preference_models = selected.get("preference_model", [])
    if preference_models:
        scorer = _train_reward_model(
            preference_models[0].method, train_records, tokenizer, config, model_config, run_dir, device, resume, hooks
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
        policy=policy,
        tokenizer=tokenizer,
        reference=reference_model,
        prompts=prompts,
        preferences=heldout_records,
        judge=judge,
        scorer=scorer,
        generation=generation,
        generation_prefix=methods[0].generation_prefix(),
        beta=float(getattr(methods[0].config, "beta", 0.1)),
        device=str(device),
        seed=settings.seed,
    )
    on_step = lambda step, metrics: hooks.hook.prefcore_train_step_end(run_dir=run_dir, step=step, metrics=metrics)
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
            on_checkpoint=lambda step, path: hooks.hook.prefcore_checkpoint_saved(
                run_dir=run_dir, step=step, path=path
            ),
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
    )
    hooks.hook.prefcore_run_end(run_dir=run_dir, metrics=evaluation.metrics)
    return RunResult(run_dir=run_dir, metrics=evaluation.metrics)


def _train_reward_model(
    objective: Any,
    records: Sequence[Any],
    tokenizer: Any,
    config: RunConfig,
    model_config: ModelConfig,
    run_dir: Path,
    device: torch.device,
    resume: bool,
    hooks: _Hooks,
) -> Any:
    """Train the selected preference model on the feedback; returns its scorer."""
    from prefcore.engine.reward_trainer import RewardTrainConfig
    from prefcore.engine.reward_trainer import train_preference_model

    section = dict(config.section("reward_model"))
    if "path" not in section and "demo" not in section:  # default: the policy's own backbone
        section.update({"path": model_config.path} if model_config.path else {"demo": True})
    reward_config: RewardTrainConfig = _build(RewardTrainConfig, section, "reward_model")

    def on_step(step: int, metrics: Mapping[str, float]) -> None:
        prefixed = {f"reward_model/{key}": value for key, value in metrics.items()}
        hooks.hook.prefcore_train_step_end(run_dir=run_dir, step=step, metrics=prefixed)

    network = train_preference_model(
        records,
        objective,
        tokenizer,
        reward_config,
        run_dir=run_dir / "reward_model",
        device=device,
        on_step=on_step,
        resume=resume,
    )
    return network.scorer()


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
                    margin=None,
                    probability=1 / (1 + math.exp(-abs(gap))),
                    source="ai",
                )
            )
    return relabelled


class _Evaluation:
    """Runs every selected evaluator on one shared context and reports through the hooks."""

    def __init__(self, evaluators: Sequence[Any], hooks: _Hooks, run_dir: Path, **context: Any) -> None:
        self.evaluators = evaluators
        self.hooks = hooks
        self.run_dir = run_dir
        self.context = context
        self.metrics: dict[str, float] = {}
        self.samples: list[Mapping[str, Any]] = []

    def run(self, step: int) -> None:
        if not self.evaluators:
            return
        context = EvaluationContext(**self.context)  # a fresh cache: the policy has changed
        metrics: dict[str, float] = {}
        rows: list[Mapping[str, Any]] = []
        for evaluator in self.evaluators:
            result = evaluator.evaluate(context)
            metrics.update({f"{evaluator.name}/{key}": float(value) for key, value in result.metrics.items()})
            rows += list(result.samples)
        context.policy.train()
        self.metrics, self.samples = metrics, rows
        self.hooks.hook.prefcore_evaluation_end(run_dir=self.run_dir, step=step, metrics=metrics)


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
    if not resumed:
        evaluation.run(0)  # the starting point: the policy still equals the reference
    trainer.fit()
    trainer.save()
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
) -> torch.nn.Module:
    """SFT on demonstrations, once per run: a finished warm start is reloaded, not retrained."""
    done = run_dir / "warm_start" / "model"
    if done.is_dir():
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
    )
    trainer.resume()
    trainer.fit()
    save_model(policy, tokenizer, done)
    return policy

"""The pipeline: a short runner composing the stages of ``prefcore.stages`` in order.

    check the run file → run folder → feedback → policy → warm start → preference models
    → relabelling → training (with evaluation) → report

Every method is resolved by name through the registry before any work starts, so an
unknown name or bad option fails in the first second. Each stage takes what the stages
before it produced and returns a small result (``FeedbackData``, ``Policy``, ``WarmStart``,
``PreferenceModels``, ``Trained``, ``RunResult``); nothing returns here to be looked up
again. A run folder holds ``config.toml``, ``metrics.csv``, checkpoints, the final model
(loadable with ``AutoModelForCausalLM.from_pretrained``), ``report.md`` and plots.
``resume=True`` continues a killed run from its newest checkpoint and reproduces the same
metrics. A human-in-the-loop run (``[loop] kind = "human_online_dpo"``) returns early, with
``RunResult.paused`` saying what it waits for, until its last iteration is trained.

A run is a library call like any other (``prefcore.stages.session``): loggers are
registered for the run only, and the caller's seeds, RNG states, torch thread count and
transformers verbosity are restored when it returns. Messages go through ``logging``
(``prefcore.pipeline``, ``prefcore.progress``).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any

import torch

from prefcore.config import RunConfig
from prefcore.distributed import run as distributed_run
from prefcore.distributed.process_group import is_main
from prefcore.distributed.process_group import teardown
from prefcore.engine.models import frozen_copy
from prefcore.engine.models import resolve_device
from prefcore.errors import ConfigError
from prefcore.registry import Registry
from prefcore.stages.evaluate import Evaluation
from prefcore.stages.evaluate import run_sampling
from prefcore.stages.feedback import FeedbackData
from prefcore.stages.feedback import InMemoryFeedback
from prefcore.stages.feedback import gather_feedback
from prefcore.stages.feedback import records_from_rows
from prefcore.stages.policy import Policy
from prefcore.stages.policy import start_policy
from prefcore.stages.preference_models import train_preference_models
from prefcore.stages.relabel import relabel_pairs
from prefcore.stages.report import RunResult
from prefcore.stages.report import write_outputs
from prefcore.stages.session import RunContext
from prefcore.stages.session import RunHooks
from prefcore.stages.session import caller_state_kept
from prefcore.stages.session import prepare_run_dir
from prefcore.stages.session import transformers_quiet
from prefcore.stages.training import train_policy
from prefcore.stages.warm_start import warm_start
from prefcore.validation import CheckedRun
from prefcore.validation import check_run_config

__all__ = ["InMemoryInputs", "RunResult", "gather_feedback", "relabel_pairs", "run_pipeline"]

logger = logging.getLogger("prefcore.pipeline")


@dataclass(frozen=True)
class InMemoryInputs:
    """What a Python caller hands over instead of naming it in the run file (``prefcore.train``).

    ``model`` and ``tokenizer`` come together; ``data`` and ``heldout`` are records (already
    read with ``records_from_rows``).
    """

    model: Any = None
    tokenizer: Any = None
    data: list[Any] | None = None
    heldout: list[Any] | None = None

    @classmethod
    def read(cls, model: Any = None, tokenizer: Any = None, data: Any = None, heldout: Any = None) -> InMemoryInputs:
        if (model is None) != (tokenizer is None):
            raise ConfigError("give the model and its tokenizer together (model=..., tokenizer=...).", field="model")
        return cls(
            model=model,
            tokenizer=tokenizer,
            data=None if data is None else records_from_rows(data, source="data"),
            heldout=None if heldout is None else records_from_rows(heldout, source="heldout"),
        )

    @property
    def given(self) -> tuple[str, ...]:
        """The names ``check_run_config(given=...)`` takes."""
        values = {"model": self.model, "data": self.data, "heldout": self.heldout}
        return tuple(name for name, value in values.items() if value is not None)


def run_pipeline(
    config: RunConfig,
    *,
    out: str | None = None,
    resume: bool = False,
    registry: Registry | None = None,
    inputs: InMemoryInputs | None = None,
) -> RunResult:
    """Run a whole pipeline described by ``config``; see the module docstring.

    Arguments:
        config: the parsed run file.
        out: the run folder (default: ``[run] out_dir``/``name``-timestamp).
        resume: continue the run in ``out`` from its newest checkpoint.
        registry: the methods to resolve names with (default: everything installed).
        inputs: a model, tokenizer and records given in memory (``prefcore.train`` builds it).
    """
    registry = registry or Registry.from_environment()
    with caller_state_kept(), transformers_quiet():
        parallel = distributed_run.start(config, registry)  # under torchrun: [distributed] joins the process group
        try:
            return _run(config, out=out, resume=resume, registry=registry, inputs=inputs or InMemoryInputs())
        finally:
            if parallel is not None:
                teardown()


def _run(config: RunConfig, *, out: str | None, resume: bool, registry: Registry, inputs: InMemoryInputs) -> RunResult:
    checked = check_run_config(config, registry=registry, given=inputs.given)  # the whole file, as --dry-run
    settings = checked.sections["run"]
    model_config = checked.sections["model"]
    sources = [entry.method for entry in checked.selected("feedback")]
    if inputs.data is not None:
        sources.append(InMemoryFeedback(inputs.data))

    run_dir = distributed_run.shared_run_dir(lambda: prepare_run_dir(config, settings, out, resume))
    device = distributed_run.rank_device(resolve_device(model_config.device))
    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    random.seed(settings.seed)

    feedback = gather_feedback(sources, settings, heldout=inputs.heldout)
    logger.info(
        "data: %d training records, %d held-out records (%s), %d evaluation prompts",
        len(feedback.train),
        len(feedback.heldout),
        feedback.heldout_from,
        len(feedback.prompts),
    )
    policy = start_policy(
        model_config,
        checked.sections["train"],
        device=device,
        seed=settings.seed,
        model=inputs.model,
        tokenizer=inputs.tokenizer,
    )
    checkpoints = run_dir / "checkpoints"
    # under torchrun only rank 0 reports into the run folder; the others log to a throwaway folder
    report_dir = distributed_run.reporting_dir(run_dir)
    hooks = RunHooks(registry, report_dir, settings.report_to, name=settings.name, config=config.to_dict())
    run = RunContext(
        config=config,
        settings=settings,
        run_dir=run_dir,
        device=device,
        hooks=hooks,
        registry=registry,
        resume=resume,
        checkpoints_existed=checkpoints.is_dir() and any(checkpoints.iterdir()),
    )
    try:
        return _run_stages(run, checked, feedback, policy)
    finally:
        hooks.close()


def _run_stages(run: RunContext, checked: CheckedRun, feedback: FeedbackData, start: Policy) -> RunResult:
    """Warm start, preference models, relabelling, training with evaluation, and the report, in order."""
    sections, settings, tokenizer = checked.sections, run.settings, start.tokenizer
    train_config = start.train_config
    run.hooks.fire("prefcore_run_start", config=run.config.to_dict())
    summary = feedback.summary()

    warm = warm_start(run, start.model, tokenizer, feedback, sections["warm_start"], train_config)
    if warm.records is not None:
        summary["warm-start records"] = warm.records

    records, scorer = feedback.train, None
    if checked.selected("preference_model"):
        models = train_preference_models(
            run,
            checked.selected("preference_model"),
            feedback.train,
            tokenizer,
            sections["reward_model"],
            progress=train_config.progress,
        )
        scorer = models.scorer
        if settings.reward_labels:
            records = relabel_pairs(records, scorer)

    objectives = checked.selected("usage")
    first = objectives[0].method
    reference = frozen_copy(warm.policy)  # also the baseline of every comparison at evaluation
    evaluation = Evaluation(
        [entry.method for entry in checked.selected("evaluation")],  # every rank: the work is split across them
        run.hooks,
        progress=train_config.progress,
        policy=warm.policy,
        tokenizer=tokenizer,
        reference=reference,
        prompts=feedback.prompts,
        preferences=feedback.heldout,
        training=feedback.train,
        judge=sections["judge"].build(
            [entry.method for entry in checked.selected("feedback")], trained_scorer=scorer, device=str(run.device)
        ),
        scorer=scorer,
        device=str(run.device),
        **run_sampling(settings, first),
    )
    trained = train_policy(
        run,
        warm.policy,
        tokenizer,
        records,
        objectives,
        data_format=checked.data_format,
        reference=reference,
        train_config=train_config,
        self_play=sections["self_play"],
        demonstrations=warm.demonstrations,
        evaluation=evaluation,
        online=sections["online"],
        rewards=sections.get("reward"),
        trained_scorer=scorer,
        loop=sections["loop"],
    )
    if trained.paused is not None:  # the human loop waits for answers: no final save, evaluation or report
        return RunResult(run_dir=run.run_dir, metrics={}, model=warm.policy, tokenizer=tokenizer, paused=trained.paused)
    evaluation.run(trained.final_step)  # every rank takes its share; rank 0 reports
    if not is_main():  # rank 0 writes the report and the (gathered) final model
        return RunResult(run_dir=run.run_dir, metrics={}, model=warm.policy, tokenizer=tokenizer)
    return write_outputs(run, warm.policy, tokenizer, evaluation, summary)

"""Stage 6, training in a loop: the policy's own samples, ranked by ``[[reward]]``, train offline objectives.

``[loop] kind = "online_dpo"`` trains the pairwise ``[usage]`` objectives on each online step's
best-versus-worst pairs; ``kind = "best_of_n"`` fine-tunes with ``sft`` on the best of n samples,
iteration after iteration (``prefcore.engine.online_loops``). Prompts and what a reward reads come
from the feedback records as for an online objective (``prefcore.stages.online``); evaluation runs
before the first step, every ``[train] eval_every`` online steps (online DPO) or after each
iteration (best-of-n), and after the last.

``kind = "human_online_dpo"`` ranks by people instead (``prefcore.engine.human_loop``): each
``prefcore run`` advances by one step (export the first iteration's items; or train on the
answered iteration and export the next; or say the answers are still awaited) and the run
pauses (``HumanRound.paused``) until the last of ``[loop] iterations`` is trained. Evaluation
runs before the first export, every ``[train] eval_every`` iterations, and after the last.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from prefcore.api import SelectedMethod
from prefcore.engine.checkpoint import list_checkpoints
from prefcore.engine.human_loop import HumanOnlineDPO
from prefcore.engine.human_loop import HumanStep
from prefcore.engine.online_loops import OnlineDPOTrainer
from prefcore.engine.online_loops import run_best_of_n
from prefcore.engine.trainer import WeightedObjective
from prefcore.errors import ConfigError
from prefcore.rewards import RewardPlan
from prefcore.rewards import build_reward
from prefcore.settings import LoopConfig
from prefcore.settings import OnlineLoopConfig
from prefcore.settings import TrainConfig
from prefcore.stages.evaluate import Evaluation
from prefcore.stages.online import online_prompts
from prefcore.stages.online import reward_function
from prefcore.stages.session import RunContext

__all__ = ["HumanRound", "exchange_folder", "train_in_loop", "train_with_people"]

logger = logging.getLogger("prefcore.pipeline")


def train_in_loop(
    run: RunContext,
    policy: torch.nn.Module,
    tokenizer: Any,
    records: Sequence[Any],
    objectives: Sequence[SelectedMethod],
    *,
    reference: torch.nn.Module,
    train_config: TrainConfig,
    online: OnlineLoopConfig,
    loop: LoopConfig,
    rewards: RewardPlan,
    trained_scorer: Any,
    evaluation: Evaluation,
) -> int:
    """Run ``loop``; returns the step reached (online steps, or iterations × ``[train] steps``)."""
    prompts, metadata = online_prompts(records)
    reward = reward_function(build_reward(rewards, trained_scorer=trained_scorer, device=str(run.device)))
    weighted = [WeightedObjective(entry.method, entry.weight) for entry in objectives]
    prefix = objectives[0].method.generation_prefix()
    measured = None if run.settings.reference == "none" else reference  # the KL needs the frozen copy
    on_step = run.hooks.step_reporter()
    logger.info(
        "%s: %d training prompts, %d samples each, rewards %s",
        loop.kind,
        len(prompts),
        online.samples_per_prompt,
        ", ".join(rewards.names),
    )
    if loop.kind == "online_dpo":
        trainer = OnlineDPOTrainer(
            policy,
            weighted,
            prompts,
            metadata,
            train_config,
            online,
            tokenizer=tokenizer,
            reward=reward,
            run_dir=run.run_dir,
            device=run.device,
            reference=measured,
            prefix=prefix,
            on_step=on_step,
            on_checkpoint=lambda step, path: run.hooks.fire("prefcore_checkpoint_saved", step=step, path=path),
            on_evaluate=evaluation.run,
        )
        if run.resume and run.checkpoints_existed and trainer.resume():
            logger.info("resumed from online step %d", trainer.online_step)
        else:
            evaluation.run(0)
        trainer.fit()
        trainer.save_final()
        return trainer.online_step
    if not (run.resume and (run.run_dir / "iteration-1").exists()):
        evaluation.run(0)
    run_best_of_n(
        policy,
        tokenizer,
        prompts,
        metadata,
        weighted,
        train_config,
        online,
        loop,
        reward=reward,
        run_dir=run.run_dir,
        device=run.device,
        reference=measured,
        prefix=prefix,
        on_step=on_step,
        on_iteration=on_step,
        on_evaluate=evaluation.run,
    )
    return loop.iterations * train_config.steps


@dataclass(frozen=True)
class HumanRound:
    """The iteration reached, and what the run waits for (None once every iteration is trained)."""

    step: int
    paused: str | None


def exchange_folder(run: RunContext, loop: LoopConfig) -> Path:
    """``[loop] exchange`` (a relative path is inside the run folder, so a resume works from anywhere), or
    ``<run folder>/exchange`` by default."""
    return run.run_dir / (loop.exchange or "exchange")


def _no_reward(rollouts: Any, metadata: Any) -> Any:
    raise AssertionError("the human loop ranks by people; no reward is ever called")


def train_with_people(
    run: RunContext,
    policy: torch.nn.Module,
    tokenizer: Any,
    records: Sequence[Any],
    objectives: Sequence[SelectedMethod],
    *,
    reference: torch.nn.Module,
    train_config: TrainConfig,
    online: OnlineLoopConfig,
    loop: LoopConfig,
    evaluation: Evaluation,
) -> HumanRound:
    """One ``HumanOnlineDPO.advance`` of the run (module docstring); a fresh run refuses a used exchange folder."""
    prompts, metadata = online_prompts(records)
    exchange = exchange_folder(run, loop)
    started = bool(list_checkpoints(run.run_dir)) or (exchange / "iteration-1").exists()
    if started and not run.resume:
        raise ConfigError(
            f"the exchange folder {exchange} already holds another run's iterations: "
            "choose another [loop] exchange, or continue that run with --resume.",
            field="loop.exchange",
        )
    trainer = HumanOnlineDPO(
        policy,
        [WeightedObjective(entry.method, entry.weight) for entry in objectives],
        prompts,
        metadata,
        train_config,
        replace(online, steps=loop.iterations),
        tokenizer=tokenizer,
        reward=_no_reward,
        run_dir=run.run_dir,
        device=run.device,
        reference=None if run.settings.reference == "none" else reference,
        prefix=objectives[0].method.generation_prefix(),
        on_step=run.hooks.step_reporter(),
        on_checkpoint=lambda step, path: run.hooks.fire("prefcore_checkpoint_saved", step=step, path=path),
        exchange=exchange,
    )
    if not started:
        logger.info(
            "human_online_dpo: %d training prompts, %d per iteration, %d samples each, %d iterations, exchange %s",
            len(prompts),
            online.prompts_per_step,
            online.samples_per_prompt,
            loop.iterations,
            exchange,
        )
        evaluation.run(0)
    step = trainer.advance()
    reached = trainer.online_step
    logger.info(
        "human_online_dpo: iteration %d %s%s",
        step.iteration,
        step.status,
        "".join(f", {key} {value:g}" for key, value in step.metrics.items() if key in _SHOWN),
    )
    if reached >= loop.iterations:
        return HumanRound(reached, None)
    every = train_config.eval_every
    if step.status == "trained" and every and reached % every == 0:
        evaluation.run(reached)
    return HumanRound(reached, _pause_message(step))


def _pause_message(step: HumanStep) -> str:
    """What the paused run did and what to do next (``HumanStep.message`` holds the commands)."""
    metrics = step.metrics
    if step.status == "trained":
        done = (
            f"iteration {step.iteration} trained on {metrics['pairs']:g} voted pairs "
            f"({metrics['answers']:g} answers by {metrics['annotators']:g} annotator(s), "
            f"{metrics['tied_pairs']:g} tied pairs dropped); {metrics['exported_items']:g} items exported for "
        )
        return done + step.message
    if step.status == "exported":
        return f"{metrics['exported_items']:g} items exported for " + step.message
    return f"waiting for answers: {step.message}"


_SHOWN = ("exported_items", "single_completion_prompts", "answers", "annotators", "pairs", "tied_pairs", "loss")

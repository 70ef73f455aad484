"""Stage 6, training in a loop: the policy's own samples, ranked by ``[[reward]]``, train offline objectives.

``[loop] kind = "online_dpo"`` trains the pairwise ``[usage]`` objectives on each online step's
best-versus-worst pairs; ``kind = "best_of_n"`` fine-tunes with ``sft`` on the best of n samples,
iteration after iteration (``prefcore.engine.online_loops``). Prompts and what a reward reads come
from the feedback records as for an online objective (``prefcore.stages.online``); evaluation runs
before the first step, every ``[train] eval_every`` online steps (online DPO) or after each
iteration (best-of-n), and after the last.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from prefcore.api import SelectedMethod
from prefcore.engine.online_loops import OnlineDPOTrainer
from prefcore.engine.online_loops import run_best_of_n
from prefcore.engine.trainer import WeightedObjective
from prefcore.rewards import RewardPlan
from prefcore.rewards import build_reward
from prefcore.settings import LoopConfig
from prefcore.settings import OnlineLoopConfig
from prefcore.settings import TrainConfig
from prefcore.stages.evaluate import Evaluation
from prefcore.stages.online import online_prompts
from prefcore.stages.online import reward_function
from prefcore.stages.session import RunContext

__all__ = ["train_in_loop"]

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

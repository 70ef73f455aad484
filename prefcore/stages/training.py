"""Stage 6, training: the usage objectives train the policy against its frozen reference.

Once on the feedback records (``[train]``), or in ``[self_play] rounds`` of SPIN, where each
round's policy answers the demonstrations' prompts and becomes the next round's reference.
An online objective (data format "rollout") trains on its own samples instead
(``prefcore.stages.online``), and a ``[loop]`` trains the offline objectives on the policy's
ranked samples (``prefcore.stages.loops``: online DPO, best-of-n).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from prefcore.api import SelectedMethod
from prefcore.engine.batching import build_items
from prefcore.engine.reference import ModelReference
from prefcore.engine.reference import precompute_reference
from prefcore.engine.self_play import run_self_play
from prefcore.engine.trainer import Trainer
from prefcore.engine.trainer import WeightedObjective
from prefcore.rollout import ROLLOUT_FORMAT
from prefcore.settings import LoopConfig
from prefcore.settings import OnlineLoopConfig
from prefcore.settings import SelfPlayConfig
from prefcore.settings import TrainConfig
from prefcore.stages.evaluate import Evaluation
from prefcore.stages.session import RunContext

__all__ = ["Trained", "train_policy"]

logger = logging.getLogger("prefcore.pipeline")


@dataclass(frozen=True)
class Trained:
    """The step the policy (trained in place) reached, and what a paused run waits for (human loop)."""

    final_step: int
    paused: str | None = None


def train_policy(
    run: RunContext,
    policy: torch.nn.Module,
    tokenizer: Any,
    records: list[Any],
    objectives: Sequence[SelectedMethod],
    *,
    data_format: str,
    reference: torch.nn.Module,
    train_config: TrainConfig,
    self_play: SelfPlayConfig,
    demonstrations: Sequence[Any],
    evaluation: Evaluation,
    online: OnlineLoopConfig | None = None,
    rewards: Any = None,
    trained_scorer: Any = None,
    loop: LoopConfig | None = None,
) -> Trained:
    """Train the objectives, as one weighted sum, once or in self-play rounds; evaluates at step 0 first.

    With an online objective (``data_format == "rollout"``) the online loop trains it instead, on
    the records' prompts, scored by ``rewards`` (the checked ``[[reward]]`` plan; ``trained_scorer``
    is this run's preference model, for ``path = "trained"``) with the ``[online]`` settings.
    """
    if data_format == ROLLOUT_FORMAT:
        from prefcore.stages.online import train_online  # loads the reward and rollout machinery only when used

        step = train_online(
            run,
            policy,
            tokenizer,
            records,
            objectives[0].method,
            reference=reference,
            train_config=train_config,
            online=online or OnlineLoopConfig(),
            rewards=rewards,
            trained_scorer=trained_scorer,
            evaluation=evaluation,
        )
        return Trained(step)
    if loop is not None and loop.kind == "human_online_dpo":
        from prefcore.stages.loops import train_with_people

        round_ = train_with_people(
            run,
            policy,
            tokenizer,
            records,
            objectives,
            reference=reference,
            train_config=train_config,
            online=online or OnlineLoopConfig(),
            loop=loop,
            evaluation=evaluation,
        )
        return Trained(round_.step, paused=round_.paused)
    if loop is not None and loop.kind != "none":
        from prefcore.stages.loops import train_in_loop  # loads the reward and rollout machinery only when used

        step = train_in_loop(
            run,
            policy,
            tokenizer,
            records,
            objectives,
            reference=reference,
            train_config=train_config,
            online=online or OnlineLoopConfig(),
            loop=loop,
            rewards=rewards,
            trained_scorer=trained_scorer,
            evaluation=evaluation,
        )
        return Trained(step)
    weighted = [WeightedObjective(entry.method, entry.weight) for entry in objectives]
    on_step = run.hooks.step_reporter()
    if self_play.rounds > 0:
        if not (run.resume and (run.run_dir / "round-1").exists()):
            evaluation.run(0)
        spin_demonstrations = list(demonstrations) or [record for record in records if hasattr(record, "completion")]
        run_self_play(
            policy,
            tokenizer,
            spin_demonstrations,
            weighted,
            train_config,
            self_play,
            run_dir=run.run_dir,
            device=run.device,
            on_step=on_step,
        )
        return Trained(self_play.rounds * train_config.steps)
    methods = [entry.method for entry in objectives]
    for method in methods:
        records = method.transform_records(records)
    items = build_items(
        records,
        data_format,
        tokenizer,
        max_length=train_config.max_length,
        truncation=train_config.truncation,
        mismatched=data_format == "unpaired",
        max_prompt_length=train_config.max_prompt_length,
        prompt_truncation_side=train_config.prompt_truncation_side,
        completion_truncation_side=train_config.completion_truncation_side,
    )
    reference_fn = cached = None
    if any(method.uses_reference() for method in methods):  # [run] reference = "none" was refused if so
        model_reference = ModelReference(
            reference, fused=train_config.fused_lm_head, backend=train_config.kernel_backend
        )
        if run.settings.reference == "precomputed":
            cached = precompute_reference(
                model_reference, items, pad_token_id=tokenizer.pad_token_id, device=run.device, cache_dir=run.run_dir
            )
        else:
            reference_fn = model_reference
    trainer = Trainer(
        policy,
        weighted,
        items,
        train_config,
        pad_token_id=tokenizer.pad_token_id,
        run_dir=run.run_dir,
        device=run.device,
        reference_logps=reference_fn,
        cached_reference=cached,
        on_step=on_step,
        on_checkpoint=lambda step, path: run.hooks.fire("prefcore_checkpoint_saved", step=step, path=path),
        on_evaluate=evaluation.run,
    )
    resumed = run.resume and run.checkpoints_existed and trainer.resume()
    if resumed:
        logger.info("resumed from step %d", trainer.step)
    else:
        if run.resume:
            logger.info("resume: no checkpoint of the policy yet; training starts at step 0")
        evaluation.run(0)  # the starting point: the policy still equals the reference
    metrics = trainer.fit()
    if metrics:
        logger.info("training: %d steps, last loss %.4f", trainer.step, metrics["loss"])
    trainer.save_final()  # nothing with checkpoint_every = 0
    return Trained(trainer.step)

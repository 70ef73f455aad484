"""Stage 3, warm start: SFT on demonstrations before preference training (``[warm_start] steps`` > 0).

The demonstrations are, in order: the ``[warm_start] data`` file, the feedback's own
demonstrations (the demo's), else the training records' chosen completions. A finished warm
start is reloaded, not retrained, so a resumed run continues where it stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prefcore.data import read_demonstrations
from prefcore.distributed.process_group import barrier
from prefcore.distributed.process_group import is_main
from prefcore.engine.batching import build_items
from prefcore.engine.models import load_pretrained
from prefcore.engine.models import save_model
from prefcore.engine.trainer import Trainer
from prefcore.engine.trainer import WeightedObjective
from prefcore.settings import TrainConfig
from prefcore.settings import WarmStartConfig
from prefcore.stages.feedback import FeedbackData
from prefcore.stages.session import RunContext

__all__ = ["WarmStart", "load_demonstrations", "warm_start"]

logger = logging.getLogger("prefcore.pipeline")


@dataclass(frozen=True)
class WarmStart:
    """The policy after the warm start (the same one when there is none) and the run's demonstrations.

    ``demonstrations`` also serve self-play; ``records``, when it ran, says how many records
    it trained on and where they came from (the report's "warm-start records").
    """

    policy: torch.nn.Module
    demonstrations: list[Any]
    records: str | None = None


def load_demonstrations(path: str | Path) -> list[Any]:
    """The demonstrations of a ``[warm_start] data`` file: TRL's SFT layouts (``messages``,
    ``prompt``/``completion``) or binary records labelled true (``read_demonstrations``)."""
    records, _ = read_demonstrations(path)
    return records


def warm_start(
    run: RunContext,
    policy: torch.nn.Module,
    tokenizer: Any,
    feedback: FeedbackData,
    warm: WarmStartConfig,
    train_config: TrainConfig,
) -> WarmStart:
    """SFT on the demonstrations when ``warm.steps`` > 0; the demonstrations in any case."""
    demonstrations = feedback.demonstrations
    if warm.data is not None:  # the user's demonstrations also serve self-play
        demonstrations = load_demonstrations(warm.data)
    if warm.steps == 0:
        return WarmStart(policy, demonstrations)
    if warm.data is not None:
        records, origin = demonstrations, f"file {warm.data}"
    elif demonstrations:
        records, origin = demonstrations, "the feedback's demonstrations"
    else:
        records, origin = feedback.train, "the training records (chosen completions)"
    policy = _supervised_fine_tuning(run, policy, tokenizer, records, warm, train_config)
    return WarmStart(policy, demonstrations, f"{len(records)} from {origin}")


def _supervised_fine_tuning(
    run: RunContext,
    policy: torch.nn.Module,
    tokenizer: Any,
    records: Sequence[Any],
    warm: WarmStartConfig,
    train_config: TrainConfig,
) -> torch.nn.Module:
    """SFT once per run. Its steps are logged as ``warm_start/<metric>`` (``warm_start/loss``, ``warm_start/nll``)."""
    done = run.run_dir / "warm_start" / "model"
    if done.is_dir():
        logger.info("warm start: already done, reloaded from %s", done)
        return load_pretrained(done, run.device)
    sft = run.registry.create("usage", "sft", {})
    items = build_items(
        records,
        "sft",
        tokenizer,
        max_length=train_config.max_length,
        truncation=train_config.truncation,
        max_prompt_length=train_config.max_prompt_length,
        prompt_truncation_side=train_config.prompt_truncation_side,
        completion_truncation_side=train_config.completion_truncation_side,
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
        gradient_checkpointing=train_config.gradient_checkpointing,
    )
    trainer = Trainer(
        policy,
        [WeightedObjective(sft)],
        items,
        config,
        pad_token_id=tokenizer.pad_token_id,
        run_dir=run.run_dir,
        device=run.device,
        checkpoint_tag="warm_start",
        on_step=run.hooks.step_reporter("warm_start/"),
        stage="warm start",
    )
    if trainer.resume():
        logger.info("warm start: resumed from step %d", trainer.step)
    metrics = trainer.fit()
    if metrics:
        logger.info("warm start: %d steps on %d records, last loss %.4f", trainer.step, len(items), metrics["loss"])
    if is_main():  # under torchrun every rank holds the trained weights; rank 0 writes them
        save_model(policy, tokenizer, done)
    barrier()
    return policy

"""Iterative self-play (SPIN): each round, the human reference beats the model's own answer.

Chen et al. 2024, "Self-Play Fine-Tuning Converts Weak Language Models to Strong Language
Models", https://arxiv.org/abs/2401.01335. Round t freezes the current policy as π_t,
lets it answer the demonstrations' prompts, and labels every pair with the rule "the
human reference is preferred over the generation". A pairwise objective (SPIN's logistic
loss is DPO's, with π_t as the reference) then trains π_{t+1}. The reference therefore moves
every round to the previous round's model.

Each finished round is saved (``round-N/model``), and each round checkpoints on its own,
so a killed run resumes inside the round it was in.

Under torchrun each rank answers its contiguous slice of the round's prompts (its own seed,
``rank_seed``: rank 0 keeps the single-process one) and the answers are gathered in rank order,
which is the prompts' order: every rank builds the round's same pairs, which the ``Trainer``
then splits across the ranks as any offline data. Rank 0 writes the finished rounds' models.
"""

from __future__ import annotations

import gc
import logging
import random
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from prefcore.data import Message
from prefcore.data import PairwiseComparison
from prefcore.distributed.process_group import barrier
from prefcore.distributed.process_group import current
from prefcore.distributed.process_group import is_main
from prefcore.distributed.sampler import shard_indices
from prefcore.engine.batching import build_items
from prefcore.engine.generation import generate_completions
from prefcore.engine.models import frozen_copy
from prefcore.engine.models import load_pretrained
from prefcore.engine.models import save_model
from prefcore.engine.online_schedule import rank_seed
from prefcore.engine.reference import ModelReference
from prefcore.engine.sequences import completion_text
from prefcore.engine.trainer import TrainConfig
from prefcore.engine.trainer import Trainer
from prefcore.engine.trainer import WeightedObjective
from prefcore.errors import ConfigError
from prefcore.evaluation import GenerationSettings
from prefcore.settings import SelfPlayConfig

logger = logging.getLogger("prefcore.self_play")


def reference_over_generation(demonstrations: Sequence[Any], generations: Sequence[str]) -> list[PairwiseComparison]:
    """SPIN's feedback rule: each demonstration's completion is preferred over the model's answer.

    A generation identical to the demonstration makes no pair (there is nothing to prefer).
    """
    pairs = []
    for demonstration, generated in zip(demonstrations, generations, strict=True):
        human = completion_text(demonstration.completion).strip()
        if not generated.strip() or generated.strip() == human:
            continue
        # A record is all text or all messages: a chat prompt's answer is an assistant turn.
        answer = generated if isinstance(demonstration.prompt, str) else (Message("assistant", generated),)
        pairs.append(
            PairwiseComparison(
                demonstration.prompt,
                demonstration.completion,
                answer,
                source="self_play",
                provenance=demonstration.provenance,
            )
        )
    return pairs


def _shifted(
    on_step: Callable[[int, Mapping[str, float]], None], offset: int
) -> Callable[[int, Mapping[str, float]], None]:
    """Report a round's local steps as run-wide steps."""
    return lambda step, metrics: on_step(offset + step, metrics)


def run_self_play(
    policy: torch.nn.Module,
    tokenizer: Any,
    demonstrations: Sequence[Any],
    objectives: Sequence[WeightedObjective],
    train_config: TrainConfig,
    config: SelfPlayConfig,
    *,
    run_dir: Path,
    device: torch.device,
    on_step: Callable[[int, Mapping[str, float]], None] | None = None,
) -> torch.nn.Module:
    """Train ``config.rounds`` SPIN rounds of ``train_config.steps`` steps each; returns the policy."""
    if not demonstrations:
        raise ConfigError("[self_play] needs demonstrations: a feedback source with SFT data or labelled examples.")
    for objective in objectives:
        if "pairwise" not in objective.objective.data_formats:
            raise ConfigError(f"[self_play] trains on pairs; usage objective {objective.objective.name!r} does not.")
    for round_index in range(1, config.rounds + 1):
        done = run_dir / f"round-{round_index}" / "model"
        if done.is_dir():
            policy.load_state_dict(load_pretrained(done, device).state_dict())
            continue
        previous = frozen_copy(policy)  # π_t: the opponent and the reference of this round
        drawn = random.Random(train_config.seed * 1_000 + round_index).sample(
            list(demonstrations), min(config.prompts, len(demonstrations))
        )
        answers = _answers(previous, tokenizer, drawn, config, seed=train_config.seed + round_index, device=device)
        pairs = reference_over_generation(drawn, answers)
        logger.info(
            "self-play round %d/%d: %d pairs from %d prompts (human answer over the model's)",
            round_index,
            config.rounds,
            len(pairs),
            len(drawn),
        )
        items = build_items(
            pairs,
            "pairwise",
            tokenizer,
            max_length=train_config.max_length,
            truncation=train_config.truncation,
            max_prompt_length=train_config.max_prompt_length,
            prompt_truncation_side=train_config.prompt_truncation_side,
            completion_truncation_side=train_config.completion_truncation_side,
        )
        offset = (round_index - 1) * train_config.steps
        trainer = Trainer(
            policy,
            objectives,
            items,
            replace(train_config, eval_every=0),
            pad_token_id=tokenizer.pad_token_id,
            run_dir=run_dir,
            device=device,
            checkpoint_tag=f"round-{round_index}",
            reference_logps=ModelReference(
                previous, fused=train_config.fused_lm_head, backend=train_config.kernel_backend
            ),
            on_step=None if on_step is None else _shifted(on_step, offset),
            stage=f"self-play round {round_index}/{config.rounds}",
        )
        trainer.resume()
        trainer.fit()
        trainer.save_final()
        del trainer, previous  # under DDP: its hooks leave the policy before the next round wraps it again
        gc.collect()
        if is_main():
            done.parent.mkdir(parents=True, exist_ok=True)
            save_model(policy, tokenizer, done)
        barrier()
    return policy


def _answers(
    model: torch.nn.Module,
    tokenizer: Any,
    drawn: Sequence[Any],
    config: SelfPlayConfig,
    *,
    seed: int,
    device: torch.device,
) -> list[str]:
    """The model's answer to each drawn prompt; under torchrun each rank answers its slice and all are gathered."""
    parallel = current()
    prompts = [demonstration.prompt for demonstration in drawn]
    if parallel is not None:
        prompts = shard_indices(prompts, parallel.rank, parallel.world_size)  # type: ignore[arg-type]
        seed = rank_seed(seed, parallel.rank)
    settings = GenerationSettings(max_new_tokens=config.max_new_tokens, temperature=config.temperature, seed=seed)
    answers = generate_completions(model, tokenizer, prompts, settings, device=str(device)) if prompts else []
    if parallel is None:
        return answers
    gathered: list[Any] = [None] * parallel.world_size
    dist.all_gather_object(gathered, answers)
    return [answer for part in gathered for answer in part]

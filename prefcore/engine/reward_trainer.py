"""Train a reward network with a preference-model objective: records → items → ``RewardBatch`` → steps.

The stage the pipeline runs between feedback and usage. Records become ``RewardItem``s,
one per unit of the loss (``reward_items``), batched by ``micro_batches`` and collated
(``reward_collate``), run through the reward network, and handed to the objective as a
``RewardBatch``; a held-out split by prompt measures pairwise accuracy (``reward_heldout``).
This module holds the loop and the stage function that composes them.

What the stage reads from an objective is declared on ``PreferenceModel``, with defaults:
``aspects`` (head names; each pair's ``aspect`` picks its head), ``num_heads()``,
``scoring_rule()`` (how the trained model scores, a ``ScoringRule``, or None) and
``implicit_reward_beta()`` (β when the network is a policy's implicit reward,
``ImplicitRewardModel``; None for heads on a backbone).

One optimiser step is ``grad_accum`` micro-batches; ``RewardBatch.num_items`` counts the
units of the whole step (pairs, lists, labelled completions, labelled steps), so summed
micro-batch gradients equal the gradient of the step mean. Checkpoints go through
``prefcore.engine.checkpoint`` and resume exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from prefcore.data import to_pairs
from prefcore.distributed.process_group import barrier
from prefcore.distributed.process_group import is_main
from prefcore.engine.loop import OptimiserLoop
from prefcore.engine.loop import StepCallback
from prefcore.engine.loop import check_loss
from prefcore.engine.progress import StageProgress
from prefcore.engine.reward_collate import aspect_indices
from prefcore.engine.reward_collate import collate_rewards
from prefcore.engine.reward_heldout import evaluate_reward_model
from prefcore.engine.reward_heldout import split_records
from prefcore.engine.reward_items import REWARD_DATA_FORMATS
from prefcore.engine.reward_items import RewardItem
from prefcore.engine.reward_items import build_reward_items
from prefcore.engine.reward_model import METADATA_FILE
from prefcore.engine.reward_model import ImplicitRewardModel
from prefcore.engine.reward_model import RewardNetwork
from prefcore.engine.reward_model import build_reward_model
from prefcore.engine.reward_model import load_reward_network
from prefcore.errors import ConfigError
from prefcore.methods import PreferenceModel
from prefcore.settings import RewardTrainConfig

# Items, collation and the held-out split live in reward_items, reward_collate and reward_heldout;
# they are named here too, where callers have always imported them.
__all__ = [
    "REWARD_DATA_FORMATS",
    "RewardItem",
    "RewardTrainConfig",
    "RewardTrainer",
    "build_network",
    "build_reward_items",
    "collate_rewards",
    "evaluate_reward_model",
    "split_records",
    "train_preference_model",
]

# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------


class RewardTrainer(OptimiserLoop):
    """Runs optimiser steps of a preference-model objective on a reward network.

    Under torchrun each rank scores its slice of every global micro-batch; held-out evaluation
    runs on every rank on the gathered network (the same numbers everywhere), rank 0 reports.
    """

    distributed = True

    def __init__(
        self,
        model: RewardNetwork,
        objective: PreferenceModel,
        items: Sequence[RewardItem],
        config: RewardTrainConfig,
        *,
        pad_token_id: int,
        run_dir: str | Path,
        device: torch.device | str = "cpu",
        evaluate: Callable[[], Mapping[str, float]] | None = None,
        on_step: StepCallback | None = None,
        on_checkpoint: Callable[[int, Path], None] | None = None,
        progress: bool = False,
        stage: str = "preference model",
    ) -> None:
        if not items:
            raise ConfigError("there is no training data: the feedback produced no item for this preference model.")
        if model.num_heads != objective.num_heads():
            raise ConfigError(
                f"preference model {objective.name!r} trains {objective.num_heads()} heads; "
                f"the reward network has {model.num_heads}.",
                method=objective.name,
            )
        aspects = objective.aspects
        self.aspects = tuple(aspects) if aspects is not None else None
        if self.aspects is not None:
            aspect_indices([item for item in items if item.data_format == "pairwise"], self.aspects)
        super().__init__(
            model, items, config, run_dir=Path(run_dir), on_checkpoint=on_checkpoint, what="the reward network"
        )
        self.objective = objective
        self.pad_token_id = pad_token_id
        self.device = torch.device(device)
        self.evaluate = evaluate
        self.on_step = on_step
        self.progress = progress
        self.stage = stage

    def train_step(self) -> dict[str, float]:
        """One optimiser step over ``grad_accum`` micro-batches; returns the step's metrics."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        micro = [self.next_micro_batch() for _ in range(self.config.grad_accum)]
        num_items = sum(self.items[index].count for indices in micro for index in indices)  # global
        totals: dict[str, float] = {}
        for position, global_indices in enumerate(micro):
            indices, weight = self.local_indices(global_indices)  # this rank's slice (all of it in one process)
            feedback = collate_rewards(
                [self.items[index] for index in indices], self.pad_token_id, aspects=self.aspects
            )
            feedback = feedback.to(self.device)
            output = self.objective.loss(feedback.reward_batch(self.forward(feedback.sequences), num_items))
            check_loss(output.loss, self.step + 1, self.objective, inputs="the batch's rewards")
            self.backward(output.loss, final=position == len(micro) - 1, weight=weight)
            share = weight * feedback.num_items / max(num_items, 1)
            for key, value in output.metrics.items():
                totals[key] = totals.get(key, 0.0) + share * float(value)
            totals["loss"] = totals.get("loss", 0.0) + weight * float(output.loss.detach())
        totals = self.reduce_metrics(totals)
        self.apply_update(totals)
        return totals

    def fit(self) -> dict[str, float]:
        """Train until ``config.steps``; held-out metrics (``eval/...``) join the step's metrics when measured."""
        metrics: dict[str, float] = {}
        started = time.perf_counter()
        main = is_main()  # under torchrun, rank 0 alone reports
        with StageProgress(self.stage, self.config.steps, enabled=self.progress and main, initial=self.step) as bar:
            while self.step < self.config.steps:
                metrics = self.train_step()
                metrics["elapsed_s"] = round(time.perf_counter() - started, 3)
                last = self.step == self.config.steps
                due = last or (self.config.eval_every and self.step % self.config.eval_every == 0)
                if due and self.evaluate is not None:
                    self.gather_weights()
                    metrics.update({f"eval/{key}": float(value) for key, value in self.evaluate().items()})
                if self.on_step is not None and main and (self.step % self.config.log_every == 0 or last):
                    self.on_step(self.step, metrics)
                bar.update(self.step, metrics)
                if self.config.checkpoint_every and self.step % self.config.checkpoint_every == 0:
                    self.save()
        self.gather_weights()
        return metrics


# ----------------------------------------------------------------------------------------------
# The stage
# ----------------------------------------------------------------------------------------------


def build_network(objective: PreferenceModel, tokenizer: Any, config: RewardTrainConfig) -> RewardNetwork:
    """The fresh network an objective trains: heads on a backbone, or a policy's implicit reward."""
    if not (config.path or config.demo):
        raise ConfigError(
            "the preference model needs a starting network: set path = '<local dir>' or demo = true.", field="path"
        )
    beta = objective.implicit_reward_beta()
    if beta is not None:
        from prefcore.engine.models import frozen_copy

        if config.demo:
            from prefcore.demo.model import build_tiny_model

            policy = build_tiny_model(tokenizer, seed=config.seed)
        else:
            from prefcore.engine.models import load_pretrained

            policy = load_pretrained(str(config.path), torch.device("cpu"))
        return ImplicitRewardModel(policy, frozen_copy(policy), tokenizer, beta, max_length=config.max_length)
    model = build_reward_model(
        tokenizer,
        path=config.path,
        demo=config.demo,
        num_heads=objective.num_heads(),
        aspects=objective.aspects,
        seed=config.seed,
        max_length=config.max_length,
    )
    rule = objective.scoring_rule()
    if rule is not None:
        model.check_scoring(rule)
        model.scoring = rule
    return model


def train_preference_model(
    records: Sequence[Any],
    objective: PreferenceModel,
    tokenizer: Any,
    config: RewardTrainConfig,
    *,
    run_dir: str | Path,
    device: torch.device | str = "cpu",
    on_step: StepCallback | None = None,
    on_checkpoint: Callable[[int, Path], None] | None = None,
    model: RewardNetwork | None = None,
    resume: bool = False,
    progress: bool = False,
    stage: str = "preference model",
) -> RewardNetwork:
    """Train a reward network on feedback records with ``objective``; the pipeline's preference-model stage.

    Arguments:
        records: feedback records (any format the objective's data formats can be built from).
        objective: a configured ``PreferenceModel``.
        tokenizer: the tokenizer of the backbone (and of the policy that will use the reward).
        config: the stage's options.
        run_dir: this stage's folder: ``checkpoints/`` and the final ``model/`` go inside.
        device: where to train.
        on_step: ``on_step(step, metrics)`` every ``log_every`` steps; held-out metrics as ``eval/...``.
        on_checkpoint: ``on_checkpoint(step, path)`` after each checkpoint.
        model: start from this network instead of building one from ``config``.
        resume: continue from the newest checkpoint; a finished stage (``model/`` written) is loaded, not retrained.
        progress: show the stage's progress (a bar on a terminal, else log lines) named ``stage``.
    Returns:
        the trained network (also saved in ``run_dir/model``).
    """
    run_dir = Path(run_dir)
    final = run_dir / "model"
    if resume and (final / METADATA_FILE).is_file():
        return load_reward_network(final, device=device, tokenizer=tokenizer)
    train, heldout = split_records(list(records), config.heldout_fraction, config.seed)
    network = model if model is not None else build_network(objective, tokenizer, config)
    network.to(device)
    items = build_reward_items(
        train,
        objective,
        tokenizer,
        max_length=config.max_length,
        truncation=config.truncation,
        ties=config.ties,
        rank_gap_margin=config.rank_gap_margin,
    )
    heldout_pairs = to_pairs(heldout, ties="skip") if heldout else []

    def evaluate() -> dict[str, float]:
        return evaluate_reward_model(network, heldout_pairs, batch_size=config.eval_batch_size)

    trainer = RewardTrainer(
        network,
        objective,
        items,
        config,
        pad_token_id=tokenizer.pad_token_id,
        run_dir=run_dir,
        device=device,
        evaluate=evaluate if heldout_pairs else None,
        on_step=on_step,
        on_checkpoint=on_checkpoint,
        progress=progress,
        stage=stage,
    )
    if resume:
        trainer.resume()
    trainer.fit()
    trainer.save_final()
    if is_main():  # under torchrun every rank holds the gathered network; rank 0 writes it
        network.save(final)
    barrier()
    return network

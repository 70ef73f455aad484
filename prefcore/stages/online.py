"""Stage 6, training online: an objective of data format "rollout" trains on the policy's own samples.

The feedback records give the prompts (each distinct prompt once) and, in their metadata,
what a reward may read (``metadata["answer"]`` for a verifiable checker); the run's
``[[reward]]`` scores the samples (``prefcore.rewards``) and ``prefcore.engine.online_trainer``
runs the loop. Evaluation runs before the first step, every ``[train] eval_every`` online
steps and after the last, as for offline objectives.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import torch

from prefcore.engine.online_trainer import OnlineTrainer
from prefcore.errors import DataError
from prefcore.rewards import CombinedReward
from prefcore.rewards import RewardPlan
from prefcore.rewards import build_reward
from prefcore.rollout import Rollouts
from prefcore.settings import OnlineLoopConfig
from prefcore.settings import TrainConfig
from prefcore.stages.evaluate import Evaluation
from prefcore.stages.session import RunContext

__all__ = ["online_prompts", "reward_function", "train_online"]

logger = logging.getLogger("prefcore.pipeline")


def online_prompts(records: Sequence[Any]) -> tuple[list[Any], list[Mapping[str, Any]]]:
    """Each distinct prompt of ``records`` once, in first-seen order, with its first record's metadata."""
    prompts: dict[Any, Mapping[str, Any]] = {}
    for record in records:
        prompt = getattr(record, "prompt", None)
        if prompt is None:
            continue
        key = prompt if isinstance(prompt, str) else tuple(prompt)
        if key not in prompts:
            prompts[key] = (prompt, dict(getattr(record, "metadata", None) or {}))
    if not prompts:
        raise DataError("the feedback has no prompt for the online objective to answer.", source="feedback")
    return [prompt for prompt, _ in prompts.values()], [metadata for _, metadata in prompts.values()]


def reward_function(reward: CombinedReward) -> Any:
    """``(rollouts, metadata) -> (total, components)`` for the trainer; checkers get ``metadata["answer"]``."""

    def score(rollouts: Rollouts, metadata: Sequence[Mapping[str, Any]]) -> Any:
        answers = [entry.get("answer") for entry in metadata] if reward.takes_answers else None
        return reward.score_rollouts(rollouts, answers)

    return score


def _check_answers(reward: CombinedReward, prompts: Sequence[Any], metadata: Sequence[Mapping[str, Any]]) -> None:
    if not reward.takes_answers:
        return
    missing = [prompt for prompt, entry in zip(prompts, metadata, strict=True) if entry.get("answer") is None]
    if missing:
        raise DataError(
            f"{len(missing)} of {len(prompts)} training prompts have no reference answer (metadata['answer']), which "
            f"a checker in [[reward]] needs; the first: {str(missing[0])[:80]!r}. Give every record its answer.",
            source="feedback",
            field="metadata.answer",
        )


def _critic_trainer(
    run: RunContext, policy: torch.nn.Module, tokenizer: Any, objective: Any, reward: CombinedReward, seed: int
) -> tuple[type[OnlineTrainer], dict[str, Any]]:
    """``PPOTrainer`` and its value model (the objective's ``critic`` placement) and cost components."""
    from prefcore.engine.ppo_trainer import PPOTrainer
    from prefcore.engine.value_model import build_value_model

    placement = objective.config.critic
    cost_names = tuple(reward.cost_names)
    heads = ("reward", "cost") if cost_names else ("reward",)
    reward_model = None
    if placement == "reward_model":
        from prefcore.engine.reward_model import load_reward_network

        folder = run.run_dir / "reward_model" / "model"  # where the run's single preference model is saved
        if folder.is_dir():
            reward_model = load_reward_network(folder, device=run.device, tokenizer=tokenizer)
    value_model = build_value_model(
        placement, policy, heads=heads, reward_model=reward_model, tokenizer=tokenizer, seed=seed
    )
    logger.info("critic: value heads %s on %s", ", ".join(heads), placement)
    return PPOTrainer, {"value_model": value_model, "cost_names": cost_names}


def train_online(
    run: RunContext,
    policy: torch.nn.Module,
    tokenizer: Any,
    records: Sequence[Any],
    objective: Any,
    *,
    reference: torch.nn.Module,
    train_config: TrainConfig,
    online: OnlineLoopConfig,
    rewards: RewardPlan,
    trained_scorer: Any,
    evaluation: Evaluation,
) -> int:
    """Train ``objective`` online; returns the online step reached (the policy is trained in place)."""
    prompts, metadata = online_prompts(records)
    reward = build_reward(rewards, trained_scorer=trained_scorer, device=str(run.device))
    _check_answers(reward, prompts, metadata)
    # [run] reference = "none" leaves the KL unmeasured (an objective that needs it was refused);
    # "precomputed" has nothing to precompute online: the frozen copy scores each step's samples.
    uses_reference = objective.uses_reference() or run.settings.reference != "none"
    trainer_class, critic = OnlineTrainer, {}
    if getattr(objective, "needs_critic", False):  # PPO and its kin: a value model beside the policy
        trainer_class, critic = _critic_trainer(run, policy, tokenizer, objective, reward, train_config.seed)
    trainer = trainer_class(
        policy,
        objective,
        prompts,
        metadata,
        train_config,
        online,
        tokenizer=tokenizer,
        reward=reward_function(reward),
        run_dir=run.run_dir,
        device=run.device,
        reference=reference if uses_reference else None,
        prefix=objective.generation_prefix(),
        on_step=run.hooks.step_reporter(),
        on_checkpoint=lambda step, path: run.hooks.fire("prefcore_checkpoint_saved", step=step, path=path),
        on_evaluate=evaluation.run,
        **critic,
    )
    logger.info(
        "online: %d training prompts, %d per step × %d samples, rewards %s",
        len(prompts),
        online.prompts_per_step,
        online.samples_per_prompt,
        ", ".join(reward.names),
    )
    resumed = run.resume and run.checkpoints_existed and trainer.resume()
    if resumed:
        logger.info("resumed from online step %d", trainer.online_step)
    else:
        evaluation.run(0)
    metrics = trainer.fit()
    if metrics:
        logger.info(
            "online training: %d steps, last reward %.4f, loss %.4f",
            trainer.online_step,
            metrics["reward/mean"],
            metrics["loss"],
        )
    trainer.save_final()
    return trainer.online_step

"""The online loop: sample rollouts from the policy, score them, estimate advantages, update.

One online step::

    prompts   ← the next ``prompts_per_step`` training prompts (seeded order, resumable)
    rollouts  ← G completions of each from the current policy (seed = f(seed, step))
    rewards   ← the run's combined reward [S] and its named components
    A         ← the objective's advantage estimator on the rewards (group ids, mask, KL terms)
    ref       ← reference log-probs (frozen copy, eval mode), when there is a reference
    repeat update_epochs times, over shuffled minibatches of the S completions:
        policy log-probs with gradient (micro-batches), RolloutBatch, loss, one optimiser step

With ``[online] dynamic_sampling`` (DAPO, Yu et al. 2025, https://arxiv.org/abs/2503.14476,
§3.2; verl's ``filter_groups``), the rollout phase drops each prompt whose completions all got
the same reward (no group-relative signal) and samples as many new prompts as were dropped,
round after round, until the step has ``prompts_per_step`` groups or ``max_sampling_rounds``
extra rounds are spent; the step then trains on the groups kept (on the first round's, if
none was). The extra prompts come from the same seeded order, so later steps start further on
(``prefcore.engine.dynamic_sampling``; under torchrun one decision over every rank, see there).

Every random draw of a step is a function of ``(seed, step)``: the prompt order of an epoch,
the sampling seed (of each dynamic-sampling round: ``(seed, step, round)``) and the
minibatch shuffle. A checkpoint (safetensors, atomic) holds the
policy, optimiser, scheduler, torch and Python RNG states, the prompt sampler's place and
the KL controller's state, so a killed run resumes to the same weights as an uninterrupted
one; a kill during a rollout phase simply redoes that phase from the last checkpoint.
The optimiser, schedule, clipping and checkpoint round trip are ``OptimiserLoop``'s, shared
with the offline trainer; its ``step`` counts optimiser steps, ``online_step`` the rollouts.

Under torchrun (DDP or FSDP2, ``prefcore.distributed``) every rank draws the same global prompts
and takes its contiguous slice (``shard_indices``), so each prompt's G completions stay on one
rank; rank r samples its slice with its own seed (``rank_seed``: rank 0 keeps the step's seed).
Under FSDP2 the policy's full weights are gathered into the plain model before each rollout phase;
the frozen reference is sharded like the policy (``spread_reference``: each rank holds 1/N of it),
computes the rollouts' reference log-probs on its shards, and is gathered back with the policy at
evaluation points and at the end (``gather_weights``). Under DDP each rank keeps a full reference.
Batch-wide advantage statistics are summed across the ranks (``prefcore.advantages.sharded_batch``),
the minibatch order is global (each rank trains its rows of every minibatch, with the global
token and completion counts, so the ranks' gradients add up to one process's), the step's
metrics are computed on every rank's rollouts gathered, and checkpoints are sharded (DCP) with
the prompt sampler and the objective's state; they resume on any number of processes, and in one
plain process without torchrun (DCP then reads every rank's shards without a process group). Every
rank runs as many micro-batches as the busiest one (zero-weighted repeats), so the collectives line up.

An update step reads the device once (``prefcore.engine.step_reads``): its losses, metrics,
gradient norm and the kernels' input checks travel in one transfer before the optimiser steps.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import random
import time
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from prefcore.advantages import estimate_advantages
from prefcore.advantages import resolve_estimator
from prefcore.advantages import sharded_batch
from prefcore.atomic import remove_directory
from prefcore.distributed.checkpoint import is_sharded
from prefcore.distributed.checkpoint import load_sharded
from prefcore.distributed.checkpoint import save_sharded
from prefcore.distributed.process_group import barrier
from prefcore.distributed.process_group import is_main
from prefcore.distributed.sampler import shard_indices
from prefcore.distributed.wrap import Forward
from prefcore.engine.checkpoint import checkpoint_name
from prefcore.engine.checkpoint import clean_staging
from prefcore.engine.checkpoint import list_checkpoints
from prefcore.engine.checkpoint import load_checkpoint
from prefcore.engine.checkpoint import save_checkpoint
from prefcore.engine.dynamic_sampling import dynamic_sampling
from prefcore.engine.loop import OptimiserLoop
from prefcore.engine.loop import check_finite
from prefcore.engine.loop import check_loss
from prefcore.engine.online_schedule import PromptSampler
from prefcore.engine.online_schedule import rank_seed
from prefcore.engine.online_schedule import rollout_seed
from prefcore.engine.progress import StageProgress
from prefcore.engine.reference import ModelReference
from prefcore.engine.reference import spread_reference
from prefcore.engine.rollout import GenerationBackend
from prefcore.engine.rollout import RolloutSettings
from prefcore.engine.rollout import RolloutTensors
from prefcore.engine.rollout import completion_logps
from prefcore.engine.rollout import make_backend
from prefcore.engine.rollout import pad_rollouts
from prefcore.engine.rollout import rollout_logps
from prefcore.engine.rollout import sample_rollouts
from prefcore.engine.scored_rollouts import ScoredRollouts
from prefcore.engine.scored_rollouts import gather_scored
from prefcore.engine.step_reads import StepReads
from prefcore.engine.step_reads import read_counts
from prefcore.engine.step_reads import read_step
from prefcore.errors import ConfigError
from prefcore.kernels._checks import deferred_checks
from prefcore.kernels.kl import per_token_kl
from prefcore.rollout import RolloutBatch
from prefcore.rollout import Rollouts
from prefcore.settings import OnlineLoopConfig
from prefcore.settings import TrainConfig

__all__ = ["OnlineTrainer", "RewardFn", "ScoredRollouts"]

_REFERENCE_ROWS = 64
"""Rollouts per forward of the reference (``rollout_logps``'s batch)."""


def _run(model: torch.nn.Module, fn: Callable[..., Any], *args: Any) -> Any:
    """The forward DDP and FSDP2 wrap: ``fn(model, *args)``, the caller naming the computation."""
    return fn(model, *args)


def _policy_logps(
    model: torch.nn.Module, tensors: RolloutTensors, rows: list[int], fused: bool, backend: str, share_prefix: bool
) -> torch.Tensor:
    """The policy's per-token log-probs of ``rows``, with gradient (a micro-batch's forward)."""
    return completion_logps(model, tensors, rows, fused=fused, backend=backend, share_prefix=share_prefix)


def _reference_logps(
    model: torch.nn.Module, tensors: RolloutTensors, rows: list[int], fused: bool, backend: str
) -> torch.Tensor:
    """The sharded reference's per-token log-probs of ``rows`` (no gradient; its root runs in eval mode)."""
    return completion_logps(model, tensors, rows, fused=fused, backend=backend, share_prefix=False)


def _all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    summed = values.detach().clone()
    dist.all_reduce(summed)
    return summed


RewardFn = Callable[[Rollouts, Sequence[Mapping[str, Any]]], tuple[torch.Tensor, Mapping[str, torch.Tensor]]]
"""``reward(rollouts, metadata) -> (total [S], components)``; ``metadata[i]`` belongs to prompt ``i``."""


def _takes_option(estimator: Any, name: str) -> bool:
    """Whether the advantage estimator accepts keyword ``name`` (``kl`` for REINFORCE++'s per-token penalty)."""
    parameters = inspect.signature(resolve_estimator(estimator)).parameters.values()
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in parameters)


def _mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    count = int(mask.sum())
    return float((values * mask).sum() / count) if count else 0.0


class OnlineTrainer(OptimiserLoop):
    """Runs online steps of one online objective (see the module docstring).

    Arguments:
        policy: the model to train (in place).
        objective: an online usage objective (``loss(RolloutBatch)``, ``uses_reference()``).
        prompts: the training prompts, once each.
        metadata: per prompt, what a reward reads (``{"answer": ...}`` for a checker).
        config: ``[train]`` (optimiser, schedule, seed, checkpoint/eval/log cadence in online steps).
        online: ``[online]``.
        tokenizer: the policy's tokenizer (prompt ids, stop ids, decoding).
        reward: the combined reward (``RewardFn``).
        reference: the frozen reference model, or None (no KL metric then).
        backend: the rollout engine's generation backend (default: the one ``[online] sampler`` names).
        prefix: condition text before each prompt, as the objective trains it.
    """

    trains_critic = False
    """True for a trainer with a value model (``PPOTrainer``): objectives with ``needs_critic`` need one."""

    distributed = True

    def __init__(
        self,
        policy: torch.nn.Module,
        objective: Any,
        prompts: Sequence[Any],
        metadata: Sequence[Mapping[str, Any]],
        config: TrainConfig,
        online: OnlineLoopConfig,
        *,
        tokenizer: Any,
        reward: RewardFn,
        run_dir: Path,
        device: torch.device,
        reference: torch.nn.Module | None = None,
        backend: GenerationBackend | None = None,
        prefix: str = "",
        on_step: Callable[[int, Mapping[str, float]], None] | None = None,
        on_checkpoint: Callable[[int, Path], None] | None = None,
        on_evaluate: Callable[[int], None] | None = None,
        stage: str = "online training",
    ) -> None:
        if len(prompts) != len(metadata):
            raise ValueError(f"{len(prompts)} prompts but {len(metadata)} metadata entries.")
        if objective.uses_reference() and reference is None:
            raise ConfigError(f"{objective.name} needs reference log-probs but the run has no reference model.")
        if getattr(objective, "needs_critic", False) and not self.trains_critic:
            raise ConfigError(f"{objective.name} trains a value model: it runs on the PPO trainer, not this one.")
        self.online = online
        self.online_steps = online.steps or config.steps
        total = self.online_steps * online.optimiser_steps_per_step()
        super().__init__(
            policy,
            list(prompts),
            replace(config, steps=total),
            run_dir=run_dir,
            on_checkpoint=on_checkpoint,
            what="the policy",
            shuffle=False,
            group_by_length=False,
            forward=_run,
        )
        if self.parallel is not None and online.prompts_per_step < self.world_size:
            raise ConfigError(
                f"[online] prompts_per_step = {online.prompts_per_step} gives some of the {self.world_size} "
                "processes no prompt: use at least one prompt per process.",
                field="online.prompts_per_step",
            )
        self.train_config = config
        self.policy = policy
        self.objective = objective
        self.prompts = list(prompts)
        self.metadata = list(metadata)
        self.tokenizer = tokenizer
        self.reward = reward
        self.device = device
        self.reference = reference
        # under FSDP2 the frozen reference is sharded like the policy (collective: every rank builds it)
        self.reference_logps: Any = None
        if reference is not None:
            plain = ModelReference(reference, fused=config.fused_lm_head, backend=config.kernel_backend)
            self.reference_logps = spread_reference(plain, self.parallel)
        self.backend = make_backend(online.sampler, policy) if backend is None else backend
        self.prefix = prefix
        self.settings = RolloutSettings(
            samples_per_prompt=online.samples_per_prompt,
            max_new_tokens=online.max_new_tokens,
            temperature=online.temperature,
            top_p=online.top_p,
            seed=config.seed,
        )
        self.on_step = on_step
        self.on_evaluate = on_evaluate
        self.stage = stage
        self.sampler = PromptSampler(len(self.prompts), config.seed)
        self.online_step = 0
        self._counted: int | None = None  # dynamic sampling's counted rows of this rank (None: all)
        # Shared-prompt log-probs (prefcore.engine.rollout.prefix) run each decoder layer twice in one forward,
        # which FSDP2's per-layer gathers do not follow: its shards take the full sequences (same log-probs to
        # float tolerance).
        self.share_prefix = self.sharded is None or self.sharded.strategy != "fsdp"

    def gather_rollout_weights(self) -> None:
        """What a rollout phase reads whole: the policy's weights (FSDP2) into the plain model (collective).

        The reference stays in its shards (``reference_rollout_logps``)."""
        super().gather_weights()

    def gather_weights(self) -> None:
        """The policy's weights, and a sharded reference's, back in the plain models (every rank calls it):
        at evaluation points and at the end."""
        self.gather_rollout_weights()
        gather = getattr(self.reference_logps, "gather", None)
        if callable(gather):
            gather()

    # -- checkpoints ----------------------------------------------------------------------
    def checkpoint_parts(self) -> tuple[torch.nn.Module, Any, Any]:
        """The module, optimiser and scheduler a checkpoint holds (a subclass adds its own models to them)."""
        return self.model, self.optimizer, self.scheduler

    def _state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"online_step": self.online_step, "sampler": self.sampler.state()}
        state["optimiser_step"] = self.step
        state_dict = getattr(self.objective, "state_dict", None)
        if callable(state_dict):  # the KL controller's β
            state["objective"] = dict(state_dict())
        return state

    def save(self) -> Path:
        """``checkpoints/step-N`` named by the online step (atomic; see ``prefcore.engine.checkpoint``;
        sharded with DCP under torchrun)."""
        if self.sharded is not None:
            return self._save_online_sharded()
        model, optimizer, scheduler = self.checkpoint_parts()
        path = save_checkpoint(
            self.run_dir,
            self.online_step,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            trainer_state=self._state(),
            keep_last=self.config.keep_checkpoints,
        )
        if self.on_checkpoint is not None:
            self.on_checkpoint(self.online_step, path)
        return path

    def sharded_parts(self) -> tuple[torch.nn.Module, Any, Any]:
        """What a sharded (DCP) checkpoint holds: the wrapped module, the optimiser(s) and the schedule.

        In one plain process (resuming a distributed run) the plain model under the wrapped one's names
        (``Forward``: ``model.*``), so that DCP reads every rank's shards into it."""
        module = self.sharded.module if self.sharded is not None else Forward(self.model, self._forward)
        return module, self.optimizer, self.scheduler

    def _save_online_sharded(self) -> Path:
        if is_main():
            clean_staging(self.run_dir)
        model, optimizer, scheduler = self.sharded_parts()
        # DCP saves an optimiser that has not stepped yet (PPO's policy during critic warm-up) by running it
        # once with lr 0, which counts an AdamW step: such an optimiser is put back as it was after the
        # save, and after a resume (``pristine``), so that its first real step stays the first.
        parts = optimizer if isinstance(optimizer, list) else [optimizer]
        pristine = [index for index, part in enumerate(parts) if not part.state]
        for part in parts:
            part.zero_grad(set_to_none=True)  # DCP fills an empty state only when no gradient is left over
        path = save_sharded(
            self.run_dir / "checkpoints" / checkpoint_name(self.online_step),
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            step=self.online_step,
            trainer_state={**self._state(), "pristine_optimisers": pristine},
        )
        for index in pristine:
            parts[index].state.clear()
        keep = self.config.keep_checkpoints
        if is_main():
            for old in list_checkpoints(self.run_dir)[:-keep] if keep > 0 else []:
                remove_directory(old)
            if self.on_checkpoint is not None:
                self.on_checkpoint(self.online_step, path)
        barrier()
        return path

    def save_final(self) -> Path | None:
        if not self.config.checkpoint_every:
            return None
        saved = list_checkpoints(self.run_dir)
        if saved and saved[-1].name == checkpoint_name(self.online_step):
            return saved[-1]
        return self.save()

    def resume(self) -> bool:
        """Continue from the newest complete checkpoint, if any; True when one was loaded."""
        if is_main():
            clean_staging(self.run_dir)
        barrier()
        checkpoints = list_checkpoints(self.run_dir)
        if not checkpoints:
            return False
        if self.sharded is not None or is_sharded(checkpoints[-1]):
            if not is_sharded(checkpoints[-1]):
                raise ConfigError(
                    f"checkpoint {checkpoints[-1]} was written by a single-process run; resume it in one process "
                    "(distributed checkpoints resume on any number of processes, with or without torchrun)."
                )
            # without torchrun one plain process reads every rank's shards (no process group), into the names saved
            model, optimizer, scheduler = self.sharded_parts()
            _, state = load_sharded(checkpoints[-1], model=model, optimizer=optimizer, scheduler=scheduler)
            parts = optimizer if isinstance(optimizer, list) else [optimizer]
            for index in state.get("pristine_optimisers", []):
                parts[index].state.clear()
            self._load_state(state)
            self.gather_weights()
            return True
        model, optimizer, scheduler = self.checkpoint_parts()
        restored = load_checkpoint(checkpoints[-1], model=model, optimizer=optimizer, scheduler=scheduler)
        self._load_state(restored.trainer)
        return True

    def _load_state(self, state: Mapping[str, Any]) -> None:
        self.online_step = int(state["online_step"])
        self.step = int(state["optimiser_step"])
        self.sampler.load(state["sampler"])
        if "objective" in state:
            self.objective.load_state_dict(state["objective"])

    # -- one online step --------------------------------------------------------------------
    def _sample(self, prompts: Sequence[Any], settings: RolloutSettings, attempt: int = 0) -> Rollouts:
        seed = rank_seed(rollout_seed(self.train_config.seed, self.online_step, attempt), self.rank)
        return sample_rollouts(
            self.policy, self.tokenizer, prompts, settings, backend=self.backend, prefix=self.prefix, seed=seed
        )

    def reference_rollout_logps(self, tensors: RolloutTensors) -> torch.Tensor | None:
        """The reference's per-token log-probs ``[S, T]`` of the rollouts (None without a reference).

        In one process and under DDP the plain reference computes them; under FSDP2 its shards do, in
        ``_REFERENCE_ROWS``-row calls, every rank as many as the busiest (zero-row ranks cannot occur:
        each has a prompt), on the full sequences as the policy's shards take them (``share_prefix``).
        """
        if self.reference_logps is None:
            return None
        config = self.train_config
        run = getattr(self.reference_logps, "run", None)
        if not callable(run):
            return rollout_logps(
                self.reference,
                tensors,
                fused=config.fused_lm_head,
                backend=config.kernel_backend,
                share_prefix=self.share_prefix,
            )
        count = tensors.num_completions
        chunks = [list(range(start, min(start + _REFERENCE_ROWS, count))) for start in range(0, count, _REFERENCE_ROWS)]
        calls: list[Any] = [None] * self.world_size
        dist.all_gather_object(calls, len(chunks))
        options = (config.fused_lm_head, config.kernel_backend)
        parts = [run(_reference_logps, tensors, rows, *options) for rows in chunks]
        for _ in range(max(calls) - len(chunks)):  # filler calls, so that the shards' gathers line up
            run(_reference_logps, tensors, [0], *options)
        return torch.cat(parts) if parts else torch.zeros(tensors.mask.shape, dtype=torch.float32)

    def _sample_and_score(
        self, indices: Sequence[int], attempt: int = 0
    ) -> tuple[Rollouts, torch.Tensor, Mapping[str, torch.Tensor]]:
        rollouts = self._sample([self.prompts[index] for index in indices], self.settings, attempt)
        rewards, components = self.reward(rollouts, [self.metadata[index] for index in indices])
        return rollouts, rewards.detach().float(), {name: value.detach().float() for name, value in components.items()}

    def _dynamic_sampling(
        self, indices: Sequence[int]
    ) -> tuple[list[int], Rollouts, torch.Tensor, dict[str, torch.Tensor], dict[str, float]]:
        """DAPO's dynamic sampling of the step's prompts at ``indices`` (``prefcore.engine.dynamic_sampling``):
        the prompts trained on, their rollouts, rewards and components, and the phase's counts."""
        sampled, self._counted = dynamic_sampling(self, indices)
        return sampled

    def rollout_phase(self, indices: Sequence[int]) -> ScoredRollouts:
        """Sample, score and estimate advantages for the prompts at ``indices`` (no gradient).

        With dynamic sampling, dropped prompts are replaced by the sampler's next ones; the
        result holds the prompts trained on, and ``metrics`` its counts.
        """
        extras: dict[str, Any] = {}
        counts: dict[str, float] = {}
        if self.online.dynamic_sampling:
            indices, rollouts, rewards, components, counts = self._dynamic_sampling(indices)
        else:
            rollouts, rewards, components = self._sample_and_score(indices)
        prompts = [self.prompts[index] for index in indices]
        metadata = [self.metadata[index] for index in indices]
        tensors = pad_rollouts(rollouts, self.tokenizer.pad_token_id).to(self.device)
        ref_logps = self.reference_rollout_logps(tensors)
        rewards = rewards.to(self.device)
        options = dict(self.objective.estimator_options())
        penalty = self.objective.reward_kl()
        if penalty is not None:  # the KL leash in the reward: per token if the estimator takes it, else summed
            estimator = "k3" if penalty.estimator == "k3+" else penalty.estimator  # k3+ differs only in gradient
            kl = per_token_kl(tensors.sampling_logps, ref_logps, tensors.mask, estimator=estimator)
            if _takes_option(self.objective.estimator(), "kl"):
                options.update(kl=kl, kl_coef=penalty.beta)
            else:
                rewards = rewards - penalty.beta * kl.sum(-1)
        if self.objective.estimator() == "remax":  # ReMax: the greedy completion's reward is the baseline
            greedy = self._sample(prompts, replace(self.settings, temperature=0.0, top_p=1.0, samples_per_prompt=1))
            baselines, _ = self.reward(greedy, metadata)
            options["baselines"] = (
                baselines.detach().float().to(self.device).repeat_interleave(rollouts.samples_per_prompt)
            )
            extras["baseline"] = options["baselines"]
        counted = self._counted if self.online.dynamic_sampling else None
        rows = slice(0, rewards.shape[0] if counted is None else counted)  # a stand-in group adds nothing
        options = {
            name: value[rows] if isinstance(value, torch.Tensor) and value.shape[:1] == rewards.shape else value
            for name, value in options.items()
        }
        with self.batch_statistics():
            result = estimate_advantages(
                self.objective.estimator(), rewards[rows], tensors.group_ids[rows], tensors.mask[rows], **options
            )
        advantages = result.advantages.detach().float()
        if counted is not None:
            advantages = torch.cat([advantages, advantages.new_zeros(tensors.mask[counted:].shape)])
        return ScoredRollouts(rollouts, tensors, ref_logps, rewards, components, advantages, extras, counts, counted)

    def _minibatches(self, count: int, epoch: int) -> list[list[int]]:
        order = list(range(count))
        random.Random(rollout_seed(self.train_config.seed, self.online_step) * 31 + epoch).shuffle(order)
        size = self.online.minibatch_size or count
        return [order[start : start + size] for start in range(0, count, size)]

    def _rows(self, scored: ScoredRollouts, rows: list[int], num_tokens: int, num_sequences: int) -> RolloutBatch:
        config = self.train_config
        policy_logps = self.forward(
            _policy_logps, scored.tensors, rows, config.fused_lm_head, config.kernel_backend, self.share_prefix
        )
        return self._batch(scored, rows, policy_logps, num_tokens, num_sequences)

    def _batch(
        self, scored: ScoredRollouts, rows: list[int], policy_logps: torch.Tensor, num_tokens: int, num_sequences: int
    ) -> RolloutBatch:
        """The ``RolloutBatch`` of ``rows`` around their policy log-probs (computed by the caller)."""
        index = torch.tensor(rows, dtype=torch.long, device=scored.advantages.device)
        tensors = scored.tensors
        on = policy_logps.device
        rows_shape = scored.rewards.shape
        extras = {
            name: value[index].to(on) if isinstance(value, torch.Tensor) and value.shape[:1] == rows_shape else value
            for name, value in scored.extras.items()
        }
        return RolloutBatch(
            policy_logps=policy_logps,
            mask=tensors.mask[index].to(on),
            sampling_logps=tensors.sampling_logps[index].to(on),
            advantages=scored.advantages[index].to(on),
            rewards=scored.rewards[index].to(on),
            group_ids=tensors.group_ids[index].to(on),
            truncated=tensors.truncated[index].to(on),
            ref_logps=None if scored.ref_logps is None else scored.ref_logps[index].to(on),
            num_tokens=num_tokens,
            num_sequences=num_sequences,
            max_completion_length=self.online.max_new_tokens,
            extras=extras,
        )

    def _loss_mask(self, scored: ScoredRollouts) -> torch.Tensor:
        """The objective's loss tokens of every completion (``mask`` less what it leaves out)."""
        tensors = scored.tensors
        whole = RolloutBatch(
            policy_logps=tensors.sampling_logps,
            mask=tensors.mask,
            sampling_logps=tensors.sampling_logps,
            advantages=scored.advantages,
            rewards=scored.rewards,
            group_ids=tensors.group_ids,
            truncated=tensors.truncated,
        )
        return self.objective.loss_mask(whole)

    # -- distributed helpers (each is the plain single-process computation without torchrun) -------
    @property
    def rank(self) -> int:
        return self.parallel.rank if self.parallel is not None else 0

    def batch_statistics(self) -> contextlib.AbstractContextManager:
        """Batch-wide advantage statistics over every rank's rollouts (a no-op in one process)."""
        return sharded_batch(_all_reduce_sum) if self.parallel is not None else contextlib.nullcontext()

    def local_prompts(self, indices: Sequence[int]) -> list[int]:
        """This rank's contiguous slice of a step's prompts (all of them in one process): groups stay whole."""
        if self.parallel is None:
            return list(indices)
        return shard_indices(indices, self.rank, self.world_size)

    def row_ranges(self, count: int) -> list[tuple[int, int]]:
        """``(first global row, rows)`` of every rank's rollouts, in rank order (prompt-major, so the
        ranks' rows in turn are the global batch's); ``[(0, count)]`` in one process."""
        if self.parallel is None:
            return [(0, count)]
        counts: list[Any] = [None] * self.world_size
        dist.all_gather_object(counts, int(count))
        starts = [sum(counts[:rank]) for rank in range(self.world_size)]
        return list(zip(starts, counts, strict=True))

    def micro_batches(
        self, minibatch: Sequence[int], ranges: Sequence[tuple[int, int]], size: int
    ) -> list[tuple[list[int], float]]:
        """This rank's local rows of ``minibatch`` (global rows) in micro-batches of ``size``, with weight 1;
        distributed, as many as the busiest rank has, the missing ones repeating row 0 with weight 0."""
        first, count = ranges[self.rank]
        mine = [row - first for row in minibatch if first <= row < first + count]
        chunks = [(mine[start : start + size], 1.0) for start in range(0, len(mine), size)]
        if self.parallel is None:
            return chunks
        busiest = max(
            math.ceil(sum(1 for row in minibatch if start <= row < start + rows) / size) for start, rows in ranges
        )
        return chunks + [([0], 0.0)] * (max(busiest, 1) - len(chunks))

    def train_mode(self) -> None:
        """The policy in training mode (and its FSDP2 shards)."""
        self.policy.train()
        if self.sharded is not None:
            self.sharded.module.train()

    def gather_rollouts(self, scored: ScoredRollouts) -> ScoredRollouts:
        """Every rank's scored rollouts, in rank order, as far as ``rollout_metrics`` reads them; ``scored`` itself
        in one process (``prefcore.engine.scored_rollouts.gather_scored``)."""
        return scored if self.parallel is None else gather_scored(scored, self.world_size)

    def update_phase(self, scored: ScoredRollouts) -> dict[str, float]:
        """``update_epochs`` passes of minibatch optimiser steps; returns the mean of their metrics.

        The phase reads each row's loss-token count from the device once; each optimiser step then reads
        the device once more (``minibatch_step``).
        """
        totals: dict[str, float] = {}
        updates = 0
        ranges = self.row_ranges(scored.rows)
        first, count = ranges[self.rank]
        row_tokens = read_counts(self._loss_mask(scored).sum(-1))
        for epoch in range(self.online.update_epochs):
            for minibatch in self._minibatches(sum(rows for _, rows in ranges), epoch):
                mine = [row - first for row in minibatch if first <= row < first + count]
                # the tokens that carry the loss, all micro-batches (of every rank)
                num_tokens = int(self.global_sum(sum(row_tokens[row] for row in mine)))
                step = self.minibatch_step(scored, minibatch, ranges, num_tokens)
                updates += 1
                for key, value in step.items():
                    totals[key] = totals.get(key, 0.0) + value
        return {key: value / updates for key, value in totals.items()}

    def minibatch_step(
        self, scored: ScoredRollouts, minibatch: list[int], ranges: Sequence[tuple[int, int]], num_tokens: int
    ) -> dict[str, float]:
        """One optimiser step over ``minibatch`` (global rows) in micro-batches; returns its metrics.

        The losses, metrics, gradient norm and the kernels' deferred input checks are read in one transfer
        (``prefcore.engine.step_reads``), after the last backward pass and before the optimiser step, so a non-finite
        loss or a bad input still never reaches the weights.
        """
        with deferred_checks() as checks:
            self.train_mode()
            self.optimizer.zero_grad(set_to_none=True)
            reads = StepReads()
            widest = max(sum(1 for row in minibatch if start <= row < start + rows) for start, rows in ranges)
            chunks = self.micro_batches(minibatch, ranges, self.online.micro_batch_size or widest)
            for position, (rows, weight) in enumerate(chunks):
                batch = self._rows(scored, rows, num_tokens, len(minibatch))
                output = self.objective.loss(batch)
                check_loss(output.loss, self.step + 1, self.objective, finite=False)
                reads.check(output.loss)
                self.backward(output.loss, final=position == len(chunks) - 1, weight=weight)
                share = weight * len(rows) / len(minibatch)
                reads.add("loss", weight, output.loss)
                for key, value in output.metrics.items():
                    reads.add(key, share, value)
            step, grad_norm = read_step(reads, checks, self.clip_gradients(), step=self.step + 1, method=self.objective)
        step = self.reduce_metrics(step)
        if grad_norm is not None:
            step["grad_norm"] = grad_norm
        self.apply_update(step, clipped=True)
        return step

    def rollout_metrics(self, scored: ScoredRollouts) -> dict[str, float]:
        """Reward (total and per component), advantages, KL to the reference, entropy, length, truncation."""
        rewards, mask, sampling_logps = scored.rewards, scored.tensors.mask.float(), scored.tensors.sampling_logps
        rollouts = scored.rollouts
        metrics: dict[str, float] = {
            "reward/mean": float(rewards.mean()),
            "reward/std": float(rewards.std(unbiased=False)),
        }
        for name, values in scored.components.items():
            metrics[f"reward/{name}"] = float(values.mean())
        sequence_advantage = (scored.advantages * mask).sum(-1) / mask.sum(-1).clamp(min=1)
        metrics["advantages/mean"] = float(sequence_advantage.mean())
        metrics["advantages/std"] = float(sequence_advantage.std(unbiased=False))
        metrics["advantages/abs_max"] = float(sequence_advantage.abs().max())
        groups = rewards.view(-1, rollouts.samples_per_prompt)
        zero_std = (groups.max(dim=1).values == groups.min(dim=1).values).float()
        metrics["zero_std_groups"] = float(zero_std.sum())
        metrics["zero_std_fraction"] = float(zero_std.mean())
        if scored.ref_logps is not None:
            log_ratio = (sampling_logps - scored.ref_logps) * mask  # log π_θ/π_ref on π_θ's samples
            metrics["kl/k1"] = _mean(log_ratio, mask)
            metrics["kl/k3"] = _mean((torch.exp(-log_ratio) - 1 + log_ratio) * mask, mask)
        # −log π of the sampled tokens: an unbiased per-token estimate of the sampling entropy, for free
        metrics["entropy"] = _mean(-sampling_logps, mask)
        lengths = mask.sum(-1)
        metrics["completion_length"] = float(lengths.mean())
        metrics["truncated_fraction"] = sum(rollouts.truncated) / len(rollouts.truncated)
        metrics.update(scored.metrics)
        return metrics

    def train_step(self) -> dict[str, float]:
        """One online step: rollouts, scores, advantages, updates; returns the step's metrics."""
        started = time.perf_counter()
        indices = self.local_prompts(self.sampler.draw(self.online.prompts_per_step))
        self.gather_rollout_weights()  # FSDP2: the sampler needs the full weights in the plain model
        scored = self.rollout_phase(indices)
        rollout_s = time.perf_counter() - started
        metrics = self.rollout_metrics(self.gather_rollouts(scored))
        metrics.update(self.update_phase(scored))
        if "kl/k1" in metrics:  # an adaptive β follows the observed per-token KL (a fixed one stays)
            self.objective.update_kl(metrics["kl/k1"], self.online.completions_per_step)
        metrics["time/rollout_s"] = round(rollout_s, 3)
        metrics["time/step_s"] = round(time.perf_counter() - started, 3)
        check_finite(torch.tensor(metrics["loss"]), self.step)
        self.online_step += 1
        return metrics

    def fit(self) -> dict[str, float]:
        """Run until ``online_steps``; checkpoints, evaluation and metrics through the callbacks."""
        metrics: dict[str, float] = {}
        config = self.train_config
        main = is_main()  # under torchrun, rank 0 alone reports and evaluates
        enabled = config.progress and main
        with StageProgress(self.stage, self.online_steps, enabled=enabled, initial=self.online_step) as bar:
            while self.online_step < self.online_steps:
                metrics = self.train_step()
                step = self.online_step
                last = step == self.online_steps
                if self.on_step is not None and main and (step % config.log_every == 0 or last):
                    self.on_step(step, metrics)
                bar.update(step, metrics)
                if config.eval_every and step % config.eval_every == 0 and not last and self.on_evaluate:
                    self.gather_weights()  # evaluation runs on the plain model, its work split across ranks
                    self.on_evaluate(step)
                if config.checkpoint_every and step % config.checkpoint_every == 0:
                    self.save()
        self.gather_weights()
        return metrics

"""The actor-critic loop: ``OnlineTrainer`` with a value model, GAE and a clipped value loss (PPO).

One PPO step (Ziegler et al. 2019, https://arxiv.org/abs/1909.08593; TRL's experimental PPO)::

    rollouts, scores R [S]        sampled and scored as in ``OnlineTrainer``
    V_old [S, T]                  the value model in eval mode, no gradient
    r_t = −β·k_t + [t = last]·R   ``prefcore.critic.token_rewards`` (k: the objective's reward KL)
    (whiten r if whiten_rewards, the mean kept)
    A, G = GAE(r, V_old, γ, λ)    per value head; G the value targets
    A   → whitened over the batch if whiten_advantages
    update_epochs × shuffled minibatches:
        policy loss (the objective's ``loss``) + its ``value_loss`` (clipped, ×vf_coef),
        one step of the policy's optimiser and one of the value model's

The objective declares ``needs_critic = True`` and carries the options (``plugins/usage/ppo.py``:
γ, λ, value_clip, vf_coef, whitening, critic placement and lr, ``critic_warmup``: the first
online steps train only the critic, the policy frozen). It receives ``returns/<head>`` and
``old_values/<head>`` in ``batch.extras`` and the per-token ``batch.entropy`` when its
``needs_entropy()`` is True.

Costs (Safe-RLHF, Dai et al. 2023, https://arxiv.org/abs/2310.12773). ``cost_names`` are names of
reward components (``reward(rollouts, metadata)``'s second result) that are costs. With any:

- the reward function's total [S] must be the reward components only (give cost components
  weight 0 in ``[[reward]]``, or pass them apart): it is the reward head's outcome;
- the episode cost C [S] is the sum of the ``cost_names`` components;
- the value model needs a second head named ``cost``; its token rewards are +β·k_t plus C on
  the last token (``token_rewards(C, kl, mask, −β)``), its GAE gives A_C and the cost returns
  (``returns/cost``, ``old_values/cost`` in the extras; ``costs`` [S] too);
- the policy's advantages are ``objective.combine_advantages({"reward": A_R, "cost": A_C},
  mask, costs=C)`` when the objective has that method (``costs``: the episode costs of the whole
  step, every rank's under torchrun) (Safe-RLHF: (A_R − λ·A_C)/(1 + λ)), else
  A_R; whitening, if on, applies to the combined advantages;
- the objective's ``value_loss`` gets both heads' values; λ lives in the objective's
  ``state_dict()``, which every checkpoint holds (with the KL controller's β); an objective
  updates λ where it sees the costs (e.g. in ``update_kl`` or ``combine_advantages``).

Checkpoints hold the policy and the value model (one safetensors file, ``policy.*`` and
``value.*``), both optimisers and schedules, the objective's state and the RNG states, so a
killed run resumes to the same weights (``checkpoint_parts``).

Under torchrun the policy's forward goes through DDP or FSDP2 as ``OnlineTrainer``'s does. Under
DDP the value model's gradients (its own trunk, or the heads on the policy's) are summed across
the ranks by hand before its optimiser steps. Under FSDP2 the value model is sharded like the
policy (``wrap_model``: ``fully_shard`` per decoder layer of its trunk, then its root), so its
gradients are reduce-scattered and its optimiser state is sharded; with ``shared`` the heads alone
are a sharded root, called on the hidden states inside the policy's forward. Before each rollout
phase the full value model is gathered into the plain one, which computes the old values (the
reference stays sharded: ``OnlineTrainer.reference_rollout_logps``). Reward
and advantage whitening take the batch statistics of every rank (``batch_statistics``); with
costs, ``combine_advantages`` receives every rank's episode costs (in rank order, what one process
would see), so λ moves on the global costs and is the same on every rank. Checkpoints are sharded
(DCP) with both models under one process's names (``policy.*``, ``value.*``), both optimisers and the
objective's state (β, λ), so they resume under DDP, under FSDP2 and in one plain process alike.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
import torch.distributed as dist

from prefcore.critic import generalized_advantage_estimation
from prefcore.critic import token_rewards
from prefcore.critic import whiten
from prefcore.distributed.wrap import Sharded
from prefcore.distributed.wrap import wrap_model
from prefcore.engine.loop import check_loss
from prefcore.engine.loop import make_scheduler
from prefcore.engine.online_trainer import OnlineTrainer
from prefcore.engine.online_trainer import ScoredRollouts
from prefcore.engine.rollout import pad_rollouts
from prefcore.engine.step_reads import StepReads
from prefcore.engine.step_reads import read_counts
from prefcore.engine.step_reads import read_step_norms
from prefcore.engine.value_model import ValueModel
from prefcore.engine.value_model import linear_head_values
from prefcore.engine.value_model import policy_outputs
from prefcore.errors import ConfigError
from prefcore.kernels._checks import DeferredChecks
from prefcore.kernels._checks import deferred_checks
from prefcore.kernels.kl import per_token_kl

__all__ = ["CombinedOptimizer", "CombinedScheduler", "PPOTrainer"]


class CombinedOptimizer:
    """Several optimisers seen as one ``state_dict`` (what ``save_checkpoint``/``load_checkpoint`` read).

    Parameter ids of later optimisers are offset past the earlier ones', and their param groups
    follow, so the merged dict has the layout of a single optimiser's.
    """

    def __init__(self, *optimizers: torch.optim.Optimizer) -> None:
        self.optimizers = optimizers

    def state_dict(self) -> dict[str, Any]:
        state: dict[int, Any] = {}
        groups: list[dict[str, Any]] = []
        offset = 0
        for optimizer in self.optimizers:
            part = optimizer.state_dict()
            state.update({offset + int(key): value for key, value in part["state"].items()})
            for group in part["param_groups"]:
                groups.append({**group, "params": [offset + int(index) for index in group["params"]]})
            offset += sum(len(group["params"]) for group in part["param_groups"])
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, merged: Mapping[str, Any]) -> None:
        groups = list(merged["param_groups"])
        offset = 0
        for optimizer in self.optimizers:
            count = len(optimizer.param_groups)
            mine, groups = groups[:count], groups[count:]
            size = sum(len(group["params"]) for group in mine)
            state = {
                int(key) - offset: value for key, value in merged["state"].items() if offset <= int(key) < offset + size
            }
            shifted = [{**group, "params": [int(index) - offset for index in group["params"]]} for group in mine]
            optimizer.load_state_dict({"state": state, "param_groups": shifted})
            offset += size


class CombinedScheduler:
    """Named schedulers seen as one ``state_dict``."""

    def __init__(self, **schedulers: Any) -> None:
        self.schedulers = schedulers

    def state_dict(self) -> dict[str, Any]:
        return {name: scheduler.state_dict() for name, scheduler in self.schedulers.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name, scheduler in self.schedulers.items():
            scheduler.load_state_dict(state[name])


def _counted_mask(mask: torch.Tensor, counted: int) -> torch.Tensor:
    """``mask`` without the rows past ``counted``: a stand-in group joins the passes but no statistic."""
    kept = mask.clone()
    kept[counted:] = False
    return kept


class PPOTrainer(OnlineTrainer):
    """``OnlineTrainer`` with a value model: see the module docstring.

    Arguments (beyond ``OnlineTrainer``'s):
        value_model: the critic (``prefcore.engine.value_model.build_value_model``); its heads
            include ``reward``, and ``cost`` when ``cost_names`` is not empty.
        cost_names: reward components that are costs (Safe-RLHF); empty for PPO.
    """

    trains_critic = True

    def __init__(self, *args: Any, value_model: ValueModel, cost_names: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.value_model = value_model
        self.cost_names = tuple(cost_names)
        wanted = ("reward", "cost") if self.cost_names else ("reward",)
        missing = [head for head in wanted if head not in value_model.heads]
        if missing:
            raise ConfigError(
                f"the value model has heads {list(value_model.heads)} but {self.objective.name} needs {list(wanted)}."
            )
        self.critic_config = self.objective.config
        trainable = [parameter for parameter in value_model.parameters() if parameter.requires_grad]
        if not trainable:
            raise ConfigError("the value model has no trainable parameter.")
        self._checkpointed = torch.nn.ModuleDict({"policy": self.policy, "value": value_model})
        self.critic_sharded: Sharded | None = None
        """FSDP2: the value model's shards (its heads alone with ``shared``); None in one process and under DDP."""
        if self.parallel is not None and self.parallel.strategy == "fsdp":
            # every rank starts from rank 0's weights (wrap_model broadcasts them)
            # the heads alone ride on the policy's trunk; named as in the value model (``head.*``)
            shard = torch.nn.ModuleDict({"head": value_model.head}) if value_model.shared else value_model
            self.critic_sharded = wrap_model(shard, _call, self.parallel)
            trainable = self.critic_sharded.parameters()
            # the sharded copies under their plain names (``policy.*``, ``value.*``): a checkpoint reads the same
            # in one process, under DDP and under FSDP2 (the shards' own modules carry FSDP2's state-dict hooks)
            shards = {"policy": self.sharded.module.model, "value": self.critic_sharded.module.model}
            self._checkpointed = torch.nn.ModuleDict(shards)
        elif self.parallel is not None:
            policy_ids = {id(parameter) for parameter in self.policy.parameters()}
            self.critic_own = [parameter for parameter in trainable if id(parameter) not in policy_ids]
            with torch.no_grad():  # every rank starts from rank 0's value model
                for tensor in [*value_model.parameters(), *value_model.buffers()]:
                    dist.broadcast(tensor.data, src=0)
        self.critic_trainable = trainable
        lr = self.critic_config.critic_lr or self.config.lr
        self.critic_optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=self.config.weight_decay)
        self.critic_scheduler = make_scheduler(self.critic_optimizer, self.config)

    def sharded_parts(self) -> tuple[torch.nn.Module, Any, Any]:
        """Both models, both optimisers (DCP takes a list) and both schedules."""
        return (
            self._checkpointed,
            [self.optimizer, self.critic_optimizer],
            CombinedScheduler(policy=self.scheduler, value=self.critic_scheduler),
        )

    def _sync_critic(self) -> None:
        """DDP: the value model's gradients averaged over the ranks by hand, as DDP averages the policy's
        (each rank's loss carries the world size: ``backward``). FSDP2 reduces its shards' itself."""
        if self.parallel is None or self.critic_sharded is not None:
            return
        for parameter in self.critic_own:
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
            dist.all_reduce(parameter.grad)
            parameter.grad.div_(self.world_size)

    def gather_rollout_weights(self) -> None:
        """The policy's and (FSDP2) the value model's full weights into the plain models (collective): the
        rollout phase samples with the one and computes the old values with the other."""
        super().gather_rollout_weights()
        if self.critic_sharded is not None:
            self.critic_sharded.copy_into()

    def train_mode(self) -> None:
        """Policy and value model (and their FSDP2 shards) in training mode."""
        super().train_mode()
        self.value_model.train()
        if self.critic_sharded is not None:
            self.critic_sharded.module.train()

    def global_costs(self, costs: torch.Tensor) -> torch.Tensor:
        """``[S]`` episode costs of every rank, in rank order (the step's costs as one process has them)."""
        if self.parallel is None:
            return costs
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, costs.detach().cpu())
        return torch.cat(gathered).to(costs.device)

    def _critic_values(self, tensors: Any, rows: list[int]) -> dict[str, torch.Tensor]:
        """``{head: [len(rows), T]}`` values with gradient from the value model's own trunk (FSDP2: its shards)."""
        if self.critic_sharded is None:
            return self.value_model.completion_values(tensors, rows)
        self.critic_sharded.release()
        return self.critic_sharded.module(_completion_values, tensors, rows)

    def _heads(self) -> Any:
        """What ``policy_outputs`` reads the shared heads through: the value model, or (FSDP2) its sharded heads."""
        if self.critic_sharded is None or not self.value_model.shared:
            return self.value_model
        self.critic_sharded.release()
        return _ShardedHeads(self.value_model.heads, self.critic_sharded)

    # -- checkpoints ----------------------------------------------------------------------
    def checkpoint_parts(self) -> tuple[torch.nn.Module, Any, Any]:
        """Policy and value model, both optimisers, both schedules."""
        return (
            self._checkpointed,
            CombinedOptimizer(self.optimizer, self.critic_optimizer),
            CombinedScheduler(policy=self.scheduler, value=self.critic_scheduler),
        )

    # -- rollout phase ----------------------------------------------------------------------
    def rollout_phase(self, indices: Sequence[int]) -> ScoredRollouts:
        """Sample and score; old values, per-token rewards, GAE per head and whitening (no gradient)."""
        counts: dict[str, float] = {}
        if self.online.dynamic_sampling:
            indices, rollouts, rewards, components, counts = self._dynamic_sampling(indices)
        else:
            rollouts, rewards, components = self._sample_and_score(indices)
        tensors = pad_rollouts(rollouts, self.tokenizer.pad_token_id).to(self.device)
        ref_logps = self.reference_rollout_logps(tensors)  # FSDP2: on the reference's shards
        counted = self._counted if self.online.dynamic_sampling else None  # under torchrun: a stand-in counts 0
        mask = tensors.mask if counted is None else _counted_mask(tensors.mask, counted)
        rewards = rewards.to(self.device)
        old_values = self.value_model.rollout_values(tensors)
        with self.batch_statistics():  # whitening over every rank's rollouts
            kl, beta = None, 0.0
            penalty = self.objective.reward_kl()
            if penalty is not None:
                estimator = "k3" if penalty.estimator == "k3+" else penalty.estimator  # k3+ differs only in gradient
                kl, beta = per_token_kl(tensors.sampling_logps, ref_logps, mask, estimator=estimator), penalty.beta
                counts["kl/reward_penalty"] = float((beta * kl * mask).sum(-1).mean())  # β·Σ_t k_t, per completion
            outcomes = {"reward": rewards}
            extras: dict[str, Any] = {}
            if self.cost_names:
                missing = [name for name in self.cost_names if name not in components]
                if missing:
                    raise ConfigError(f"cost {missing[0]!r} is not a reward component; they are {sorted(components)}.")
                costs = torch.stack([components[name].to(self.device).float() for name in self.cost_names]).sum(0)
                outcomes["cost"] = costs
                extras["costs"] = costs
            config = self.critic_config
            advantages: dict[str, torch.Tensor] = {}
            for head, outcome in outcomes.items():
                per_token = token_rewards(outcome, kl, mask, beta if head == "reward" else -beta)
                if config.whiten_rewards:
                    per_token = whiten(per_token, mask, shift_mean=False)
                head_advantages, returns = generalized_advantage_estimation(
                    per_token, old_values[head].to(per_token.dtype), mask, config.gamma, config.lam
                )
                advantages[head] = head_advantages
                extras[f"returns/{head}"] = returns.float()
                extras[f"old_values/{head}"] = old_values[head].float()
                extras[f"token_rewards/{head}"] = per_token.float()
            combine = getattr(self.objective, "combine_advantages", None)
            if self.cost_names and callable(combine):  # λ moves on every rank's costs: the same λ everywhere
                counted_costs = outcomes["cost"] if counted is None else outcomes["cost"][:counted]
                policy_advantages = combine(advantages, mask, costs=self.global_costs(counted_costs))
            else:
                policy_advantages = advantages["reward"]
            if config.whiten_advantages:
                policy_advantages = whiten(policy_advantages, mask)
        return ScoredRollouts(
            rollouts,
            tensors,
            ref_logps,
            rewards,
            components,
            policy_advantages.detach().float() * mask,
            extras,
            counts,
            counted,
        )

    def rollout_metrics(self, scored: ScoredRollouts) -> dict[str, float]:
        """``OnlineTrainer``'s (with ``kl/reward_penalty``, β·Σk per completion), plus old values and returns."""
        metrics = super().rollout_metrics(scored)
        for name in self.cost_names:  # a cost component is not a reward: cost/<name> (prefcore.rewards)
            metrics[f"cost/{name}"] = metrics.pop(f"reward/{name}")
        mask = scored.tensors.mask.float()
        count = mask.sum().clamp(min=1)
        for head in self.value_model.heads:
            if f"returns/{head}" not in scored.extras:
                continue
            prefix = "" if head == "reward" else f"{head}_"
            metrics[f"critic/{prefix}old_value_mean"] = float(
                (scored.extras[f"old_values/{head}"] * mask).sum() / count
            )
            metrics[f"critic/{prefix}returns_mean"] = float((scored.extras[f"returns/{head}"] * mask).sum() / count)
        if "costs" in scored.extras:
            metrics["cost/mean"] = float(scored.extras["costs"].mean())
        return metrics

    # -- update phase -----------------------------------------------------------------------
    def warming_up(self) -> bool:
        """True during ``critic_warmup``'s first online steps: only the value model trains."""
        return self.online_step < int(getattr(self.critic_config, "critic_warmup", 0))

    def _needs_entropy(self) -> bool:
        needs = getattr(self.objective, "needs_entropy", None)
        return bool(needs()) if callable(needs) else False

    def _clip_critic(self) -> torch.Tensor | None:
        """Clip the value model's gradients to ``max_grad_norm`` on the device; their norm before (None: no clip)."""
        if self.config.max_grad_norm <= 0:
            return None
        norm = torch.nn.utils.clip_grad_norm_(self.critic_trainable, self.config.max_grad_norm)
        full_tensor = getattr(norm, "full_tensor", None)  # FSDP2: a DTensor
        return full_tensor() if callable(full_tensor) else norm

    def _critic_update(self, metrics: dict[str, float]) -> None:
        self.critic_optimizer.step()
        self.critic_scheduler.step()
        metrics["critic/lr"] = self.critic_scheduler.get_last_lr()[0]

    def update_phase(self, scored: ScoredRollouts) -> dict[str, float]:
        """``update_epochs`` passes of minibatches: policy and value losses, a step of each optimiser.

        The phase reads each local row's loss-token count from the device once (``read_counts``); each
        optimiser step then reads the device once more (``read_step_norms``: both gradient norms with the rest).
        """
        totals: dict[str, float] = {}
        updates = 0
        loss_mask = self._loss_mask(scored)
        warm = self.warming_up()
        ranges = self.row_ranges(scored.rows)  # a stand-in group (dynamic sampling under torchrun) adds no row
        first, count = ranges[self.rank]
        row_tokens = read_counts(loss_mask.sum(-1))
        for epoch in range(self.online.update_epochs):
            for minibatch in self._minibatches(sum(rows for _, rows in ranges), epoch):
                mine = [row - first for row in minibatch if first <= row < first + count]
                num_tokens = int(self.global_sum(sum(row_tokens[row] for row in mine)))
                step = self.update_step(scored, minibatch, ranges, num_tokens, warm)
                updates += 1
                for key, value in step.items():
                    totals[key] = totals.get(key, 0.0) + value
        metrics = {key: value / updates for key, value in totals.items()}
        metrics["critic/warmup"] = float(warm)
        return metrics

    def update_step(
        self,
        scored: ScoredRollouts,
        minibatch: list[int],
        ranges: Sequence[tuple[int, int]],
        num_tokens: int,
        warm: bool,
    ) -> dict[str, float]:
        """One minibatch: policy and value losses over its micro-batches, one step of each optimiser (the policy's
        not during critic warm-up); returns its metrics. The losses, metrics, gradient norms and the kernels'
        deferred checks are read in one transfer, after the last backward and before either optimiser steps."""
        with deferred_checks() as checks:
            return self._update_step(scored, minibatch, ranges, num_tokens, warm, checks)

    def _update_step(
        self,
        scored: ScoredRollouts,
        minibatch: list[int],
        ranges: Sequence[tuple[int, int]],
        num_tokens: int,
        warm: bool,
        checks: DeferredChecks,
    ) -> dict[str, float]:
        config = self.train_config
        entropy = self._needs_entropy() and not warm
        self.train_mode()
        self.optimizer.zero_grad(set_to_none=True)
        self.critic_optimizer.zero_grad(set_to_none=True)
        reads = StepReads()
        widest = max(sum(1 for row in minibatch if start <= row < start + rows) for start, rows in ranges)
        chunks = self.micro_batches(minibatch, ranges, self.online.micro_batch_size or widest)
        for position, (rows, weight) in enumerate(chunks):
            share = weight * len(rows) / len(minibatch)
            with torch.set_grad_enabled(not warm or self.value_model.shared):
                outputs = self.forward(
                    _policy_outputs,
                    scored.tensors,
                    rows,
                    self._heads(),
                    entropy,
                    config.fused_lm_head,
                    config.kernel_backend,
                )
            values = outputs.values
            if values is None:
                values = self._critic_values(scored.tensors, rows)
            batch = replace(
                self._batch(scored, rows, outputs.logps, num_tokens, len(minibatch)), entropy=outputs.entropy
            )
            value_output = self.objective.value_loss(values, batch)
            check_loss(value_output.loss, self.step + 1, self.objective, inputs="the values", finite=False)
            reads.check(value_output.loss)
            total = value_output.loss
            parts = dict(value_output.metrics)
            if not warm:
                output = self.objective.loss(batch)
                check_loss(output.loss, self.step + 1, self.objective, finite=False)
                reads.check(output.loss)
                total = output.loss + total
                parts.update(output.metrics)
                reads.add("policy_loss", weight, output.loss)
            elif self.sharded is not None and outputs.logps.requires_grad:
                total = total + 0.0 * outputs.logps.sum()  # DDP reduces every parameter it ran
            self._backward_both(total, final=position == len(chunks) - 1, weight=weight, policy=not warm)
            reads.add("loss", weight, total)
            for key, value in parts.items():
                reads.add(key, share, value)
        self._sync_critic()
        norms_in = [None if warm else self.clip_gradients(), self._clip_critic()]
        step, norms = read_step_norms(reads, checks, norms_in, step=self.step + 1, method=self.objective)
        step = self.reduce_metrics(step)
        if not warm:
            if norms[0] is not None:
                step["grad_norm"] = norms[0]
            self.apply_update(step, clipped=True)
        if norms[1] is not None:
            step["critic/grad_norm"] = norms[1]
        self._critic_update(step)
        return step

    def _backward_both(self, loss: torch.Tensor, *, final: bool, weight: float, policy: bool) -> None:
        """``backward`` through DDP when the policy's forward went through it, else a plain one scaled alike;
        under FSDP2 the value model's shards reduce their gradients on the ``final`` micro-batch with the policy's."""
        if self.critic_sharded is not None:
            with self.critic_sharded.sync(final):
                self.backward(loss, final=final, weight=weight)
        elif self.sharded is None or policy or self.value_model.shared:
            self.backward(loss, final=final, weight=weight)
        else:  # critic warm-up with a separate critic: the policy ran without gradient, outside DDP's reducer
            (loss * (weight * self.world_size)).backward()


def _call(module: torch.nn.Module, fn: Callable[..., Any], *args: Any) -> Any:
    """The forward FSDP2 wraps around the value model: ``fn(module, *args)``."""
    return fn(module, *args)


def _completion_values(value_model: ValueModel, tensors: Any, rows: list[int]) -> dict[str, torch.Tensor]:
    """A separate value model's values of ``rows``, as copies (FSDP2 hooks its root's outputs: a view could
    drop the hook)."""
    return {name: values.clone() for name, values in value_model.completion_values(tensors, rows).items()}


def _shared_head_values(heads: torch.nn.ModuleDict, hidden: torch.Tensor) -> torch.Tensor:
    """The shared heads' values, as ``ValueModel.head_values``: what their FSDP2 root runs."""
    return linear_head_values(heads["head"], hidden)


class _ShardedHeads:
    """A shared value model's heads as ``policy_outputs`` reads them, called through their FSDP2 root."""

    shared = True

    def __init__(self, heads: Sequence[str], sharded: Sharded) -> None:
        self.heads = tuple(heads)
        self.sharded = sharded

    def head_values(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.sharded.module(_shared_head_values, hidden)


def _policy_outputs(
    policy: torch.nn.Module,
    tensors: Any,
    rows: list[int],
    value_model: ValueModel,
    entropy: bool,
    fused: bool,
    backend: str,
) -> Any:
    """``policy_outputs`` of a micro-batch: what DDP and FSDP2 wrap as the policy's forward (shared values as
    copies, not views of the heads' output: FSDP2 hooks the root's outputs)."""
    outputs = policy_outputs(
        policy, tensors, rows, value_model=value_model, entropy=entropy, fused=fused, backend=backend
    )
    if outputs.values is None:
        return outputs
    return replace(outputs, values={name: values.clone() for name, values in outputs.values.items()})

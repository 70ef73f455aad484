"""Loops that turn the policy's own scored samples into offline training data: online DPO and best-of-n.

Both sample from the current policy with the rollout engine (``prefcore.engine.rollout``),
score the samples with the run's ``[[reward]]`` and then train with the *offline* objectives
on ``LogProbBatch`` -- the samples become items, so any registered pairwise objective (or
``sft``) trains on them unchanged. What the reward adds is only an order on each prompt's
samples.

**Online DPO** (Guo et al. 2024, "Direct Language Model Alignment from Online AI Feedback",
https://arxiv.org/abs/2402.04792; TRL ``experimental/online_dpo``). Each online step samples
G completions of each of its prompts from π_θ, and the reward picks, per prompt,

    chosen = argmax_k r(x, y_k),   rejected = argmin_k r(x, y_k)

(G = 2 is the paper's setting: the two samples, ranked). A prompt whose G rewards are all
equal orders nothing: it makes no pair and is counted (``tied_groups``). The pairs, as the
token ids that were sampled (no re-tokenisation, a truncated sample stays without its stop
token), train any pairwise objective (dpo, ipo, ...) against the frozen reference for
``update_epochs`` optimiser steps. The loop is ``OnlineTrainer``'s -- seeded prompt order,
rollout seeds a function of ``(seed, step)``, atomic checkpoints that hold the sampler's place
-- so a killed run resumes to the same weights; only the step differs. Under torchrun each rank
samples its slice of the step's prompts, pairs its own groups, and trains on its pairs with the
global pair and token counts (``OnlineTrainer``'s sharding; the forward through DDP or FSDP2).

**Best-of-n / rejection-sampling fine-tuning** (RAFT, Dong et al. 2023,
https://arxiv.org/abs/2304.06767; ReST, Gulcehre et al. 2023, https://arxiv.org/abs/2308.08998).
Iteration t samples n completions of each prompt from π_{t-1}, keeps

    best:          argmax_k r(x, y_k) for every prompt (RAFT; first on ties),
    threshold:     every sample with r ≥ τ (ReST's filter),
    top_fraction:  the best ⌈f · N⌉ of the iteration's N samples,

and fine-tunes π on the kept samples with the sft objective (``Trainer``, ``[train] steps``
per iteration). As in ``prefcore.engine.self_play``, each finished iteration is saved
(``iteration-N/model``) and each iteration checkpoints on its own, so a killed run resumes
inside the iteration it was in; an iteration's samples are redrawn from the saved model with
the same seed. Per iteration it logs the reward of the samples and of the kept ones, the kept
count and the policy's KL to the reference, *measured* on its samples
(k1 = mean of log π_θ − log π_ref), not the log n − (n−1)/n bound of Beirami et al. 2024
(https://arxiv.org/abs/2401.01879), which is loose when samples tie. After the last iteration
one more sampling pass measures the final policy.

Under torchrun each rank samples its contiguous slice of an iteration's prompts with its own seed
(``rank_seed``) and scores it; the scored samples are gathered in rank order (the prompts' order),
so every rank keeps the same rows (``top_fraction`` ranks all of them) and builds the same SFT
items, which the ``Trainer`` then splits across the ranks as any offline data. Rank 0 writes the
finished iterations' models.
"""

from __future__ import annotations

import gc
import logging
import math
import random
import time
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from prefcore.batch import LogProbBatch
from prefcore.distributed.process_group import barrier
from prefcore.distributed.process_group import current
from prefcore.distributed.process_group import is_main
from prefcore.distributed.sampler import shard_indices
from prefcore.engine.batching import SequenceBatch
from prefcore.engine.batching import TrainingItem
from prefcore.engine.batching import collate
from prefcore.engine.logprobs import completion_rows
from prefcore.engine.logprobs import completion_token_logps
from prefcore.engine.logprobs import known_completion_rows
from prefcore.engine.loop import check_loss
from prefcore.engine.models import load_pretrained
from prefcore.engine.models import save_model
from prefcore.engine.online_schedule import rank_seed
from prefcore.engine.online_schedule import rollout_seed
from prefcore.engine.online_schedule import select_groups
from prefcore.engine.online_trainer import OnlineTrainer
from prefcore.engine.online_trainer import RewardFn
from prefcore.engine.online_trainer import ScoredRollouts
from prefcore.engine.reference import ModelReference
from prefcore.engine.rollout import GenerationBackend
from prefcore.engine.rollout import RolloutSettings
from prefcore.engine.rollout import RolloutTensors
from prefcore.engine.rollout import make_backend
from prefcore.engine.rollout import pad_rollouts
from prefcore.engine.rollout import rollout_logps
from prefcore.engine.rollout import sample_rollouts
from prefcore.engine.sequences import TokenizedSequence
from prefcore.engine.step_reads import StepReads
from prefcore.engine.step_reads import read_step
from prefcore.engine.trainer import Trainer
from prefcore.engine.trainer import WeightedObjective
from prefcore.errors import ConfigError
from prefcore.kernels._checks import deferred_checks
from prefcore.rollout import Rollouts
from prefcore.settings import LoopConfig
from prefcore.settings import OnlineLoopConfig
from prefcore.settings import TrainConfig

__all__ = [
    "OnlineDPOTrainer",
    "PreferencePairs",
    "best_of_n_keep",
    "rollout_items",
    "rollout_pairs",
    "run_best_of_n",
    "sample_metrics",
]

logger = logging.getLogger("prefcore.online_loops")


# -- from scored samples to items --------------------------------------------------------
@dataclass(frozen=True)
class PreferencePairs:
    """Per prompt with a strict order, ``(chosen row, rejected row)``; ``tied_groups`` made none."""

    pairs: tuple[tuple[int, int], ...]
    tied_groups: int


def rollout_pairs(rewards: torch.Tensor, samples_per_prompt: int) -> PreferencePairs:
    """Best against worst sample of each prompt (rows are prompt-major, G per prompt); all-equal groups are dropped.

    The first of equal maxima (minima) is taken, so the pairs are a function of the rewards alone.
    """
    values = [float(value) for value in rewards.detach().flatten().cpu()]
    if samples_per_prompt < 2 or len(values) % samples_per_prompt:
        raise ValueError(f"{len(values)} rewards do not form groups of {samples_per_prompt} >= 2 samples.")
    pairs: list[tuple[int, int]] = []
    tied = 0
    for start in range(0, len(values), samples_per_prompt):
        group = values[start : start + samples_per_prompt]
        best, worst = max(group), min(group)
        if best == worst:
            tied += 1
            continue
        pairs.append((start + group.index(best), start + group.index(worst)))
    return PreferencePairs(tuple(pairs), tied)


def best_of_n_keep(
    rewards: torch.Tensor,
    samples_per_prompt: int,
    keep: str = "best",
    *,
    threshold: float = 0.0,
    top_fraction: float = 0.25,
) -> list[int]:
    """The rows a best-of-n iteration fine-tunes on, in row order (see the module docstring for ``keep``)."""
    values = [float(value) for value in rewards.detach().flatten().cpu()]
    if keep == "best":
        rows = []
        for start in range(0, len(values), samples_per_prompt):
            group = values[start : start + samples_per_prompt]
            rows.append(start + group.index(max(group)))
        return rows
    if keep == "threshold":
        return [row for row, value in enumerate(values) if value >= threshold]
    if keep == "top_fraction":
        count = min(len(values), max(1, math.ceil(top_fraction * len(values))))
        ranked = sorted(range(len(values)), key=lambda row: (-values[row], row))
        return sorted(ranked[:count])
    raise ValueError(f"keep must be 'best', 'threshold' or 'top_fraction'. Got {keep!r}.")


def _sequence(rollouts: Rollouts, row: int) -> TokenizedSequence:
    return TokenizedSequence(tuple(rollouts.prompt_ids[row]), tuple(rollouts.completion_ids[row]))


def rollout_items(rollouts: Rollouts, rows: Sequence[int]) -> list[TrainingItem]:
    """SFT items of the sampled token ids of ``rows`` (what was generated, not a re-tokenised decoding)."""
    return [TrainingItem((_sequence(rollouts, row),), "sft") for row in rows]


def _pair_items(rollouts: Rollouts, pairs: Sequence[tuple[int, int]]) -> list[TrainingItem]:
    return [
        TrainingItem((_sequence(rollouts, chosen), _sequence(rollouts, rejected)), "pairwise")
        for chosen, rejected in pairs
    ]


# -- what a sampling pass measures -------------------------------------------------------
def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    count = float(mask.sum())
    return float((values * mask).sum() / count) if count else 0.0


def sample_metrics(
    rollouts: Rollouts,
    tensors: RolloutTensors,
    rewards: torch.Tensor,
    components: Mapping[str, torch.Tensor],
    ref_logps: torch.Tensor | None,
) -> dict[str, float]:
    """Reward (total, std, components), KL to the reference on the policy's own samples, entropy, length.

    ``kl/k1`` and ``kl/k3`` are per token (as ``OnlineTrainer`` logs them); ``kl/sequence`` is the
    k1 estimate of KL(π_θ ‖ π_ref) per completion, the quantity best-of-n's log n − (n−1)/n bounds.
    All at the sampling temperature.
    """
    mask = tensors.mask.float()
    rewards = rewards.float().cpu()
    metrics: dict[str, float] = {
        "reward/mean": float(rewards.mean()),
        "reward/std": float(rewards.std(unbiased=False)),
    }
    for name, values in components.items():
        metrics[f"reward/{name}"] = float(values.float().mean())
    if ref_logps is not None:
        log_ratio = (tensors.sampling_logps - ref_logps) * mask
        metrics["kl/k1"] = _masked_mean(log_ratio, mask)
        metrics["kl/k3"] = _masked_mean((torch.exp(-log_ratio) - 1 + log_ratio) * mask, mask)
        metrics["kl/sequence"] = float(log_ratio.sum(-1).mean())
    metrics["entropy"] = _masked_mean(-tensors.sampling_logps, mask)
    metrics["completion_length"] = float(mask.sum(-1).mean())
    metrics["truncated_fraction"] = sum(rollouts.truncated) / max(1, len(rollouts.truncated))
    return metrics


def _sequence_logps(model: torch.nn.Module, sequences: Any, fused: bool, backend: str) -> torch.Tensor:
    """The policy's per-token log-probs of a micro-batch of pairs (what DDP and FSDP2 wrap)."""
    return completion_token_logps(model, sequences, fused=fused, backend=backend)


def _log_prob_batch(
    policy_logps: torch.Tensor,
    batch: SequenceBatch,
    reference: ModelReference | None,
    num_items: int,
    num_tokens: int,
) -> LogProbBatch:
    """The offline objectives' batch for pairs of sampled sequences (policy with gradient, reference without)."""
    ref_logps = None if reference is None else reference(batch)
    return LogProbBatch(
        policy_logps=policy_logps.float(),
        mask=batch.sequences.completion_mask,
        ref_logps=None if ref_logps is None else ref_logps.float(),
        chosen_index=batch.chosen_index,
        rejected_index=batch.rejected_index,
        margins=batch.margins,
        probabilities=batch.probabilities,
        weights=batch.weights,
        num_items=num_items,
        num_tokens=num_tokens,
    )


# -- online DPO --------------------------------------------------------------------------
class OnlineDPOTrainer(OnlineTrainer):
    """Online DPO: each step's samples, ranked by the reward, train pairwise objectives (module docstring).

    Takes ``OnlineTrainer``'s arguments, with ``objectives`` (pairwise usage objectives and their
    weights) for its one online objective; ``[online] micro_batch_size`` counts pairs per forward
    pass (0 = all of a step's pairs) and ``minibatch_size`` must be 0 (one optimiser step per
    ``update_epochs`` pass). The reference measures the KL and is the objectives' π_ref.
    """

    def __init__(
        self,
        policy: torch.nn.Module,
        objectives: Sequence[WeightedObjective],
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
    ) -> None:
        if not objectives:
            raise ConfigError("online DPO needs at least one pairwise usage objective.")
        for entry in objectives:
            if "pairwise" not in entry.objective.data_formats:
                raise ConfigError(f"online DPO trains on pairs; usage objective {entry.objective.name!r} does not.")
        if online.samples_per_prompt < 2:
            raise ConfigError("online DPO ranks several samples per prompt: set [online] samples_per_prompt >= 2.")
        if online.minibatch_size:
            raise ConfigError(
                "online DPO makes one optimiser step per pass over a step's pairs: leave [online] minibatch_size at 0."
            )
        needs_reference = any(entry.objective.uses_reference() for entry in objectives)
        super().__init__(
            policy,
            objectives[0].objective,
            prompts,
            metadata,
            config,
            online,
            tokenizer=tokenizer,
            reward=reward,
            run_dir=run_dir,
            device=device,
            reference=reference,
            backend=backend,
            prefix=prefix,
            on_step=on_step,
            on_checkpoint=on_checkpoint,
            on_evaluate=on_evaluate,
            stage="online DPO",
        )
        self.objectives = list(objectives)
        self.model_reference = self.reference_logps if needs_reference else None  # FSDP2: sharded

    def score(self, indices: Sequence[int]) -> ScoredRollouts:
        """Sample and score the prompts at ``indices`` (no gradient); advantages are unused (zeros)."""
        prompts = [self.prompts[index] for index in indices]
        rollouts = self._sample(prompts, self.settings)
        tensors = pad_rollouts(rollouts, self.tokenizer.pad_token_id).to(self.device)
        ref_logps = self.reference_rollout_logps(tensors)
        rewards, components = self.reward(rollouts, [self.metadata[index] for index in indices])
        rewards = rewards.detach().float().to(self.device)
        return ScoredRollouts(
            rollouts,
            tensors,
            ref_logps,
            rewards,
            {name: value.detach().float() for name, value in components.items()},
            torch.zeros_like(tensors.sampling_logps),
            {},
        )

    def update(self, items: Sequence[TrainingItem], filler: Sequence[TrainingItem] = ()) -> dict[str, float]:
        """One optimiser step of the weighted objectives over all ``items`` (micro-batches add up exactly).

        Distributed, ``items`` are this rank's pairs; every rank runs as many micro-batches as the busiest,
        the missing ones on ``filler`` (one pair) with weight 0, and the counts are global. After the host
        phase (``_host_batches``) the step reads the device once (``prefcore.engine.step_reads``).
        """
        self.train_mode()
        self.optimizer.zero_grad(set_to_none=True)
        counts = self.rank_counts(len(items))
        size = self.online.micro_batch_size or max(counts)
        chunks = [(list(items[start : start + size]), 1.0) for start in range(0, len(items), size)]
        if self.parallel is not None:
            busiest = max(-(-count // size) for count in counts)
            chunks += [(list(filler[:1]), 0.0)] * (busiest - len(chunks))
        batches, rows, num_tokens = self._host_batches(chunks)
        num_items = sum(counts)
        config = self.train_config
        with deferred_checks() as checks:
            reads = StepReads()
            for position, ((batch, weight), batch_rows) in enumerate(zip(batches, rows, strict=True)):
                batch = batch.to(self.device)
                with known_completion_rows(batch.sequences.completion_mask, batch_rows.to(self.device)):
                    policy_logps = self.forward(
                        _sequence_logps, batch.sequences, config.fused_lm_head, config.kernel_backend
                    )
                    log_prob_batch = _log_prob_batch(policy_logps, batch, self.model_reference, num_items, num_tokens)
                loss = torch.zeros((), device=self.device)
                share = weight * batch.num_items / num_items
                for entry in self.objectives:
                    output = entry.objective.loss(log_prob_batch)
                    check_loss(output.loss, self.step + 1, entry.objective, finite=False)
                    reads.check(output.loss, entry.objective)
                    loss = loss + entry.weight * output.loss
                    prefix = f"{entry.objective.name}/" if len(self.objectives) > 1 else ""
                    for key, value in output.metrics.items():
                        reads.add(prefix + key, share, value)
                reads.check(loss)  # the weighted sum: a non-finite one names no method
                self.backward(loss, final=position == len(batches) - 1, weight=weight)
                reads.add("loss", weight, loss)
            totals, grad_norm = read_step(reads, checks, self.clip_gradients(), step=self.step + 1, method=None)
        totals = self.reduce_metrics(totals)
        if grad_norm is not None:
            totals["grad_norm"] = grad_norm
        self.apply_update(totals, clipped=True)
        return totals

    def _host_batches(
        self, chunks: Sequence[tuple[list[TrainingItem], float]]
    ) -> tuple[list[tuple[SequenceBatch, float]], list[torch.Tensor], int]:
        """What the step learns on the host before any device work: the collated micro-batches, each one's
        completion rows (the fused LM head then counts nothing on the device) and the step's target tokens
        (global: every rank's micro-batches with weight)."""
        batches = [(collate(chunk, self.tokenizer.pad_token_id), weight) for chunk, weight in chunks]
        rows = [completion_rows(batch.sequences.completion_mask) for batch, _ in batches]
        num_tokens = int(self.global_sum(sum(batch.target_token_count() for batch, weight in batches if weight)))
        return batches, rows, num_tokens

    def rank_counts(self, count: int) -> list[int]:
        """``count`` of every rank (``[count]`` in one process)."""
        if self.parallel is None:
            return [count]
        counts: list[Any] = [None] * self.world_size
        dist.all_gather_object(counts, int(count))
        return [int(value) for value in counts]

    def train_step(self) -> dict[str, float]:
        """Sample, rank, pair, then ``update_epochs`` optimiser steps on the pairs; returns the step's metrics."""
        started = time.perf_counter()
        indices = self.local_prompts(self.sampler.draw(self.online.prompts_per_step))
        self.gather_rollout_weights()  # FSDP2: the sampler needs the full weights in the plain model
        scored = self.score(indices)
        rollout_s = time.perf_counter() - started
        everyone = self.gather_rollouts(scored)
        metrics = sample_metrics(
            everyone.rollouts, everyone.tensors, everyone.rewards, everyone.components, everyone.ref_logps
        )
        made = rollout_pairs(everyone.rewards, self.online.samples_per_prompt)  # every rank's, for the metrics
        metrics["pairs"] = float(len(made.pairs))
        metrics["tied_groups"] = float(made.tied_groups)
        if made.pairs:
            chosen = everyone.rewards[[pair[0] for pair in made.pairs]]
            rejected = everyone.rewards[[pair[1] for pair in made.pairs]]
            metrics["reward/chosen"] = float(chosen.mean())
            metrics["reward/rejected"] = float(rejected.mean())
            mine = rollout_pairs(scored.rewards, self.online.samples_per_prompt).pairs  # this rank's own groups
            items = _pair_items(scored.rollouts, mine)
            filler = _pair_items(scored.rollouts, [(0, 1)])
            updates: dict[str, float] = {}
            for _ in range(self.online.update_epochs):
                for key, value in self.update(items, filler).items():
                    updates[key] = updates.get(key, 0.0) + value / self.online.update_epochs
            metrics.update(updates)
        else:  # every prompt tied: nothing to prefer, no update (the schedule does not advance either)
            logger.info("online DPO step %d: every group tied, no pair, no update", self.online_step + 1)
        metrics["time/rollout_s"] = round(rollout_s, 3)
        metrics["time/step_s"] = round(time.perf_counter() - started, 3)
        self.online_step += 1
        return metrics


# -- best-of-n / RAFT / ReST -------------------------------------------------------------
def _shifted(
    on_step: Callable[[int, Mapping[str, float]], None], offset: int
) -> Callable[[int, Mapping[str, float]], None]:
    return lambda step, metrics: on_step(offset + step, metrics)


def _iteration_prompts(count: int, wanted: int, seed: int, iteration: int) -> list[int]:
    if not wanted or wanted >= count:
        return list(range(count))
    return random.Random(seed * 1_000 + iteration).sample(range(count), wanted)


def run_best_of_n(
    policy: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[Any],
    metadata: Sequence[Mapping[str, Any]],
    objectives: Sequence[WeightedObjective],
    train_config: TrainConfig,
    online: OnlineLoopConfig,
    loop: LoopConfig,
    *,
    reward: RewardFn,
    run_dir: Path,
    device: torch.device,
    reference: torch.nn.Module | None = None,
    backend: GenerationBackend | None = None,
    prefix: str = "",
    on_step: Callable[[int, Mapping[str, float]], None] | None = None,
    on_iteration: Callable[[int, Mapping[str, float]], None] | None = None,
    on_evaluate: Callable[[int], None] | None = None,
) -> list[dict[str, float]]:
    """``loop.iterations`` rounds of sample n → keep → SFT (module docstring); returns each pass's metrics.

    ``on_iteration(step, metrics)`` receives the sampling pass before iteration t's training at
    step ``(t−1)·steps`` and the final pass at ``iterations·steps`` (an iteration finished in an
    earlier, killed attempt is loaded, not measured again). ``on_evaluate(step)`` runs after
    each iteration but the last.
    """
    if len(prompts) != len(metadata):
        raise ValueError(f"{len(prompts)} prompts but {len(metadata)} metadata entries.")
    for entry in objectives:
        if "sft" not in entry.objective.data_formats:
            raise ConfigError(
                f"best-of-n fine-tunes on kept samples; usage objective {entry.objective.name!r} does not."
            )
    settings = RolloutSettings(
        samples_per_prompt=online.samples_per_prompt,
        max_new_tokens=online.max_new_tokens,
        temperature=online.temperature,
        top_p=online.top_p,
        seed=train_config.seed,
    )
    needs_reference = any(entry.objective.uses_reference() for entry in objectives)
    model_reference = (
        ModelReference(reference, fused=train_config.fused_lm_head, backend=train_config.kernel_backend)
        if needs_reference and reference is not None
        else None
    )
    backend = make_backend(online.sampler, policy) if backend is None else backend
    steps = train_config.steps
    history: list[dict[str, float]] = []
    parallel = current()
    if parallel is not None and len(_iteration_prompts(len(prompts), loop.prompts, 0, 1)) < parallel.world_size:
        raise ConfigError(
            f"best-of-n samples fewer prompts per iteration than the {parallel.world_size} processes: "
            "use at least one prompt per process ([loop] prompts).",
            field="loop.prompts",
        )

    def sample_pass(iteration: int) -> tuple[Rollouts, torch.Tensor, dict[str, float]]:
        indices = _iteration_prompts(len(prompts), loop.prompts, train_config.seed, iteration)
        if parallel is not None:  # this rank's slice, its own seed (rank 0 keeps the single-process one)
            indices = shard_indices(indices, parallel.rank, parallel.world_size)
        chosen_prompts = [prompts[index] for index in indices]
        rollouts = sample_rollouts(
            policy,
            tokenizer,
            chosen_prompts,
            settings,
            backend=backend,
            prefix=prefix,
            seed=rank_seed(rollout_seed(train_config.seed, iteration), parallel.rank if parallel else 0),
        )
        tensors = pad_rollouts(rollouts, tokenizer.pad_token_id).to(device)
        ref_logps = None
        if reference is not None:
            ref_logps = rollout_logps(
                reference, tensors, fused=train_config.fused_lm_head, backend=train_config.kernel_backend
            ).cpu()
        total, components = reward(rollouts, [metadata[index] for index in indices])
        total = total.detach().float().cpu()
        components = {name: value.detach().float().cpu() for name, value in components.items()}
        tensors = tensors.to("cpu")
        if parallel is not None:
            rollouts, total, components, ref_logps = _gather_samples(rollouts, total, components, ref_logps)
            tensors = pad_rollouts(rollouts, tokenizer.pad_token_id)
            if ref_logps is not None:
                ref_logps = torch.nn.functional.pad(ref_logps, (0, tensors.mask.shape[1] - ref_logps.shape[1]))
        metrics = sample_metrics(rollouts, tensors, total, components, ref_logps)
        metrics["iteration"] = float(iteration - 1)  # the iterations the sampling policy has been trained for
        return rollouts, total, metrics

    for iteration in range(1, loop.iterations + 1):
        done = run_dir / f"iteration-{iteration}" / "model"
        if done.is_dir():
            policy.load_state_dict(load_pretrained(done, device).state_dict())
            continue
        offset = (iteration - 1) * steps
        rollouts, total, metrics = sample_pass(iteration)
        kept = best_of_n_keep(
            total, online.samples_per_prompt, loop.keep, threshold=loop.threshold, top_fraction=loop.top_fraction
        )
        metrics["kept"] = float(len(kept))
        metrics["kept_fraction"] = len(kept) / max(1, len(total))
        metrics["reward/kept_mean"] = float(total[kept].mean()) if kept else float("nan")
        history.append(metrics)
        if on_iteration is not None and is_main():
            on_iteration(offset, metrics)
        logger.info(
            "best-of-n iteration %d/%d: %d samples, reward %.4f, kept %d with reward %.4f, KL %.4f",
            iteration,
            loop.iterations,
            len(total),
            metrics["reward/mean"],
            len(kept),
            metrics["reward/kept_mean"],
            metrics.get("kl/sequence", float("nan")),
        )
        if kept:
            trainer = Trainer(
                policy,
                objectives,
                rollout_items(rollouts, kept),
                replace(train_config, eval_every=0),
                pad_token_id=tokenizer.pad_token_id,
                run_dir=run_dir,
                device=device,
                checkpoint_tag=f"iteration-{iteration}",
                reference_logps=model_reference,
                on_step=None if on_step is None else _shifted(on_step, offset),
                stage=f"best-of-n iteration {iteration}/{loop.iterations}",
            )
            trainer.resume()
            trainer.fit()
            trainer.save_final()
            del trainer  # under DDP: its hooks leave the policy before the next iteration wraps it again
            gc.collect()
        else:
            logger.warning("best-of-n iteration %d: no sample kept (reward below the threshold); no update", iteration)
        if is_main():
            done.parent.mkdir(parents=True, exist_ok=True)
            save_model(policy, tokenizer, done)
        barrier()
        if on_evaluate is not None and iteration < loop.iterations:
            on_evaluate(iteration * steps)
    _, total, metrics = sample_pass(loop.iterations + 1)
    history.append(metrics)
    if on_iteration is not None and is_main():
        on_iteration(loop.iterations * steps, metrics)
    return history


def _gather_samples(
    rollouts: Rollouts, total: torch.Tensor, components: Mapping[str, torch.Tensor], ref_logps: torch.Tensor | None
) -> tuple[Rollouts, torch.Tensor, dict[str, torch.Tensor], torch.Tensor | None]:
    """Every rank's scored samples (CPU) in rank order, as one process holds them; reference log-probs padded
    to the widest rank's completions."""
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (rollouts, total, dict(components), ref_logps))
    merged = select_groups([(part[0], range(len(part[0].prompts))) for part in gathered])
    totals = torch.cat([part[1] for part in gathered])
    joined = {name: torch.cat([part[2][name] for part in gathered]) for name in components}
    if ref_logps is None:
        return merged, totals, joined, None
    width = max(part[3].shape[1] for part in gathered)
    padded = [torch.nn.functional.pad(part[3], (0, width - part[3].shape[1])) for part in gathered]
    return merged, totals, joined, torch.cat(padded)

"""prefcore's GRPO against TRL's ``GRPOTrainer``: one online step each, same model, prompts and settings.

Run from the repository root (one thread, as the issue's figures are)::

    python bench/bench_grpo.py                     # 8 prompts × 8 completions × ≤ 16 tokens, 4×256 Llama
    python bench/bench_grpo.py --dry-run           # tiny sizes, in one process: a smoke test, not a measurement
    pytest bench/bench_grpo.py                     # the same step under pytest-benchmark

Each tool runs in its own fresh child process (so its peak RSS is its own) on the same tiny
Llama (same seed, so the same initial weights), the same eight text prompts, G = 8, at most 16
new tokens, temperature 1, β = 0, ε = 0.2, token-mean loss (TRL's default ``"dapo"``, prefcore's
``token_mean``), one optimiser step per batch of rollouts, AdamW at a constant learning rate,
gradient clipping at 1, and the same rule reward on the decoded completions. TRL keeps its
``GRPOConfig`` default ``gradient_checkpointing=True`` (its backward recomputes the forward);
``--trl-no-gradient-checkpointing`` turns it off, as prefcore's default is.

What is timed, per step, after ``--warmup`` untimed steps (the median over ``--steps``):

* wall: prefcore ``OnlineTrainer.train_step``; TRL the time between consecutive ``on_step_end``
  callbacks (the whole ``Trainer`` step: data, generation, scoring, forward, backward, optimiser);
* CPU: the process's CPU time (``time.process_time``) over the same span; at one thread it is
  the wall time less what other jobs on a shared machine took from it;
* rollout: prefcore ``OnlineTrainer.rollout_phase``; TRL ``_generate_and_score_completions``
  (both: generate, decode, reward, advantages);
* update: wall − rollout (forward and backward on the rollouts, clipping, optimiser, metrics);
* tokens/s: completion tokens of the step (under the completion mask) per second of each phase;
* peak RSS: the child's ``ru_maxrss`` (interpreter and libraries included) and its rise over the
  RSS just before the first step; peak torch bytes: ``harness.LiveBytes`` (storages created and
  alive) over one extra step, untimed.

"Same loss on the same rollouts" (``parity``): one fixed set of rollouts sampled by prefcore
(ids, masks, sampling log-probs, group advantages) goes through TRL's real
``GRPOTrainer._compute_loss`` (its own model forward) and through prefcore's ``grpo`` loss on
``completion_logps`` of the same model; losses and every weight gradient are compared, at the
sampling weights (ratio 1) and after a weight perturbation (ratios away from 1, clipping active).
prefcore's log-probs there come from the shared-prompt forward (one prompt pass per group); the
check also prints their largest difference from the full prompt + completion sequences.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from child_process import peak_rss_bytes
from child_process import run_child

__all__ = ["Settings", "main", "measure", "online_configs", "parity", "rule_reward", "time_online_steps"]


@dataclass(frozen=True)
class Settings:
    """One benchmark configuration, shared by both tools."""

    prompts: int = 8
    group: int = 8
    max_new_tokens: int = 16
    layers: int = 4
    hidden: int = 256
    heads: int = 4
    intermediate: int = 512
    threads: int = 1
    warmup: int = 2
    steps: int = 8
    lr: float = 1e-5
    seed: int = 0
    memory: bool = True
    trl_gradient_checkpointing: bool = True  # GRPOConfig's default; prefcore's [train] default is off

    @classmethod
    def dry_run(cls) -> Settings:
        return cls(
            prompts=2, group=2, max_new_tokens=4, layers=1, hidden=32, heads=2, intermediate=64, warmup=1, steps=1
        )


# -- the shared world ---------------------------------------------------------------------------


def build(settings: Settings) -> tuple[Any, Any, list[str]]:
    """The demo tokenizer, a seeded tiny Llama over its vocabulary and ``settings.prompts`` text prompts."""
    from prefcore.demo import task
    from prefcore.demo.model import build_tiny_model
    from prefcore.demo.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    model = build_tiny_model(
        tokenizer,
        seed=settings.seed,
        hidden_size=settings.hidden,
        num_hidden_layers=settings.layers,
        num_attention_heads=settings.heads,
        intermediate_size=settings.intermediate,
        max_position_embeddings=128,
    )
    records = task.answer_records(("sum",))
    return tokenizer, model, [record.prompt for record in records[: settings.prompts]]


def rule_score(prompt: str, text: str) -> float:
    """The rule reward: the share of the completion's words that occur in its prompt (dense, varies per sample)."""
    words = text.split()
    vocabulary = set(prompt.split())
    return sum(word in vocabulary for word in words) / max(len(words), 1)


def rule_reward(rollouts: Any, metadata: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``rule_score`` of every rollout, as a prefcore online reward (``total [S]``, its one component)."""
    scores = torch.tensor(
        [rule_score(rollouts.prompt_of(i), text) for i, text in enumerate(rollouts.texts)], dtype=torch.float32
    )
    return scores, {"rule": scores}


def online_configs(settings: Settings) -> tuple[Any, Any]:
    """prefcore's ``TrainConfig`` and ``OnlineLoopConfig`` for ``settings`` (one extra step for the memory probe)."""
    from prefcore.settings import OnlineLoopConfig
    from prefcore.settings import TrainConfig

    total = settings.warmup + settings.steps + 1
    config = TrainConfig(
        steps=total, lr=settings.lr, seed=settings.seed, max_grad_norm=1.0, progress=False, checkpoint_every=0
    )
    online = OnlineLoopConfig(
        prompts_per_step=settings.prompts, samples_per_prompt=settings.group, max_new_tokens=settings.max_new_tokens
    )
    return config, online


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_torch_bytes(step: Any) -> int | None:
    from harness import LiveBytes  # bench/ is on the path (module top)

    tracker = LiveBytes()
    with tracker:
        step()
    return tracker.peak


def _summary(
    walls: Sequence[float], rollouts: Sequence[float], tokens: Sequence[int], cpus: Sequence[float]
) -> dict[str, float]:
    updates = [wall - rollout for wall, rollout in zip(walls, rollouts, strict=True)]
    return {
        "wall_s": statistics.median(walls),
        "cpu_s": statistics.median(cpus),
        "rollout_s": statistics.median(rollouts),
        "update_s": statistics.median(updates),
        "rollout_tok_s": statistics.median(t / r for t, r in zip(tokens, rollouts, strict=True)),
        "update_tok_s": statistics.median(t / u for t, u in zip(tokens, updates, strict=True)),
        "tokens": statistics.median(tokens),
    }


# -- prefcore -----------------------------------------------------------------------------------


def prefcore_trainer(settings: Settings, run_dir: Path) -> Any:
    """An ``OnlineTrainer`` with the registered ``grpo`` objective (defaults: token mean, β = 0, ε = 0.2).

    Rollouts come from ``PrefixCacheBackend`` (each prompt prefilled once for its group); the
    update's log-probs share each prompt's forward across its group (``completion_logps``'s default).
    """
    from prefcore.engine.online_trainer import OnlineTrainer
    from prefcore.engine.rollout import PrefixCacheBackend
    from prefcore.registry import Registry

    tokenizer, model, prompts = build(settings)
    objective = Registry.from_environment(third_party=False).create("usage", "grpo", {})
    config, online = online_configs(settings)
    return OnlineTrainer(
        model,
        objective,
        prompts,
        [{} for _ in prompts],
        config,
        online,
        tokenizer=tokenizer,
        reward=rule_reward,
        run_dir=run_dir,
        device=torch.device("cpu"),
        backend=PrefixCacheBackend(),
    )


def measure_prefcore(settings: Settings) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as run_dir:
        return time_online_steps(prefcore_trainer(settings, Path(run_dir)), settings)


def time_online_steps(trainer: Any, settings: Settings) -> dict[str, Any]:
    """Time ``settings.steps`` steps of a prefcore online trainer (``OnlineTrainer`` or ``PPOTrainer``).

    Wraps ``trainer.rollout_phase`` to time it and count its completion tokens, runs
    ``settings.warmup`` untimed steps, then the timed ones; see the module docstring for what
    each number is.
    """
    phase: dict[str, float] = {}
    rollout_phase = trainer.rollout_phase

    def timed_rollout_phase(indices: Any) -> Any:
        started = time.perf_counter()
        scored = rollout_phase(indices)
        phase["rollout"] = time.perf_counter() - started
        phase["tokens"] = int(scored.tensors.mask.sum())
        return scored

    trainer.rollout_phase = timed_rollout_phase
    baseline = _rss_bytes()
    for _ in range(settings.warmup):
        trainer.train_step()
    walls, rollouts, tokens, cpus = [], [], [], []
    for _ in range(settings.steps):
        started, cpu = time.perf_counter(), time.process_time()
        trainer.train_step()
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu)
        rollouts.append(phase["rollout"])
        tokens.append(phase["tokens"])
    result = _summary(walls, rollouts, tokens, cpus)
    result["peak_rss"] = peak_rss_bytes()
    result["rss_rise"] = max(result["peak_rss"] - baseline, 0)
    result["torch_peak"] = _peak_torch_bytes(trainer.train_step) if settings.memory else None
    return result


# -- TRL ----------------------------------------------------------------------------------------


def trl_trainer(settings: Settings, output_dir: str, model: Any = None) -> Any:
    """TRL's ``GRPOTrainer`` on the same model, prompts and settings; ``model`` overrides the seeded one."""
    from datasets import Dataset
    from transformers.utils import logging as hf_logging
    from trl import GRPOConfig
    from trl import GRPOTrainer

    hf_logging.set_verbosity_error()
    tokenizer, built, prompts = build(settings)
    model = built if model is None else model

    def reward(prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
        return [rule_score(prompt, text) for prompt, text in zip(prompts, completions, strict=True)]

    args = GRPOConfig(
        output_dir=output_dir,
        per_device_train_batch_size=settings.prompts * settings.group,
        gradient_accumulation_steps=1,
        num_generations=settings.group,
        max_completion_length=settings.max_new_tokens,
        max_steps=settings.warmup + settings.steps + 1,
        learning_rate=settings.lr,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=1.0,
        beta=0.0,
        temperature=1.0,
        top_p=1.0,
        seed=settings.seed,
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        logging_steps=10_000,
        disable_tqdm=True,
        dataloader_num_workers=0,
        gradient_checkpointing=settings.trl_gradient_checkpointing,
    )
    return GRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": prompts}),
        processing_class=tokenizer,
    )


def measure_trl(settings: Settings) -> dict[str, Any]:
    from transformers import TrainerCallback

    with tempfile.TemporaryDirectory() as output_dir:
        trainer = trl_trainer(settings, output_dir)
        generate = trainer._generate_and_score_completions
        marks: dict[str, Any] = {"ends": [], "cpu_ends": [], "rollouts": [], "tokens": [], "baseline": 0}
        phase: dict[str, float] = {}

        def timed_generate(inputs: Any) -> Any:
            started = time.perf_counter()
            output = generate(inputs)
            phase["rollout"] = time.perf_counter() - started
            phase["tokens"] = int(output["completion_mask"].sum())
            return output

        trainer._generate_and_score_completions = timed_generate

        class Clock(TrainerCallback):
            def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                marks["baseline"] = _rss_bytes()
                marks["ends"].append(time.perf_counter())
                marks["cpu_ends"].append(time.process_time())

            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                marks["ends"].append(time.perf_counter())
                marks["cpu_ends"].append(time.process_time())
                marks["rollouts"].append(phase["rollout"])
                marks["tokens"].append(phase["tokens"])
                if settings.memory and state.global_step == settings.warmup + settings.steps:
                    marks["peak_rss"] = peak_rss_bytes()  # before the LiveBytes step below

        trainer.add_callback(Clock())
        if settings.memory:
            # The last step runs under LiveBytes: wrap training_step once the timed steps are done.
            training_step = trainer.training_step

            def tracked_step(*args: Any, **kwargs: Any) -> Any:
                if trainer.state.global_step < settings.warmup + settings.steps:
                    return training_step(*args, **kwargs)
                holder: dict[str, Any] = {}
                marks["torch_peak"] = _peak_torch_bytes(lambda: holder.update(out=training_step(*args, **kwargs)))
                return holder["out"]

            trainer.training_step = tracked_step
        trainer.train()
        ends = marks["ends"]
        walls = [b - a for a, b in itertools.pairwise(ends)]
        cpus = [b - a for a, b in itertools.pairwise(marks["cpu_ends"])]
        first, last = settings.warmup, settings.warmup + settings.steps
        result = _summary(
            walls[first:last], marks["rollouts"][first:last], marks["tokens"][first:last], cpus[first:last]
        )
        result["peak_rss"] = marks.get("peak_rss", peak_rss_bytes())
        result["rss_rise"] = max(result["peak_rss"] - marks["baseline"], 0)
        result["torch_peak"] = marks.get("torch_peak")
    return result


# -- same loss on the same rollouts --------------------------------------------------------------


def parity(settings: Settings) -> dict[str, float]:
    """Loss and weight gradients of TRL's ``_compute_loss`` and prefcore's ``grpo`` on one set of rollouts."""
    from prefcore.advantages import estimate_advantages
    from prefcore.engine.rollout import PrefixCacheBackend
    from prefcore.engine.rollout import RolloutSettings
    from prefcore.engine.rollout import completion_logps
    from prefcore.engine.rollout import pad_rollouts
    from prefcore.engine.rollout import sample_rollouts
    from prefcore.registry import Registry
    from prefcore.rollout import RolloutBatch

    tokenizer, model, prompts = build(settings)
    rollouts = sample_rollouts(
        model,
        tokenizer,
        prompts,
        RolloutSettings(samples_per_prompt=settings.group, max_new_tokens=settings.max_new_tokens, seed=7),
        backend=PrefixCacheBackend(),
    )
    tensors = pad_rollouts(rollouts, tokenizer.pad_token_id)
    # Seeded normal rewards rather than the rule's: every group then has a non-zero advantage to compare.
    rewards = torch.randn(rollouts.num_completions, generator=torch.Generator().manual_seed(3))
    advantages = estimate_advantages("group", rewards, tensors.group_ids, tensors.mask, scale="group").advantages
    objective = Registry.from_environment(third_party=False).create("usage", "grpo", {})

    # TRL's inputs: left-padded prompts, right-padded completions, one advantage per completion.
    longest = max(len(ids) for ids in rollouts.prompt_ids)
    prompt_ids = torch.full((len(rollouts.prompt_ids), longest), tokenizer.pad_token_id, dtype=torch.long)
    prompt_mask = torch.zeros_like(prompt_ids)
    for row, ids in enumerate(rollouts.prompt_ids):
        prompt_ids[row, longest - len(ids) :] = torch.tensor(ids)
        prompt_mask[row, longest - len(ids) :] = 1
    inputs = {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "completion_ids": tensors.completion_ids,
        "completion_mask": tensors.mask.long(),
        "advantages": advantages[:, 0],
        "old_per_token_logps": tensors.sampling_logps,
        "num_items_in_batch": tensors.mask.sum().float(),
    }
    result: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as output_dir:
        trainer = trl_trainer(settings, output_dir, model=model)
        trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train, which is not run here
        for case, noise in (("on_policy", 0.0), ("perturbed", 0.05)):
            if noise:
                generator = torch.Generator().manual_seed(1)
                with torch.no_grad():
                    for parameter in model.parameters():
                        parameter.add_(noise * torch.randn(parameter.shape, generator=generator))
            model.train()
            model.zero_grad(set_to_none=True)
            trl_loss = trainer._compute_loss(model, inputs)
            trl_loss.backward()
            trl_grads = [p.grad.clone() for p in model.parameters()]
            model.zero_grad(set_to_none=True)
            batch = RolloutBatch(
                policy_logps=completion_logps(model, tensors),
                mask=tensors.mask,
                sampling_logps=tensors.sampling_logps,
                advantages=advantages,
                rewards=rewards,
                group_ids=tensors.group_ids,
                truncated=tensors.truncated,
                max_completion_length=settings.max_new_tokens,
            )
            ours = objective.loss(batch).loss
            ours.backward()
            ratio = (batch.policy_logps.detach() - batch.sampling_logps).exp()[batch.mask]
            with torch.no_grad():  # the shared-prompt forward against every row's full prompt + completion
                full = completion_logps(model, tensors, share_prefix=False)
            result[f"{case}/shared_vs_full"] = float((batch.policy_logps.detach() - full).abs().max())
            grad_diff = max(float((p.grad - g).abs().max()) for p, g in zip(model.parameters(), trl_grads, strict=True))
            grad_scale = max(float(g.abs().max()) for g in trl_grads)
            result[f"{case}/trl_loss"] = float(trl_loss)
            result[f"{case}/prefcore_loss"] = float(ours)
            result[f"{case}/loss_abs_diff"] = abs(float(trl_loss) - float(ours))
            result[f"{case}/grad_max_abs_diff"] = grad_diff
            result[f"{case}/grad_max_abs"] = grad_scale
            result[f"{case}/clipped_fraction"] = float(((ratio < 0.8) | (ratio > 1.2)).float().mean())
    return result


# -- the driver ---------------------------------------------------------------------------------

TASKS = {"prefcore": measure_prefcore, "trl": measure_trl, "parity": parity}


def measure(task: str, settings: Settings) -> dict[str, Any]:
    """Run ``task`` here, at ``settings.threads`` threads."""
    torch.set_num_threads(settings.threads)
    return TASKS[task](settings)


def _child(task: str, settings: Settings) -> dict[str, Any]:
    """Run ``task`` in a fresh interpreter, so its imports, caches and memory are its own."""
    return run_child(__file__, task, settings, settings.threads)


def _median(values: Sequence[Any]) -> Any:
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else None


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.0f}"


def table(results: dict[str, dict[str, Any]], settings: Settings) -> str:
    """The markdown table and ratio lines."""
    lines = [
        f"{settings.prompts} prompts × {settings.group} completions × ≤ {settings.max_new_tokens} new tokens; "
        f"Llama {settings.layers} layers × {settings.hidden} wide (MLP {settings.intermediate}); "
        f"{settings.threads} thread(s); median of {settings.steps} steps after {settings.warmup} warm-up "
        f"in each of {len(results['ratios']['wall'])} alternating runs per tool; "
        f"TRL gradient checkpointing {'on (its default)' if settings.trl_gradient_checkpointing else 'off'}; "
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {datetime.date.today()}",
        "",
        "| tool | wall/step (s) | CPU/step (s) | rollout (s) | update (s) | rollout tok/s | update tok/s | "
        "completion tokens | peak RSS (MiB) | RSS rise (MiB) | peak torch (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ("prefcore", "trl"):
        r = results[name]
        lines.append(
            f"| {name} | {r['wall_s']:.3f} | {r['cpu_s']:.3f} | {r['rollout_s']:.3f} | {r['update_s']:.3f} | "
            f"{r['rollout_tok_s']:.0f} | {r['update_tok_s']:.0f} | {r['tokens']:.0f} | {_mib(r['peak_rss'])} | "
            f"{_mib(r['rss_rise'])} | {_mib(r['torch_peak'])} |"
        )
    ours, theirs = results["prefcore"], results["trl"]
    lines += [
        "",
        f"speed-up (TRL wall / prefcore wall): {theirs['wall_s'] / ours['wall_s']:.2f}x "
        f"(rollout {theirs['rollout_s'] / ours['rollout_s']:.2f}x, "
        f"update {theirs['update_s'] / ours['update_s']:.2f}x); "
        f"per repeat: {', '.join(f'{ratio:.2f}x' for ratio in results['ratios']['wall'])}",
        f"CPU time per step (TRL / prefcore): {theirs['cpu_s'] / ours['cpu_s']:.2f}x; "
        f"per repeat: {', '.join(f'{ratio:.2f}x' for ratio in results['ratios']['cpu'])}",
    ]
    if "parity" in results:
        p = results["parity"]
        for case in ("on_policy", "perturbed"):
            lines.append(
                f"parity {case}: TRL loss {p[f'{case}/trl_loss']:.6g}, prefcore {p[f'{case}/prefcore_loss']:.6g}, "
                f"|Δloss| {p[f'{case}/loss_abs_diff']:.2e}, max |Δgrad| {p[f'{case}/grad_max_abs_diff']:.2e} "
                f"(max |grad| {p[f'{case}/grad_max_abs']:.2e}), clipped tokens {p[f'{case}/clipped_fraction']:.2f}, "
                f"max |Δlog-prob| shared prompt vs full sequences {p[f'{case}/shared_vs_full']:.2e}"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes in one process (a smoke test)")
    parser.add_argument("--steps", type=int, help="timed steps (median)")
    parser.add_argument("--warmup", type=int, help="untimed steps first")
    parser.add_argument("--threads", type=int, help="torch threads")
    parser.add_argument("--no-memory", action="store_true", help="skip the extra LiveBytes step")
    parser.add_argument("--no-parity", action="store_true", help="skip the loss comparison")
    parser.add_argument(
        "--trl-no-gradient-checkpointing",
        action="store_true",
        help="run TRL without activation checkpointing (GRPOConfig defaults it on; prefcore does not checkpoint)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each tool (median)")
    parser.add_argument("--output", type=Path, help="also write the table here")
    parser.add_argument("--child", nargs=2, metavar=("TASK", "SETTINGS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        task, raw = args.child
        print(json.dumps(measure(task, Settings(**json.loads(raw)))))
        return 0
    settings = Settings.dry_run() if args.dry_run else Settings()
    overrides = {"steps": args.steps, "warmup": args.warmup, "threads": args.threads}
    settings = Settings(**(asdict(settings) | {k: v for k, v in overrides.items() if v is not None}))
    if args.no_memory:
        settings = Settings(**(asdict(settings) | {"memory": False}))
    if args.trl_no_gradient_checkpointing:
        settings = Settings(**(asdict(settings) | {"trl_gradient_checkpointing": False}))
    run = (lambda task: measure(task, settings)) if args.dry_run else (lambda task: _child(task, settings))
    # The tools alternate, so a load change on a shared machine reaches both alike; each figure is the median
    # over the repeats of each child's median.
    repeats: dict[str, list[dict[str, Any]]] = {"prefcore": [], "trl": []}
    for _ in range(1 if args.dry_run else args.repeats):
        for task in repeats:
            repeats[task].append(run(task))
    results: dict[str, dict[str, Any]] = {
        task: {key: _median([r[key] for r in runs]) for key in runs[0]} for task, runs in repeats.items()
    }
    results["ratios"] = {
        key: [t[f"{key}_s"] / p[f"{key}_s"] for p, t in zip(*repeats.values(), strict=True)] for key in ("wall", "cpu")
    }
    if not args.no_parity:
        results["parity"] = run("parity")
    text = table(results, settings)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    return 0


# -- pytest-benchmark ---------------------------------------------------------------------------


if "pytest" in sys.modules:  # collected by pytest (bench/conftest.py puts bench/ on the path for harness)
    import pytest

    @pytest.mark.parametrize("provider", ["prefcore", "trl"])
    def test_grpo_step(benchmark: Any, provider: str, tmp_path: Path) -> None:
        """One online step (rollout + update) per round; extra_info holds the settings and the median."""
        if provider == "trl":
            pytest.importorskip("trl")
        from harness import rounds

        settings = Settings(warmup=1, steps=rounds("5"), memory=False)
        torch.set_num_threads(settings.threads)
        if provider == "prefcore":
            trainer = prefcore_trainer(settings, tmp_path)
            step = trainer.train_step
        else:
            trainer = trl_trainer(settings, str(tmp_path))
            trainer.args.max_steps = 10_000
            iterator = iter(trainer.get_train_dataloader())
            trainer.create_optimizer_and_scheduler(num_training_steps=10_000)
            trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train, which is not run here
            trainer.model.train()

            def step() -> None:
                nonlocal iterator
                try:
                    inputs = next(iterator)
                except StopIteration:
                    iterator = iter(trainer.get_train_dataloader())
                    inputs = next(iterator)
                trainer.training_step(trainer.model, inputs, None)
                torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), 1.0)
                trainer.optimizer.step()
                trainer.optimizer.zero_grad()

        benchmark.pedantic(step, rounds=settings.steps, warmup_rounds=settings.warmup)
        if benchmark.stats is not None:
            median = benchmark.stats.stats.median
            benchmark.extra_info.update(asdict(settings) | {"provider": provider, "median_s": median})


if __name__ == "__main__":
    raise SystemExit(main())

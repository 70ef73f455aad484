"""One PPO step (rollout, scoring, update) on CPU, with the value model on its own trunk or on the policy's.

Run from the repository root (one thread)::

    python bench/bench_ppo.py                 # the GRPO benchmark's world: 8 prompts × 8 completions × ≤ 16 tokens
    python bench/bench_ppo.py --dry-run       # tiny sizes: a smoke test, not a measurement

The model, prompts, rule reward and sizes are ``bench_grpo.py``'s (the same seeded 4×256 tiny
Llama), so the figures sit beside its GRPO step. Each critic placement runs in its own fresh
child process (so its peak RSS is its own): ``separate`` (a copy of the policy's trunk with a
value head, its own AdamW) and ``shared`` (the head on the policy's trunk: one forward gives
log-probs and values). β = 0.05 with k1 in the reward (the reference model is loaded), γ = 1,
λ = 0.95, one update epoch over one minibatch, AdamW at a constant learning rate.

What is timed, per step, after ``--warmup`` untimed steps (the median over ``--steps``):
wall (``PPOTrainer.train_step``), rollout (``rollout_phase``: sampling, scoring, reference
log-probs, old values, GAE), update (wall − rollout: policy and value forward/backward, both
optimisers), completion tokens per second of each; peak RSS of the child and its rise over the
RSS before the first step; peak torch bytes (storages alive, ``harness.LiveBytes``) over one
extra step.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_grpo  # bench/ is not a package: the path above finds it (the same model, prompts and reward)
from harness import LiveBytes

__all__ = ["main", "measure"]

PLACEMENTS = ("separate", "shared")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _peak_torch_bytes(step: Any) -> int:
    tracker = LiveBytes()
    with tracker:
        step()
    return tracker.peak


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.0f}"


def _summary(walls: Sequence[float], rollouts: Sequence[float], tokens: Sequence[int]) -> dict[str, float]:
    updates = [wall - rollout for wall, rollout in zip(walls, rollouts, strict=True)]
    return {
        "wall_s": statistics.median(walls),
        "rollout_s": statistics.median(rollouts),
        "update_s": statistics.median(updates),
        "rollout_tok_s": statistics.median(t / r for t, r in zip(tokens, rollouts, strict=True)),
        "update_tok_s": statistics.median(t / u for t, u in zip(tokens, updates, strict=True)),
        "tokens": statistics.median(tokens),
    }


def ppo_trainer(settings: bench_grpo.Settings, placement: str, run_dir: Path) -> Any:
    """A ``PPOTrainer`` with the registered ``ppo`` objective and a value model placed as asked."""
    from prefcore.engine.models import frozen_copy
    from prefcore.engine.ppo_trainer import PPOTrainer
    from prefcore.engine.value_model import build_value_model
    from prefcore.registry import Registry
    from prefcore.settings import OnlineLoopConfig
    from prefcore.settings import TrainConfig

    tokenizer, model, prompts = bench_grpo.build(settings)
    objective = Registry.from_environment(third_party=False).create("usage", "ppo", {"critic": placement})

    def reward(rollouts: Any, metadata: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        scores = torch.tensor(
            [bench_grpo.rule_score(rollouts.prompt_of(i), text) for i, text in enumerate(rollouts.texts)],
            dtype=torch.float32,
        )
        return scores, {"rule": scores}

    total = settings.warmup + settings.steps + 1
    config = TrainConfig(
        steps=total, lr=settings.lr, seed=settings.seed, max_grad_norm=1.0, progress=False, checkpoint_every=0
    )
    online = OnlineLoopConfig(
        prompts_per_step=settings.prompts, samples_per_prompt=settings.group, max_new_tokens=settings.max_new_tokens
    )
    return PPOTrainer(
        model,
        objective,
        prompts,
        [{} for _ in prompts],
        config,
        online,
        tokenizer=tokenizer,
        reward=reward,
        run_dir=run_dir,
        device=torch.device("cpu"),
        reference=frozen_copy(model),
        value_model=build_value_model(placement, model, seed=settings.seed),
    )


def measure(placement: str, settings: bench_grpo.Settings) -> dict[str, Any]:
    """Time ``settings.steps`` PPO steps in this process; see the module docstring."""
    torch.set_num_threads(settings.threads)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = ppo_trainer(settings, placement, Path(run_dir))
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
        walls, rollouts, tokens = [], [], []
        for _ in range(settings.steps):
            started = time.perf_counter()
            trainer.train_step()
            walls.append(time.perf_counter() - started)
            rollouts.append(phase["rollout"])
            tokens.append(phase["tokens"])
        result = _summary(walls, rollouts, tokens)
        result["peak_rss"] = _peak_rss_bytes()
        result["rss_rise"] = max(result["peak_rss"] - baseline, 0)
        result["torch_peak"] = _peak_torch_bytes(trainer.train_step) if settings.memory else None
        result["value_parameters"] = sum(p.numel() for p in trainer.value_model.parameters())
    return result


def _child(placement: str, settings: bench_grpo.Settings) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", placement, "--settings", json.dumps(asdict(settings))]
    output = subprocess.run(command, capture_output=True, text=True, check=True, cwd=tempfile.gettempdir()).stdout
    return json.loads(output.strip().splitlines()[-1])


def table(results: dict[str, dict[str, Any]], settings: bench_grpo.Settings) -> str:
    mib = _mib
    lines = [
        f"PPO step on CPU ({settings.threads} thread): {settings.prompts} prompts × {settings.group} completions × "
        f"≤ {settings.max_new_tokens} tokens, Llama {settings.layers}×{settings.hidden}; median of {settings.steps}",
        "",
        "| critic | wall s | rollout s | update s | rollout tok/s | update tok/s | value params "
        "| peak RSS | RSS rise | peak torch |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for placement, row in results.items():
        lines.append(
            f"| {placement} | {row['wall_s']:.3f} | {row['rollout_s']:.3f} | {row['update_s']:.3f} "
            f"| {row['rollout_tok_s']:.0f} | {row['update_tok_s']:.0f} | {row['value_parameters']:,} "
            f"| {mib(row['peak_rss'])} | {mib(row['rss_rise'])} | {mib(row['torch_peak'])} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes, in this process: a smoke test")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per placement")
    parser.add_argument("--child", choices=PLACEMENTS, help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        settings = bench_grpo.Settings(**json.loads(args.settings))
        print(json.dumps(measure(args.child, settings)))
        return 0
    settings = bench_grpo.Settings.dry_run() if args.dry_run else bench_grpo.Settings()
    if args.steps:
        settings = replace(settings, steps=args.steps)
    if args.dry_run:
        results = {placement: measure(placement, settings) for placement in PLACEMENTS}
    else:
        results = {placement: _child(placement, settings) for placement in PLACEMENTS}
    print(table(results, settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

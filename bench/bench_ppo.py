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
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_grpo  # bench/ is not a package: the path above finds it (the same model, prompts and reward)

__all__ = ["main", "measure"]

PLACEMENTS = ("separate", "shared")


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.0f}"


def ppo_trainer(settings: bench_grpo.Settings, placement: str, run_dir: Path) -> Any:
    """A ``PPOTrainer`` with the registered ``ppo`` objective and a value model placed as asked."""
    from prefcore.engine.models import frozen_copy
    from prefcore.engine.ppo_trainer import PPOTrainer
    from prefcore.engine.value_model import build_value_model
    from prefcore.registry import Registry

    tokenizer, model, prompts = bench_grpo.build(settings)
    objective = Registry.from_environment(third_party=False).create("usage", "ppo", {"critic": placement})
    config, online = bench_grpo.online_configs(settings)
    return PPOTrainer(
        model,
        objective,
        prompts,
        [{} for _ in prompts],
        config,
        online,
        tokenizer=tokenizer,
        reward=bench_grpo.rule_reward,
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
        result = bench_grpo.time_online_steps(trainer, settings)
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

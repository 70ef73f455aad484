"""Shared prompts for offline pairs (``[train] share_prompts``): tokens/s and memory of a DPO step on CPU.

Run from the repository root::

    python bench/bench_pair_prefix.py             # 8 pairs, 4×256 Llama, prompt:completion 1:1 and 4:1
    python bench/bench_pair_prefix.py --dry-run   # tiny sizes: a smoke test, not a measurement

One prefcore DPO step (policy forward and backward, live reference model, AdamW) on the same
pairs with ``share_prompts`` off (every sequence runs its prompt) and on (each pair's prompt runs
once, its keys and values shared by the chosen and the rejected completion). The two settings
alternate step by step after ``--warmup`` steps each; reported: the median step, tokens/s (the
pairs' real prompt + completion tokens, the same count for both, per second) and the peak bytes
of torch storages alive during one step (``harness.LiveBytes``, the CPU stand-in for
``torch.cuda.max_memory_allocated``), and the step's loss (equal up to float summation order).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_dpo import Settings as DPOSettings
from bench_dpo import build
from bench_dpo import pairs
from harness import LiveBytes

__all__ = ["Case", "main", "measure"]


@dataclass(frozen=True)
class Case:
    """One prompt:completion ratio."""

    prompt_words: int
    completion_words: int
    pairs: int = 8
    layers: int = 4
    hidden: int = 256
    warmup: int = 2
    steps: int = 6


def _trainer(case: Case, share: bool, run_dir: Path) -> tuple[Any, int]:
    from prefcore.data import PairwiseComparison
    from prefcore.engine.batching import build_items
    from prefcore.engine.models import frozen_copy
    from prefcore.engine.reference import ModelReference
    from prefcore.engine.trainer import TrainConfig
    from prefcore.engine.trainer import Trainer
    from prefcore.engine.trainer import WeightedObjective
    from prefcore.registry import Registry

    settings = replace(
        DPOSettings(),
        pairs=case.pairs,
        prompt_words=case.prompt_words,
        completion_words=case.completion_words,
        layers=case.layers,
        hidden=case.hidden,
    )
    tokenizer, model = build(settings)
    records = [PairwiseComparison(**pair) for pair in pairs(settings, tokenizer)]
    items = build_items(records, "pairwise", tokenizer, max_length=4096)
    tokens = sum(sequence.length for item in items for sequence in item.sequences)
    objective = Registry.from_environment(third_party=False).create("usage", "dpo", {})
    config = TrainConfig(
        steps=10_000, batch_size=case.pairs, lr=1e-5, schedule="constant", share_prompts=share, progress=False
    )
    trainer = Trainer(
        model,
        [WeightedObjective(objective)],
        items,
        config,
        pad_token_id=tokenizer.pad_token_id,
        run_dir=run_dir,
        device=torch.device("cpu"),
        reference_logps=ModelReference(frozen_copy(model), fused=True, backend="auto"),
    )
    return trainer, tokens


def measure(case: Case) -> dict[str, dict[str, float]]:
    """Median step, tokens/s, peak live bytes and the first step's loss, for share_prompts off and on."""
    with tempfile.TemporaryDirectory() as run_dir:
        trainers = {share: _trainer(case, share, Path(run_dir) / str(share)) for share in (False, True)}
        first_loss = {share: trainer.train_step()["loss"] for share, (trainer, _) in trainers.items()}
        for _ in range(case.warmup - 1):
            for trainer, _ in trainers.values():
                trainer.train_step()
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(case.steps):
            for share, (trainer, _) in trainers.items():
                started = time.perf_counter()
                trainer.train_step()
                times[share].append(time.perf_counter() - started)
        results = {}
        for share, (trainer, tokens) in trainers.items():
            tracker = LiveBytes()
            with tracker:
                trainer.train_step()
            step = statistics.median(times[share])
            results["shared" if share else "padded"] = {
                "step_s": step,
                "tokens_per_s": tokens / step,
                "peak_bytes": tracker.peak,
                "first_loss": first_loss[share],
                "tokens": tokens,
            }
    return results


def table(rows: Sequence[tuple[Case, dict[str, dict[str, float]]]]) -> str:
    lines = [
        "| prompt:completion (words) | share_prompts | step (ms) | tokens/s | peak live MiB | first loss |",
        "|---|---|---|---|---|---|",
    ]
    for case, result in rows:
        for name, values in result.items():
            lines.append(
                f"| {case.prompt_words}:{case.completion_words} | {'on' if name == 'shared' else 'off'} | "
                f"{values['step_s'] * 1e3:.1f} | {values['tokens_per_s']:.0f} | {values['peak_bytes'] / 2**20:.1f} | "
                f"{values['first_loss']:.6f} |"
            )
        speedup = result["padded"]["step_s"] / result["shared"]["step_s"]
        memory = result["shared"]["peak_bytes"] / max(result["padded"]["peak_bytes"], 1)
        lines.append(f"| | speed-up {speedup:.2f}x, memory {memory:.2f}x of padded | | | | |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=Case.steps)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cases = [Case(32, 32, steps=args.steps), Case(128, 32, steps=args.steps)]
    if args.dry_run:
        cases = [replace(case, layers=1, hidden=32, pairs=2, warmup=1, steps=1) for case in cases]
    rows = [(case, measure(case)) for case in cases]
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

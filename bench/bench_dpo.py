"""prefcore's offline DPO step against TRL's ``DPOTrainer`` on CPU, in fp32 and bf16, in one run.

Run from the repository root (one thread, as the issue's figures are)::

    python bench/bench_dpo.py                 # 8 pairs of ~97 tokens, 4×256 Llama, 3 rounds
    python bench/bench_dpo.py --dry-run       # tiny sizes, one round: a smoke test, not a measurement

Both tools train the same seeded tiny Llama (the demo's word-level tokenizer) on the same 8
text pairs (prompt of ``--prompt-words`` words, completions of ``--completion-words``), all 8 in
one batch, so every step sees the same pairs: AdamW at a constant learning rate, gradient
clipping at 1, β = 0.1, sigmoid loss, a live reference model (TRL's default; prefcore's
``reference = "model"``). Configurations, each in its own fresh child process, run round-robin
``--rounds`` times (the machine may be shared: compare the medians and note ``uptime``):

* ``prefcore fp32`` / ``prefcore bf16`` / ``prefcore bf16-params``: ``[train] precision = "fp32"`` /
  ``"bf16"`` (CPU autocast) / ``"bf16-params"`` (bf16 copies of the fp32 master weights);
  ``shared`` adds ``share_prompts = true`` (a pair's prompt runs once);
* ``TRL fp32`` / ``TRL bf16``: ``DPOConfig(bf16=False / True)`` (autocast, fp32 weights); ``TRL
  bf16-weights``: the model itself in bf16 with ``bf16=True``, TRL's fastest set-up, whose AdamW
  updates bf16 weights directly (no fp32 master copy): the table's last column says how many weights
  a run changed at all. TRL's own default ``gradient_checkpointing`` applies,
  ``--trl-gradient-checkpointing off`` turns it off.

Timed: the median step over ``--steps`` steps after ``--warmup`` (prefcore ``Trainer.train_step``;
TRL the time between consecutive ``on_step_end`` callbacks), the process CPU time over the same
steps, and the last step's loss. Both tools train on the same text pairs from the same weights,
with sequences of the same length (97 tokens by default), but the demo tokenizer's conventions
differ between them (prefcore: BOS, prompt, separator | completion, EOS; TRL: BOS, prompt |
completion, EOS, separator), so the losses agree closely but not exactly. The ratio is TRL's
fastest configuration over prefcore's fastest, by wall time and by CPU time (at one thread the
CPU time is the wall time less what other jobs on a shared machine took: the steadier figure).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from child_process import run_child

__all__ = ["Settings", "main", "measure", "pairs"]

CONFIGS = (
    "prefcore fp32",
    "prefcore bf16",
    "prefcore bf16-params",
    "prefcore bf16-params shared",
    "TRL fp32",
    "TRL bf16",
    "TRL bf16-weights",
)


TRAINS = 0.5
"""A configuration trains when its run changed at least this share of the weights."""


@dataclass(frozen=True)
class Settings:
    """One benchmark configuration, shared by both tools."""

    pairs: int = 8
    prompt_words: int = 32
    completion_words: int = 62
    layers: int = 4
    hidden: int = 256
    heads: int = 4
    intermediate: int = 512
    threads: int = 1
    warmup: int = 2
    steps: int = 8
    lr: float = 1e-5
    beta: float = 0.1
    seed: int = 0
    trl_gradient_checkpointing: str = "default"  # "default" (TRL's), "on" or "off"


def build(settings: Settings) -> tuple[Any, Any]:
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
        max_position_embeddings=256,
    )
    return tokenizer, model


def pairs(settings: Settings, tokenizer: Any) -> list[dict[str, str]]:
    """``settings.pairs`` seeded text pairs of words the tokenizer knows (one token per word)."""
    special = set(tokenizer.all_special_tokens)
    words = sorted(word for word in tokenizer.get_vocab() if word not in special and word.isalpha())
    rng = random.Random(settings.seed)

    def text(count: int) -> str:
        return " ".join(rng.choice(words) for _ in range(count))

    return [
        {
            "prompt": text(settings.prompt_words),
            "chosen": " " + text(settings.completion_words),  # TRL joins prompt and completion as they are
            "rejected": " " + text(settings.completion_words),
        }
        for _ in range(settings.pairs)
    ]


def _summary(
    walls: Sequence[float], cpus: Sequence[float], last_loss: float, tokens: int, changed: float
) -> dict[str, Any]:
    return {
        "step_s": statistics.median(walls),
        "cpu_s": statistics.median(cpus),
        "last_loss": last_loss,
        "tokens_per_pair": tokens,
        "changed": changed,
    }


def _snapshot(model: Any) -> dict[str, Any]:
    return {name: parameter.detach().clone() for name, parameter in model.named_parameters()}


def _changed_share(model: Any, before: dict[str, Any]) -> float:
    """The share of weight elements a run changed at all (0 where updates were lost to rounding)."""
    changed = total = 0
    for name, parameter in model.named_parameters():
        changed += int((parameter.detach() != before[name]).sum())
        total += parameter.numel()
    return changed / total


def measure_prefcore(settings: Settings, precision: str, share_prompts: bool = False) -> dict[str, Any]:
    import torch

    from prefcore.data import PairwiseComparison
    from prefcore.engine.batching import build_items
    from prefcore.engine.models import frozen_copy
    from prefcore.engine.reference import ModelReference
    from prefcore.engine.trainer import TrainConfig
    from prefcore.engine.trainer import Trainer
    from prefcore.engine.trainer import WeightedObjective
    from prefcore.registry import Registry

    tokenizer, model = build(settings)
    before = _snapshot(model)
    records = [PairwiseComparison(**pair) for pair in pairs(settings, tokenizer)]
    items = build_items(records, "pairwise", tokenizer, max_length=1024)
    objective = Registry.from_environment(third_party=False).create("usage", "dpo", {"beta": settings.beta})
    config = TrainConfig(
        steps=settings.warmup + settings.steps,
        batch_size=settings.pairs,
        lr=settings.lr,
        warmup_steps=0,
        schedule="constant",
        weight_decay=0.0,
        max_grad_norm=1.0,
        precision=precision,
        share_prompts=share_prompts,
        progress=False,
    )
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(
            model,
            [WeightedObjective(objective)],
            items,
            config,
            pad_token_id=tokenizer.pad_token_id,
            run_dir=Path(run_dir),
            device=torch.device("cpu"),
            reference_logps=ModelReference(frozen_copy(model), fused=True, backend="auto"),
        )
        walls, cpus, losses = [], [], []
        for _ in range(settings.warmup + settings.steps):
            started, cpu = time.perf_counter(), time.process_time()
            metrics = trainer.train_step()
            walls.append(time.perf_counter() - started)
            cpus.append(time.process_time() - cpu)
            losses.append(metrics["loss"])
    tokens = items[0].sequences[0].length
    return _summary(
        walls[settings.warmup :], cpus[settings.warmup :], losses[-1], tokens, _changed_share(model, before)
    )


def measure_trl(settings: Settings, bf16: bool, bf16_weights: bool = False) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from transformers.utils import logging as hf_logging
    from trl import DPOConfig
    from trl import DPOTrainer

    hf_logging.set_verbosity_error()
    tokenizer, model = build(settings)
    if bf16_weights:
        import torch

        model = model.to(torch.bfloat16)
    before = _snapshot(model)
    options: dict[str, Any] = {}
    if settings.trl_gradient_checkpointing != "default":
        options["gradient_checkpointing"] = settings.trl_gradient_checkpointing == "on"
    marks: dict[str, list[float]] = {"ends": [], "cpu_ends": [], "losses": []}
    with tempfile.TemporaryDirectory() as output_dir:
        args = DPOConfig(
            output_dir=output_dir,
            per_device_train_batch_size=settings.pairs,
            gradient_accumulation_steps=1,
            max_steps=settings.warmup + settings.steps,
            learning_rate=settings.lr,
            lr_scheduler_type="constant",
            warmup_steps=0,
            weight_decay=0.0,
            max_grad_norm=1.0,
            beta=settings.beta,
            max_length=1024,
            seed=settings.seed,
            use_cpu=True,
            bf16=bf16,
            report_to="none",
            save_strategy="no",
            logging_steps=1,
            disable_tqdm=True,
            dataloader_num_workers=0,
            **options,
        )
        trainer = DPOTrainer(
            model=model,
            ref_model=copy.deepcopy(model).eval().requires_grad_(False),
            args=args,
            train_dataset=Dataset.from_list(pairs(settings, tokenizer)),
            processing_class=tokenizer,
        )

        class Clock(TrainerCallback):
            def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                marks["ends"].append(time.perf_counter())
                marks["cpu_ends"].append(time.process_time())

            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                marks["ends"].append(time.perf_counter())
                marks["cpu_ends"].append(time.process_time())

            def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
                if logs and "loss" in logs:
                    marks["losses"].append(float(logs["loss"]))

        trainer.add_callback(Clock())
        trainer.train()
        row = trainer.train_dataset[0]
        tokens = len(row["prompt_ids"]) + len(row["chosen_ids"]) if "prompt_ids" in row else -1
    walls = [b - a for a, b in zip(marks["ends"], marks["ends"][1:], strict=False)]
    cpus = [b - a for a, b in zip(marks["cpu_ends"], marks["cpu_ends"][1:], strict=False)]
    last_loss = marks["losses"][-1] if marks["losses"] else float("nan")
    changed = _changed_share(trainer.model, before)
    return _summary(walls[settings.warmup :], cpus[settings.warmup :], last_loss, tokens, changed)


def measure(config: str, settings: Settings) -> dict[str, Any]:
    """Run one configuration here, at ``settings.threads`` threads."""
    import torch

    torch.set_num_threads(settings.threads)
    tool, precision, *extra = config.split()
    if tool == "prefcore":
        return measure_prefcore(settings, precision, share_prompts="shared" in extra)
    return measure_trl(settings, bf16=precision != "fp32", bf16_weights=precision == "bf16-weights")


def _child(config: str, settings: Settings) -> dict[str, Any]:
    """Run ``config`` in a fresh interpreter, so its imports, caches and memory are its own."""
    return run_child(__file__, config, settings, settings.threads)


def table(results: dict[str, list[dict[str, Any]]], settings: Settings) -> str:
    """One markdown table: median over rounds of each round's median step, and the ratio."""
    rows = [
        "| configuration | step (ms) | CPU per step (ms) | last step's loss | tokens per sequence | weights changed |",
        "|---|---|---|---|---|---|",
    ]
    medians, cpu_medians = {}, {}
    for config, runs in results.items():
        step = statistics.median(run["step_s"] for run in runs)
        cpu = statistics.median(run["cpu_s"] for run in runs)
        medians[config], cpu_medians[config] = step, cpu
        rows.append(
            f"| {config} | {step * 1e3:.1f} | {cpu * 1e3:.1f} | {runs[0]['last_loss']:.6f} | "
            f"{runs[0]['tokens_per_pair']} | {runs[0]['changed']:.1%} |"
        )

    trains = {config for config, runs in results.items() if runs[0]["changed"] >= TRAINS}

    def ratio(values: dict[str, float]) -> float:
        ours = min(value for config, value in values.items() if config.startswith("prefcore") and config in trains)
        theirs = min(value for config, value in values.items() if config.startswith("TRL") and config in trains)
        return theirs / ours

    rows.append("")
    left_out = sorted(set(results) - trains)
    if left_out:
        rows.append(
            f"Left out of the ratio (changed under {TRAINS:.0%} of the weights: the updates were lost): "
            + ", ".join(left_out)
        )
    rows.append(
        f"TRL's fastest / prefcore's fastest: **{ratio(medians):.2f}x** wall, **{ratio(cpu_medians):.2f}x** CPU time "
        f"({settings.pairs} pairs, {settings.layers}×{settings.hidden} Llama, {settings.threads} thread(s), "
        f"TRL gradient checkpointing: {settings.trl_gradient_checkpointing})"
    )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=Settings.steps)
    parser.add_argument("--threads", type=int, default=Settings.threads)
    parser.add_argument("--trl-gradient-checkpointing", choices=("default", "on", "off"), default="default")
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes, one round, in this process")
    parser.add_argument("--child", nargs=2, metavar=("CONFIG", "SETTINGS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child[0], Settings(**json.loads(args.child[1])))))
        return 0
    settings = Settings(
        steps=args.steps, threads=args.threads, trl_gradient_checkpointing=args.trl_gradient_checkpointing
    )
    if args.dry_run:
        settings = replace(settings, pairs=2, prompt_words=4, completion_words=4, layers=1, hidden=32, steps=1)
        results = {config: [measure(config, settings)] for config in args.configs}
    else:
        results: dict[str, list[dict[str, Any]]] = {config: [] for config in args.configs}
        for _ in range(args.rounds):
            for config in args.configs:
                results[config].append(_child(config, settings))
    print(f"uptime: {os.getloadavg()}")
    print(table(results, settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())

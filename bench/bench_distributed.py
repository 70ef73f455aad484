"""Distributed DPO training: tokens/s and per-rank memory for 1 and N processes, DDP against FSDP2.

On this CPU machine (gloo, the demo's tiny Llama)::

    python bench/bench_distributed.py                           # 1 and 2 processes, none/ddp/fsdp
    python bench/bench_distributed.py --nproc 1 2 --steps 4     # shorter

On a GPU node (NCCL, one GPU per process), the same table for a real model::

    python bench/bench_distributed.py --nproc 1 8 --model /path/to/save_pretrained --batch 64 --max-length 512

Each configuration is a fresh ``torchrun --nproc_per_node N`` launch of this file (``--worker``)
run from a scratch folder; "none" is one plain process (no process group). Every launch trains
DPO (policy + frozen reference, fused LM head) on the demo's preference pairs with the global
batch ``--batch`` split across the ranks, one untimed step, then ``--steps`` timed ones.

Columns: tokens/s is the global batch's sequence tokens (prompt + completion, chosen and
rejected, without padding) per second of a training step (median); "state MB/rank" is what one
rank holds of the trained model — parameters + gradients + AdamW's two moments, counted from
the local shards (FSDP2) or the full replica (DDP, none), the reference model not included;
"ref MB/rank" is the reference's weights one rank holds while training (its shards under FSDP2);
"start-up MB/rank" is the peak of the tensor bytes that building the trainer allocated
(``prefcore.distributed.memory.TensorBytes``: spreading the policy and the reference over the
ranks, e.g. DDP's gradient buckets or FSDP2's shards; the plain policy and reference made before
are not counted); "peak MB/rank" is the largest rank's peak: ``torch.cuda.max_memory_allocated``
on a GPU, the process's peak RSS (interpreter and libraries included) on a CPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CONFIGS = ("none", "ddp", "fsdp")


def _state_bytes(trainer: Any) -> int:
    """Parameters + gradients + optimiser state this rank holds for the trained model."""
    total = 0
    for parameter in trainer.trainable:
        local = parameter.to_local() if hasattr(parameter, "to_local") else parameter
        total += 2 * local.numel() * local.element_size()  # the parameter and its gradient
    for state in trainer.optimizer.state.values():
        for value in state.values():
            if hasattr(value, "numel") and value.numel() > 1:
                local = value.to_local() if hasattr(value, "to_local") else value
                total += local.numel() * local.element_size()
    return total


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from prefcore import distributed
    from prefcore.demo.model import build_tiny_model
    from prefcore.demo.task import preference_pairs
    from prefcore.demo.tokenizer import build_tokenizer
    from prefcore.distributed.memory import TensorBytes
    from prefcore.distributed.wrap import local_parameter_bytes
    from prefcore.engine.batching import build_items
    from prefcore.engine.models import frozen_copy
    from prefcore.engine.reference import ModelReference
    from prefcore.engine.trainer import Trainer
    from prefcore.engine.trainer import WeightedObjective
    from prefcore.registry import Registry
    from prefcore.settings import TrainConfig

    parallel = distributed.init(args.strategy) if args.strategy != "none" else None
    device = parallel.device if parallel is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.model:
        from transformers import AutoModelForCausalLM
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.model)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        policy = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32).to(device)
    else:
        tokenizer = build_tokenizer()
        policy = build_tiny_model(tokenizer, seed=0).to(device)
    items = build_items(
        preference_pairs(count=4 * args.batch, seed=1), "pairwise", tokenizer, max_length=args.max_length
    )
    config = TrainConfig(
        steps=args.steps + 1, batch_size=args.batch, lr=1e-5, schedule="constant", progress=False, seed=0
    )
    reference = ModelReference(frozen_copy(policy), fused=True, backend="auto")
    with TensorBytes() as startup:
        trainer = Trainer(
            policy,
            [WeightedObjective(Registry.from_environment(third_party=False).create("usage", "dpo", {}))],
            items,
            config,
            pad_token_id=tokenizer.pad_token_id,
            run_dir=Path(tempfile.mkdtemp()),
            device=device,
            reference_logps=reference,
        )
    times, tokens = [], []
    for step in range(args.steps + 1):
        position = (trainer.epoch, trainer.position)
        batch = trainer.next_micro_batch()
        trainer.epoch, trainer.position = position
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        trainer.train_step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step:  # the first step warms up (allocations, autotuning)
            times.append(time.perf_counter() - started)
            tokens.append(sum(sequence.length for index in batch for sequence in items[index].sequences))
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    spread = trainer.reference_logps
    held = getattr(spread, "local_bytes", None)  # FSDP2: the shards (+ the plain model once gathered)
    reference_bytes = held() if callable(held) else local_parameter_bytes(spread.model)
    mine = {"state": _state_bytes(trainer), "reference": reference_bytes, "startup": startup.peak, "peak": peak}
    ranks = [mine]
    if parallel is not None:
        import torch.distributed as dist

        ranks = [None] * parallel.world_size
        dist.all_gather_object(ranks, mine)
    if parallel is None or parallel.is_main:
        seconds = statistics.median(times)
        print(
            "RESULT "
            + json.dumps(
                {
                    "strategy": args.strategy,
                    "nproc": parallel.world_size if parallel is not None else 1,
                    "tokens_per_s": statistics.median(tokens) / seconds,
                    "step_s": seconds,
                    "state_mb": max(rank["state"] for rank in ranks) / 2**20,
                    "reference_mb": max(rank["reference"] for rank in ranks) / 2**20,
                    "startup_mb": max(rank["startup"] for rank in ranks) / 2**20,
                    "peak_mb": max(rank["peak"] for rank in ranks) / 2**20,
                }
            ),
            flush=True,
        )
    del trainer, spread  # DDP's reducer leaves before the process group does
    gc.collect()
    if parallel is not None:
        distributed.teardown()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(strategy: str, nproc: int, args: argparse.Namespace) -> dict[str, Any] | None:
    options = ["--steps", str(args.steps), "--batch", str(args.batch), "--max-length", str(args.max_length)]
    options += ["--threads", str(args.threads)] + (["--model", args.model] if args.model else [])
    script = [str(Path(__file__).resolve()), "--worker", "--strategy", strategy, *options]
    if strategy == "none":
        command = [sys.executable, *script]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
        command += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port()), *script]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PREFCORE_DISABLE_PLUGIN_AUTOLOAD": "1"}
    try:
        done = subprocess.run(
            command, cwd=tempfile.mkdtemp(), env=env, capture_output=True, text=True, check=False, timeout=args.timeout
        )
    except subprocess.TimeoutExpired:
        print(f"{strategy} × {nproc} did not finish within {args.timeout} s", file=sys.stderr)
        return None
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    print(f"{strategy} × {nproc} failed:\n{done.stderr[-3000:]}", file=sys.stderr)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--strategy", default="none", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2], help="process counts to launch")
    parser.add_argument("--strategies", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--steps", type=int, default=6, help="timed steps (after one untimed)")
    parser.add_argument("--batch", type=int, default=16, help="global pairs per step")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--timeout", type=float, default=900, help="seconds a launch may take")
    parser.add_argument("--model", help="a save_pretrained folder (default: the demo's tiny Llama)")
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    rows = []
    for nproc in args.nproc:
        for strategy in args.strategies:
            if strategy == "none" and nproc != 1:
                continue
            result = launch(strategy, nproc, args)
            if result is not None:
                rows.append(result)
    print(
        f"{'strategy':<9}{'procs':>6}{'tokens/s':>12}{'step s':>9}{'state MB/rank':>15}{'ref MB/rank':>13}"
        f"{'start-up MB/rank':>18}{'peak MB/rank':>14}"
    )
    for row in rows:
        print(
            f"{row['strategy']:<9}{row['nproc']:>6}{row['tokens_per_s']:>12.0f}{row['step_s']:>9.3f}"
            f"{row['state_mb']:>15.2f}{row['reference_mb']:>13.2f}{row['startup_mb']:>18.2f}{row['peak_mb']:>14.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
